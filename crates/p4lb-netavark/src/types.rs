//! The subset of netavark's plugin JSON that p4lb reads and writes, written from
//! netavark's `plugin-API.md`: the network (input of `create`, part of `setup` and
//! `teardown`), the per-container input of `setup`/`teardown`, and the status block
//! `setup` prints. Fields p4lb does not use are not declared (serde ignores them);
//! `create` echoes the network as a JSON object so none of them is lost.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A network as podman stores it.
#[derive(Clone, Debug, Deserialize)]
pub struct Network {
    pub name: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub subnets: Option<Vec<Subnet>>,
    #[serde(default)]
    pub ipv6_enabled: bool,
    #[serde(default)]
    pub internal: bool,
    /// `podman network create -o KEY=VALUE`.
    #[serde(default)]
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Subnet {
    /// CIDR, e.g. `10.89.0.0/24`.
    pub subnet: String,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
}

/// What `setup` and `teardown` read on stdin.
#[derive(Clone, Debug, Deserialize)]
pub struct PluginExec {
    pub container_id: String,
    #[serde(default)]
    pub container_name: String,
    pub network: Network,
    pub network_options: PerNetworkOptions,
}

/// The container's options on this network; podman has done IPAM already, so
/// `static_ips` holds the container's addresses.
#[derive(Clone, Debug, Deserialize)]
pub struct PerNetworkOptions {
    pub interface_name: String,
    #[serde(default)]
    pub static_ips: Option<Vec<IpAddr>>,
    #[serde(default)]
    pub static_mac: Option<String>,
}

/// What `setup` prints: the interfaces it made (shown by `podman inspect`, and kept
/// by podman for a restore that keeps the address).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StatusBlock {
    pub dns_search_domains: Vec<String>,
    pub dns_server_ips: Vec<IpAddr>,
    pub interfaces: BTreeMap<String, NetInterface>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NetInterface {
    pub mac_address: String,
    pub subnets: Vec<NetAddress>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NetAddress {
    /// Address with prefix, e.g. `10.89.0.5/24`.
    pub ipnet: String,
    pub gateway: Option<IpAddr>,
}

/// What `info` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Info {
    pub version: String,
    pub api_version: String,
}

/// The API version of netavark's plugin interface this plugin speaks.
pub const API_VERSION: &str = "1.0.0";
