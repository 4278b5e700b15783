//! The controller's configuration: one TOML file (default /etc/p4lb/controller.toml,
//! optional) whose every field has a default; command-line flags override it.
//!
//! Pods on other hosts can be routed behind their node: the node has one uplink on a
//! switch port, outside `[ports]` (which the controller assigns to pods' own
//! interfaces), and the switch sends such a pod's traffic to that port with the node's
//! uplink MAC as destination. One `[[uplinks]]` table per node:
//!
//! ```toml
//! [ports]
//! first = 1
//! last = 254
//!
//! [[uplinks]]
//! node = "node-b"              # the node's name (its certificate's name)
//! port = 300                   # its switch port: 1..=509, outside [ports]
//! mac = "02:00:00:00:0b:01"    # the MAC of its uplink interface
//! interface = "p4lbup-b"       # switch-side interface attached as `port`; "" = already wired
//! ```

use std::path::{Path, PathBuf};

use p4lb_api::DEFAULT_SOCKET;
use serde::{Deserialize, Serialize};

/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/p4lb/controller.toml";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/p4lb";
/// Largest interval or timeout in milliseconds: 365 days. Keeps every derived
/// nanosecond value inside an i64 and every deadline inside what timers accept.
pub const MAX_CONFIG_MS: u64 = 365 * 24 * 3600 * 1000;
/// Largest `conn.digest_max_timeout_us`: one hour.
pub const MAX_DIGEST_TIMEOUT_US: u64 = 3600 * 1_000_000;
/// Largest `conn.digest_max_list_size`.
pub const MAX_DIGEST_LIST_SIZE: i32 = 1 << 20;
/// Largest `conn.max_entries`: the size of p4lb.p4's conn_table.
pub const MAX_CONN_ENTRIES: u64 = p4lb_p4::tables::conn_table::SIZE as u64;
/// Largest `switch.write_batch`.
pub const MAX_WRITE_BATCH: usize = 1 << 20;
/// Default `switch.bmv2_queue_depth` (packets per BMv2 egress queue).
pub const DEFAULT_BMV2_QUEUE_DEPTH: u32 = 1024;
/// Largest `switch.bmv2_queue_depth`.
pub const MAX_BMV2_QUEUE_DEPTH: u32 = 1 << 16;
/// Default `api.tcp_max_connections`.
pub const DEFAULT_TCP_MAX_CONNECTIONS: usize = 256;
/// Largest `api.tcp_max_connections`.
pub const MAX_TCP_MAX_CONNECTIONS: usize = 65536;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the persisted state lives.
    pub state_dir: PathBuf,
    pub api: ApiConfig,
    pub switch: SwitchConfig,
    pub ports: PortsConfig,
    pub conn: ConnConfig,
    pub metrics: MetricsConfig,
    pub identity: IdentityConfig,
    pub endpoints: EndpointsConfig,
    pub migration: MigrationConfig,
    /// Slot count of new services' Maglev tables (prime).
    pub maglev_slots: u16,
    /// The node this controller runs on: the node of callers on the Unix socket (and
    /// of admins over TCP). Empty: the host name (/proc/sys/kernel/hostname).
    pub node_name: String,
    /// Nodes whose pods are routed behind them: each node's uplink port and MAC
    /// (`[[uplinks]]`, see the module documentation).
    pub uplinks: Vec<UplinkConfig>,
}

/// One `[[uplinks]]` entry: the switch port a node's uplink is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// The node's name (as its certificate names it, or `node_name` for this host).
    pub node: String,
    /// The switch port of its uplink: 1..=509 and outside `[ports]`.
    pub port: u32,
    /// The MAC address of the node's uplink interface ("aa:bb:cc:dd:ee:ff").
    pub mac: String,
    /// The switch-side interface the controller attaches as `port` (software switch,
    /// BMv2 over Thrift). Empty: the port is wired already and is left alone.
    #[serde(default)]
    pub interface: String,
}

