//! The verbs: `info`, `create`, `setup`, `teardown`.
//!
//! # Addresses
//!
//! Podman assigns the addresses of a plugin network itself, from the network's
//! subnets (seen with netavark 1.17 / podman 5.8: `podman network create -d PLUGIN
//! --subnet 10.77.0.0/24` gives `setup` `"static_ips": ["10.77.0.2"]` and the subnet's
//! gateway `10.77.0.1`; without `--subnet` the network has no subnet and podman
//! assigns nothing). So `create` requires an IPv4 subnet and `setup` takes the
//! container's IPv4 address from `static_ips` and the prefix and gateway from its
//! subnet.
//!
//! # Restore without hints
//!
//! What podman passes to `setup` (same versions, logged from the plugin's stdin):
//!
//! | command | `container_id`, `container_name` | netns path | `static_ips` | `static_mac` |
//! |---|---|---|---|---|
//! | `podman run` | new | new | assigned by podman | `null` |
//! | `podman container restore --import X --tcp-established` | as before the checkpoint | new | the address before | the MAC before |
//! | the same with `--ignore-static-ip` | as before | new | a new address | the MAC before |
//! | with `--ignore-static-ip --ignore-static-mac` | as before | new | a new address | `null` |
//!
//! Each `setup` is matched by one `teardown` with the same input and namespace path.
//! Neither says "restore", and a fresh `podman run --ip X --mac-address Y` looks like
//! the first. The controller knows: [`restore_of`] finds an active migration in state
//! `checkpointed` (or `restoring`) whose source was this container on this interface.
//! Then the endpoint is registered locked as a restore of the source's address; the
//! controller checks it again, and the CRIU action script moves the old address into
//! the new namespace, repoints the switch and unlocks. Otherwise it is a fresh start.
//!
//! # The endpoint's identity
//!
//! The controller knows the endpoint by [`endpoint_id`]: the podman container ID and
//! a digest of the network namespace path. A restore keeps the container ID but gets
//! a new namespace, so source and target of a migration are two endpoints (the
//! controller moves the backend from one to the other), and `teardown`, which gets
//! the same namespace path as `setup`, finds the endpoint and its veth again without
//! any state of its own.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use p4lb_api::api::Migration;
use p4lb_cni::attach::{self, ControllerConf, Registration, Target, Wiring};
use p4lb_cni::cni::error::Code;
use p4lb_cni::cni::result::IpNet;
use p4lb_cni::net::link::{mac_to_string, parse_mac};
use p4lb_cni::restore::{HintSource, RestoreHint};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::options::NetOptions;
use crate::types::{Info, NetAddress, NetInterface, Network, PluginExec, StatusBlock, API_VERSION};
use crate::Error;

pub fn info() -> Info {
    Info {
        version: env!("CARGO_PKG_VERSION").to_string(),
        api_version: API_VERSION.to_string(),
    }
}

fn parse_input<T: serde::de::DeserializeOwned>(what: &str, input: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(input).map_err(|e| Error::Input(format!("{what}: {e}")))
}

/// A subnet of the network, parsed.
fn subnets(net: &Network) -> Result<Vec<(IpNet, Option<IpAddr>)>, Error> {
    let mut out = Vec::new();
    for s in net.subnets.iter().flatten() {
        let cidr: IpNet = s
            .subnet
            .parse()
            .map_err(|e| Error::Network(format!("subnet {:?}: {e}", s.subnet)))?;
        if let Some(gw) = s.gateway {
            if !cidr.contains(gw) {
                return Err(Error::Network(format!(
                    "gateway {gw} is outside subnet {cidr}"
                )));
            }
        }
        out.push((cidr, s.gateway));
    }
    Ok(out)
}

