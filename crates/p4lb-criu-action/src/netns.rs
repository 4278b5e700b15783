//! Moving addresses into the restore target's network namespace.
//!
//! CRIU binds restored IPv4 sockets to their saved local address without
//! IP_FREEBIND, so every address in the migration record must be configured in
//! the target namespace before CRIU opens the sockets (after `setup-namespaces`).
//! The work runs through `p4lb-netns` on a thread of its own inside
//! /proc/<pid>/ns/net, with a netlink socket opened there: each missing address
//! is added as a /32 on the endpoint's interface. For a target routed behind its
//! node, [`route_to_pod`] also routes those addresses to the pod on the node.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use futures::TryStreamExt;
use p4lb_api::labels::HOST_ALIAS_PREFIX;
use p4lb_netns::NetNs;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// Opening, checking or entering the namespace failed.
    #[error(transparent)]
    Ns(#[from] p4lb_netns::Error),
    #[error("netlink in {path}: {detail}")]
    Netlink { path: PathBuf, detail: String },
    #[error("no interface {ifname:?} in network namespace {path}")]
    NoInterface { path: PathBuf, ifname: String },
}

/// What [`ensure_addresses`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressChange {
    pub added: Vec<Ipv4Addr>,
    pub already_present: Vec<Ipv4Addr>,
}

/// Makes sure every address in `addrs` is configured in the network namespace of
/// `pid`; missing ones are added as /32 on `ifname`.
pub fn ensure_addresses(
    pid: u32,
    ifname: &str,
    addrs: &[Ipv4Addr],
) -> Result<AddressChange, NetnsError> {
    ensure_addresses_in(NetNs::from_pid(pid)?, ifname, addrs)
}

/// As [`ensure_addresses`], for an open namespace (/proc/PID/ns/net or a bind mount).
pub fn ensure_addresses_in(
    ns: NetNs,
    ifname: &str,
    addrs: &[Ipv4Addr],
) -> Result<AddressChange, NetnsError> {
    let path = ns.path().to_path_buf();
    ns.with_netlink(|handle| async move { add_missing(&handle, &path, ifname, addrs).await })?
}