/// A node's uplink, checked and parsed ([`Config::uplinks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub node: String,
    pub port: u32,
    pub mac: [u8; 6],
    /// Empty: not attached by the controller.
    pub interface: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Unix socket path of the API (mode 0600, or 0660 with `group`).
    pub socket: PathBuf,
    /// Group allowed to use the socket (name or numeric gid); empty = root only.
    pub group: String,
    /// Optional TCP listen address ("192.0.2.1:50061"); empty = none. Served with
    /// mutual TLS only: needs `tls_cert`, `tls_key` and `tls_client_ca`.
    pub tcp: String,
    /// The controller's certificate and private key (PEM; the key mode 0600 or
    /// stricter) for the TCP listener.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// The CA that signs the certificates of callers over TCP (nodes and admins).
    pub tls_client_ca: PathBuf,
    /// Certificate names (first DNS name) with the whole API over TCP; every other
    /// certificate of the client CA is a node, with the rights of a node.
    pub admins: Vec<String>,
    /// TCP connections served at once (TLS handshakes included); more are closed at once.
    pub tcp_max_connections: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwitchKind {
    /// p4lb's own software target.
    Software,
    /// BMv2 simple_switch_grpc.
    Bmv2,
}

impl SwitchKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            SwitchKind::Software => "software",
            SwitchKind::Bmv2 => "bmv2",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwitchConfig {
    pub kind: SwitchKind,
    /// P4Runtime address ("127.0.0.1:9559" or "unix:/path"). Empty with kind
    /// "software": start the software switch inside the controller process.
    pub address: String,
    pub device_id: u64,
    /// Election id (low 64 bits) used for primary arbitration.
    pub election_id: u64,
    /// P4Info in protobuf text format. Empty = the installed default.
    pub p4info: PathBuf,
    /// BMv2 JSON (p4c output) pushed as the device config for kind "bmv2".
    pub bmv2_json: PathBuf,
    /// BMv2 Thrift runtime address for port management.
    pub thrift: String,
    /// Depth in packets of every BMv2 egress queue, set over Thrift before ports are
    /// attached (BMv2's own default is 64, which a burst of new connections overflows).
    pub bmv2_queue_depth: u32,
    /// MAC address of the switch's router (ARP replies and source MAC).
    pub router_mac: String,
    /// Answer every ARP request with the router MAC (0.0.0.0/0 in arp_proxy).
    pub arp_proxy_all: bool,
    /// Upper bound of the reconnect backoff, in milliseconds.
    pub reconnect_max_ms: u64,
    /// Entries per P4Runtime Write request.
    pub write_batch: usize,
    /// Interfaces for the embedded software switch's own listener (unix socket path
    /// under the state directory when empty).
    pub embedded_listen: String,
    /// Mutual TLS to a switch at an `https://HOST:PORT` address (all three PEM files
    /// required then, and used only then): the CA that signed the switch's certificate,
    /// and the controller's own certificate and private key (mode 0600 or stricter).
    pub tls_ca: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortsConfig {
    /// First and last data-plane port number the controller assigns to endpoints.
    pub first: u32,
    pub last: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnConfig {
    /// Idle timeout of learned connections (0 = never expire).
    pub idle_timeout_ms: u64,
    /// Interval of the controller-driven idle sweep (0 = off).
    pub sweep_interval_ms: u64,
    /// max_timeout of the conn_learn digest, in microseconds.
    pub digest_max_timeout_us: u64,
    /// max_list_size of the conn_learn digest.
    pub digest_max_list_size: i32,
    /// How often learned connections are written to `conns.json` when they
    /// changed, so that a switch that restarts with the controller gets them
    /// back (0 = never; they are then written on shutdown only).
    pub persist_interval_ms: u64,
    /// Most learned connections the controller installs (1..=65536, the size of
    /// p4lb.p4's conn_table). At this many, new connections are refused and counted
    /// (`p4lb_controller_connections_refused_total`); installed ones are never evicted
    /// to make room.
    pub max_entries: u64,
    /// How long a closed connection keeps its entries (RST seen, or FIN seen from both
    /// sides) before the controller deletes them, so that the last ACK and
    /// retransmissions still reach the backend.
    pub close_linger_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Optional HTTP listen address for Prometheus scraping; empty = off.
    pub http: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointsConfig {
    /// How often endpoints are checked for a host interface or network namespace
    /// that is gone (they are then withdrawn); 0 = only once, at start.
    pub liveness_interval_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Also require the endpoint's address to be configured in the caller's netns.
    pub check_addresses: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            api: ApiConfig::default(),
            switch: SwitchConfig::default(),
            ports: PortsConfig::default(),
            conn: ConnConfig::default(),
            metrics: MetricsConfig::default(),
            identity: IdentityConfig::default(),
            endpoints: EndpointsConfig::default(),
            migration: MigrationConfig::default(),
            maglev_slots: crate::maglev::DEFAULT_SLOTS,
            node_name: String::new(),
            uplinks: Vec::new(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: PathBuf::from(DEFAULT_SOCKET),
            group: String::new(),
            tcp: String::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            tls_client_ca: PathBuf::new(),
            admins: Vec::new(),
            tcp_max_connections: DEFAULT_TCP_MAX_CONNECTIONS,
        }
    }
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            kind: SwitchKind::Software,
            address: String::new(),
            device_id: 0,
            election_id: 1,
            p4info: PathBuf::new(),
            bmv2_json: PathBuf::new(),
            thrift: String::from("127.0.0.1:9090"),
            bmv2_queue_depth: DEFAULT_BMV2_QUEUE_DEPTH,
            router_mac: String::from("02:70:34:6c:62:01"),
            arp_proxy_all: true,
            reconnect_max_ms: 250,
            write_batch: 2048,
            embedded_listen: String::new(),
            tls_ca: PathBuf::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
        }
    }
}

