//! Caller identity: which network namespace a pid or path stands for, and which
//! IPv4 addresses are configured in it. Resolved by the controller itself, never
//! taken on the caller's word.

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

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
            std::fs::read_to_string(format!("/proc/{}/net/fib_trie", id.pid))
                .ok()
                .map(|t| local_addrs(&t))
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

/// Reads the local addresses of the namespace at `path` from a helper thread that
/// joins it (setns affects only that thread, which then ends).
pub fn addrs_in_netns(path: &Path) -> std::io::Result<Vec<Ipv4Addr>> {
    let path = path.to_path_buf();
    std::thread::spawn(move || -> std::io::Result<Vec<Ipv4Addr>> {
        let f = std::fs::File::open(&path)?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        let text = std::fs::read_to_string("/proc/thread-self/net/fib_trie")?;
        Ok(local_addrs(&text))
    })
    .join()
    .map_err(|_| std::io::Error::other("netns reader thread panicked"))?
}

/// Extracts the host-local addresses ("/32 host LOCAL") from /proc/net/fib_trie.
pub fn local_addrs(fib_trie: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("|-- ") {
            last = rest.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(a) = last {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    out
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

    const SAMPLE: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.88.0.0/24 2 0 2
        |-- 10.88.0.0
           /24 link UNICAST
        |-- 10.88.0.5
           /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
        |-- 10.88.0.5
           /32 host LOCAL
";

    #[test]
    fn parses_fib_trie() {
        assert_eq!(
            local_addrs(SAMPLE),
            vec![Ipv4Addr::new(10, 88, 0, 5), Ipv4Addr::new(127, 0, 0, 1)]
        );
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
