//! Wiring a container to a switch port and registering it, with plain typed inputs:
//! the one implementation behind both front ends, the CNI plugin (`cmd/add.rs`,
//! `cmd/del.rs`) and the netavark plugin (`p4lb-netavark`).
//!
//! An attachment is made in two steps so a front end can do its own work between
//! them (the CNI plugin runs its IPAM plugin there):
//!
//! 1. [`Target::prepare`]: no side effect. Refuses a container ID the controller
//!    would refuse and a host-side alias the kernel cannot store, opens the
//!    container's namespace (and the switch's), and checks that neither the
//!    container's interface nor the host end of the veth exists yet.
//! 2. [`Prepared::attach`]: the veth pair (the container end born inside the
//!    container's namespace under its final name), addresses, routes, checksum
//!    offload off on both ends, the registration with the controller, the gateway's
//!    MAC pinned. Anything that fails undoes what came before, in reverse order
//!    (registration, veth), so a failed attach leaves no veth, address or endpoint.
//!
//! Two kinds of attachment ([`Target::routed`]):
//!
//! - **on a switch port** (the default): the host end of the veth goes where the
//!   switch reads its ports, and the controller attaches it as a port of its own;
//! - **routed behind the node** (a node whose uplink is on a switch port,
//!   docs/multi-node.md): the host end stays in the node's namespace with proxy ARP,
//!   the node routes each of the pod's addresses (/32) to it, the pod's gateway is
//!   pinned to the host end's MAC, and the controller sends the pod's traffic to the
//!   node's uplink.
//!
//! [`detach`] undoes an attachment: deregistration and the veth (only p4lb's own,
//! recognised by its alias). [`remove_own_veth`] is the veth half alone.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use p4lb_api::api::{Endpoint, RegisterEndpointRequest};

use crate::api_client::Controller;
use crate::cmd::{host_alias, host_ifname, MAX_ALIAS_LEN};
use crate::cni::env::MAX_CONTAINER_ID_LEN;
use crate::cni::error::{CniError, Code};
use crate::cni::result::{IpNet, Route};
use crate::net::ethtool::Ethtool;
use crate::net::link::{mac_to_string, parse_mac, Link};
use crate::net::{NetNs, Netlink};
use crate::restore::RestoreHint;

/// Where the controller listens, and the bound for connecting and for each call.
#[derive(Clone, Debug)]
pub struct ControllerConf {
    pub socket: PathBuf,
    pub timeout: Duration,
}

impl ControllerConf {
    pub async fn connect(&self) -> Result<Controller, CniError> {
        Controller::connect(&self.socket, self.timeout).await
    }
}

/// Which attachment: the container, its interface and namespace, the network.
#[derive(Clone, Debug)]
pub struct Target {
    pub container_id: String,
    /// The interface inside the container (e.g. `eth0`).
    pub ifname: String,
    /// The container's network namespace (a bind mount such as /run/netns/X).
    pub netns: PathBuf,
    /// The network's name (recorded in the host end's alias and the endpoint).
    pub network: String,
    /// Namespace of the switch's ports; `None`: the caller's.
    pub switch_netns: Option<PathBuf>,
    /// Routed behind the node instead of on a switch port (see the module doc).
    pub routed: bool,
}

impl Target {
    /// The host end of the veth (deterministic: found again without the namespace).
    pub fn host_name(&self) -> String {
        host_ifname(&self.container_id, &self.ifname)
    }

    /// The alias that marks the host end as this attachment's.
    pub fn alias(&self) -> String {
        host_alias(&self.network, &self.container_id, &self.ifname)
    }

