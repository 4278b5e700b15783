//! Caller identity: which network namespace a pid or path stands for, which IPv4
//! addresses are configured in it, and whether the process at the other end of a Unix
//! socket may speak for it. Resolved by whoever serves p4lb's API on a node (the
//! controller on its own host, the node agent's relay on the others), never taken on the
//! caller's word.
//!
//! The namespace is named by the inode of the path (`/proc/<pid>/ns/net` or a netns
//! bind mount); its addresses are listed over rtnetlink inside it ([`crate::NetNs`]).
//!
//! Who may claim an identity ([`check_claim`]): the kernel names the connecting
//! process (SO_PEERCRED pid on the API socket). A root process in the server's own
//! network namespace (the CNI plugin, the CRIU action script naming `CRTOOLS_INIT_PID`,
//! the OCI hook, `p4lbctl`) may name any namespace; any other caller only the one its
//! own pid lives in.

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::{AddrSockets, NetNs};

/// Why an identity was refused; each kind maps to one gRPC code (invalid argument, not
/// found, permission denied, internal).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Internal(String),
}

/// A resolved network namespace.
#[derive(Debug, Clone)]
pub struct Netns {
    pub inode: u64,
    /// Local IPv4 addresses configured in it (None if they could not be read, or were
    /// not asked for).
    pub addrs: Option<Vec<Ipv4Addr>>,
    /// How it was named, for messages.
    pub described: String,
}

/// The process at the other end of an API connection, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    /// None where the kernel does not report it.
    pub pid: Option<i32>,
}

/// PERMISSION_DENIED unless `peer` may speak for the namespace `claimed` resolved to:
/// its own namespace, or any namespace when the peer is root in the server's own
/// network namespace (host-side tooling acting for a container).
pub fn check_claim(peer: Peer, claimed: &Netns) -> Result<(), IdentityError> {
    let Some(pid) = peer.pid.filter(|p| *p > 0) else {
        if peer.uid == 0 {
            return Ok(());
        }
        return Err(IdentityError::Denied(format!(
            "caller uid {} has no pid the kernel reports: it may not claim {}",
            peer.uid, claimed.described
        )));
    };
    let own = netns_inode(Path::new(&format!("/proc/{pid}/ns/net"))).map_err(|e| {
        IdentityError::Denied(format!(
            "caller pid {pid}: its network namespace cannot be read ({e})"
        ))
    })?;
    if own == claimed.inode {
        return Ok(());
    }
    if peer.uid == 0 {
        let host = netns_inode(Path::new("/proc/self/ns/net")).map_err(|e| {
            IdentityError::Internal(format!("the server's own network namespace: {e}"))
        })?;
        if own == host {
            return Ok(());
        }
    }
    Err(IdentityError::Denied(format!(
        "caller pid {pid} (uid {}, netns inode {own}) claims {} (netns inode {}): a caller \
         may speak only for its own network namespace (only root in the server's \
         network namespace may name another)",
        peer.uid, claimed.described, claimed.inode
    )))
}

/// Inode of the network namespace at `path` (a netns bind mount or /proc/PID/ns/net).
pub fn netns_inode(path: &Path) -> std::io::Result<u64> {
    std::fs::metadata(path).map(|m| m.ino())
}

/// Resolves an identity given as a pid (when not 0) or a netns path to its namespace,
/// with its addresses when `read_addrs`; INVALID_ARGUMENT when it names nothing,
/// NOT_FOUND when the pid or path does not exist.
pub fn resolve(pid: u32, netns_path: &str, read_addrs: bool) -> Result<Netns, IdentityError> {
    resolve_with(pid, netns_path, read_addrs, None)
}

/// [`resolve`], reading the addresses over the socket kept in the namespace when
/// `sockets` has one.
pub fn resolve_with(
    pid: u32,
    netns_path: &str,
    read_addrs: bool,
    sockets: Option<&AddrSockets>,
) -> Result<Netns, IdentityError> {
    if pid != 0 {
        let ns = format!("/proc/{pid}/ns/net");
        let inode = netns_inode(Path::new(&ns))
            .map_err(|e| IdentityError::NotFound(format!("identity pid {pid}: {e}")))?;
        let addrs = if read_addrs {
            read_addrs_of(inode, sockets, || NetNs::from_pid(pid))
        } else {
            None
        };
        return Ok(Netns {
            inode,
            addrs,
            described: format!("pid {pid}"),
        });
    }
    if !netns_path.is_empty() {
        let p = Path::new(netns_path);
        if !p.is_absolute() {
            return Err(IdentityError::Invalid(format!(
                "identity netns_path {netns_path:?} must be absolute"
            )));
        }
        let inode = netns_inode(p)
            .map_err(|e| IdentityError::NotFound(format!("identity netns {netns_path}: {e}")))?;
        let addrs = if read_addrs {
            read_addrs_of(inode, sockets, || NetNs::open(p))
        } else {
            None
        };
        return Ok(Netns {
            inode,
            addrs,
            described: format!("netns {netns_path}"),
        });
    }
    Err(IdentityError::Invalid(
        "identity is empty: give a pid or a netns_path".into(),
    ))
}

