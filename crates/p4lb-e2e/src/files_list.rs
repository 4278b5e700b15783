//! `packaging/files.list`, what p4lb installs (kind, mode, sets, source, destination):
//! packaging/p4lb-setup.sh installs from it, and the package and node-installer tests
//! check an installed tree against it. The format is described at the top of that file.
//! [`rootfs_tree`] lists a testbed's files, to compare before an install and after the
//! removal.

use std::collections::BTreeSet;
use std::path::Path;

use p4lb_testbed::Testbed;

use crate::{Error, Result};

/// One line of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `build`, `build?`, `repo`, `config`, `unit`, `dir`, `state` or `link`.
    pub kind: String,
    /// Permission bits (`None` for `-`, a link).
    pub mode: Option<u32>,
    /// `host`, `node`.
    pub sets: Vec<String>,
    /// Build output name, source path, or a link's target (`-` for none).
    pub source: String,
    /// Absolute installed path.
    pub dest: String,
}

impl Entry {
    /// Skipped by the installer when it was not built.
    pub fn optional(&self) -> bool {
        self.kind.ends_with('?')
    }

    pub fn in_set(&self, set: &str) -> bool {
        self.sets.iter().any(|s| s == set)
    }

    /// A regular file the packages ship (not a directory, not a link).
    pub fn is_file(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "build" | "build?" | "repo" | "config" | "unit"
        )
    }
}

/// Parses the list; a malformed line is refused with its number.
pub fn parse(text: &str) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| Error::Scenario(format!("files.list line {}: {why}: {line}", i + 1));
        let f: Vec<&str> = line.split_whitespace().collect();
        let [kind, mode, sets, source, dest] = f.as_slice() else {
            return Err(bad("not five fields"));
        };
        if !matches!(
            *kind,
            "build" | "build?" | "repo" | "config" | "unit" | "dir" | "state" | "link"
        ) {
            return Err(bad("unknown kind"));
        }
        let mode = match *mode {
            "-" => None,
            m => Some(u32::from_str_radix(m, 8).map_err(|_| bad("mode is not octal"))?),
        };
        if !dest.starts_with('/') {
            return Err(bad("destination is not absolute"));
        }
        out.push(Entry {
            kind: kind.to_string(),
            mode,
            sets: sets.split(',').map(str::to_string).collect(),
            source: source.to_string(),
            dest: dest.to_string(),
        });
    }
    Ok(out)
}

/// The list of the source tree this crate belongs to.
pub fn load() -> Result<Vec<Entry>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/files.list");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Missing(format!("{}: {e}", path.display())))?;
    parse(&text)
}

/// Every path of a testbed's rootfs but the kernel's, the package manager's own records
/// and logs, scratch directories and the bind mounts (the target dir and source tree under
/// /p4lb): compared before an install and after the uninstall, it shows what was left.
pub fn rootfs_tree(tb: &Testbed) -> Result<BTreeSet<String>> {
    let out = tb.sh(
        "find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
         -o -path /p4lb -o -path /var/lib/dpkg -o -path /var/lib/apt -o -path /var/log \
         -o -path /var/cache -o -path /oldroot \\) -prune -o -print",
    )?;
    Ok(out.lines().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_list_parses_and_names_each_destination_once() {
        let list = load().unwrap();
        let mut dests: Vec<&str> = list.iter().map(|e| e.dest.as_str()).collect();
        dests.sort();
        let n = dests.len();
        dests.dedup();
        assert_eq!(dests.len(), n, "a destination is listed twice");
        assert!(list
            .iter()
            .any(|e| e.dest == "/usr/libexec/netavark/p4lb" && e.optional()));
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        let e = parse("# c\nbuild 0755 host p4lb\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(parse("copy 0755 host a /b\n").is_err());
        assert!(parse("build 0799 host a /b\n").is_err());
        assert!(parse("build 0755 host a b\n").is_err());
        assert_eq!(
            parse("link - host,node /a /b\n").unwrap()[0].sets,
            vec!["host", "node"]
        );
    }
}