impl Default for PortsConfig {
    fn default() -> Self {
        PortsConfig {
            first: 1,
            last: 254,
        }
    }
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            idle_timeout_ms: 300_000,
            sweep_interval_ms: 30_000,
            digest_max_timeout_us: 500,
            digest_max_list_size: 256,
            persist_interval_ms: 500,
            max_entries: MAX_CONN_ENTRIES,
            close_linger_ms: 2_000,
        }
    }
}

impl Default for EndpointsConfig {
    fn default() -> Self {
        EndpointsConfig {
            liveness_interval_ms: 2_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigrationConfig {
    /// Longest time an endpoint registered locked for a restore waits for its
    /// migration to unlock it; then the controller unlocks it (milliseconds, >= 1).
    pub restore_lock_timeout_ms: u64,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            restore_lock_timeout_ms: 120_000,
        }
    }
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            check_addresses: true,
        }
    }
}

/// Errors of loading a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// The node this controller runs on: `node_name`, or the host name.
    pub fn local_node(&self) -> Result<String, ConfigError> {
        if !self.node_name.is_empty() {
            return Ok(self.node_name.clone());
        }
        let path = Path::new("/proc/sys/kernel/hostname");
        let text = p4lb_api::read_bounded(path, 4096).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let name = String::from_utf8_lossy(&text).trim().to_string();
        crate::nodes::check_node_name("the host name (node_name is empty)", &name)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(name)
    }

    /// Loads `path`; a missing file at the default location gives the defaults.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Config::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: String::from("<text>"),
            source,
        })?;
        c.validate()?;
        Ok(c)
    }

    /// Checks values that TOML types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !crate::maglev::is_prime(u32::from(self.maglev_slots)) {
            return Err(ConfigError::Invalid(format!(
                "maglev_slots = {} is not a prime",
                self.maglev_slots
            )));
        }
        // Port 510 is the pipeline's hold port, 511 v1model's drop port.
        let max = u32::from(p4lb_p4::MAX_DATA_PORT);
        if self.ports.first == 0 || self.ports.first > self.ports.last || self.ports.last > max {
            return Err(ConfigError::Invalid(format!(
                "ports: first = {}, last = {} must satisfy 1 <= first <= last <= {max}",
                self.ports.first, self.ports.last
            )));
        }
        crate::addr::parse_mac("switch.router_mac", &self.switch.router_mac)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let tls_files = [
            &self.switch.tls_ca,
            &self.switch.tls_cert,
            &self.switch.tls_key,
        ];
        let set = tls_files
            .iter()
            .filter(|p| !p.as_os_str().is_empty())
            .count();
        if self.switch.address.starts_with("https://") && set != 3 {
            return Err(ConfigError::Invalid(format!(
                "switch.address = {:?} needs switch.tls_ca, switch.tls_cert and switch.tls_key",
                self.switch.address
            )));
        }
        if set > 0 && !self.switch.address.starts_with("https://") {
            return Err(ConfigError::Invalid(format!(
                "switch.tls_ca/tls_cert/tls_key are used with an https:// switch.address only \
                 (it is {:?})",
                self.switch.address
            )));
        }
        let api_tls = [
            &self.api.tls_cert,
            &self.api.tls_key,
            &self.api.tls_client_ca,
        ]
        .iter()
        .filter(|p| !p.as_os_str().is_empty())
        .count();
        if !self.api.tcp.is_empty() && api_tls != 3 {
            return Err(ConfigError::Invalid(format!(
                "api.tcp = {:?} needs api.tls_cert, api.tls_key and api.tls_client_ca: the API \
                 is served over TCP with mutual TLS only",
                self.api.tcp
            )));
        }
        if api_tls > 0 && self.api.tcp.is_empty() {
            return Err(ConfigError::Invalid(String::from(
                "api.tls_cert/tls_key/tls_client_ca are used with api.tcp only (it is empty)",
            )));
        }
        if !(1..=MAX_TCP_MAX_CONNECTIONS).contains(&self.api.tcp_max_connections) {
            return Err(ConfigError::Invalid(format!(
                "api.tcp_max_connections = {} is out of range (1..={MAX_TCP_MAX_CONNECTIONS})",
                self.api.tcp_max_connections
            )));
        }
        for a in &self.api.admins {
            crate::nodes::check_node_name("api.admins", a)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        if !self.node_name.is_empty() {
            crate::nodes::check_node_name("node_name", &self.node_name)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        if !(1..=MAX_BMV2_QUEUE_DEPTH).contains(&self.switch.bmv2_queue_depth) {
            return Err(ConfigError::Invalid(format!(
                "switch.bmv2_queue_depth = {} is out of range (1..={MAX_BMV2_QUEUE_DEPTH} packets)",
                self.switch.bmv2_queue_depth
            )));
        }
        if self.switch.write_batch == 0 {
            return Err(ConfigError::Invalid(String::from(
                "switch.write_batch must be at least 1",
            )));
        }
        let range = |key: &str, v: u64, max: u64, unit: &str| {
            if v > max {
                return Err(ConfigError::Invalid(format!(
                    "{key} = {v} is out of range (0..={max} {unit})"
                )));
            }
            Ok(())
        };
        range(
            "switch.write_batch",
            self.switch.write_batch as u64,
            MAX_WRITE_BATCH as u64,
            "entries",
        )?;
        range(
            "switch.reconnect_max_ms",
            self.switch.reconnect_max_ms,
            MAX_CONFIG_MS,
            "ms",
        )?;
        range(
            "conn.idle_timeout_ms",
            self.conn.idle_timeout_ms,
            MAX_CONFIG_MS,
            "ms",
        )?;
        range(
            "conn.sweep_interval_ms",
            self.conn.sweep_interval_ms,
            MAX_CONFIG_MS,
            "ms",
        )?;
        range(
            "conn.persist_interval_ms",
            self.conn.persist_interval_ms,
            MAX_CONFIG_MS,
            "ms",
        )?;
        range(
            "conn.close_linger_ms",
            self.conn.close_linger_ms,
            MAX_CONFIG_MS,
            "ms",
        )?;
        if !(1..=MAX_CONN_ENTRIES).contains(&self.conn.max_entries) {
            return Err(ConfigError::Invalid(format!(
                "conn.max_entries = {} is out of range (1..={MAX_CONN_ENTRIES} entries, the \
                 size of the switch's conn_table)",
                self.conn.max_entries
            )));
        }
        range(
            "endpoints.liveness_interval_ms",
            self.endpoints.liveness_interval_ms,
            MAX_CONFIG_MS,
            "ms",
        )?;
        range(
            "migration.restore_lock_timeout_ms",
            self.migration.restore_lock_timeout_ms,
            MAX_CONFIG_MS,
            "ms",
        )?;
        if self.migration.restore_lock_timeout_ms == 0 {
            return Err(ConfigError::Invalid(String::from(
                "migration.restore_lock_timeout_ms must be at least 1",
            )));
        }
        range(
            "conn.digest_max_timeout_us",
            self.conn.digest_max_timeout_us,
            MAX_DIGEST_TIMEOUT_US,
            "us",
        )?;
        if !(0..=MAX_DIGEST_LIST_SIZE).contains(&self.conn.digest_max_list_size) {
            return Err(ConfigError::Invalid(format!(
                "conn.digest_max_list_size = {} is out of range (0..={MAX_DIGEST_LIST_SIZE})",
                self.conn.digest_max_list_size
            )));
        }
        self.uplinks()?;
        Ok(())
    }

    /// The `[[uplinks]]` entries, checked and parsed: a valid node name, unique; a port
    /// in 1..=509, outside `[ports]` and unique; a unicast MAC; an interface name of at
    /// most 15 bytes or empty. Errors name the entry (`uplinks[i]`) and its field.
    pub fn uplinks(&self) -> Result<Vec<Uplink>, ConfigError> {
        let max = u32::from(p4lb_p4::MAX_DATA_PORT);
        let (first, last) = (self.ports.first, self.ports.last);
        let mut out: Vec<Uplink> = Vec::with_capacity(self.uplinks.len());
        for (i, u) in self.uplinks.iter().enumerate() {
            let at = format!("uplinks[{i}]");
            crate::nodes::check_node_name(&format!("{at}.node"), &u.node)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            if let Some(j) = out.iter().position(|o| o.node == u.node) {
                return Err(ConfigError::Invalid(format!(
                    "{at}.node = {:?}: node {:?} already has an uplink (uplinks[{j}])",
                    u.node, u.node
                )));
            }
            if !(1..=max).contains(&u.port) {
                return Err(ConfigError::Invalid(format!(
                    "{at}.port = {} is out of range (1..={max})",
                    u.port
                )));
            }
            if (first..=last).contains(&u.port) {
                return Err(ConfigError::Invalid(format!(
                    "{at}.port = {} is inside ports.first..=last ({first}..={last}), which the \
                     controller assigns to pods: an uplink port must be outside that range",
                    u.port
                )));
            }
            if let Some(o) = out.iter().find(|o| o.port == u.port) {
                return Err(ConfigError::Invalid(format!(
                    "{at}.port = {} is already the uplink port of node {:?}",
                    u.port, o.node
                )));
            }
            let mac = crate::addr::parse_mac(&format!("{at}.mac"), &u.mac)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            if mac[0] & 1 == 1 || mac == [0; 6] {
                return Err(ConfigError::Invalid(format!(
                    "{at}.mac = {:?} is not a unicast address",
                    u.mac
                )));
            }
            let iface = &u.interface;
            if iface.len() > 15
                || iface.contains('/')
                || iface.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(ConfigError::Invalid(format!(
                    "{at}.interface = {iface:?} is not an interface name (at most 15 bytes, no \
                     '/', spaces or control characters; empty: the port is wired already)"
                )));
            }
            out.push(Uplink {
                node: u.node.clone(),
                port: u.port,
                mac,
                interface: iface.clone(),
            });
        }
        Ok(out)
    }

    /// `conn.idle_timeout_ms` in nanoseconds (saturating; [`Config::validate`]
    /// keeps it far below the bound).
    pub fn idle_timeout_ns(&self) -> i64 {
        i64::try_from(self.conn.idle_timeout_ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
    }

    /// The conn_learn digest's max_timeout sent to the switch, in nanoseconds
    /// (saturating): `conn.digest_max_timeout_us`, made valid for the switch kind
    /// (see [`Config::effective_digest_max_timeout_us`]).
    pub fn digest_max_timeout_ns(&self) -> i64 {
        i64::try_from(self.effective_digest_max_timeout_us().saturating_mul(1000))
            .unwrap_or(i64::MAX)
    }

    /// `conn.digest_max_timeout_us` as the switch can honour it. BMv2's P4Runtime
    /// layer keeps the timeout in whole milliseconds (it truncates) and takes 0 as
    /// "no timeout": a list then leaves only once `digest_max_list_size` samples
    /// piled up, and connections are not learned while they are few. For kind
    /// "bmv2" the value is therefore rounded up to whole milliseconds, at least 1 ms.
    pub fn effective_digest_max_timeout_us(&self) -> u64 {
        let us = self.conn.digest_max_timeout_us;
        match self.switch.kind {
            SwitchKind::Software => us,
            SwitchKind::Bmv2 => us.div_ceil(1000).max(1) * 1000,
        }
    }

    /// A note for the log when the digest timeout sent to the switch differs from
    /// the configured one.
    pub fn digest_timeout_note(&self) -> Option<String> {
        let eff = self.effective_digest_max_timeout_us();
        (eff != self.conn.digest_max_timeout_us).then(|| {
            format!(
                "conn.digest_max_timeout_us = {} is not a whole number of milliseconds >= 1, \
                 which {} needs (it truncates to milliseconds and takes 0 as no timeout); \
                 using {eff} us",
                self.conn.digest_max_timeout_us,
                self.switch.kind.as_str()
            )
        })
    }

    /// The P4Info file to use: configured, or the installed copy; None = the copy
    /// compiled into the binary.
    pub fn p4info_path(&self) -> Option<PathBuf> {
        if !self.switch.p4info.as_os_str().is_empty() {
            return Some(self.switch.p4info.clone());
        }
        let installed = PathBuf::from("/usr/share/p4lb/p4lb.p4info.txtpb");
        installed.exists().then_some(installed)
    }
}