async fn add_missing(
    handle: &rtnetlink::Handle,
    path: &std::path::Path,
    ifname: &str,
    addrs: &[Ipv4Addr],
) -> Result<AddressChange, NetnsError> {
    let nl = |e: &dyn std::fmt::Display| NetnsError::Netlink {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let index = link_index(handle, path, ifname).await?;
    let present = p4lb_netns::ipv4_addrs(handle).await.map_err(|e| nl(&e))?;
    let mut change = AddressChange::default();
    for a in addrs {
        if present.contains(a) {
            change.already_present.push(*a);
            continue;
        }
        handle
            .address()
            .add(index, IpAddr::V4(*a), 32)
            .execute()
            .await
            .map_err(|e| nl(&format!("adding {a}/32 to {ifname}: {e}")))?;
        change.added.push(*a);
    }
    Ok(change)
}

/// Removes from `ifname` in the network namespace of `pid` each of `addrs` that is
/// configured there as a /32: the undoing of [`ensure_addresses`] for the addresses
/// it added (never those that were already present). Returns the ones removed.
pub fn remove_addresses(
    pid: u32,
    ifname: &str,
    addrs: &[Ipv4Addr],
) -> Result<Vec<Ipv4Addr>, NetnsError> {
    if addrs.is_empty() {
        return Ok(Vec::new());
    }
    let ns = NetNs::from_pid(pid)?;
    let path = ns.path().to_path_buf();
    ns.with_netlink(|handle| async move {
        let nl = |detail: String| NetnsError::Netlink {
            path: path.clone(),
            detail,
        };
        let index = link_index(&handle, &path, ifname).await?;
        let mut found = Vec::new();
        let mut s = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(msg) = s.try_next().await.map_err(|e| nl(e.to_string()))? {
            let local = msg.attributes.iter().find_map(|a| match a {
                rtnetlink::packet_route::address::AddressAttribute::Local(IpAddr::V4(v)) => {
                    Some(*v)
                }
                _ => None,
            });
            if let Some(a) = local.filter(|a| addrs.contains(a) && msg.header.prefix_len == 32) {
                found.push((a, msg));
            }
        }
        let mut removed = Vec::new();
        for (a, msg) in found {
            handle
                .address()
                .del(msg)
                .execute()
                .await
                .map_err(|e| nl(format!("removing {a}/32 from {ifname}: {e}")))?;
            removed.push(a);
        }
        Ok(removed)
    })?
}

/// Interface `ifname` in the namespace `handle` talks to (`path` names that namespace
/// in errors).
async fn find_link(
    handle: &rtnetlink::Handle,
    path: &std::path::Path,
    ifname: &str,
) -> Result<rtnetlink::packet_route::link::LinkMessage, NetnsError> {
    let link = handle
        .link()
        .get()
        .match_name(ifname.to_owned())
        .execute()
        .try_next()
        .await;
    match link {
        Ok(Some(l)) => Ok(l),
        Ok(None) | Err(rtnetlink::Error::NetlinkError(_)) => Err(NetnsError::NoInterface {
            path: path.to_path_buf(),
            ifname: ifname.to_owned(),
        }),
        Err(e) => Err(NetnsError::Netlink {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}

/// Index of interface `ifname` in the namespace `handle` talks to.
async fn link_index(
    handle: &rtnetlink::Handle,
    path: &std::path::Path,
    ifname: &str,
) -> Result<u32, NetnsError> {
    Ok(find_link(handle, path, ifname).await?.header.index)
}

/// For a restore target routed behind this node (its veth's host end `host_ifname` in
/// the namespace the action runs in, the node's): routes each of `addrs` (/32) to
/// the pod through `host_ifname`, replacing a route the address had (to a pod that
/// left). Only a veth p4lb made (its alias starts with [`HOST_ALIAS_PREFIX`]) is
/// routed to.
pub fn route_to_pod(host_ifname: &str, addrs: &[Ipv4Addr]) -> Result<(), NetnsError> {
    route_to_pod_in(NetNs::current()?, host_ifname, addrs)
}

/// As [`route_to_pod`], in namespace `ns` (the node's).
pub fn route_to_pod_in(ns: NetNs, host_ifname: &str, addrs: &[Ipv4Addr]) -> Result<(), NetnsError> {
    let path = ns.path().to_path_buf();
    ns.with_netlink(|handle| async move {
        let nl = |detail: String| NetnsError::Netlink {
            path: path.clone(),
            detail,
        };
        let link = find_link(&handle, &path, host_ifname).await?;
        let ours = link.attributes.iter().any(|a| {
            matches!(a, rtnetlink::packet_route::link::LinkAttribute::IfAlias(x) if x.starts_with(HOST_ALIAS_PREFIX))
        });
        if !ours {
            return Err(nl(format!(
                "{host_ifname} is not a veth p4lb made (no p4lb: alias): not routing to it"
            )));
        }
        for a in addrs {
            let msg = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(*a, 32)
                .output_interface(link.header.index)
                .build();
            handle
                .route()
                .add(msg)
                .replace()
                .execute()
                .await
                .map_err(|e| nl(format!("routing {a}/32 to {host_ifname}: {e}")))?;
        }
        Ok(())
    })?
}

/// Takes `ifname` down in the network namespace of `pid`: the source of a
/// leave-running migration keeps running, and must neither answer nor send
/// anything (not even the FIN/RST of its sockets when it is removed later) while
/// its restored copy carries the same connections.
pub fn isolate(pid: u32, ifname: &str) -> Result<(), NetnsError> {
    let ns = NetNs::from_pid(pid)?;
    let path = ns.path().to_path_buf();
    ns.with_netlink(|handle| async move {
        let index = link_index(&handle, &path, ifname).await?;
        handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(index).down().build())
            .execute()
            .await
            .map_err(|e| NetnsError::Netlink {
                path: path.clone(),
                detail: format!("setting {ifname} down: {e}"),
            })
    })?
}
