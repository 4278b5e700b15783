//! The static `p4lb-testapp` binary that images and tests run inside the testbed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use crate::error::{Context, Error, Result};
use crate::paths;

/// The target triple static binaries are built for.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

fn newest_source(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let t = if p.is_dir() {
            newest_source(&p)
        } else {
            e.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// True when the static binary is newer than every file of the testapp crate.
fn up_to_date(bin: &Path) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return false;
    };
    // Cargo.lock is left out on purpose: it changes with every crate's
    // dependencies, and `make test` rebuilds the static binary before testing.
    let src = paths::repo_root().join("crates").join("p4lb-testapp");
    newest_source(&src).is_some_and(|n| n <= built)
}

/// Builds the static test application unless it is newer than its sources
/// (cargo is not even started then: it would wait for the shared target
/// directory's lock) and returns its host path.
pub fn ensure_static() -> Result<PathBuf> {
    let bin = paths::static_testapp();
    if up_to_date(&bin) {
        return Ok(bin);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "-p",
            "p4lb-testapp",
            "--target",
            STATIC_TARGET,
        ])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", paths::target_dir())
        .current_dir(paths::repo_root())
        .status()
        .ctx(|| format!("running {} build -p p4lb-testapp", cargo.to_string_lossy()))?;
    if !status.success() || !bin.is_file() {
        return Err(Error::Missing(format!(
            "the static p4lb-testapp could not be built ({status}); build it with \
             RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p p4lb-testapp \
             --target {STATIC_TARGET}"
        )));
    }
    Ok(bin)
}
