//! The ADD result, held in the 1.1.0 shape and written in whatever version was asked
//! for (0.3.0 … 1.1.0). Also parses results of those versions (`prevResult`, IPAM).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::error::{CniError, Code};
use super::version::Version;

/// An address with prefix length, written `10.1.0.5/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, String> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("prefix /{prefix} too long for {addr}"));
        }
        Ok(IpNet { addr, prefix })
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpNet {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        IpNet {
            addr,
            prefix: self.prefix,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match IpNet::new(ip, self.prefix) {
            Ok(other) => ip.is_ipv4() == self.addr.is_ipv4() && other.network() == self.network(),
            Err(_) => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR notation"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("{p:?} is not a prefix length"))?;
        IpNet::new(addr, prefix)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    pub sandbox: Option<String>,
    pub socket_path: Option<String>,
    pub pci_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u32>,
}

impl Route {
    pub fn to(dst: IpNet, gw: Option<IpAddr>) -> Self {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A success result (also the abbreviated IPAM form: no interfaces, no indices).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

// Wire forms, lenient on input: unknown keys are ignored, numbers may be absent.
#[derive(Deserialize)]
struct WireResult {
    #[serde(default)]
    interfaces: Option<Vec<WireInterface>>,
    #[serde(default)]
    ips: Option<Vec<WireIp>>,
    #[serde(default)]
    routes: Option<Vec<WireRoute>>,
    #[serde(default)]
    dns: Option<Dns>,
}

#[derive(Deserialize)]
struct WireInterface {
    name: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    sandbox: Option<String>,
    #[serde(default, rename = "socketPath")]
    socket_path: Option<String>,
    #[serde(default, rename = "pciID")]
    pci_id: Option<String>,
}

#[derive(Deserialize)]
struct WireIp {
    address: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Deserialize)]
struct WireRoute {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    advmss: Option<u32>,
    #[serde(default)]
    priority: Option<u32>,
    #[serde(default)]
    table: Option<u32>,
    #[serde(default)]
    scope: Option<u32>,
}

fn decode_err(what: &str, e: impl fmt::Display) -> CniError {
    CniError::new(Code::DecodingFailure, format!("cannot decode {what}")).details(e.to_string())
}

fn opt_ip(s: Option<String>, what: &str) -> Result<Option<IpAddr>, CniError> {
    match s.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| decode_err(what, format!("{s:?} is not an IP address"))),
    }
}

impl CniResult {
    /// Parses a result of any supported version (0.3.x/0.4.0 `version` fields are
    /// accepted and dropped). `what` names it in errors ("prevResult", "IPAM result").
    pub fn from_value(value: &Value, what: &str) -> Result<Self, CniError> {
        let wire: WireResult =
            serde_json::from_value(value.clone()).map_err(|e| decode_err(what, e))?;
        let mut out = CniResult {
            dns: wire.dns.unwrap_or_default(),
            ..Default::default()
        };
        for i in wire.interfaces.unwrap_or_default() {
            out.interfaces.push(Interface {
                name: i.name,
                mac: i.mac.filter(|s| !s.is_empty()),
                mtu: i.mtu.filter(|m| *m != 0),
                sandbox: i.sandbox.filter(|s| !s.is_empty()),
                socket_path: i.socket_path.filter(|s| !s.is_empty()),
                pci_id: i.pci_id.filter(|s| !s.is_empty()),
            });
        }
        for ip in wire.ips.unwrap_or_default() {
            out.ips.push(IpConfig {
                address: ip.address.parse().map_err(|e| decode_err(what, e))?,
                gateway: opt_ip(ip.gateway, what)?,
                interface: ip.interface,
            });
        }
        for r in wire.routes.unwrap_or_default() {
            out.routes.push(Route {
                dst: r.dst.parse().map_err(|e| decode_err(what, e))?,
                gw: opt_ip(r.gw, what)?,
                mtu: r.mtu.filter(|v| *v != 0),
                advmss: r.advmss.filter(|v| *v != 0),
                priority: r.priority.filter(|v| *v != 0),
                table: r.table,
                scope: r.scope,
            });
        }
        if let Some(bad) = out
            .ips
            .iter()
            .filter_map(|ip| ip.interface)
            .find(|i| *i >= out.interfaces.len())
        {
            return Err(decode_err(
                what,
                format!("ips[].interface {bad} points past the interfaces list"),
            ));
        }
        Ok(out)
    }

    /// Writes the result as `version` expects it.
    pub fn to_value(&self, version: Version) -> Value {
        let mut root = Map::new();
        root.insert("cniVersion".into(), json!(version.to_string()));
        if !self.interfaces.is_empty() {
            let list: Vec<Value> = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut m = Map::new();
                    m.insert("name".into(), json!(i.name));
                    if let Some(mac) = &i.mac {
                        m.insert("mac".into(), json!(mac));
                    }
                    if version.has_extended_fields() {
                        if let Some(mtu) = i.mtu {
                            m.insert("mtu".into(), json!(mtu));
                        }
                    }
                    if let Some(sb) = &i.sandbox {
                        m.insert("sandbox".into(), json!(sb));
                    }
                    if version.has_extended_fields() {
                        if let Some(p) = &i.socket_path {
                            m.insert("socketPath".into(), json!(p));
                        }
                        if let Some(p) = &i.pci_id {
                            m.insert("pciID".into(), json!(p));
                        }
                    }
                    Value::Object(m)
                })
                .collect();
            root.insert("interfaces".into(), Value::Array(list));
        }
        if !self.ips.is_empty() {
            let list: Vec<Value> = self
                .ips
                .iter()
                .map(|ip| {
                    let mut m = Map::new();
                    if version.has_ip_version_field() {
                        let v = if ip.address.addr.is_ipv4() { "4" } else { "6" };
                        m.insert("version".into(), json!(v));
                    }
                    if let Some(i) = ip.interface {
                        m.insert("interface".into(), json!(i));
                    }
                    m.insert("address".into(), json!(ip.address.to_string()));
                    if let Some(gw) = ip.gateway {
                        m.insert("gateway".into(), json!(gw.to_string()));
                    }
                    Value::Object(m)
                })
                .collect();
            root.insert("ips".into(), Value::Array(list));
        }
        if !self.routes.is_empty() {
            let list: Vec<Value> = self
                .routes
                .iter()
                .map(|r| {
                    let mut m = Map::new();
                    m.insert("dst".into(), json!(r.dst.to_string()));
                    if let Some(gw) = r.gw {
                        m.insert("gw".into(), json!(gw.to_string()));
                    }
                    if version.has_extended_fields() {
                        for (k, v) in [
                            ("mtu", r.mtu),
                            ("advmss", r.advmss),
                            ("priority", r.priority),
                            ("table", r.table),
                            ("scope", r.scope),
                        ] {
                            if let Some(v) = v {
                                m.insert(k.into(), json!(v));
                            }
                        }
                    }
                    Value::Object(m)
                })
                .collect();
            root.insert("routes".into(), Value::Array(list));
        }
        if !self.dns.is_empty() {
            root.insert(
                "dns".into(),
                serde_json::to_value(&self.dns).unwrap_or(Value::Null),
            );
        }
        Value::Object(root)
    }

    /// Index of the interface named `name` inside `sandbox`.
    pub fn sandbox_interface(&self, name: &str, sandbox: &str) -> Option<usize> {
        self.interfaces
            .iter()
            .position(|i| i.name == name && i.sandbox.as_deref() == Some(sandbox))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "p4lb0123".into(),
                    mac: Some("02:00:00:00:00:01".into()),
                    mtu: Some(1500),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("02:00:00:00:00:02".into()),
                    sandbox: Some("/run/netns/x".into()),
                    ..Default::default()
                },
            ],
            ips: vec![IpConfig {
                address: "10.1.0.5/24".parse().unwrap(),
                gateway: Some("10.1.0.1".parse().unwrap()),
                interface: Some(1),
            }],
            routes: vec![Route {
                mtu: Some(1400),
                ..Route::to("0.0.0.0/0".parse().unwrap(), None)
            }],
            dns: Dns {
                nameservers: vec!["10.1.0.1".into()],
                ..Default::default()
            },
        }
    }

    #[test]
    fn version_specific_fields() {
        let r = sample();
        let v040 = r.to_value(Version::V0_4_0);
        assert_eq!(v040["cniVersion"], "0.4.0");
        assert_eq!(v040["ips"][0]["version"], "4");
        assert!(v040["routes"][0].get("mtu").is_none());
        assert!(v040["interfaces"][0].get("mtu").is_none());
        let v100 = r.to_value(Version::V1_0_0);
        assert!(v100["ips"][0].get("version").is_none());
        assert!(v100["routes"][0].get("mtu").is_none());
        let v110 = r.to_value(Version::V1_1_0);
        assert_eq!(v110["routes"][0]["mtu"], 1400);
        assert_eq!(v110["interfaces"][0]["mtu"], 1500);
        assert_eq!(v110["dns"]["nameservers"][0], "10.1.0.1");
    }

    #[test]
    fn round_trips_every_version() {
        let r = sample();
        for v in super::super::version::SUPPORTED {
            let v = Version::parse(v).unwrap();
            let back = CniResult::from_value(&r.to_value(v), "test").unwrap();
            assert_eq!(back.ips, r.ips);
            assert_eq!(back.interfaces.len(), 2);
        }
    }

    #[test]
    fn rejects_bad_index_and_address() {
        let bad = json!({"ips": [{"address": "10.0.0.1/24", "interface": 3}]});
        assert_eq!(
            CniResult::from_value(&bad, "x").unwrap_err().code,
            Code::DecodingFailure as u32
        );
        let bad = json!({"ips": [{"address": "10.0.0.1"}]});
        assert!(CniResult::from_value(&bad, "x").is_err());
    }

    #[test]
    fn ipnet_math() {
        let n: IpNet = "10.1.2.3/16".parse().unwrap();
        assert_eq!(n.network().to_string(), "10.1.0.0/16");
        assert!(n.contains("10.1.200.1".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!("10.0.0.1/33".parse::<IpNet>().is_err());
    }
}