    /// Refuses what the controller or the kernel would refuse later: a container ID
    /// longer than the controller accepts and an alias longer than the kernel keeps.
    /// `id_name` names the container ID as the caller's user knows it.
    pub fn check_lengths(&self, id_name: &str) -> Result<(), CniError> {
        let len = self.container_id.len();
        if len > MAX_CONTAINER_ID_LEN {
            return Err(
                CniError::new(Code::InvalidEnvironment, format!("{id_name} too long")).details(
                    format!(
                        "{len} bytes; the p4lb controller accepts at most {MAX_CONTAINER_ID_LEN}"
                    ),
                ),
            );
        }
        let alias = self.alias();
        if alias.len() > MAX_ALIAS_LEN {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!("{id_name} and network name too long together"),
            )
            .details(format!(
                "the host interface alias {alias:?} has {} bytes; the kernel keeps at most \
                 {MAX_ALIAS_LEN}",
                alias.len()
            )));
        }
        Ok(())
    }

    /// The netlink connection on the switch's side, and its namespace when not ours.
    pub fn host_netlink(&self) -> Result<(Netlink, Option<NetNs>), CniError> {
        match &self.switch_netns {
            None => Ok((Netlink::current()?, None)),
            Some(p) => {
                let ns = NetNs::open_any(p)?;
                Ok((Netlink::in_ns(&ns)?, Some(ns)))
            }
        }
    }

    /// What a routed attachment needs of the node: no switch namespace (the host end
    /// stays in the node's), and IPv4 forwarding on.
    fn check_routed(&self) -> Result<(), CniError> {
        if !self.routed {
            return Ok(());
        }
        if let Some(p) = &self.switch_netns {
            return Err(CniError::new(
                Code::InvalidNetworkConfig,
                "a pod routed behind its node has no switch namespace",
            )
            .details(format!(
                "the network sets both routed and the switch's namespace ({}): the host end \
                 of a routed pod's veth stays in the node's namespace",
                p.display()
            )));
        }
        if !crate::net::sysctl::ipv4_forwarding()? {
            return Err(
                CniError::new(Code::Netlink, "the node does not forward IPv4").details(
                    "a pod routed behind its node needs net.ipv4.ip_forward = 1 on the node \
                 (sysctl -w net.ipv4.ip_forward=1, and a file in /etc/sysctl.d to keep it)",
                ),
            );
        }
        Ok(())
    }

    /// Step 1: checks and opens everything, creates nothing.
    pub async fn prepare(self) -> Result<Prepared, CniError> {
        self.check_lengths("container ID")?;
        self.check_routed()?;
        let ns = NetNs::open(&self.netns)?;
        let (host, host_ns) = self.host_netlink()?;
        let pod = Netlink::in_ns(&ns)?;
        if pod.link(&self.ifname).await?.is_some() {
            return Err(CniError::new(
                Code::InterfaceExists,
                "interface already exists in the container",
            )
            .details(format!("{} in {}", self.ifname, self.netns.display())));
        }
        let host_name = self.host_name();
        if host.link(&host_name).await?.is_some() {
            return Err(
                CniError::new(Code::InterfaceExists, "host-side interface already exists").details(
                    format!(
                        "{host_name}: a previous attachment of {}/{} was not deleted",
                        self.container_id, self.ifname
                    ),
                ),
            );
        }
        Ok(Prepared {
            target: self,
            ns,
            host_ns,
            host,
            pod,
            host_name,
        })
    }
}

/// What goes on the container's interface.
#[derive(Clone, Debug)]
pub struct Wiring {
    /// Addresses with their prefix; the first IPv4 one is the endpoint's address.
    pub addresses: Vec<IpNet>,
    pub gateway: IpAddr,
    /// Routes inside the container; empty: a default route through `gateway`. A
    /// route without a gateway of the gateway's family goes through `gateway`.
    pub routes: Vec<Route>,
    pub mtu: Option<u32>,
    /// The container's MAC; `None`: the kernel's.
    pub mac: Option<[u8; 6]>,
    /// On a restore, also put the old address (/32, no prefix route) on the interface
    /// so restored sockets can bind to it; taken off again when the controller does
    /// not confirm the restore.
    pub add_restored_ip: bool,
}

