//! ADD: an address from IPAM, then the wiring and registration of
//! [`crate::attach`] (veth pair, addresses, routes and gateway neighbour in the pod,
//! registration with the controller). Anything that fails undoes what came before, in
//! reverse order (registration, veth, IPAM lease).

use serde_json::Value;

use super::Invocation;
use crate::api_client::Controller;
use crate::attach::{Prepared, Registration, Wiring};
use crate::cni::args::CniArgs;
use crate::cni::error::{CniError, Code};
use crate::cni::result::{CniResult, Interface, IpConfig};
use crate::net::link::parse_mac;
use crate::pending;
use crate::restore::{self, RestoreHint};

pub async fn run(inv: &Invocation) -> Result<Value, CniError> {
    let target = inv.target();
    target.check_lengths("CNI_CONTAINERID")?;
    let args = inv.args()?;
    let hint = match restore::detect(&args, &inv.conf.runtime_config)? {
        Some(h) if h.source == restore::HintSource::PodAnnotation => {
            confirm_annotation_hint(inv, &args, h).await?
        }
        Some(h) if h.source == restore::HintSource::PodmanArgs => {
            confirm_podman_hint(inv, h).await?
        }
        other => other,
    };
    if inv.conf.ipam_type.is_none() {
        return Err(
            CniError::new(Code::InvalidNetworkConfig, "ipam is required")
                .details("p4lb needs an address for every pod: set ipam.type (e.g. host-local)"),
        );
    }
    let container_mac = match inv.conf.runtime_config.get("mac").and_then(Value::as_str) {
        None | Some("") => None,
        Some(m) => Some(parse_mac(m).ok_or_else(|| {
            CniError::new(Code::InvalidNetworkConfig, "invalid runtimeConfig.mac")
                .details(m.to_string())
        })?),
    };
    let prepared = target.prepare().await?;

    // A DEL of this attachment that could not reach the controller is finished
    // first, so its record can never remove what this ADD creates.
    pending::finish_own(inv).await?;

    // The address, from the delegated IPAM plugin; released again if wiring fails.
    let ipam_env = inv.ipam_env(hint.as_ref());
    let ipam = run_ipam(inv, ipam_env.clone())?;
    match wire(inv, &prepared, &args, &ipam, container_mac, hint).await {
        Ok(v) => Ok(v),
        Err(e) => {
            if let Err(e) = inv.ipam("DEL", ipam_env) {
                eprintln!("p4lb: rollback: releasing IPAM lease: {e}");
            }
            Err(e)
        }
    }
}

/// An annotation hint counts only for a checkpointed migration of the same workload
/// ([`restore::unmatched_annotation`]); anything else is a fresh start, with a warning.
async fn confirm_annotation_hint(
    inv: &Invocation,
    args: &CniArgs,
    hint: RestoreHint,
) -> Result<Option<RestoreHint>, CniError> {
    let mut c = Controller::connect(&inv.p4.controller_socket, inv.p4.controller_timeout).await?;
    let migrations = c.migrations().await?;
    let endpoints = c.list().await?;
    let pod_namespace = args.get("K8S_POD_NAMESPACE");
    match restore::unmatched_annotation(&hint, pod_namespace, &migrations, &endpoints) {
        None => Ok(Some(hint)),
        Some(why) => {
            eprintln!(
                "p4lb: warning: restore hint {}={} ignored, starting fresh: {why}",
                p4lb_api::labels::RESTORE_FROM_ANNOTATION,
                hint.old_ip
            );
            Ok(None)
        }
    }
}

/// Podman passes `IP=`/`MAC=` for a restore and for `podman run --ip X --mac-address
/// Y` or `podman network reload` alike. Before IPAM sees (or is denied) them, the
/// controller's migrations tell which it is: with no checkpointed migration of that
/// address the container starts fresh and IPAM gets the address it asked for. When
/// the migrations cannot be listed the hint stays, and the controller decides at
/// registration (its reply is followed after IPAM). An unreachable controller fails
/// the ADD here (11), as the registration would.
async fn confirm_podman_hint(
    inv: &Invocation,
    hint: RestoreHint,
) -> Result<Option<RestoreHint>, CniError> {
    let mut c = Controller::connect(&inv.p4.controller_socket, inv.p4.controller_timeout).await?;
    match c.migrations().await {
        Ok(migrations) => match restore::restore_migration(&hint, &migrations) {
            Ok(_) => Ok(Some(hint)),
            Err(why) => {
                eprintln!(
                    "p4lb: warning: restore hint IP={} ignored, starting fresh: {why}",
                    hint.old_ip
                );
                Ok(None)
            }
        },
        Err(e) => {
            eprintln!(
                "p4lb: warning: cannot list migrations ({}); the controller decides whether \
                 IP={} is a restore",
                e.msg, hint.old_ip
            );
            Ok(Some(hint))
        }
    }
}

