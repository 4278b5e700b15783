//! Cgroups of a testbed on a hybrid (v1 + cgroup2 "unified") host.
//!
//! Podman (cgroupfs manager) and containerd create v1 cgroups under fixed
//! names (`libpod_parent`, `k8s.io`), and crun cannot use the cgroup2
//! hierarchy there, so container processes inherit the cgroup2 group of
//! whoever started them. CRIU dumps a task's cgroup2 group *with all its
//! descendants* and recreates them under the restored container's group: if
//! that group is the hierarchy's root, every restore copies the whole
//! hierarchy into itself and the host fills with millions of empty groups.
//! So each testbed's init moves into its own empty cgroup2 leaf, and empty
//! container groups are removed when a testbed stops.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The cgroup2 mount of a hybrid host.
pub const UNIFIED: &str = "/sys/fs/cgroup/unified";
/// Parent of the per-session cgroup2 leaves.
pub const SESSIONS_GROUP: &str = "p4lb-testbed";
/// Top-level group names containers get under each hierarchy.
const CONTAINER_PARENTS: &[&str] = &["libpod_parent", "k8s.io", "kubepods", SESSIONS_GROUP];

/// The cgroup2 leaf of session `name`, if the host is hybrid.
pub fn session_leaf(name: &str) -> Option<PathBuf> {
    let unified = Path::new(UNIFIED);
    unified
        .join("cgroup.procs")
        .exists()
        .then(|| unified.join(SESSIONS_GROUP).join(name))
}

/// Moves the calling process into session `name`'s cgroup2 leaf (no-op on
/// hosts without a separate cgroup2 mount).
pub fn enter_session_leaf(name: &str) -> std::io::Result<()> {
    let Some(leaf) = session_leaf(name) else {
        return Ok(());
    };
    std::fs::create_dir_all(&leaf)?;
    std::fs::write(leaf.join("cgroup.procs"), "0")
}

fn rmdir_empty_tree(dir: &Path, min_age: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            rmdir_empty_tree(&e.path(), min_age);
        }
    }
    let old_enough = std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .map(|t| t.elapsed().unwrap_or_default() >= min_age)
        .unwrap_or(false);
    if old_enough {
        // Fails (EBUSY) while the group has processes or children: that is the check.
        let _ = std::fs::remove_dir(dir);
    }
}

/// Removes session `name`'s cgroup2 leaf (after its processes are gone).
pub fn remove_session_leaf(name: &str) {
    if let Some(leaf) = session_leaf(name) {
        rmdir_empty_tree(&leaf, Duration::ZERO);
    }
}

/// Removes empty container groups older than `min_age` from every hierarchy.
/// Groups with processes or children are kept (rmdir refuses them).
pub fn prune_empty(min_age: Duration) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut roots: Vec<PathBuf> = hierarchies.flatten().map(|e| e.path()).collect();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    for root in roots {
        for parent in CONTAINER_PARENTS {
            let p = root.join(parent);
            if p.is_dir() {
                rmdir_empty_tree(&p, min_age);
            }
        }
    }
}

/// Removes the empty groups CRIU copied *below* a restored container's
/// cgroup2 group (`libpod_parent/libpod-<id>/...`). Call it after each
/// restore: every later dump copies them again, so they double per restore.
pub fn prune_restore_copies(container_id: &str) {
    let group = Path::new(UNIFIED)
        .join("libpod_parent")
        .join(format!("libpod-{container_id}"));
    let Ok(entries) = std::fs::read_dir(&group) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            rmdir_empty_tree(&e.path(), Duration::ZERO);
        }
    }
}