/// What the controller is told.
#[derive(Clone, Debug)]
pub struct Registration {
    pub controller: ControllerConf,
    pub labels: HashMap<String, String>,
    /// A restore the front end believes in: sent as `restore_of_ip` with the endpoint
    /// locked. The controller decides; when it knows no checkpointed migration of the
    /// address the endpoint is a fresh start (see [`Attached::restore_of_ip`]).
    pub restore: Option<RestoreHint>,
    /// The switch's router MAC, when the controller does not report one.
    pub router_mac: Option<[u8; 6]>,
}

/// An attachment that passed [`Target::prepare`].
pub struct Prepared {
    pub target: Target,
    ns: NetNs,
    host_ns: Option<NetNs>,
    host: Netlink,
    pod: Netlink,
    host_name: String,
}

/// What [`Prepared::attach`] made.
#[derive(Clone, Debug)]
pub struct Attached {
    pub host_name: String,
    pub host_mac: Option<String>,
    pub host_mtu: Option<u32>,
    pub mac: String,
    pub mtu: Option<u32>,
    /// The endpoint's address.
    pub primary: IpNet,
    pub gateway: IpAddr,
    /// The routes set inside the container (a route without a gateway of the
    /// gateway's family goes through the gateway).
    pub routes: Vec<Route>,
    /// The endpoint as the controller registered it.
    pub endpoint: Endpoint,
    /// The old address when the controller registered a restore (locked).
    pub restore_of_ip: Option<Ipv4Addr>,
}

/// What [`Prepared::attach`] has done so far, to undo on failure.
#[derive(Default)]
struct Undo {
    veth: bool,
    endpoint: bool,
}

impl Prepared {
    /// Step 2: wires and registers; on failure undoes what it did and returns the
    /// error.
    pub async fn attach(&self, w: &Wiring, r: &Registration) -> Result<Attached, CniError> {
        let mut undo = Undo::default();
        let mut controller = None;
        match self.wire(w, r, &mut undo, &mut controller).await {
            Ok(a) => Ok(a),
            Err(e) => {
                if undo.endpoint {
                    if let Some(c) = controller.as_mut() {
                        if let Err(e) = c
                            .deregister(&self.target.container_id, &self.target.ifname)
                            .await
                        {
                            eprintln!("p4lb: rollback: deregistering endpoint: {e}");
                        }
                    }
                }
                if undo.veth {
                    if let Err(e) = self.host.delete(&self.host_name).await {
                        eprintln!("p4lb: rollback: deleting veth {}: {e}", self.host_name);
                    }
                }
                Err(e)
            }
        }
    }