/// `create`: checks the network podman is about to store and returns it. A p4lb
/// network needs an IPv4 subnet (podman assigns the addresses from it) and has no
/// IPv6 (the switch routes IPv4); its options must all be known and valid. DNS is
/// turned off: p4lb serves no names on its networks.
pub fn create(input: &[u8]) -> Result<Value, Error> {
    let mut raw: serde_json::Map<String, Value> = parse_input("network", input)?;
    let net: Network = parse_input("network", input)?;
    NetOptions::parse(net.options.as_ref())?;
    if net.ipv6_enabled {
        return Err(Error::Network(
            "IPv6 is not supported: the p4lb switch routes IPv4 (drop --ipv6)".into(),
        ));
    }
    let subnets = subnets(&net)?;
    if let Some((v6, _)) = subnets.iter().find(|(s, _)| !s.addr.is_ipv4()) {
        return Err(Error::Network(format!(
            "subnet {v6} is IPv6: the p4lb switch routes IPv4"
        )));
    }
    if subnets.is_empty() {
        return Err(Error::Network(
            "a p4lb network needs an IPv4 subnet (--subnet, e.g. --subnet 10.89.0.0/24): \
             podman assigns the containers' addresses from it"
                .into(),
        ));
    }
    raw.insert("dns_enabled".into(), Value::Bool(false));
    Ok(Value::Object(raw))
}

/// The container ID the controller knows the endpoint of `container_id` in the
/// namespace at `netns` by: `<container_id>-<10 hex digits of SHA-256(netns)>`.
pub fn endpoint_id(container_id: &str, netns: &str) -> String {
    let digest = Sha256::digest(netns.as_bytes());
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("{container_id}-{hex}")
}

/// The podman container ID an [`endpoint_id`] was made from.
fn podman_id(endpoint_container_id: &str) -> Option<&str> {
    let (id, hex) = endpoint_container_id.rsplit_once('-')?;
    (hex.len() == 10 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The migration a `setup` of `container_id` on `ifname` restores: the newest one in
/// state `checkpointed` or `restoring` whose source endpoint was that container on
/// that interface (in any namespace). None: a fresh start.
pub fn restore_of<'a>(
    migrations: &'a [Migration],
    container_id: &str,
    ifname: &str,
) -> Option<&'a Migration> {
    migrations.iter().rev().find(|m| {
        matches!(m.state.as_str(), "checkpointed" | "restoring")
            && m.source_key
                .split_once('/')
                .is_some_and(|(id, ifn)| ifn == ifname && podman_id(id) == Some(container_id))
    })
}

/// The container's address on the network: its IPv4 address from `static_ips` with
/// the prefix of the subnet holding it, and that subnet's gateway.
pub fn addressing(net: &Network, static_ips: &[IpAddr]) -> Result<(IpNet, IpAddr), Error> {
    let subnets = subnets(net)?;
    for ip in static_ips.iter().filter(|ip| ip.is_ipv4()) {
        if let Some((cidr, gw)) = subnets.iter().find(|(s, _)| s.contains(*ip)) {
            let gw = gw.ok_or_else(|| {
                Error::Network(format!(
                    "subnet {cidr} of network {} has no gateway",
                    net.name
                ))
            })?;
            let addr = IpNet::new(*ip, cidr.prefix).map_err(Error::Network)?;
            return Ok((addr, gw));
        }
    }
    Err(Error::Input(format!(
        "podman assigned no IPv4 address in a subnet of network {} (static_ips {static_ips:?})",
        net.name
    )))
}

fn target(exec: &PluginExec, netns: &str, opts: &NetOptions) -> Result<Target, Error> {
    if !netns.starts_with('/') {
        return Err(Error::Usage(format!(
            "the network namespace must be an absolute path, not {netns:?}"
        )));
    }
    if exec.container_id.is_empty() {
        return Err(Error::Input("container_id is empty".into()));
    }
    Ok(Target {
        container_id: endpoint_id(&exec.container_id, netns),
        ifname: exec.network_options.interface_name.clone(),
        netns: PathBuf::from(netns),
        network: exec.network.name.clone(),
        switch_netns: opts.switch_netns.clone(),
        routed: opts.routed,
    })
}

fn controller(opts: &NetOptions) -> ControllerConf {
    ControllerConf {
        socket: opts.socket.clone(),
        timeout: opts.timeout,
    }
}

