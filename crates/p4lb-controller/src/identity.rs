//! Caller identity, as the controller applies it: the rules (which namespace a pid or
//! path stands for, its addresses, who may claim it) are `p4lb_netns::identity`, shared
//! with the node agent's relay; here they take the API's [`Identity`] and answer with
//! the controller's [`Error`].

use std::net::Ipv4Addr;

use p4lb_netns::identity::{self as rules, IdentityError};
use p4lb_netns::AddrSockets;
use p4lb_proto::api::Identity;

use crate::error::{Error, Result};

pub use rules::{configured_ip, netns_inode, Netns, Peer};

impl From<IdentityError> for Error {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Invalid(m) => Error::InvalidArgument(m),
            IdentityError::NotFound(m) => Error::NotFound(m),
            IdentityError::Denied(m) => Error::PermissionDenied(m),
            IdentityError::Internal(m) => Error::Internal(m),
        }
    }
}

/// PERMISSION_DENIED unless `peer` may speak for `claimed` ([`rules::check_claim`]).
pub fn check_claim(peer: Peer, claimed: &Netns) -> Result<()> {
    Ok(rules::check_claim(peer, claimed)?)
}

/// Resolves an identity to its namespace; INVALID_ARGUMENT when it names nothing,
/// NOT_FOUND when the pid or path does not exist.
pub fn resolve(id: Option<&Identity>, read_addrs: bool) -> Result<Netns> {
    resolve_with(id, read_addrs, None)
}

/// [`resolve`], reading the addresses over the socket kept in the namespace when
/// `sockets` has one ([`AddrSockets`]: no thread per call).
pub fn resolve_with(
    id: Option<&Identity>,
    read_addrs: bool,
    sockets: Option<&AddrSockets>,
) -> Result<Netns> {
    let id = id.ok_or_else(|| Error::invalid("identity is required (pid or netns_path)"))?;
    Ok(rules::resolve_with(
        id.pid,
        &id.netns_path,
        read_addrs,
        sockets,
    )?)
}

/// Checks that `ns` is the namespace recorded for an endpoint, and (when the
/// addresses are known and checking is on) that `ip` is configured in it.
pub fn verify(ns: &Netns, inode: u64, ip: Ipv4Addr, what: &str, check_addrs: bool) -> Result<()> {
    Ok(rules::verify(ns, inode, ip, what, check_addrs)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IPv4 addresses configured in the network namespace at `path`.
    fn addrs_in_netns(path: &std::path::Path) -> Result<Vec<Ipv4Addr>, p4lb_netns::Error> {
        p4lb_netns::NetNs::open(path)?.ipv4_addrs()
    }

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
    fn an_identity_is_required_and_its_refusals_keep_their_codes() {
        assert!(matches!(
            resolve(None, false),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            resolve(Some(&Identity::default()), false),
            Err(Error::InvalidArgument(_))
        ));
        let missing = Identity {
            pid: 0,
            netns_path: "/nonexistent/ns".into(),
        };
        assert!(matches!(
            resolve(Some(&missing), false),
            Err(Error::NotFound(_))
        ));
        let me = resolve(
            Some(&Identity {
                pid: std::process::id(),
                netns_path: String::new(),
            }),
            true,
        )
        .unwrap();
        assert!(matches!(
            verify(&me, me.inode + 1, Ipv4Addr::LOCALHOST, "x", true),
            Err(Error::PermissionDenied(_))
        ));
    }
}
