//! The user guide's walkthroughs, read out of the docs so that the end-to-end tests run
//! exactly what a user copies.
//!
//! A walkthrough step is a fenced shell block (```` ```sh ````) preceded by a marker line
//! `<!-- walkthrough: NAME/STEP -->` (blank lines may come between them). [`extract`]
//! returns a document's steps of one walkthrough in document order, with the line the
//! block starts on; a marker that is not followed by a shell block, an unclosed block or a
//! step named twice is refused, so that a doc edit cannot silently drop a step.
//!
//! Where a command cannot run verbatim in the testbed (no Rust toolchain, no systemd, no
//! registry), the test lists a [`Substitution`] for that exact line, with the reason;
//! [`substitute`] refuses a substitution whose line is no longer in the walkthrough, so the
//! list cannot outlive the doc.

use std::path::Path;

use crate::{Error, Result};

/// One marked shell block of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The document, relative to the repository root (`docs/podman.md`).
    pub doc: String,
    /// 1-based line of the block's first command.
    pub line: usize,
    /// `NAME/STEP` of the marker.
    pub id: String,
    /// The block's text, as a user copies it.
    pub script: String,
}

impl Step {
    /// `docs/podman.md:42 (podman/network)`, for messages.
    pub fn place(&self) -> String {
        format!("{}:{} ({})", self.doc, self.line, self.id)
    }
}

const MARKER: &str = "<!-- walkthrough:";

/// The steps of walkthrough `name` in `text` (the document `doc`), in document order.
pub fn extract(doc: &str, text: &str, name: &str) -> Result<Vec<Step>> {
    let bad = |line: usize, why: String| Error::Scenario(format!("{doc}:{line}: {why}"));
    let lines: Vec<&str> = text.lines().collect();
    let mut steps: Vec<Step> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        i += 1;
        let Some(rest) = l.strip_prefix(MARKER) else {
            continue;
        };
        let marker_line = i;
        let id = rest
            .strip_suffix("-->")
            .map(str::trim)
            .filter(|id| {
                id.split_once('/')
                    .is_some_and(|(n, s)| !n.is_empty() && !s.is_empty() && !s.contains('/'))
            })
            .ok_or_else(|| bad(marker_line, format!("malformed marker {l:?} (NAME/STEP)")))?;
        while i < lines.len() && lines[i].trim().is_empty() {
            i += 1;
        }
        if i >= lines.len() || lines[i].trim() != "```sh" {
            return Err(bad(
                marker_line,
                format!("marker {id} is not followed by a ```sh block"),
            ));
        }
        i += 1;
        let start = i + 1;
        let mut script = String::new();
        loop {
            if i >= lines.len() {
                return Err(bad(marker_line, format!("the block of {id} is not closed")));
            }
            if lines[i].trim() == "```" {
                i += 1;
                break;
            }
            script.push_str(lines[i]);
            script.push('\n');
            i += 1;
        }
        if id.split('/').next() != Some(name) {
            continue;
        }
        if steps.iter().any(|s| s.id == id) {
            return Err(bad(marker_line, format!("step {id} is marked twice")));
        }
        steps.push(Step {
            doc: doc.to_string(),
            line: start,
            id: id.to_string(),
            script,
        });
    }
    Ok(steps)
}

/// [`extract`] of a document of this repository (`docs/podman.md`).
pub fn load(doc: &str, name: &str) -> Result<Vec<Step>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(doc);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Missing(format!("{}: {e}", path.display())))?;
    extract(doc, &text, name)
}

/// One doc line the testbed cannot run as written, what runs instead, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substitution {
    /// The line exactly as in the doc (surrounding blanks ignored).
    pub line: String,
    /// The shell text run in its place (several lines allowed).
    pub with: String,
    pub why: String,
}