/// The addresses of the namespace whose inode is `inode` (None if they cannot be
/// read): over the socket `sockets` keeps in it, else by opening it (`open`), which
/// must still give the namespace `inode` named. Nothing is kept here: which
/// namespaces deserve a kept socket is the owner's choice ([`AddrSockets::keep`]).
fn read_addrs_of(
    inode: u64,
    sockets: Option<&AddrSockets>,
    open: impl FnOnce() -> crate::Result<NetNs>,
) -> Option<Vec<Ipv4Addr>> {
    if let Some(kept) = sockets.and_then(|s| s.ipv4_addrs(inode)) {
        return kept.ok();
    }
    let ns = open().ok().filter(|ns| ns.inode() == inode)?;
    ns.ipv4_addrs().ok()
}

/// Checks that `ns` is the namespace recorded for an endpoint, and (when the
/// addresses are known and checking is on) that `ip` is configured in it.
pub fn verify(
    ns: &Netns,
    inode: u64,
    ip: Ipv4Addr,
    what: &str,
    check_addrs: bool,
) -> Result<(), IdentityError> {
    if ns.inode != inode {
        return Err(IdentityError::Denied(format!(
            "{} (netns inode {}) is not the network namespace of {what} (inode {inode})",
            ns.described, ns.inode
        )));
    }
    if check_addrs {
        match &ns.addrs {
            Some(a) if !a.contains(&ip) => {
                return Err(IdentityError::Denied(format!(
                    "{} does not have {ip} configured, {what} does",
                    ns.described
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The address of an endpoint that `ns` has configured: its own `ip`, or one of
/// `others` (addresses that moved with a migrated container, its restore's source);
/// `ip` when none is (or the addresses are unknown), for [`verify`] to refuse.
pub fn configured_ip(ns: &Netns, ip: Ipv4Addr, others: &[Ipv4Addr]) -> Ipv4Addr {
    ns.addrs
        .as_ref()
        .and_then(|a| {
            std::iter::once(&ip)
                .chain(others)
                .find(|x| a.contains(x))
                .copied()
        })
        .unwrap_or(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> u64 {
        netns_inode(Path::new("/proc/self/ns/net")).unwrap()
    }

    #[test]
    fn resolves_own_pid_and_path_and_verifies() {
        let ns = resolve(std::process::id(), "", true).unwrap();
        assert_eq!(ns.inode, own());
        let by_path = resolve(0, "/proc/self/ns/net", true).unwrap();
        assert_eq!(by_path.inode, own());
        assert!(verify(&ns, own(), Ipv4Addr::LOCALHOST, "x", true).is_ok());
        assert!(matches!(
            verify(&ns, own() + 1, Ipv4Addr::LOCALHOST, "x", true),
            Err(IdentityError::Denied(_))
        ));
        assert!(matches!(
            verify(&ns, own(), Ipv4Addr::new(192, 0, 2, 99), "x", true),
            Err(IdentityError::Denied(_))
        ));
        assert!(verify(&ns, own(), Ipv4Addr::new(192, 0, 2, 99), "x", false).is_ok());
    }

    #[test]
    fn empty_relative_and_missing_identities_are_refused() {
        assert!(matches!(
            resolve(0, "", false),
            Err(IdentityError::Invalid(_))
        ));
        assert!(matches!(
            resolve(0, "run/netns/x", false),
            Err(IdentityError::Invalid(_))
        ));
        assert!(matches!(
            resolve(0, "/nonexistent/ns", false),
            Err(IdentityError::NotFound(_))
        ));
    }

    #[test]
    fn a_caller_may_claim_its_own_namespace_and_root_in_ours_any() {
        let me = Netns {
            inode: own(),
            addrs: None,
            described: "self".into(),
        };
        let other = Netns {
            inode: own() + 1,
            addrs: None,
            described: "other".into(),
        };
        let pid = Some(std::process::id() as i32);
        // Our own namespace: anyone whose pid lives in it.
        assert!(check_claim(Peer { uid: 1000, pid }, &me).is_ok());
        // Another namespace: root in ours only.
        assert!(check_claim(Peer { uid: 0, pid }, &other).is_ok());
        assert!(matches!(
            check_claim(Peer { uid: 1000, pid }, &other),
            Err(IdentityError::Denied(_))
        ));
        // No pid reported: root only.
        assert!(check_claim(Peer { uid: 0, pid: None }, &other).is_ok());
        assert!(matches!(
            check_claim(
                Peer {
                    uid: 1000,
                    pid: None
                },
                &other
            ),
            Err(IdentityError::Denied(_))
        ));
    }

    #[test]
    fn the_configured_address_is_found_among_the_endpoints_addresses() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let ns = Netns {
            inode: 1,
            addrs: Some(vec![a("10.0.0.9"), a("10.0.0.5")]),
            described: "x".into(),
        };
        assert_eq!(configured_ip(&ns, a("10.0.0.9"), &[]), a("10.0.0.9"));
        assert_eq!(
            configured_ip(&ns, a("10.0.0.7"), &[a("10.0.0.5")]),
            a("10.0.0.5")
        );
        assert_eq!(configured_ip(&ns, a("10.0.0.7"), &[]), a("10.0.0.7"));
    }
}
