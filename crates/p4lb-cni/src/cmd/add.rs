//! ADD: veth pair, address from IPAM, routes and gateway neighbour in the pod,
//! registration with the controller. Anything that fails undoes what came before, in
//! reverse order (registration, IPAM lease, veth).

use std::net::IpAddr;

use p4lb_api::api::RegisterEndpointRequest;
use serde_json::Value;

use super::{host_alias, host_ifname, Invocation, MAX_ALIAS_LEN};
use crate::api_client::Controller;
use crate::cni::env::MAX_CONTAINER_ID_LEN;
use crate::cni::error::{CniError, Code};
use crate::cni::result::{CniResult, Interface, IpConfig, IpNet, Route};
use crate::net::ethtool::Ethtool;
use crate::net::link::{mac_to_string, parse_mac};
use crate::net::{NetNs, Netlink};
use crate::pending;
use crate::restore::{self, RestoreHint};

/// What ADD has done so far, to undo on failure.
#[derive(Default)]
struct Undo {
    veth: Option<String>,
    ipam_env: Option<Vec<(&'static str, String)>>,
    endpoint: bool,
}

impl Undo {
    async fn run(self, inv: &Invocation, host: &Netlink, controller: Option<&mut Controller>) {
        if self.endpoint {
            if let Some(c) = controller {
                if let Err(e) = c.deregister(&inv.env.container_id, &inv.env.ifname).await {
                    eprintln!("p4lb: rollback: deregistering endpoint: {e}");
                }
            }
        }
        if let Some(env) = self.ipam_env {
            if let Err(e) = inv.ipam("DEL", env) {
                eprintln!("p4lb: rollback: releasing IPAM lease: {e}");
            }
        }
        if let Some(name) = self.veth {
            if let Err(e) = host.delete(&name).await {
                eprintln!("p4lb: rollback: deleting veth {name}: {e}");
            }
        }
    }
}

pub async fn run(inv: &Invocation) -> Result<Value, CniError> {
    check_lengths(inv)?;
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
    let ns = NetNs::open(std::path::Path::new(&inv.env.netns))?;
    let (host, host_ns) = inv.host_netlink()?;
    let pod = Netlink::in_ns(&ns)?;

    if pod.link(&inv.env.ifname).await?.is_some() {
        return Err(CniError::new(
            Code::InterfaceExists,
            "interface already exists in the container",
        )
        .details(format!("{} in {}", inv.env.ifname, inv.env.netns)));
    }
    let host_name = host_ifname(&inv.env.container_id, &inv.env.ifname);
    if host.link(&host_name).await?.is_some() {
        return Err(
            CniError::new(Code::InterfaceExists, "host-side interface already exists").details(
                format!(
                    "{host_name}: a previous attachment of {}/{} was not deleted (run DEL first)",
                    inv.env.container_id, inv.env.ifname
                ),
            ),
        );
    }

    // A DEL of this attachment that could not reach the controller is finished
    // first, so its record can never remove what this ADD creates.
    pending::finish_own(inv).await?;

    let mut undo = Undo::default();
    let mut controller = None;
    let outcome = attach(
        inv,
        &ns,
        host_ns.as_ref(),
        &host,
        &pod,
        &host_name,
        container_mac,
        hint.as_ref(),
        &mut undo,
        &mut controller,
    )
    .await;
    match outcome {
        Ok(v) => Ok(v),
        Err(e) => {
            undo.run(inv, &host, controller.as_mut()).await;
            Err(e)
        }
    }
}

/// Refuses, before anything is created, a container ID the controller would refuse
/// and an attachment whose host-side alias (how DEL and GC recognise p4lb's veth)
/// would not fit in the kernel's alias.
fn check_lengths(inv: &Invocation) -> Result<(), CniError> {
    let len = inv.env.container_id.len();
    if len > MAX_CONTAINER_ID_LEN {
        return Err(
            CniError::new(Code::InvalidEnvironment, "CNI_CONTAINERID too long").details(format!(
                "{len} bytes; the p4lb controller accepts at most {MAX_CONTAINER_ID_LEN}"
            )),
        );
    }
    let alias = host_alias(&inv.conf.name, &inv.env.container_id, &inv.env.ifname);
    if alias.len() > MAX_ALIAS_LEN {
        return Err(CniError::new(
            Code::InvalidEnvironment,
            "CNI_CONTAINERID and network name too long together",
        )
        .details(format!(
            "the host interface alias {alias:?} has {} bytes; the kernel keeps at most \
             {MAX_ALIAS_LEN}",
            alias.len()
        )));
    }
    Ok(())
}

/// An annotation hint counts only for a checkpointed migration of the same workload
/// ([`restore::unmatched_annotation`]); anything else is a fresh start, with a warning.
async fn confirm_annotation_hint(
    inv: &Invocation,
    args: &crate::cni::args::CniArgs,
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

#[allow(clippy::too_many_arguments)]
async fn attach(
    inv: &Invocation,
    ns: &NetNs,
    host_ns: Option<&NetNs>,
    host: &Netlink,
    pod: &Netlink,
    host_name: &str,
    container_mac: Option<[u8; 6]>,
    hint: Option<&RestoreHint>,
    undo: &mut Undo,
    controller: &mut Option<Controller>,
) -> Result<Value, CniError> {
    let ifname = &inv.env.ifname;
    // 1. The veth pair; the pod end is born in the pod's namespace under its final name.
    let alias = host_alias(&inv.conf.name, &inv.env.container_id, ifname);
    host.create_veth(host_name, &alias, ifname, ns, inv.p4.mtu, container_mac)
        .await?;
    undo.veth = Some(host_name.to_string());

    // 2. The address, from the delegated IPAM plugin.
    let ipam_env = inv.ipam_env(hint);
    undo.ipam_env = Some(ipam_env.clone());
    let out = inv.ipam("ADD", ipam_env)?;
    let ipam = serde_json::from_slice::<Value>(&out)
        .map_err(|e| {
            CniError::new(Code::Ipam, "IPAM plugin returned invalid JSON").details(e.to_string())
        })
        .and_then(|v| {
            CniResult::from_value(&v, "IPAM result").map_err(|e| CniError {
                code: Code::Ipam as u32,
                ..e
            })
        })?;
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

    // 3. Inside the pod: checksums, addresses, link up, routes.
    let pod_link = pod.link(ifname).await?.ok_or_else(|| {
        CniError::new(Code::Netlink, "container interface vanished").details(ifname.to_string())
    })?;
    ns.run(|| Ethtool::new().and_then(|e| e.set_tx_checksum(ifname, false)))??;
    for ip in &ipam.ips {
        pod.add_address(pod_link.index, ip.address, false).await?;
    }
    if let Some(h) = hint.filter(|_| inv.p4.add_restored_ip) {
        let old = IpAddr::V4(h.old_ip);
        if old != primary.address.addr {
            let net = IpNet::new(old, 32).map_err(|e| CniError::new(Code::Netlink, e))?;
            pod.add_address(pod_link.index, net, true).await?;
        }
    }
    pod.set_up(pod_link.index).await?;
    let mut routes = ipam.routes.clone();
    if routes.is_empty() {
        let default = if gateway.is_ipv4() {
            "0.0.0.0/0"
        } else {
            "::/0"
        };
        routes.push(Route::to(
            default
                .parse()
                .map_err(|e: String| CniError::new(Code::Netlink, e))?,
            Some(gateway),
        ));
    }
    if !primary.address.contains(gateway) {
        // A gateway outside the pod's subnet (e.g. /32 addressing) is reached on-link.
        let gw_net = IpNet::new(gateway, if gateway.is_ipv4() { 32 } else { 128 })
            .map_err(|e| CniError::new(Code::Netlink, e))?;
        pod.add_route(pod_link.index, &Route::to(gw_net, None))
            .await?;
    }
    for r in &routes {
        let mut r = r.clone();
        if r.gw.is_none() && r.dst.addr.is_ipv4() == gateway.is_ipv4() {
            r.gw = Some(gateway);
        }
        pod.add_route(pod_link.index, &r).await?;
    }

    // 4. The host end: up, complete checksums.
    let host_link = host.link(host_name).await?.ok_or_else(|| {
        CniError::new(Code::Netlink, "host interface vanished").details(host_name.to_string())
    })?;
    host.set_up(host_link.index).await?;
    let set_host_csum = || Ethtool::new().and_then(|e| e.set_tx_checksum(host_name, false));
    match host_ns {
        Some(hns) => hns.run(set_host_csum)??,
        None => set_host_csum()?,
    }

    // 5. The controller.
    let container_mac = pod_link.mac.map(|m| mac_to_string(&m)).unwrap_or_default();
    let args = inv.args()?;
    // The controller locks an endpoint it is given a restore hint for when it knows
    // a checkpointed migration of that address (otherwise it registers it unlocked
    // and its reply carries no restore_of_ip); with lockOnRestore=false the restore
    // is registered as a plain new endpoint.
    let hint_sent = hint.filter(|_| inv.p4.lock_on_restore);
    let locked = hint_sent.is_some();
    let req = RegisterEndpointRequest {
        container_id: inv.env.container_id.clone(),
        ifname: ifname.clone(),
        netns_path: inv.env.netns.clone(),
        ip: primary.address.addr.to_string(),
        prefix_len: primary.address.prefix as u32,
        mac: container_mac.clone(),
        gateway: gateway.to_string(),
        host_ifname: host_name.to_string(),
        labels: inv.labels(&args),
        network: inv.conf.name.clone(),
        locked,
        restore_of_ip: hint_sent.map(|h| h.old_ip.to_string()).unwrap_or_default(),
        restore_of_mac: hint_sent
            .and_then(|h| h.old_mac.clone())
            .unwrap_or_default(),
    };
    let c = controller
        .insert(Controller::connect(&inv.p4.controller_socket, inv.p4.controller_timeout).await?);
    // Marked before the call: a registration that times out here may still be
    // committed by the controller, and the rollback's deregistration covers that.
    undo.endpoint = true;
    let endpoint = c.register(req).await?;
    if let Some(h) = hint_sent.filter(|_| endpoint.restore_of_ip.is_empty()) {
        // The controller decides what is a restore: it knew no checkpointed
        // migration of the hinted address, so this container starts fresh.
        eprintln!(
            "p4lb: warning: restore hint {} ignored by the controller, starting fresh: \
             no checkpointed migration of it is known",
            h.old_ip
        );
        if inv.p4.add_restored_ip && IpAddr::V4(h.old_ip) != primary.address.addr {
            pod.remove_address(pod_link.index, IpAddr::V4(h.old_ip))
                .await?;
        }
    }

    // 6. The gateway's MAC, when known: pinned so the pod never waits for ARP.
    let router_mac = parse_mac(&endpoint.router_mac).or(inv.p4.router_mac);
    if let Some(mac) = router_mac {
        pod.add_permanent_neighbour(pod_link.index, gateway, mac)
            .await?;
    }

    // 7. The result, appended to any previous plugin's.
    let mut result = inv.conf.prev_result.clone().unwrap_or_default();
    let base = result.interfaces.len();
    result.interfaces.push(Interface {
        name: host_name.to_string(),
        mac: host_link.mac.map(|m| mac_to_string(&m)),
        mtu: host_link.mtu,
        ..Default::default()
    });
    result.interfaces.push(Interface {
        name: ifname.clone(),
        mac: Some(container_mac),
        mtu: pod_link.mtu,
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
    result.routes.extend(routes);
    result.dns = match &inv.conf.dns {
        Some(d) if !d.is_empty() => d.clone(),
        _ if !ipam.dns.is_empty() => ipam.dns.clone(),
        _ => result.dns,
    };
    Ok(result.to_value(inv.conf.version))
}
