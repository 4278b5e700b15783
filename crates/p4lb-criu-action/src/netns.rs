//! Moving addresses into the restore target's network namespace.
//!
//! CRIU binds restored IPv4 sockets to their saved local address without
//! IP_FREEBIND, so every address in the migration record must be configured in
//! the target namespace before CRIU opens the sockets (after `setup-namespaces`).
//! The work runs on a helper thread that joins the namespace with setns(2) on
//! /proc/<pid>/ns/net (setns affects only that thread), opens a netlink socket
//! there and adds each missing address as a /32 on the endpoint's interface.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("joining network namespace {path}: {source}")]
    Setns { path: PathBuf, source: nix::Error },
    #[error("netlink in {path}: {detail}")]
    Netlink { path: PathBuf, detail: String },
    #[error("no interface {ifname:?} in network namespace {path}")]
    NoInterface { path: PathBuf, ifname: String },
    #[error("helper thread failed: {0}")]
    Thread(String),
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
    let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
    ensure_addresses_in(path, ifname, addrs)
}

/// As [`ensure_addresses`], for a namespace file (/proc/PID/ns/net or a bind mount).
pub fn ensure_addresses_in(
    ns_path: PathBuf,
    ifname: &str,
    addrs: &[Ipv4Addr],
) -> Result<AddressChange, NetnsError> {
    let ifname = ifname.to_owned();
    let addrs = addrs.to_vec();
    with_netlink_in(ns_path, move |path, handle| async move {
        add_missing(&handle, &path, &ifname, &addrs).await
    })
}

/// Runs `work` with a netlink handle opened inside the network namespace at
/// `ns_path`. A helper thread joins the namespace (setns affects only the calling
/// thread) and creates the netlink socket there, so the caller's namespace is
/// never changed.
fn with_netlink_in<T, F, Fut>(ns_path: PathBuf, work: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce(PathBuf, rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, NetnsError>>,
{
    std::thread::spawn(move || -> Result<T, NetnsError> {
        let f = std::fs::File::open(&ns_path).map_err(|e| NetnsError::Open {
            path: ns_path.clone(),
            source: e,
        })?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            NetnsError::Setns {
                path: ns_path.clone(),
                source: e,
            }
        })?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| NetnsError::Thread(e.to_string()))?;
        rt.block_on(async {
            // The socket is created now, on this thread, i.e. inside the namespace.
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|e| NetnsError::Netlink {
                    path: ns_path.clone(),
                    detail: e.to_string(),
                })?;
            let task = tokio::spawn(conn);
            let result = work(ns_path, handle).await;
            task.abort();
            result
        })
    })
    .join()
    .map_err(|_| NetnsError::Thread("panicked".into()))?
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
    let present = local_ipv4(handle).await.map_err(|e| nl(&e))?;
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

/// Index of interface `ifname` in the namespace `handle` talks to (`path` names
/// that namespace in errors).
async fn link_index(
    handle: &rtnetlink::Handle,
    path: &std::path::Path,
    ifname: &str,
) -> Result<u32, NetnsError> {
    let link = handle
        .link()
        .get()
        .match_name(ifname.to_owned())
        .execute()
        .try_next()
        .await;
    match link {
        Ok(Some(l)) => Ok(l.header.index),
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

async fn local_ipv4(handle: &rtnetlink::Handle) -> Result<Vec<Ipv4Addr>, rtnetlink::Error> {
    let mut out = Vec::new();
    let mut s = handle.address().get().execute();
    while let Some(msg) = s.try_next().await? {
        for attr in msg.attributes {
            if let AddressAttribute::Local(IpAddr::V4(a))
            | AddressAttribute::Address(IpAddr::V4(a)) = attr
            {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    Ok(out)
}

/// Takes `ifname` down in the network namespace of `pid`: the source of a
/// leave-running migration keeps running, and must neither answer nor send
/// anything (not even the FIN/RST of its sockets when it is removed later) while
/// its restored copy carries the same connections.
pub fn isolate(pid: u32, ifname: &str) -> Result<(), NetnsError> {
    let ifname = ifname.to_owned();
    with_netlink_in(
        PathBuf::from(format!("/proc/{pid}/ns/net")),
        move |path, handle| async move {
            let index = link_index(&handle, &path, &ifname).await?;
            handle
                .link()
                .set(rtnetlink::LinkUnspec::new_with_index(index).down().build())
                .execute()
                .await
                .map_err(|e| NetnsError::Netlink {
                    path: path.clone(),
                    detail: format!("setting {ifname} down: {e}"),
                })
        },
    )
}

/// IPv4 addresses configured in the namespace of `pid` (for checks and tests).
pub fn addresses_of(pid: u32) -> Result<Vec<Ipv4Addr>, NetnsError> {
    with_netlink_in(
        PathBuf::from(format!("/proc/{pid}/ns/net")),
        |path, handle| async move {
            local_ipv4(&handle).await.map_err(|e| NetnsError::Netlink {
                path,
                detail: e.to_string(),
            })
        },
    )
}
