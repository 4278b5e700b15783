//! Caller identity: which network namespace a pid or path stands for, and which
//! IPv4 addresses are configured in it. Resolved by the controller itself, never
//! taken on the caller's word.
//!
//! The namespace is named by the inode of the path (`/proc/<pid>/ns/net` or a netns
//! bind mount); its addresses are listed over rtnetlink inside it through `p4lb-netns`
//! (a thread of its own joins the namespace, so the controller's threads never move).
//!
//! Who may claim an identity ([`check_claim`]): the kernel names the connecting
//! process (SO_PEERCRED pid on the API socket). A root process in the controller's own
//! network namespace (the CNI plugin, the CRIU action script naming `CRTOOLS_INIT_PID`,
//! the OCI hook, `p4lbctl`) may name any namespace; any other caller only the one its
//! own pid lives in.

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use p4lb_netns::NetNs;
use p4lb_proto::api::Identity;

use crate::error::{Error, Result};

/// A resolved network namespace.
#[derive(Debug, Clone)]
pub struct Netns {
    pub inode: u64,
    /// Local IPv4 addresses configured in it (None if they could not be read).
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
/// its own namespace, or any namespace when the peer is root in the controller's own
/// network namespace (host-side tooling acting for a container).
pub fn check_claim(peer: Peer, claimed: &Netns) -> Result<()> {
    let Some(pid) = peer.pid.filter(|p| *p > 0) else {
        if peer.uid == 0 {
            return Ok(());
        }
        return Err(Error::denied(format!(
            "caller uid {} has no pid the kernel reports: it may not claim {}",
            peer.uid, claimed.described
        )));
    };
    let own = netns_inode(Path::new(&format!("/proc/{pid}/ns/net"))).map_err(|e| {
        Error::denied(format!(
            "caller pid {pid}: its network namespace cannot be read ({e})"
        ))
    })?;
    if own == claimed.inode {
        return Ok(());
    }
    if peer.uid == 0 {
        let host = netns_inode(Path::new("/proc/self/ns/net"))
            .map_err(|e| Error::Internal(format!("the controller's own network namespace: {e}")))?;
        if own == host {
            return Ok(());
        }
    }
    Err(Error::denied(format!(
        "caller pid {pid} (uid {}, netns inode {own}) claims {} (netns inode {}): a caller \
         may speak only for its own network namespace (only root in the controller's \
         network namespace may name another)",
        peer.uid, claimed.described, claimed.inode
    )))
}

/// Inode of the network namespace at `path` (a netns bind mount or /proc/PID/ns/net).
pub fn netns_inode(path: &Path) -> std::io::Result<u64> {
    std::fs::metadata(path).map(|m| m.ino())
}

/// Resolves an identity to its namespace; INVALID_ARGUMENT when it names nothing,
/// NOT_FOUND when the pid or path does not exist.
pub fn resolve(id: Option<&Identity>, read_addrs: bool) -> Result<Netns> {
    let id = id.ok_or_else(|| Error::invalid("identity is required (pid or netns_path)"))?;
    if id.pid != 0 {
        let ns = format!("/proc/{}/ns/net", id.pid);
        let inode = netns_inode(Path::new(&ns))
            .map_err(|e| Error::not_found(format!("identity pid {}: {e}", id.pid)))?;
        let addrs = if read_addrs {
            NetNs::from_pid(id.pid).and_then(|ns| ns.ipv4_addrs()).ok()
        } else {
            None
        };
        return Ok(Netns {
            inode,
            addrs,
            described: format!("pid {}", id.pid),
        });
    }
    if !id.netns_path.is_empty() {
        let p = Path::new(&id.netns_path);
        if !p.is_absolute() {
            return Err(Error::invalid(format!(
                "identity netns_path {:?} must be absolute",
                id.netns_path
            )));
        }
        let inode = netns_inode(p)
            .map_err(|e| Error::not_found(format!("identity netns {}: {e}", id.netns_path)))?;
        let addrs = if read_addrs {
            addrs_in_netns(p).ok()
        } else {
            None
        };
        return Ok(Netns {
            inode,
            addrs,
            described: format!("netns {}", id.netns_path),
        });
    }
    Err(Error::invalid(
        "identity is empty: give a pid or a netns_path",
    ))
}

/// The IPv4 addresses configured in the network namespace at `path`.
pub fn addrs_in_netns(path: &Path) -> Result<Vec<Ipv4Addr>, p4lb_netns::Error> {
    NetNs::open(path)?.ipv4_addrs()
}

/// Checks that `ns` is the namespace recorded for an endpoint, and (when the
/// addresses are known and checking is on) that `ip` is configured in it.
pub fn verify(ns: &Netns, inode: u64, ip: Ipv4Addr, what: &str, check_addrs: bool) -> Result<()> {
    if ns.inode != inode {
        return Err(Error::denied(format!(
            "{} (netns inode {}) is not the network namespace of {what} (inode {inode})",
            ns.described, ns.inode
        )));
    }
    if check_addrs {
        match &ns.addrs {
            Some(a) if !a.contains(&ip) => {
                return Err(Error::denied(format!(
                    "{} does not have {ip} configured, {what} does",
                    ns.described
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_addresses_configured_in_a_namespace_by_path_and_pid() {
        p4lb_testutil::require_root();
        let ns = p4lb_testutil::NamedNetns::unique("p4id");
        ns.link_up("lo").unwrap();
        ns.add_addr("lo", "10.88.0.5/32").unwrap();
        let mut by_path = addrs_in_netns(ns.path()).unwrap();
        by_path.sort();
        assert_eq!(
            by_path,
            vec![Ipv4Addr::new(10, 88, 0, 5), Ipv4Addr::new(127, 0, 0, 1)]
        );

        let mut inside = ns.command("sleep").arg("30").spawn().unwrap();
        let id = Identity {
            pid: inside.id(),
            netns_path: String::new(),
        };
        let resolved = resolve(Some(&id), true);
        let _ = inside.kill();
        let _ = inside.wait();
        let resolved = resolved.unwrap();
        assert_eq!(resolved.inode, ns.netns().inode());
        let mut addrs = resolved.addrs.clone().unwrap();
        addrs.sort();
        assert_eq!(addrs, by_path);
        assert!(verify(
            &resolved,
            ns.netns().inode(),
            Ipv4Addr::new(10, 88, 0, 5),
            "x",
            true
        )
        .is_ok());
        assert!(matches!(
            verify(
                &resolved,
                ns.netns().inode(),
                Ipv4Addr::new(10, 88, 0, 6),
                "x",
                true
            ),
            Err(Error::PermissionDenied(_))
        ));
    }

    #[test]
    fn resolves_own_pid_and_checks() {
        let me = Identity {
            pid: std::process::id(),
            netns_path: String::new(),
        };
        let ns = resolve(Some(&me), true).unwrap();
        let own = netns_inode(Path::new("/proc/self/ns/net")).unwrap();
        assert_eq!(ns.inode, own);
        let by_path = resolve(
            Some(&Identity {
                pid: 0,
                netns_path: "/proc/self/ns/net".into(),
            }),
            true,
        )
        .unwrap();
        assert_eq!(by_path.inode, own);
        assert!(by_path
            .addrs
            .as_ref()
            .map(|a| a.contains(&Ipv4Addr::LOCALHOST))
            .unwrap_or(true));
        assert!(verify(&ns, own, Ipv4Addr::LOCALHOST, "x", true).is_ok());
        assert!(matches!(
            verify(&ns, own + 1, Ipv4Addr::LOCALHOST, "x", true),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            verify(&ns, own, Ipv4Addr::new(192, 0, 2, 99), "x", true),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            resolve(None, false),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            resolve(Some(&Identity::default()), false),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            resolve(
                Some(&Identity {
                    pid: 0,
                    netns_path: "/nonexistent/ns".into()
                }),
                false
            ),
            Err(Error::NotFound(_))
        ));
    }
}
