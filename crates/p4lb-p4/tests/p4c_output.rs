//! When p4c is installed, p4lb.p4 must compile and the checked-in P4Info must be exactly the
//! compiler's output. Without p4c the test prints SKIPPED (set P4LB_REQUIRE_P4C=1 to make that a
//! failure instead).

use std::path::{Path, PathBuf};
use std::process::Command;

const P4C: &str = "p4c-bm2-ss";

fn find_p4c() -> Option<PathBuf> {
    if let Some(prefix) = std::env::var_os("P4LB_P4_PREFIX") {
        let p = Path::new(&prefix).join("bin").join(P4C);
        if p.is_file() {
            return Some(p);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(P4C))
        .find(|p| p.is_file())
}

#[test]
fn checked_in_p4info_equals_p4c_output() {
    let Some(p4c) = find_p4c() else {
        let msg = format!(
            "{P4C} not found (set P4LB_P4_PREFIX=<prefix> or put it on PATH): \
             P4Info not compared with the compiler's output"
        );
        if std::env::var("P4LB_REQUIRE_P4C").as_deref() == Ok("1") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let info = dir.path().join("p4lb.p4info.txt");
    let json = dir.path().join("p4lb.json");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("p4lb.p4");
    let out = Command::new(&p4c)
        .arg("--arch")
        .arg("v1model")
        .arg("--p4runtime-files")
        .arg(&info)
        .arg("-o")
        .arg(&json)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", p4c.display()));
    assert!(
        out.status.success(),
        "{} failed: {}\n{}",
        p4c.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let emitted = std::fs::read_to_string(&info).unwrap();
    assert!(
        emitted == p4lb_p4::P4INFO_TXTPB,
        "crates/p4lb-p4/p4lb.p4info.txtpb differs from {}'s output; run `make -C crates/p4lb-p4 p4info`",
        p4c.display()
    );
    p4lb_p4::bmv2::load_bmv2_json(&json).expect("p4c wrote a BMv2 JSON program");
}