    async fn wire(
        &self,
        w: &Wiring,
        r: &Registration,
        undo: &mut Undo,
        controller: &mut Option<Controller>,
    ) -> Result<Attached, CniError> {
        let t = &self.target;
        let ifname = &t.ifname;
        let (pod, host, host_name) = (&self.pod, &self.host, self.host_name.as_str());
        let primary = w
            .addresses
            .iter()
            .find(|a| a.addr.is_ipv4())
            .copied()
            .ok_or_else(|| {
                CniError::new(Code::Ipam, "no IPv4 address")
                    .details("the p4lb data plane is IPv4: configure an IPv4 range")
            })?;
        let gateway = w.gateway;

        // 1. The veth pair; the container end is born in its namespace.
        host.create_veth(host_name, &t.alias(), ifname, &self.ns, w.mtu, w.mac)
            .await?;
        undo.veth = true;

        // 2. Inside the container: checksums, addresses, link up, routes.
        let pod_link = pod.link(ifname).await?.ok_or_else(|| {
            CniError::new(Code::Netlink, "container interface vanished").details(ifname.clone())
        })?;
        self.ns
            .run(|| Ethtool::new().and_then(|e| e.set_tx_checksum(ifname, false)))??;
        for ip in &w.addresses {
            pod.add_address(pod_link.index, *ip, false).await?;
        }
        let restored_ip = r
            .restore
            .as_ref()
            .map(|h| IpAddr::V4(h.old_ip))
            .filter(|old| w.add_restored_ip && *old != primary.addr);
        if let Some(old) = restored_ip {
            let net = IpNet::new(old, 32).map_err(|e| CniError::new(Code::Netlink, e))?;
            pod.add_address(pod_link.index, net, true).await?;
        }
        pod.set_up(pod_link.index).await?;
        let routes = routes_or_default(&w.routes, gateway)?;
        if !primary.contains(gateway) {
            // A gateway outside the container's subnet (e.g. /32 addressing) is on-link.
            let gw_net = IpNet::new(gateway, if gateway.is_ipv4() { 32 } else { 128 })
                .map_err(|e| CniError::new(Code::Netlink, e))?;
            pod.add_route(pod_link.index, &Route::to(gw_net, None))
                .await?;
        }
        for route in &routes {
            let mut route = route.clone();
            if route.gw.is_none() && route.dst.addr.is_ipv4() == gateway.is_ipv4() {
                route.gw = Some(gateway);
            }
            pod.add_route(pod_link.index, &route).await?;
        }

        // 3. The host end: up, complete checksums.
        let host_link = host.link(host_name).await?.ok_or_else(|| {
            CniError::new(Code::Netlink, "host interface vanished").details(host_name.to_string())
        })?;
        host.set_up(host_link.index).await?;
        let set_host_csum = || Ethtool::new().and_then(|e| e.prepare_switch_end(host_name));
        match &self.host_ns {
            Some(hns) => hns.run(set_host_csum)??,
            None => set_host_csum()?,
        }
        if t.routed {
            // The node answers the pod's ARP and routes the pod's addresses to it.
            crate::net::sysctl::enable_proxy_arp(host_name)?;
            for ip in w.addresses.iter().map(|a| a.addr).filter(IpAddr::is_ipv4) {
                let net = IpNet::new(ip, 32).map_err(|e| CniError::new(Code::Netlink, e))?;
                host.add_route(host_link.index, &Route::to(net, None))
                    .await?;
            }
        }

        // 4. The controller. A restore is registered locked; the controller checks it.
        let mac = pod_link.mac.map(|m| mac_to_string(&m)).unwrap_or_default();
        let hint = r.restore.as_ref();
        let req = RegisterEndpointRequest {
            container_id: t.container_id.clone(),
            ifname: ifname.clone(),
            netns_path: t.netns.display().to_string(),
            ip: primary.addr.to_string(),
            prefix_len: primary.prefix as u32,
            mac: mac.clone(),
            gateway: gateway.to_string(),
            host_ifname: host_name.to_string(),
            labels: r.labels.clone(),
            network: t.network.clone(),
            locked: hint.is_some(),
            restore_of_ip: hint.map(|h| h.old_ip.to_string()).unwrap_or_default(),
            restore_of_mac: hint.and_then(|h| h.old_mac.clone()).unwrap_or_default(),
            behind_node: t.routed,
        };
        let c = controller.insert(r.controller.connect().await?);
        // Marked before the call: a registration that times out here may still be
        // committed by the controller, and the rollback's deregistration covers that.
        undo.endpoint = true;
        let endpoint = c.register(req).await?;
        let restore_of_ip = endpoint.restore_of_ip.parse::<Ipv4Addr>().ok();
        if let Some(h) = hint.filter(|_| restore_of_ip.is_none()) {
            // The controller decides what is a restore: it knew no checkpointed
            // migration of the hinted address, so this container starts fresh.
            eprintln!(
                "p4lb: warning: restore of {} ignored by the controller, starting fresh: \
                 no checkpointed migration of it is known",
                h.old_ip
            );
            if let Some(old) = restored_ip {
                pod.remove_address(pod_link.index, old).await?;
            }
        } else if let Some(old) = restored_ip.filter(|_| t.routed) {
            // A confirmed restore: the node routes the old address to the pod too.
            let net = IpNet::new(old, 32).map_err(|e| CniError::new(Code::Netlink, e))?;
            host.add_route(host_link.index, &Route::to(net, None))
                .await?;
        }

        // 5. The gateway's MAC, when known: pinned so the container never waits for ARP.
        // Behind the node, the gateway is the node, which answers with the host end's MAC.
        let gateway_mac = if t.routed {
            host_link.mac
        } else {
            parse_mac(&endpoint.router_mac).or(r.router_mac)
        };
        if let Some(router) = gateway_mac {
            pod.add_permanent_neighbour(pod_link.index, gateway, router)
                .await?;
        }

        Ok(Attached {
            host_name: host_name.to_string(),
            host_mac: host_link.mac.map(|m| mac_to_string(&m)),
            host_mtu: host_link.mtu,
            mac,
            mtu: pod_link.mtu,
            primary,
            gateway,
            routes,
            endpoint,
            restore_of_ip,
        })
    }
}

