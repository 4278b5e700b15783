//! One controller per state directory: an exclusive `flock` on
//! `<state_dir>/controller.lock`, taken before anything else (state, switch,
//! sockets) and held for the life of the process. A second controller started on
//! the same state directory fails at once with [`LockError::Held`] instead of
//! taking over the first one's sockets. The kernel drops the lock when the
//! process exits, however it exits, so a crash never leaves a stale lock.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The lock file in the state directory.
pub const LOCK_FILE: &str = "controller.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another p4lb-controller is running on state directory {dir} (it holds {lock}{holder}); stop it first or use another state directory")]
    Held {
        dir: PathBuf,
        lock: PathBuf,
        holder: String,
    },
    #[error("locking {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl StateLock {
    /// Creates the state directory (mode 0700) if needed and takes the lock
    /// without waiting. The lock file holds the pid of the holder.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let holder = p4lb_api::read_bounded(&path, 64)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .map(|pid| format!(", pid {pid}"))
                    .unwrap_or_default();
                return Err(LockError::Held {
                    dir: state_dir.to_path_buf(),
                    lock: path,
                    holder,
                });
            }
            Err((_, e)) => return Err(io(std::io::Error::from(e))),
        };
        // The pid is informative only (the lock is the flock, not the content).
        lock.set_len(0).map_err(io)?;
        writeln!(&mut *lock, "{}", std::process::id()).map_err(io)?;
        Ok(StateLock { _lock: lock, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_until_the_first_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        let first = StateLock::acquire(&dir).unwrap();
        assert_eq!(first.path(), dir.join(LOCK_FILE));
        let e = StateLock::acquire(&dir).unwrap_err();
        assert!(matches!(e, LockError::Held { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("another p4lb-controller is running"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        StateLock::acquire(&dir).unwrap();
    }
}