/// The two uplinks the tests share: node-b's on port 300, attached by the controller
/// as `p4lbup-b`, and node-c's on port 301, not attached.
#[cfg(test)]
pub(crate) fn sample_uplinks() -> Vec<Uplink> {
    vec![
        Uplink {
            node: "node-b".into(),
            port: 300,
            mac: [2, 0, 0, 0, 0x0b, 1],
            interface: "p4lbup-b".into(),
        },
        Uplink {
            node: "node-c".into(),
            port: 301,
            mac: [2, 0, 0, 0, 0x0c, 1],
            interface: String::new(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.api.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.switch.kind, SwitchKind::Software);
        let c = Config::parse(
            "state_dir = \"/tmp/x\"\n[switch]\nkind = \"bmv2\"\naddress = \"127.0.0.1:9559\"\n",
        )
        .unwrap();
        assert_eq!(c.switch.kind, SwitchKind::Bmv2);
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn rejects_bad_values() {
        assert!(Config::parse("maglev_slots = 1000").is_err());
        assert!(Config::parse("[switch]\nrouter_mac = \"nope\"").is_err());
        assert!(Config::parse("unknown = 1").is_err());
        assert!(Config::parse("[ports]\nfirst = 0").is_err());
    }

    #[test]
    fn liveness_interval_out_of_range_is_refused_by_name() {
        let e = Config::parse("[endpoints]\nliveness_interval_ms = 9223372036854775807")
            .unwrap_err()
            .to_string();
        assert!(e.contains("endpoints.liveness_interval_ms"), "{e}");
        let c = Config::parse("[endpoints]\nliveness_interval_ms = 500").unwrap();
        assert_eq!(c.endpoints.liveness_interval_ms, 500);
    }

    #[test]
    fn restore_lock_timeout_has_a_default_and_is_never_zero() {
        assert_eq!(
            Config::parse("").unwrap().migration.restore_lock_timeout_ms,
            120_000
        );
        let e = Config::parse("[migration]\nrestore_lock_timeout_ms = 0")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "migration.restore_lock_timeout_ms must be at least 1");
    }

    #[test]
    fn numeric_values_out_of_range_are_refused_by_name() {
        for (text, key) in [
            (
                "[conn]\nidle_timeout_ms = 9223372036854775807",
                "conn.idle_timeout_ms",
            ),
            (
                "[conn]\nsweep_interval_ms = 9223372036854775807",
                "conn.sweep_interval_ms",
            ),
            (
                "[conn]\npersist_interval_ms = 9223372036854775807",
                "conn.persist_interval_ms",
            ),
            (
                "[conn]\ndigest_max_timeout_us = 9223372036854775807",
                "conn.digest_max_timeout_us",
            ),
            (
                "[conn]\ndigest_max_list_size = -1",
                "conn.digest_max_list_size",
            ),
            ("[conn]\nmax_entries = 0", "conn.max_entries"),
            ("[conn]\nmax_entries = 65537", "conn.max_entries"),
            (
                "[conn]\nclose_linger_ms = 9223372036854775807",
                "conn.close_linger_ms",
            ),
            (
                "[switch]\nreconnect_max_ms = 9223372036854775807",
                "switch.reconnect_max_ms",
            ),
            (
                "[switch]\nwrite_batch = 9223372036854775807",
                "switch.write_batch",
            ),
            ("[switch]\nbmv2_queue_depth = 0", "switch.bmv2_queue_depth"),
            (
                "[switch]\nbmv2_queue_depth = 65537",
                "switch.bmv2_queue_depth",
            ),
            (
                "[migration]\nrestore_lock_timeout_ms = 9223372036854775807",
                "migration.restore_lock_timeout_ms",
            ),
        ] {
            let e = Config::parse(text).expect_err(text).to_string();
            assert!(e.contains(key) && e.contains("out of range"), "{text}: {e}");
        }
        // The capacity defaults to the size of the switch's conn_table.
        let c = Config::parse("").unwrap();
        assert_eq!(c.conn.max_entries, 65536);
        assert_eq!(c.conn.close_linger_ms, 2000);
        // The largest accepted values convert without overflow.
        let c = Config::parse(&format!(
            "[conn]\nidle_timeout_ms = {MAX_CONFIG_MS}\ndigest_max_timeout_us = {MAX_DIGEST_TIMEOUT_US}"
        ))
        .unwrap();
        assert_eq!(c.idle_timeout_ns(), MAX_CONFIG_MS as i64 * 1_000_000);
        assert_eq!(
            c.digest_max_timeout_ns(),
            MAX_DIGEST_TIMEOUT_US as i64 * 1000
        );
        // A value that does not fit its type at all is a parse error naming the key.
        let e = Config::parse("maglev_slots = 70001")
            .unwrap_err()
            .to_string();
        assert!(e.contains("maglev_slots"), "{e}");
    }

    #[test]
    fn bmv2_digest_timeout_is_whole_milliseconds_and_never_zero() {
        // The default (500 us) would reach BMv2 as 0 ms, i.e. no timeout.
        let c = Config::parse("[switch]\nkind = \"bmv2\"").unwrap();
        assert_eq!(c.digest_max_timeout_ns(), 1_000_000);
        let note = c.digest_timeout_note().expect("a note for the log");
        assert!(note.contains("500") && note.contains("1000 us"), "{note}");
        for (us, want_ns) in [(0, 1_000_000), (1000, 1_000_000), (1001, 2_000_000)] {
            let c = Config::parse(&format!(
                "[switch]\nkind = \"bmv2\"\n[conn]\ndigest_max_timeout_us = {us}"
            ))
            .unwrap();
            assert_eq!(c.digest_max_timeout_ns(), want_ns, "{us} us");
        }
        let c = Config::parse("[switch]\nkind = \"bmv2\"\n[conn]\ndigest_max_timeout_us = 3000")
            .unwrap();
        assert_eq!(c.digest_timeout_note(), None);
        // The software target takes microseconds as they are.
        let c = Config::parse("").unwrap();
        assert_eq!(c.digest_max_timeout_ns(), 500_000);
        assert_eq!(c.digest_timeout_note(), None);
    }

    const UPLINKS: &str = r#"
[ports]
first = 1
last = 254

[[uplinks]]
node = "node-b"
port = 300
mac = "02:00:00:00:0B:01"
interface = "p4lbup-b"

[[uplinks]]
node = "node-c"
port = 301
mac = "02:00:00:00:0c:01"
"#;

    #[test]
    fn uplinks_are_parsed_at_load() {
        let c = Config::parse(UPLINKS).unwrap();
        assert_eq!(c.uplinks().unwrap(), sample_uplinks());
        assert!(Config::parse("").unwrap().uplinks().unwrap().is_empty());
    }

    #[test]
    fn bad_uplinks_are_refused_by_entry_and_field() {
        let one = |fields: &str| format!("[ports]\nfirst = 1\nlast = 254\n[[uplinks]]\n{fields}\n");
        for (fields, want) in [
            (
                "node = \"a b\"\nport = 300\nmac = \"02:00:00:00:00:01\"",
                "uplinks[0].node \"a b\" is not valid",
            ),
            (
                "node = \"\"\nport = 300\nmac = \"02:00:00:00:00:01\"",
                "uplinks[0].node \"\" is not valid: empty",
            ),
            (
                "node = \"n\"\nport = 0\nmac = \"02:00:00:00:00:01\"",
                "uplinks[0].port = 0 is out of range (1..=509)",
            ),
            (
                "node = \"n\"\nport = 510\nmac = \"02:00:00:00:00:01\"",
                "uplinks[0].port = 510 is out of range (1..=509)",
            ),
            (
                "node = \"n\"\nport = 254\nmac = \"02:00:00:00:00:01\"",
                "uplinks[0].port = 254 is inside ports.first..=last (1..=254)",
            ),
            (
                "node = \"n\"\nport = 300\nmac = \"nope\"",
                "uplinks[0].mac: \"nope\" is not a MAC address",
            ),
            (
                "node = \"n\"\nport = 300\nmac = \"01:00:5e:00:00:01\"",
                "uplinks[0].mac = \"01:00:5e:00:00:01\" is not a unicast address",
            ),
            (
                "node = \"n\"\nport = 300\nmac = \"02:00:00:00:00:01\"\ninterface = \"a/b\"",
                "uplinks[0].interface = \"a/b\" is not an interface name",
            ),
            (
                "node = \"n\"\nport = 300\nmac = \"02:00:00:00:00:01\"\ninterface = \"sixteen-bytes-xx\"",
                "uplinks[0].interface = \"sixteen-bytes-xx\" is not an interface name",
            ),
        ] {
            let text = one(fields);
            let e = Config::parse(&text).expect_err(&text).to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        // Missing and unknown fields are parse errors naming the field.
        for (fields, want) in [
            ("node = \"n\"\nmac = \"02:00:00:00:00:01\"", "port"),
            ("node = \"n\"\nport = 300", "mac"),
            ("port = 300\nmac = \"02:00:00:00:00:01\"", "node"),
            (
                "node = \"n\"\nport = 300\nmac = \"02:00:00:00:00:01\"\nmtu = 1500",
                "mtu",
            ),
        ] {
            let text = one(fields);
            let e = Config::parse(&text).expect_err(&text).to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        // Two uplinks of one node, or on one port.
        let twice = UPLINKS.replace("node-c", "node-b");
        let e = Config::parse(&twice).unwrap_err().to_string();
        assert!(
            e.contains(
                "uplinks[1].node = \"node-b\": node \"node-b\" already has an uplink (uplinks[0])"
            ),
            "{e}"
        );
        let same_port = UPLINKS.replace("port = 301", "port = 300");
        let e = Config::parse(&same_port).unwrap_err().to_string();
        assert!(
            e.contains("uplinks[1].port = 300 is already the uplink port of node \"node-b\""),
            "{e}"
        );
        // The range check follows [ports].
        let wider = UPLINKS.replace("last = 254", "last = 300");
        let e = Config::parse(&wider).unwrap_err().to_string();
        assert!(
            e.contains("uplinks[0].port = 300 is inside ports.first..=last (1..=300)"),
            "{e}"
        );
    }
}