/// Runs IPAM ADD. When it fails or its answer is invalid, IPAM DEL releases
/// whatever it may have allocated (the specification asks for a DEL after a failed
/// ADD too).
fn run_ipam(
    inv: &Invocation,
    ipam_env: Vec<(&'static str, String)>,
) -> Result<CniResult, CniError> {
    let parsed = inv.ipam("ADD", ipam_env.clone()).and_then(|out| {
        serde_json::from_slice::<Value>(&out)
            .map_err(|e| {
                CniError::new(Code::Ipam, "IPAM plugin returned invalid JSON")
                    .details(e.to_string())
            })
            .and_then(|v| {
                CniResult::from_value(&v, "IPAM result").map_err(|e| CniError {
                    code: Code::Ipam as u32,
                    ..e
                })
            })
    });
    if parsed.is_err() {
        if let Err(e) = inv.ipam("DEL", ipam_env) {
            eprintln!("p4lb: rollback: releasing IPAM lease: {e}");
        }
    }
    parsed
}

/// Wires and registers the pod ([`crate::attach`]) and builds the result, appended
/// to any previous plugin's.
async fn wire(
    inv: &Invocation,
    prepared: &Prepared,
    args: &CniArgs,
    ipam: &CniResult,
    container_mac: Option<[u8; 6]>,
    hint: Option<RestoreHint>,
) -> Result<Value, CniError> {
    let primary = ipam
        .ips
        .iter()
        .find(|ip| ip.address.addr.is_ipv4())
        .cloned()
        .ok_or_else(|| {
            CniError::new(Code::Ipam, "IPAM returned no IPv4 address")
                .details("the p4lb data plane is IPv4: configure an IPv4 range")
        })?;
    let gateway = inv.p4.gateway.or(primary.gateway).ok_or_else(|| {
        CniError::new(Code::InvalidNetworkConfig, "no gateway")
            .details("set ipam gateway or the p4lb option gateway")
    })?;
    let wiring = Wiring {
        addresses: ipam.ips.iter().map(|ip| ip.address).collect(),
        gateway,
        routes: ipam.routes.clone(),
        mtu: inv.p4.mtu,
        mac: container_mac,
        add_restored_ip: inv.p4.add_restored_ip,
    };
    // With lockOnRestore=false a restore is registered as a plain new endpoint.
    let registration = Registration {
        controller: inv.controller(),
        labels: inv.labels(args),
        restore: hint.filter(|_| inv.p4.lock_on_restore),
        router_mac: inv.p4.router_mac,
    };
    let a = prepared.attach(&wiring, &registration).await?;

    let mut result = inv.conf.prev_result.clone().unwrap_or_default();
    let base = result.interfaces.len();
    result.interfaces.push(Interface {
        name: a.host_name.clone(),
        mac: a.host_mac.clone(),
        mtu: a.host_mtu,
        ..Default::default()
    });
    result.interfaces.push(Interface {
        name: inv.env.ifname.clone(),
        mac: Some(a.mac.clone()),
        mtu: a.mtu,
        sandbox: Some(inv.env.netns.clone()),
        ..Default::default()
    });
    for ip in &ipam.ips {
        result.ips.push(IpConfig {
            address: ip.address,
            gateway: ip
                .gateway
                .or(if ip.address.addr.is_ipv4() == gateway.is_ipv4() {
                    Some(gateway)
                } else {
                    None
                }),
            interface: Some(base + 1),
        });
    }
    result.routes.extend(a.routes);
    result.dns = match &inv.conf.dns {
        Some(d) if !d.is_empty() => d.clone(),
        _ if !ipam.dns.is_empty() => ipam.dns.clone(),
        _ => result.dns,
    };
    Ok(result.to_value(inv.conf.version))
}
