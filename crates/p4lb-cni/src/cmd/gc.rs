//! GC: removes what belongs to attachments of this network that are not in
//! `cni.dev/valid-attachments`: host veths (recognised by their alias), controller
//! endpoints, and IPAM leases. Continues past errors and reports them all.
//!
//! GC never frees an address the switch may still route to. It needs the controller:
//! unreachable, GC does nothing and fails with 11 (try again later). IPAM leases are
//! released only after the controller's own garbage collection succeeded (every
//! endpoint of the network not listed is then gone); otherwise they are kept and the
//! error says so. GC also finishes the deregistrations DEL recorded
//! ([`crate::pending`]) for attachments that are not listed.
//!
//! IPAM: the GC verb is forwarded to the IPAM plugin, and every stale attachment found
//! is also released with an IPAM DEL for its container ID and interface (host-local,
//! for one, does not implement GC). For host-local, leases in its data directory whose
//! attachment is not valid are released the same way.

use std::collections::HashSet;
use std::path::PathBuf;

use p4lb_api::api::Attachment as ApiAttachment;
use serde_json::Value;

use super::{parse_alias, Invocation};
use crate::api_client::Controller;
use crate::cni::error::{CniError, Code};
use crate::pending;

pub async fn run(inv: &Invocation) -> Result<Option<Value>, CniError> {
    // Without the list everything of the network would look stale: refuse instead.
    let listed = inv.conf.valid_attachments.clone().ok_or_else(|| {
        CniError::new(
            Code::InvalidNetworkConfig,
            "GC needs cni.dev/valid-attachments",
        )
        .details("an empty list means \"nothing is valid\"; an absent one is refused")
    })?;
    let valid: HashSet<(String, String)> = listed
        .into_iter()
        .map(|a| (a.container_id, a.ifname))
        .collect();
    let mut stale: HashSet<(String, String)> = HashSet::new();
    let mut errors: Vec<String> = Vec::new();

    // 0. The controller, before anything is touched.
    let mut controller = Controller::connect(&inv.p4.controller_socket, inv.p4.controller_timeout)
        .await
        .map_err(|e| {
            e.context("nothing collected, IPAM leases kept: the switch may still route them")
        })?;

    // 1. Host veths of this network.
    match inv.host_netlink() {
        Ok((host, _ns)) => match host.links().await {
            Ok(links) => {
                for l in links {
                    let Some(alias) = &l.alias else { continue };
                    let Some((cid, ifname)) = parse_alias(alias, &inv.conf.name) else {
                        continue;
                    };
                    let key = (cid.to_string(), ifname.to_string());
                    if valid.contains(&key) {
                        continue;
                    }
                    if let Err(e) = host.delete(&l.name).await {
                        errors.push(format!("deleting {}: {e}", l.name));
                    }
                    stale.insert(key);
                }
            }
            Err(e) => errors.push(e.to_string()),
        },
        Err(e) => errors.push(e.to_string()),
    }

    // 2. Controller endpoints of this network.
    let api_valid: Vec<ApiAttachment> = valid
        .iter()
        .map(|(c, i)| ApiAttachment {
            container_id: c.clone(),
            ifname: i.clone(),
        })
        .collect();
    let routes_gone = match controller.garbage_collect(&inv.conf.name, api_valid).await {
        Ok(removed) => {
            for key in removed {
                if let Some((cid, ifname)) = key.split_once('/') {
                    stale.insert((cid.to_string(), ifname.to_string()));
                }
            }
            true
        }
        Err(e) => {
            errors.push(format!("{e}; IPAM leases kept"));
            false
        }
    };
    // Deregistrations DEL recorded, for attachments not listed as valid.
    match pending::complete(inv, &mut controller, |p| {
        valid.contains(&(p.container_id.clone(), p.ifname.clone()))
    })
    .await
    {
        Ok(e) => errors.extend(e),
        Err(e) => errors.push(e.to_string()),
    }

    // 3. host-local leases of attachments that are not valid.
    if inv.conf.ipam_type.as_deref() == Some("host-local") {
        for key in host_local_leases(inv) {
            if !valid.contains(&key) {
                stale.insert(key);
            }
        }
    }

    // 4. Release every stale attachment's lease, then forward GC; only when the
    //    controller no longer routes to any attachment that is not listed.
    if inv.conf.ipam_type.is_some() && routes_gone {
        for (cid, ifname) in &stale {
            let env = vec![
                ("CNI_CONTAINERID", cid.clone()),
                ("CNI_IFNAME", ifname.clone()),
                ("CNI_NETNS", String::new()),
                ("CNI_ARGS", String::new()),
            ];
            if let Err(e) = inv.ipam("DEL", env) {
                errors.push(format!("releasing lease of {cid}/{ifname}: {e}"));
            }
        }
        if let Err(e) = inv.ipam("GC", Vec::new()) {
            errors.push(format!("IPAM GC: {e}"));
        }
    }

    if errors.is_empty() {
        Ok(None)
    } else {
        Err(
            CniError::new(Code::GcIncomplete, "garbage collection incomplete")
                .details(errors.join("; ")),
        )
    }
}

/// Attachments holding a lease in host-local's data directory
/// (`ipam.dataDir`, default /var/lib/cni/networks, then the network name). Each lease
/// file is named after the address and holds "<container id>\r\n<ifname>".
fn host_local_leases(inv: &Invocation) -> Vec<(String, String)> {
    let base = inv
        .conf
        .value
        .get("ipam")
        .and_then(|i| i.get("dataDir"))
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/cni/networks"));
    let dir = base.join(&inv.conf.name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.parse::<std::net::IpAddr>().is_err() {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let mut lines = text.lines().map(str::trim);
        let cid = lines.next().unwrap_or_default().to_string();
        let ifname = lines.next().unwrap_or_default().to_string();
        if !cid.is_empty() && !ifname.is_empty() {
            out.push((cid, ifname));
        }
    }
    out
}