/// What a `setup` or `teardown` input asks for, parsed and validated: nothing is
/// touched to get it (no file, socket or namespace), so it is also what the
/// `netavark_input` fuzz target runs.
#[derive(Clone, Debug)]
pub struct Request {
    pub exec: PluginExec,
    pub opts: NetOptions,
    pub target: Target,
}

/// A validated `setup` input: the [`Request`] and the container's addressing.
#[derive(Clone, Debug)]
pub struct SetupRequest {
    pub request: Request,
    /// The container's address with its subnet's prefix.
    pub address: IpNet,
    pub gateway: IpAddr,
    /// The MAC podman asks for (a restore keeps the old one), if any.
    pub mac: Option<[u8; 6]>,
}

/// Parses and validates the stdin of `teardown <netns>` (pure).
pub fn parse_teardown(netns: &str, input: &[u8]) -> Result<Request, Error> {
    parse_request("teardown input", netns, input)
}

fn parse_request(what: &str, netns: &str, input: &[u8]) -> Result<Request, Error> {
    let exec: PluginExec = parse_input(what, input)?;
    let opts = NetOptions::parse(exec.network.options.as_ref())?;
    let target = target(&exec, netns, &opts)?;
    Ok(Request { exec, opts, target })
}

/// Parses and validates the stdin of `setup <netns>` (pure): the options, the
/// address podman assigned within a subnet of the network, the MAC, the namespace
/// path.
pub fn parse_setup(netns: &str, input: &[u8]) -> Result<SetupRequest, Error> {
    let exec: PluginExec = parse_input("setup input", input)?;
    let opts = NetOptions::parse(exec.network.options.as_ref())?;
    let static_ips = exec.network_options.static_ips.clone().unwrap_or_default();
    let (address, gateway) = addressing(&exec.network, &static_ips)?;
    let mac = match exec.network_options.static_mac.as_deref() {
        None | Some("") => None,
        Some(m) => Some(
            parse_mac(m).ok_or_else(|| Error::Input(format!("static_mac {m:?} is not a MAC")))?,
        ),
    };
    let target = target(&exec, netns, &opts)?;
    Ok(SetupRequest {
        request: Request { exec, opts, target },
        address,
        gateway,
        mac,
    })
}

/// The restore hint of a `setup` of `container_id` on `ifname` with `mac`, given the
/// controller's migrations (pure): None for a fresh start ([`restore_of`] finds no
/// migration), otherwise the source's address, refused when it is not IPv4.
pub fn restore_hint(
    migrations: &[Migration],
    container_id: &str,
    ifname: &str,
    mac: Option<[u8; 6]>,
) -> Result<Option<RestoreHint>, Error> {
    let Some(m) = restore_of(migrations, container_id, ifname) else {
        return Ok(None);
    };
    let old_ip: Ipv4Addr = m.source_ip.parse().map_err(|_| {
        Error::Input(format!(
            "migration {} has no IPv4 source address ({:?})",
            m.id, m.source_ip
        ))
    })?;
    tracing::info!(migration = %m.id, %old_ip, "restore of a checkpointed container");
    Ok(Some(RestoreHint {
        old_ip,
        old_mac: mac.map(|m| mac_to_string(&m)),
        source: HintSource::Migration,
    }))
}

/// The endpoint's labels: the network's ([`NetOptions::endpoint_labels`]) and the
/// container's name ([`p4lb_api::labels::PODMAN_NAME_LABEL`], when podman gives one).
pub fn endpoint_labels(
    opts: &NetOptions,
    exec: &PluginExec,
) -> std::collections::HashMap<String, String> {
    let mut l = opts.endpoint_labels();
    if !exec.container_name.is_empty() {
        l.insert(
            p4lb_api::labels::PODMAN_NAME_LABEL.to_string(),
            exec.container_name.clone(),
        );
    }
    l
}