/// The routes set inside the container: `given`, or a default route through `gateway`.
pub fn routes_or_default(given: &[Route], gateway: IpAddr) -> Result<Vec<Route>, CniError> {
    let mut routes = given.to_vec();
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
    Ok(routes)
}

/// Deletes the host end named for this attachment if p4lb made it (its alias);
/// deleting it takes the container end with it. A link under that name without the
/// alias is left alone, with a warning. `Ok(false)`: nothing was deleted.
pub async fn remove_own_veth(target: &Target) -> Result<bool, CniError> {
    let (host, _host_ns) = target.host_netlink()?;
    let name = target.host_name();
    let Some(link): Option<Link> = host.link(&name).await? else {
        return Ok(false);
    };
    let ours = target.alias();
    if link.alias.as_deref() == Some(ours.as_str()) {
        host.delete(&name).await
    } else {
        eprintln!(
            "p4lb: warning: {name} left alone: not created by p4lb for {}/{} on network {} \
             (alias {:?})",
            target.container_id, target.ifname, target.network, link.alias
        );
        Ok(false)
    }
}

/// Undoes an attachment: the deregistration, then p4lb's own veth. Both are tried;
/// every failure is returned (empty: done). A controller that did not know the
/// endpoint is no failure.
pub async fn detach(target: &Target, controller: &ControllerConf) -> Vec<CniError> {
    let mut errors = Vec::new();
    if target.container_id.len() <= MAX_CONTAINER_ID_LEN {
        let deregistered = match controller.connect().await {
            Ok(mut c) => c.deregister(&target.container_id, &target.ifname).await,
            Err(e) => Err(e),
        };
        if let Err(e) = deregistered {
            errors.push(e.context("endpoint not deregistered"));
        }
    }
    if let Err(e) = remove_own_veth(target).await {
        errors.push(e.context("veth not removed"));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_route_when_none_is_given() {
        let gw: IpAddr = "10.0.0.1".parse().unwrap();
        let r = routes_or_default(&[], gw).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].dst.to_string(), "0.0.0.0/0");
        assert_eq!(r[0].gw, Some(gw));
        let given = [Route::to("10.9.0.0/16".parse().unwrap(), None)];
        assert_eq!(routes_or_default(&given, gw).unwrap(), given.to_vec());
    }

    #[test]
    fn lengths_are_checked_before_anything() {
        let t = Target {
            container_id: "x".repeat(MAX_CONTAINER_ID_LEN + 1),
            ifname: "eth0".into(),
            netns: "/nonexistent".into(),
            network: "n".into(),
            switch_netns: None,
            routed: false,
        };
        assert!(t
            .check_lengths("container ID")
            .unwrap_err()
            .msg
            .contains("too long"));
        let t = Target {
            container_id: "c".repeat(MAX_CONTAINER_ID_LEN),
            network: "n".repeat(200),
            ..t
        };
        assert!(t
            .check_lengths("container ID")
            .unwrap_err()
            .details
            .contains("alias"));
        let t = Target {
            container_id: "abc".into(),
            network: "net".into(),
            ..t
        };
        t.check_lengths("container ID").unwrap();
        assert_eq!(t.alias(), "p4lb:net:abc/eth0");
    }
}
