//! CHECK: the attachment still looks like what ADD built (and prevResult says), and the
//! controller still has the endpoint.

use std::path::Path;

use serde_json::Value;

use super::{host_ifname, Invocation};
use crate::api_client::{endpoint_key, Controller};
use crate::cni::error::{CniError, Code};
use crate::net::ethtool::Ethtool;
use crate::net::link::mac_to_string;
use crate::net::{NetNs, Netlink};

fn mismatch(msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError::new(Code::CheckFailed, msg).details(details)
}

pub async fn run(inv: &Invocation) -> Result<Option<Value>, CniError> {
    let args = inv.args()?;
    let hint = crate::restore::detect(&args, &inv.conf.runtime_config)?;
    let prev = inv
        .conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(Code::InvalidNetworkConfig, "CHECK needs prevResult"))?;
    let ifname = &inv.env.ifname;
    let idx = prev
        .sandbox_interface(ifname, &inv.env.netns)
        .ok_or_else(|| {
            mismatch(
                "prevResult does not list the container interface",
                format!("{ifname} in {}", inv.env.netns),
            )
        })?;
    let expected = &prev.interfaces[idx];

    // The pod side.
    let ns = NetNs::open(Path::new(&inv.env.netns))?;
    let pod = Netlink::in_ns(&ns)?;
    let link = pod
        .link(ifname)
        .await?
        .ok_or_else(|| mismatch("container interface missing", ifname.clone()))?;
    if !link.up {
        return Err(mismatch("container interface is down", ifname.clone()));
    }
    let mac = link.mac.map(|m| mac_to_string(&m)).unwrap_or_default();
    if let Some(want) = &expected.mac {
        if !want.eq_ignore_ascii_case(&mac) {
            return Err(mismatch(
                "container MAC differs",
                format!("{ifname}: {mac}, expected {want}"),
            ));
        }
    }
    let addrs = pod.addresses(link.index).await?;
    let mine: Vec<_> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(idx))
        .collect();
    for ip in &mine {
        if !addrs.iter().any(|a| a.net == ip.address) {
            return Err(mismatch(
                "address missing",
                format!("{} on {ifname}", ip.address),
            ));
        }
    }
    let routes = pod.routes().await?;
    for r in &prev.routes {
        let dst = r.dst.network();
        let found = routes
            .iter()
            .any(|s| s.dst == dst && (r.gw.is_none() || s.gw == r.gw || s.gw.is_none()));
        if !found {
            return Err(mismatch(
                "route missing",
                format!(
                    "{dst}{}",
                    r.gw.map(|g| format!(" via {g}")).unwrap_or_default()
                ),
            ));
        }
    }
    if ns.run(|| Ethtool::new().and_then(|e| e.tx_checksum(ifname)))?? {
        return Err(mismatch("tx checksum offload is on", ifname.clone()));
    }

    // The host side.
    let host_name = host_ifname(&inv.env.container_id, ifname);
    let (host, host_ns) = inv.host_netlink()?;
    let hl = host
        .link(&host_name)
        .await?
        .ok_or_else(|| mismatch("host interface missing", host_name.clone()))?;
    if !hl.up {
        return Err(mismatch("host interface is down", host_name.clone()));
    }
    let get_csum = || Ethtool::new().and_then(|e| e.tx_checksum(&host_name));
    let on = match &host_ns {
        Some(n) => n.run(get_csum)??,
        None => get_csum()?,
    };
    if on {
        return Err(mismatch("tx checksum offload is on", host_name.clone()));
    }

    // The controller's view.
    let mut c = Controller::connect(&inv.p4.controller_socket, inv.p4.controller_timeout).await?;
    let key = endpoint_key(&inv.env.container_id, ifname);
    let ep = c
        .get(&key)
        .await?
        .ok_or_else(|| mismatch("controller does not know the endpoint", key.clone()))?;
    if let Some(ip) = mine.iter().find(|ip| ip.address.addr.is_ipv4()) {
        if ep.ip != ip.address.addr.to_string() {
            return Err(mismatch(
                "controller has another address",
                format!("{key}: {} vs {}", ep.ip, ip.address.addr),
            ));
        }
    }
    if ep.netns_path != inv.env.netns {
        return Err(mismatch(
            "controller has another namespace",
            format!("{key}: {} vs {}", ep.netns_path, inv.env.netns),
        ));
    }
    if !ep.mac.eq_ignore_ascii_case(&mac) {
        return Err(mismatch(
            "controller has another MAC",
            format!("{key}: {} vs {mac}", ep.mac),
        ));
    }
    if !ep.host_ifname.is_empty() && ep.host_ifname != host_name {
        return Err(mismatch(
            "controller has another host interface",
            format!("{key}: {} vs {host_name}", ep.host_ifname),
        ));
    }

    // The IPAM plugin's own check.
    inv.ipam("CHECK", inv.ipam_env(hint.as_ref()))?;
    Ok(None)
}
