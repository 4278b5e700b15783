//! The plugin's network namespaces: `CNI_NETNS` and the optional `switchNetns`, opened
//! and entered through `p4lb-netns`, with its errors mapped to CNI error codes.
//!
//! Sockets remember the namespace they were created in, so "doing things inside" only
//! means creating a socket there; `p4lb-netns` does that on a thread of its own, so the
//! plugin's own threads never change namespace.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use p4lb_netns::Error as NsError;

use crate::cni::error::{CniError, Code};

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs(p4lb_netns::NetNs);

impl NetNs {
    /// Opens `path` and checks it is a network namespace other than ours.
    /// A missing path is error 3 (the container is gone); anything else that is not a
    /// network namespace is error 4 (CNI_NETNS is invalid).
    pub fn open(path: &Path) -> Result<Self, CniError> {
        let ns = p4lb_netns::NetNs::open(path).map_err(|e| match e {
            NsError::NotFound { .. } => {
                CniError::new(Code::UnknownContainer, "network namespace does not exist")
                    .details(format!("CNI_NETNS={}", path.display()))
            }
            NsError::NotNetns { .. } => {
                CniError::new(Code::InvalidEnvironment, "CNI_NETNS is not a namespace")
                    .details(path.display().to_string())
            }
            NsError::Inspect { source, .. } => {
                CniError::new(Code::IoFailure, "inspecting CNI_NETNS").details(source.to_string())
            }
            e => CniError::new(Code::InvalidEnvironment, "cannot open CNI_NETNS")
                .details(e.to_string()),
        })?;
        let ours = p4lb_netns::NetNs::current().map_err(|e| {
            CniError::new(Code::IoFailure, "cannot read own netns").details(e.to_string())
        })?;
        if ns.same_as(&ours) {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                "CNI_NETNS is the plugin's own network namespace",
            )
            .details(path.display().to_string()));
        }
        Ok(NetNs(ns))
    }

    /// Opens a namespace without the "not ours" check (the switch's namespace may be
    /// the host's).
    pub fn open_any(path: &Path) -> Result<Self, CniError> {
        p4lb_netns::NetNs::open(path).map(NetNs).map_err(|e| {
            CniError::new(Code::InvalidNetworkConfig, "cannot open switchNetns")
                .details(e.to_string())
        })
    }

    pub fn inode(&self) -> u64 {
        self.0.inode()
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Runs `f` inside this namespace (on a thread of its own) and returns its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, CniError> {
        self.0.run(f).map_err(enter_error)
    }

    /// An rtnetlink connection inside this namespace, registered with the current
    /// tokio runtime.
    pub fn netlink(&self) -> Result<(p4lb_netns::Connection, rtnetlink::Handle), CniError> {
        self.0.netlink().map_err(|e| match e {
            NsError::Socket { source, .. } => {
                CniError::new(Code::Netlink, "netlink socket in netns").details(source.to_string())
            }
            e => enter_error(e),
        })
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

fn enter_error(e: NsError) -> CniError {
    CniError::new(Code::Netlink, "cannot enter network namespace").details(e.to_string())
}
