//! The static `p4lb-testapp` binary that images and tests run inside the testbed.

use std::path::PathBuf;
use std::process::Command;

use crate::error::{Context, Error, Result};
use crate::paths;

/// The target triple static binaries are built for.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds the static test application (a no-op when it is up to date) and
/// returns its host path.
pub fn ensure_static() -> Result<PathBuf> {
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
    let bin = paths::static_testapp();
    if !status.success() || !bin.is_file() {
        return Err(Error::Missing(format!(
            "the static p4lb-testapp could not be built ({status}); build it with \
             RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p p4lb-testapp \
             --target {STATIC_TARGET}"
        )));
    }
    Ok(bin)
}