/// `setup <netns>`: wires the container and registers it (locked, as a restore,
/// when [`restore_of`] finds the migration it belongs to). A failure leaves nothing
/// behind ([`p4lb_cni::attach`]); an unreachable controller fails it before anything
/// is created. The input is checked first ([`parse_setup`]).
pub async fn setup(netns: &str, input: &[u8]) -> Result<StatusBlock, Error> {
    let SetupRequest {
        request: Request { exec, opts, target },
        address,
        gateway,
        mac,
    } = parse_setup(netns, input)?;
    let ifname = target.ifname.clone();
    let prepared = target.prepare().await?;
    let ctl = controller(&opts);
    let migrations = ctl.connect().await?.migrations().await?;
    let restore = restore_hint(&migrations, &exec.container_id, &ifname, mac)?;
    let wiring = Wiring {
        addresses: vec![address],
        gateway,
        routes: Vec::new(),
        mtu: opts.mtu,
        mac,
        // The CRIU action script moves every address the container had.
        add_restored_ip: false,
    };
    let registration = Registration {
        controller: ctl,
        labels: endpoint_labels(&opts, &exec),
        restore,
        router_mac: opts.router_mac,
    };
    let a = prepared.attach(&wiring, &registration).await?;
    let mut status = StatusBlock::default();
    status.interfaces.insert(
        ifname,
        NetInterface {
            mac_address: a.mac,
            subnets: vec![NetAddress {
                ipnet: a.primary.to_string(),
                gateway: Some(a.gateway),
            }],
        },
    );
    Ok(status)
}