/// Replaces each substitution's line in `steps`. Every substitution must match at least
/// one line: one whose line left the doc is an error naming it.
pub fn substitute(steps: &mut [Step], subs: &[Substitution]) -> Result<()> {
    for s in subs {
        let mut hits = 0;
        for step in steps.iter_mut() {
            let mut out = String::new();
            for l in step.script.lines() {
                if l.trim() == s.line.trim() {
                    hits += 1;
                    out.push_str(&s.with);
                    if !s.with.ends_with('\n') {
                        out.push('\n');
                    }
                } else {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            step.script = out;
        }
        if hits == 0 {
            return Err(Error::Scenario(format!(
                "the substitution for {:?} matches no line of the walkthrough: the doc changed, \
                 update the substitution",
                s.line
            )));
        }
    }
    Ok(())
}

/// The ids of `steps`, for comparing with the steps a test expects.
pub fn ids(steps: &[Step]) -> Vec<&str> {
    steps.iter().map(|s| s.id.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# Title\n\
        <!-- walkthrough: demo/one -->\n\
        \n\
        ```sh\n\
        echo one\n\
        echo two\n\
        ```\n\
        text\n\
        ```sh\n\
        echo unmarked\n\
        ```\n\
        <!-- walkthrough: other/x -->\n\
        ```sh\n\
        echo other\n\
        ```\n\
        <!-- walkthrough: demo/two -->\n\
        ```sh\n\
        sudo systemctl start x\n\
        ```\n";

    #[test]
    fn marked_blocks_of_one_walkthrough_come_in_order_with_their_line() {
        let s = extract("d.md", DOC, "demo").unwrap();
        assert_eq!(ids(&s), vec!["demo/one", "demo/two"]);
        assert_eq!(s[0].script, "echo one\necho two\n");
        assert_eq!(s[0].line, 5);
        assert_eq!(s[0].place(), "d.md:5 (demo/one)");
        assert_eq!(s[1].line, 18);
        assert_eq!(
            ids(&extract("d.md", DOC, "other").unwrap()),
            vec!["other/x"]
        );
    }

    #[test]
    fn bad_markers_and_blocks_are_refused_with_their_line() {
        let e = extract("d.md", "a\n<!-- walkthrough: demo/one -->\ntext\n", "demo").unwrap_err();
        assert!(e.to_string().contains("d.md:2"), "{e}");
        assert!(e.to_string().contains("not followed"), "{e}");
        let e = extract(
            "d.md",
            "<!-- walkthrough: demo/one -->\n```sh\necho\n",
            "demo",
        )
        .unwrap_err();
        assert!(e.to_string().contains("not closed"), "{e}");
        let e = extract("d.md", "<!-- walkthrough: demo -->\n```sh\n```\n", "demo").unwrap_err();
        assert!(e.to_string().contains("malformed"), "{e}");
        let twice =
            "<!-- walkthrough: demo/a -->\n```sh\n```\n<!-- walkthrough: demo/a -->\n```sh\n```\n";
        let e = extract("d.md", twice, "demo").unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        // A block of another language is not a walkthrough step.
        let e = extract(
            "d.md",
            "<!-- walkthrough: demo/a -->\n```toml\n```\n",
            "demo",
        )
        .unwrap_err();
        assert!(e.to_string().contains("```sh"), "{e}");
    }

    #[test]
    fn substitutions_replace_their_line_and_must_match() {
        let mut s = extract("d.md", DOC, "demo").unwrap();
        let sub = Substitution {
            line: "sudo systemctl start x".into(),
            with: "start-x-by-hand\nwait-for-x".into(),
            why: "no systemd".into(),
        };
        substitute(&mut s, std::slice::from_ref(&sub)).unwrap();
        assert_eq!(s[1].script, "start-x-by-hand\nwait-for-x\n");
        assert_eq!(s[0].script, "echo one\necho two\n");
        let e = substitute(&mut s, &[sub]).unwrap_err();
        assert!(e.to_string().contains("matches no line"), "{e}");
    }

    #[test]
    fn the_guides_walkthroughs_parse() {
        for (doc, name) in [
            ("docs/podman.md", "podman"),
            ("docs/install.md", "source"),
            ("docs/install.md", "package"),
            ("docs/install.md", "without-systemd"),
            ("docs/migration.md", "podman-failed"),
        ] {
            let s = load(doc, name).unwrap();
            assert!(!s.is_empty(), "{doc} has no {name} walkthrough");
        }
    }
}
