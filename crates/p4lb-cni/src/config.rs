//! p4lb's own keys in the network configuration (see README.md for the table).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use p4lb_api::DEFAULT_SOCKET;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::cni::error::{CniError, Code};
use crate::net::link::parse_mac;

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    controller_socket: Option<PathBuf>,
    controller_timeout_ms: Option<u64>,
    state_dir: Option<PathBuf>,
    switch: Option<String>,
    switch_netns: Option<PathBuf>,
    mtu: Option<u32>,
    gateway: Option<String>,
    router_mac: Option<String>,
    lock_on_restore: Option<bool>,
    keep_ip_on_restore: Option<bool>,
    add_restored_ip: Option<bool>,
    routed: Option<bool>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Validated p4lb options.
#[derive(Clone, Debug)]
pub struct P4lbConf {
    /// Unix socket of the controller API.
    pub controller_socket: PathBuf,
    /// Bound for connecting and for each call to the controller.
    pub controller_timeout: Duration,
    /// The plugin's own state (deregistrations DEL could not make yet).
    pub state_dir: PathBuf,
    /// Name of the switch the pods attach to (recorded as label `p4lb.switch`).
    pub switch: Option<String>,
    /// Namespace the host end of the veth goes to (where the switch reads its ports);
    /// default: the namespace the plugin runs in.
    pub switch_netns: Option<PathBuf>,
    pub mtu: Option<u32>,
    /// Gateway for the pod; overrides the IPAM result's gateway.
    pub gateway: Option<IpAddr>,
    /// The switch's router MAC, when the controller does not report it.
    pub router_mac: Option<[u8; 6]>,
    /// Register a restoring container locked (no packet reaches it until unlock).
    pub lock_on_restore: bool,
    /// Pass a restore's old IP/MAC (`CNI_ARGS` IP=/MAC=) on to the IPAM plugin.
    pub keep_ip_on_restore: bool,
    /// Also put the old address (/32) on the new interface so restored sockets can bind.
    pub add_restored_ip: bool,
    /// Route the pod behind this node (its uplink on a switch port) instead of
    /// putting it on a switch port of its own.
    pub routed: bool,
    /// Static labels for every endpoint of this network.
    pub labels: BTreeMap<String, String>,
}

/// Default `stateDir`, next to the other plugins' state under /var/lib/cni.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cni/p4lb";

fn invalid(key: &str, value: impl std::fmt::Display, why: &str) -> CniError {
    CniError::new(Code::InvalidNetworkConfig, format!("invalid {key}"))
        .details(format!("{key}={value}: {why}"))
}

impl P4lbConf {
    pub fn from_netconf(obj: &Map<String, Value>) -> Result<Self, CniError> {
        // Well-known keys that p4lb does not implement: refuse rather than ignore.
        if let Some(v) = obj.get("ipMasq").filter(|v| v.as_bool() == Some(true)) {
            return Err(
                CniError::new(Code::UnsupportedField, "unsupported field ipMasq")
                    .details(format!("ipMasq={v}: the p4lb switch routes pod traffic, use a chained plugin for masquerading")),
            );
        }
        let wire: Wire = serde_json::from_value(Value::Object(obj.clone())).map_err(|e| {
            CniError::new(Code::InvalidNetworkConfig, "invalid p4lb options").details(e.to_string())
        })?;
        if let Some(m) = wire.mtu {
            if !(68..=65535).contains(&m) {
                return Err(invalid("mtu", m, "must be 68..65535"));
            }
        }
        let gateway = match wire.gateway.as_deref() {
            None | Some("") => None,
            Some(g) => Some(
                g.parse::<IpAddr>()
                    .map_err(|_| invalid("gateway", g, "not an IP address"))?,
            ),
        };
        let router_mac = match wire.router_mac.as_deref() {
            None | Some("") => None,
            Some(m) => {
                Some(parse_mac(m).ok_or_else(|| invalid("routerMac", m, "not a MAC address"))?)
            }
        };
        let timeout = wire.controller_timeout_ms.unwrap_or(10_000);
        if timeout == 0 {
            return Err(invalid("controllerTimeoutMs", 0, "must be positive"));
        }
        let socket = wire
            .controller_socket
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        if !socket.is_absolute() {
            return Err(invalid(
                "controllerSocket",
                socket.display(),
                "must be an absolute path",
            ));
        }
        let routed = wire.routed.unwrap_or(false);
        if routed
            && wire
                .switch_netns
                .as_ref()
                .is_some_and(|p| !p.as_os_str().is_empty())
        {
            return Err(invalid(
                "switchNetns",
                wire.switch_netns
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                "a routed pod's veth stays in the node's namespace: drop switchNetns or routed",
            ));
        }
        let state_dir = wire
            .state_dir
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        if !state_dir.is_absolute() {
            return Err(invalid(
                "stateDir",
                state_dir.display(),
                "must be an absolute path",
            ));
        }
        Ok(P4lbConf {
            controller_socket: socket,
            state_dir,
            controller_timeout: Duration::from_millis(timeout),
            switch: wire.switch.filter(|s| !s.is_empty()),
            switch_netns: wire.switch_netns.filter(|p| !p.as_os_str().is_empty()),
            mtu: wire.mtu,
            gateway,
            router_mac,
            lock_on_restore: wire.lock_on_restore.unwrap_or(true),
            keep_ip_on_restore: wire.keep_ip_on_restore.unwrap_or(false),
            add_restored_ip: wire.add_restored_ip.unwrap_or(true),
            routed,
            labels: wire.labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(v: Value) -> Result<P4lbConf, CniError> {
        P4lbConf::from_netconf(v.as_object().unwrap())
    }

    #[test]
    fn defaults() {
        let c = conf(json!({"cniVersion": "1.1.0", "name": "n", "type": "p4lb"})).unwrap();
        assert_eq!(c.controller_socket, PathBuf::from(DEFAULT_SOCKET));
        assert!(c.lock_on_restore);
        assert!(!c.keep_ip_on_restore);
        assert!(c.add_restored_ip);
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    }

    #[test]
    fn routed_has_no_switch_namespace() {
        assert!(!conf(json!({})).unwrap().routed);
        assert!(conf(json!({"routed": true})).unwrap().routed);
        let e = conf(json!({"routed": true, "switchNetns": "/run/netns/sw"})).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.details.contains("drop switchNetns or routed"),
            "{}",
            e.details
        );
        assert_eq!(conf(json!({"routed": "yes"})).unwrap_err().code, 7);
    }

    #[test]
    fn validation() {
        assert_eq!(conf(json!({"mtu": 10})).unwrap_err().code, 7);
        assert_eq!(conf(json!({"gateway": "x"})).unwrap_err().code, 7);
        assert_eq!(conf(json!({"routerMac": "zz"})).unwrap_err().code, 7);
        assert_eq!(
            conf(json!({"controllerSocket": "rel"})).unwrap_err().code,
            7
        );
        assert_eq!(conf(json!({"lockOnRestore": "yes"})).unwrap_err().code, 7);
        assert_eq!(conf(json!({"stateDir": "rel"})).unwrap_err().code, 7);
        let e = conf(json!({"ipMasq": true})).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.details.contains("ipMasq=true"));
        let c =
            conf(json!({"routerMac": "02:00:00:00:00:fe", "mtu": 1400, "lockOnRestore": false}))
                .unwrap();
        assert_eq!(c.router_mac, Some([2, 0, 0, 0, 0, 0xfe]));
        assert!(!c.lock_on_restore);
    }
}
