//! Where the testbed keeps things on the host.

use std::path::{Path, PathBuf};

/// The repository root (two levels above this crate's directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Root of the rootfs cache: `P4LB_TESTBED_CACHE` or `<repo>/.cache/testbed`.
pub fn cache_root() -> PathBuf {
    match std::env::var_os("P4LB_TESTBED_CACHE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join(".cache").join("testbed"),
    }
}

/// Where running testbeds keep their writable layers and state.
pub fn sessions_dir() -> PathBuf {
    cache_root().join("sessions")
}

/// Cargo's target directory: `CARGO_TARGET_DIR` or `<repo>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                p
            } else {
                repo_root().join(p)
            }
        }
        _ => repo_root().join("target"),
    }
}

/// Where the target directory appears inside the testbed.
pub const TARGET_INSIDE: &str = "/p4lb/target";

/// The static test application on the host.
pub fn static_testapp() -> PathBuf {
    target_dir()
        .join(crate::testapp::STATIC_TARGET)
        .join("release")
        .join("p4lb-testapp")
}

/// Maps a path under the target directory to its path inside the testbed.
pub fn inside_target(host: &Path) -> Option<PathBuf> {
    let rel = host.strip_prefix(target_dir()).ok()?;
    Some(Path::new(TARGET_INSIDE).join(rel))
}

/// Finds an executable in PATH (and the sbin directories root usually has).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
