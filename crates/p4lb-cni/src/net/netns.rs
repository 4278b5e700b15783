//! Opening a network namespace by path and doing things inside it.
//!
//! Sockets remember the namespace they were created in, so "doing things inside" only
//! means creating a socket there: the calling thread switches in with `setns(2)`, runs
//! a short synchronous closure, and switches back before anything else runs on it.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use crate::cni::error::{CniError, Code};

/// `NSFS_MAGIC` from linux/magic.h: the filesystem of /proc/*/ns/* and their bind mounts.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens `path` and checks it is a network namespace other than ours.
    /// A missing path is error 3 (the container is gone); anything else that is not a
    /// network namespace is error 4 (CNI_NETNS is invalid).
    pub fn open(path: &Path) -> Result<Self, CniError> {
        let file = File::open(path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                CniError::new(Code::UnknownContainer, "network namespace does not exist")
                    .details(format!("CNI_NETNS={}", path.display()))
            } else {
                CniError::new(Code::InvalidEnvironment, "cannot open CNI_NETNS")
                    .details(format!("{}: {e}", path.display()))
            }
        })?;
        let ns = NetNs {
            file,
            path: path.to_path_buf(),
        };
        if !ns.is_nsfs()? {
            return Err(
                CniError::new(Code::InvalidEnvironment, "CNI_NETNS is not a namespace")
                    .details(path.display().to_string()),
            );
        }
        let ours = File::open("/proc/self/ns/net")
            .and_then(|f| f.metadata())
            .map_err(|e| {
                CniError::new(Code::IoFailure, "cannot read own netns").details(e.to_string())
            })?;
        if ns.inode()? == ours.ino() {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                "CNI_NETNS is the plugin's own network namespace",
            )
            .details(path.display().to_string()));
        }
        Ok(ns)
    }

    /// Opens a namespace without the "not ours" check (the switch's namespace may be
    /// the host's).
    pub fn open_any(path: &Path) -> Result<Self, CniError> {
        let file = File::open(path).map_err(|e| {
            CniError::new(Code::InvalidNetworkConfig, "cannot open switchNetns")
                .details(format!("{}: {e}", path.display()))
        })?;
        Ok(NetNs {
            file,
            path: path.to_path_buf(),
        })
    }

    fn is_nsfs(&self) -> Result<bool, CniError> {
        let st = nix::sys::statfs::fstatfs(self.file.as_fd()).map_err(|e| {
            CniError::new(Code::IoFailure, "fstatfs CNI_NETNS").details(e.to_string())
        })?;
        #[allow(clippy::unnecessary_cast)]
        Ok(st.filesystem_type().0 as i64 == NSFS_MAGIC)
    }

    pub fn inode(&self) -> Result<u64, CniError> {
        self.file
            .metadata()
            .map(|m| m.ino())
            .map_err(|e| CniError::new(Code::IoFailure, "stat CNI_NETNS").details(e.to_string()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Runs `f` with the calling thread inside this namespace.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, CniError> {
        let home = File::open("/proc/thread-self/ns/net").map_err(|e| {
            CniError::new(Code::Netlink, "cannot open current netns").details(e.to_string())
        })?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
            CniError::new(Code::Netlink, "cannot enter network namespace")
                .details(format!("{}: {e}", self.path.display()))
        })?;
        let out = f();
        // Failing to return would leave this thread in the container: nothing after
        // this may run here, so stop the process rather than continue.
        if let Err(e) = setns(home.as_fd(), CloneFlags::CLONE_NEWNET) {
            eprintln!("p4lb: cannot return to the original network namespace: {e}");
            std::process::abort();
        }
        Ok(out)
    }
}