/// `teardown <netns>`: deregisters the endpoint and removes p4lb's veth (the input
/// checked first, [`parse_teardown`]). Both are tried. An unreachable controller does not fail it (so `podman rm` is never held
/// up by an absent controller): the veth is gone, and the controller withdraws an
/// endpoint whose namespace or veth is gone when it next checks (it shows as
/// `stale` in `p4lbctl endpoints ls` until removed). Every other failure is
/// reported.
pub async fn teardown(netns: &str, input: &[u8]) -> Result<(), Error> {
    let Request { opts, target, .. } = parse_teardown(netns, input)?;
    let (unreachable, errors): (Vec<_>, Vec<_>) = attach::detach(&target, &controller(&opts))
        .await
        .into_iter()
        .partition(|e| e.code == Code::TryAgainLater as u32);
    for e in &unreachable {
        eprintln!(
            "p4lb: warning: {}; the controller withdraws the endpoint once it sees its \
             namespace gone (p4lbctl endpoints rm {}/{} removes its record)",
            Error::Attach(e.clone()),
            target.container_id,
            target.ifname
        );
    }
    if errors.is_empty() {
        return Ok(());
    }
    Err(Error::Teardown(
        errors
            .iter()
            .map(|e| Error::Attach(e.clone()).to_string())
            .collect::<Vec<_>>()
            .join("; "),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn network(v: Value) -> Network {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn create_needs_an_ipv4_subnet_and_valid_options_and_turns_dns_off() {
        let base = json!({"name": "n", "id": "ab", "driver": "p4lb", "dns_enabled": true,
            "ipv6_enabled": false, "internal": false, "created": "x",
            "subnets": [{"subnet": "10.89.0.0/24"}], "options": {"labels": "app=web"}});
        let out = create(base.to_string().as_bytes()).unwrap();
        assert_eq!(out["dns_enabled"], false);
        assert_eq!(out["created"], "x", "fields p4lb does not read are kept");
        assert_eq!(out["options"]["labels"], "app=web");
        let refused = |patch: Value, want: &str| {
            let mut v = base.clone();
            for (k, x) in patch.as_object().unwrap() {
                v[k] = x.clone();
            }
            let e = create(v.to_string().as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{v}: {e:?} lacks {want:?}");
        };
        refused(json!({"subnets": null}), "needs an IPv4 subnet");
        refused(json!({"subnets": [{"subnet": "fd00::/64"}]}), "IPv6");
        refused(json!({"ipv6_enabled": true}), "IPv6");
        refused(json!({"subnets": [{"subnet": "10.89.0.0"}]}), "CIDR");
        refused(
            json!({"subnets": [{"subnet": "10.89.0.0/24", "gateway": "10.1.0.1"}]}),
            "outside subnet",
        );
        refused(json!({"options": {"nope": "1"}}), "unknown option \"nope\"");
        refused(json!({"options": {"mtu": "1"}}), "68..65535");
        assert!(create(b"{")
            .unwrap_err()
            .to_string()
            .contains("invalid input"));
    }

    #[test]
    fn the_address_comes_from_static_ips_and_its_subnet() {
        let n = network(json!({"name": "n", "subnets": [
            {"subnet": "fd00::/64", "gateway": "fd00::1"},
            {"subnet": "10.89.0.0/24", "gateway": "10.89.0.1"}]}));
        let ips: Vec<IpAddr> = vec!["fd00::5".parse().unwrap(), "10.89.0.7".parse().unwrap()];
        let (a, gw) = addressing(&n, &ips).unwrap();
        assert_eq!(a.to_string(), "10.89.0.7/24");
        assert_eq!(gw.to_string(), "10.89.0.1");
        let e = addressing(&n, &["10.1.0.7".parse().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("no IPv4 address"), "{e}");
        let n = network(json!({"name": "n", "subnets": [{"subnet": "10.89.0.0/24"}]}));
        let e = addressing(&n, &["10.89.0.7".parse().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("no gateway"), "{e}");
    }

    #[test]
    fn endpoint_ids_differ_per_namespace_and_lead_back_to_the_container() {
        let a = endpoint_id("46aa32", "/run/netns/netns-1");
        assert_eq!(a, endpoint_id("46aa32", "/run/netns/netns-1"));
        assert_ne!(a, endpoint_id("46aa32", "/run/netns/netns-2"));
        assert_eq!(podman_id(&a), Some("46aa32"));
        assert_eq!(podman_id("46aa32"), None);
        assert_eq!(podman_id("srv0-xyz"), None);
    }

    #[test]
    fn a_restore_is_a_checkpointed_migration_of_the_same_container_and_interface() {
        let src = format!("{}/eth0", endpoint_id("c1", "/run/netns/a"));
        let mig = |id: &str, key: &str, state: &str| Migration {
            id: id.into(),
            source_key: key.into(),
            source_ip: "10.89.0.2".into(),
            state: state.into(),
            ..Default::default()
        };
        for state in ["checkpointed", "restoring"] {
            let ms = [mig("m1", &src, state)];
            assert_eq!(
                restore_of(&ms, "c1", "eth0").map(|m| m.id.as_str()),
                Some("m1")
            );
        }
        for state in ["locked", "restored", "done", "aborted"] {
            assert!(restore_of(&[mig("m1", &src, state)], "c1", "eth0").is_none());
        }
        let ms = [mig("m1", &src, "checkpointed")];
        assert!(restore_of(&ms, "c2", "eth0").is_none(), "another container");
        assert!(restore_of(&ms, "c1", "eth1").is_none(), "another interface");
        assert!(restore_of(&[mig("m1", "c1/eth0", "checkpointed")], "c1", "eth0").is_none());
        // The newest one wins.
        let ms = [
            mig("m1", &src, "checkpointed"),
            mig("m2", &src, "checkpointed"),
        ];
        assert_eq!(restore_of(&ms, "c1", "eth0").unwrap().id, "m2");
    }

    #[test]
    fn setup_refuses_bad_input_before_touching_anything() {
        let input = |netopts: Value, ips: Value, mac: Value| {
            json!({"container_id": "c1", "container_name": "w", "network": {"name": "n",
                "driver": "p4lb", "subnets": [{"subnet": "10.89.0.0/24", "gateway": "10.89.0.1"}],
                "options": netopts}, "network_options": {"interface_name": "eth0",
                "static_ips": ips, "static_mac": mac}})
            .to_string()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let run = |netns: &str, i: String| rt.block_on(setup(netns, i.as_bytes())).unwrap_err();
        let e = run(
            "/nonexistent/ns",
            input(json!({"x": "1"}), json!(["10.89.0.2"]), json!(null)),
        );
        assert!(e.to_string().contains("unknown option"), "{e}");
        let e = run(
            "/nonexistent/ns",
            input(json!(null), json!([]), json!(null)),
        );
        assert!(e.to_string().contains("no IPv4 address"), "{e}");
        let e = run(
            "/nonexistent/ns",
            input(json!(null), json!(["10.89.0.2"]), json!("zz")),
        );
        assert!(e.to_string().contains("static_mac"), "{e}");
        let e = run("rel", input(json!(null), json!(["10.89.0.2"]), json!(null)));
        assert!(e.to_string().contains("absolute path"), "{e}");
        let e = run(
            "/nonexistent/ns",
            input(json!(null), json!(["10.89.0.2"]), json!(null)),
        );
        assert!(
            e.to_string().contains("network namespace does not exist"),
            "{e}"
        );
        assert!(
            e.to_json().starts_with("{\"error\":\"p4lb: "),
            "{}",
            e.to_json()
        );
    }
    #[test]
    fn setup_and_teardown_inputs_parse_without_touching_anything() {
        let input = json!({"container_id": "c1", "container_name": "w", "network": {"name": "n",
            "driver": "p4lb", "subnets": [{"subnet": "10.89.0.0/24", "gateway": "10.89.0.1"}],
            "options": {"labels": "app=web", "mtu": "1400"}},
            "network_options": {"interface_name": "eth0", "static_ips": ["10.89.0.7"],
            "static_mac": "02:00:00:00:00:07"}})
        .to_string();
        let r = parse_setup("/run/netns/x", input.as_bytes()).unwrap();
        assert_eq!(r.address.to_string(), "10.89.0.7/24");
        assert_eq!(r.gateway.to_string(), "10.89.0.1");
        assert_eq!(r.mac, Some([2, 0, 0, 0, 0, 7]));
        assert_eq!(r.request.opts.mtu, Some(1400));
        assert_eq!(
            r.request.target.container_id,
            endpoint_id("c1", "/run/netns/x")
        );
        assert_eq!(r.request.target.ifname, "eth0");
        let t = parse_teardown("/run/netns/x", input.as_bytes()).unwrap();
        assert_eq!(t.target.container_id, r.request.target.container_id);
        let e = parse_teardown("x", input.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("absolute path"), "{e}");
        let e = parse_teardown("/run/netns/x", b"{").unwrap_err();
        assert!(e.to_string().contains("teardown input"), "{e}");
        // The endpoint's labels: the network's and the container's name.
        let l = endpoint_labels(&r.request.opts, &r.request.exec);
        assert_eq!(l.get("app").map(String::as_str), Some("web"));
        assert_eq!(l.get("podman.name").map(String::as_str), Some("w"));
        let mut nameless = r.request.exec.clone();
        nameless.container_name.clear();
        assert!(!endpoint_labels(&r.request.opts, &nameless).contains_key("podman.name"));
    }

    #[test]
    fn the_restore_hint_carries_the_source_address_and_the_mac() {
        let mig = |src: &str| Migration {
            id: "mig-1".into(),
            state: "checkpointed".into(),
            source_key: format!("{}/eth0", endpoint_id("c1", "/run/netns/a")),
            source_ip: src.into(),
            ..Default::default()
        };
        let h = restore_hint(&[mig("10.89.0.2")], "c1", "eth0", Some([2, 0, 0, 0, 0, 7]))
            .unwrap()
            .unwrap();
        assert_eq!(h.old_ip, Ipv4Addr::new(10, 89, 0, 2));
        assert_eq!(h.old_mac.as_deref(), Some("02:00:00:00:00:07"));
        assert!(restore_hint(&[mig("10.89.0.2")], "c2", "eth0", None)
            .unwrap()
            .is_none());
        let e = restore_hint(&[mig("fe80::1")], "c1", "eth0", None).unwrap_err();
        assert!(e.to_string().contains("no IPv4 source address"), "{e}");
    }
}
