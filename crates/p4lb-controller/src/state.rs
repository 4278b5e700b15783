//! The controller's persisted model: endpoints, services, migrations. Everything
//! the switch holds (except learned connections) is derived from this.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use p4lb_proto::api;

/// Current schema version of the persisted state.
pub const STATE_VERSION: u32 = 1;
/// Finished migrations kept for inspection.
pub const MIGRATION_HISTORY: usize = 1000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub endpoints: BTreeMap<String, EndpointRec>,
    pub services: BTreeMap<String, ServiceRec>,
    pub migrations: Vec<MigrationRec>,
    pub next_migration: u64,
    /// Nodes that registered (RegisterNode), by name.
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeRec>,
}

/// A node that registered with RegisterNode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRec {
    pub name: String,
    /// Where its agent serves (https://HOST:PORT).
    pub agent_address: String,
    pub registered_unix_ms: i64,
}

impl NodeRec {
    pub fn to_api(&self) -> api::Node {
        api::Node {
            name: self.name.clone(),
            agent_address: self.agent_address.clone(),
            registered_unix_ms: self.registered_unix_ms,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointState {
    Ready,
    Locked,
    /// Registered locked for a restore; waits for the migration to unlock it.
    Restoring,
    /// The container moved away; the record stays until the runtime deletes it.
    Migrated,
    /// Its host interface or network namespace is gone: withdrawn from services,
    /// without routes, backend or port, until its deregistration (the runtime's DEL,
    /// GarbageCollect or `p4lbctl endpoints rm`) or a new registration of its key.
    Stale,
}

impl EndpointState {
    pub fn as_str(&self) -> &'static str {
        match self {
            EndpointState::Ready => "ready",
            EndpointState::Locked => "locked",
            EndpointState::Restoring => "restoring",
            EndpointState::Migrated => "migrated",
            EndpointState::Stale => "stale",
        }
    }
}

/// Where a migration is. Serialized in lowercase: the API's `Migration.state` and
/// `state.json` spell it the same way as when it was a free-form string. How events
/// move it is the transition table in [`crate::migration`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationState {
    /// The source's traffic is held (LOCK).
    #[default]
    Locked,
    /// The source's dump finished.
    Checkpointed,
    /// A restore began.
    Restoring,
    /// The target took over the backend (the switchover).
    Restored,
    /// Ended by UNLOCK or SNAPSHOT_DONE.
    Done,
    /// Ended by ABORT.
    Aborted,
}

impl MigrationState {
    /// Every state, in the order a migration passes them.
    pub const ALL: [MigrationState; 6] = [
        MigrationState::Locked,
        MigrationState::Checkpointed,
        MigrationState::Restoring,
        MigrationState::Restored,
        MigrationState::Done,
        MigrationState::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MigrationState::Locked => "locked",
            MigrationState::Checkpointed => "checkpointed",
            MigrationState::Restoring => "restoring",
            MigrationState::Restored => "restored",
            MigrationState::Done => "done",
            MigrationState::Aborted => "aborted",
        }
    }

    /// Whether the migration still takes events (not done, not aborted).
    pub fn active(self) -> bool {
        !matches!(self, MigrationState::Done | MigrationState::Aborted)
    }
}

impl std::fmt::Display for MigrationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRec {
    pub key: String,
    pub container_id: String,
    pub ifname: String,
    pub netns_path: String,
    pub netns_inode: u64,
    pub ip: Ipv4Addr,
    pub prefix_len: u32,
    pub mac: [u8; 6],
    pub gateway: Option<Ipv4Addr>,
    pub host_ifname: String,
    pub switch_port: u32,
    /// 0 when the endpoint has handed its backend to a migration target.
    pub backend_id: u16,
    /// The address the backend row DNATs to. Equals `ip`, except for a migration
    /// target, which serves under the address that moved with the container.
    pub backend_ip: Ipv4Addr,
    pub locked: bool,
    pub state: EndpointState,
    pub labels: BTreeMap<String, String>,
    pub network: String,
    pub migrated_ips: Vec<Ipv4Addr>,
    pub restore_of_ip: Option<Ipv4Addr>,
    pub created_unix_ms: i64,
    /// The runtime deleted this endpoint while it was the locked source of a
    /// migration: kept (locked, without a port) until the migration ends.
    #[serde(default)]
    pub detached: bool,
    /// Its host interface existed in the controller's own network namespace when it
    /// registered. Only then does the liveness check look for it there: with the
    /// switch's ports in another namespace (BMv2 in its own netns, the CNI plugin's
    /// `switchNetns`) the interface is never visible to the controller.
    #[serde(default)]
    pub host_if_local: bool,
    /// The node the endpoint lives on (the node that registered it). Empty only in a
    /// state file written before nodes existed: the controller's own node at load
    /// ([`State::adopt_unnamed`]).
    #[serde(default)]
    pub node: String,
    /// Routed behind its node: `switch_port` is the node's uplink port (configured,
    /// never attached or detached for this endpoint) and the switch forwards to
    /// `next_hop_mac`; `host_ifname` is the pod's interface on the node.
    #[serde(default)]
    pub behind_node: bool,
    /// The node's uplink MAC, recorded at registration: the destination MAC of the
    /// endpoint's traffic when it is routed behind its node.
    #[serde(default)]
    pub next_hop_mac: Option<[u8; 6]>,
}

impl EndpointRec {
    /// The switch port attached for this endpoint's own interface, which goes when the
    /// endpoint goes: none for an endpoint routed behind its node (its port is the
    /// node's uplink, shared and configured) or without a host interface.
    pub fn attached_port(&self) -> Option<u32> {
        (!self.behind_node && !self.host_ifname.is_empty()).then_some(self.switch_port)
    }

    /// The destination MAC of the endpoint's traffic: its node's uplink MAC when it is
    /// routed behind its node, its own otherwise.
    pub fn dmac(&self) -> [u8; 6] {
        match (self.behind_node, self.next_hop_mac) {
            (true, Some(m)) => m,
            _ => self.mac,
        }
    }

    /// Whether the endpoint carries traffic (is selectable and routed).
    pub fn active(&self) -> bool {
        !matches!(self.state, EndpointState::Migrated | EndpointState::Stale)
    }

    /// Every address routed to this endpoint.
    pub fn routed_ips(&self) -> Vec<Ipv4Addr> {
        if !self.active() {
            return Vec::new();
        }
        let mut v = vec![self.ip];
        v.extend(self.migrated_ips.iter().copied().filter(|a| *a != self.ip));
        v
    }

    pub fn to_api(&self) -> api::Endpoint {
        api::Endpoint {
            key: self.key.clone(),
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
            netns_path: self.netns_path.clone(),
            netns_inode: self.netns_inode,
            ip: self.ip.to_string(),
            prefix_len: self.prefix_len,
            mac: crate::addr::format_mac(&self.mac),
            gateway: self.gateway.map(|g| g.to_string()).unwrap_or_default(),
            host_ifname: self.host_ifname.clone(),
            switch_port: self.switch_port,
            backend_id: u32::from(self.backend_id),
            locked: self.locked,
            labels: self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            network: self.network.clone(),
            migrated_ips: self.migrated_ips.iter().map(|a| a.to_string()).collect(),
            state: self.state.as_str().to_string(),
            created_unix_ms: self.created_unix_ms,
            router_mac: String::new(),
            restore_of_ip: self
                .restore_of_ip
                .map(|a| a.to_string())
                .unwrap_or_default(),
            node: self.node.clone(),
            behind_node: self.behind_node,
        }
    }
}

#[cfg(test)]
impl EndpointRec {
    /// A ready, unlocked endpoint for tests: container `key` up to its '/', `eth0`,
    /// a /24, MAC `02:00:00:00:00:<port>`, on switch port `port` with backend id
    /// `port`, serving at `ip`, network `p4lb`, node `n1`; nothing else set.
    pub(crate) fn sample(key: &str, ip: Ipv4Addr, port: u32) -> EndpointRec {
        EndpointRec {
            key: key.into(),
            container_id: key.split('/').next().unwrap_or(key).into(),
            ifname: "eth0".into(),
            netns_path: String::new(),
            netns_inode: 0,
            ip,
            prefix_len: 24,
            mac: [2, 0, 0, 0, 0, port as u8],
            gateway: None,
            host_ifname: String::new(),
            switch_port: port,
            backend_id: port as u16,
            backend_ip: ip,
            locked: false,
            state: EndpointState::Ready,
            labels: BTreeMap::new(),
            network: "p4lb".into(),
            migrated_ips: Vec::new(),
            restore_of_ip: None,
            created_unix_ms: 0,
            detached: false,
            host_if_local: false,
            node: "n1".into(),
            behind_node: false,
            next_hop_mac: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRec {
    pub name: String,
    pub vip: Ipv4Addr,
    pub protocol: u8,
    pub port: u16,
    pub target_port: u16,
    pub backends: Vec<String>,
    pub selector: String,
    pub name_pattern: String,
    pub service_id: u16,
    pub slot_count: u16,
    /// Endpoint keys currently selected.
    pub resolved: Vec<String>,
    /// The Maglev table: backend id per slot (0 = none).
    pub slots: Vec<u16>,
}

impl ServiceRec {
    pub fn effective_target_port(&self) -> u16 {
        if self.target_port == 0 {
            self.port
        } else {
            self.target_port
        }
    }

    pub fn protocol_name(&self) -> &'static str {
        match self.protocol {
            6 => "tcp",
            17 => "udp",
            _ => "?",
        }
    }

    pub fn to_api(&self) -> api::Service {
        api::Service {
            name: self.name.clone(),
            vip: self.vip.to_string(),
            protocol: self.protocol_name().to_string(),
            port: u32::from(self.port),
            target_port: u32::from(self.target_port),
            backends: self.backends.clone(),
            selector: self.selector.clone(),
            name_pattern: self.name_pattern.clone(),
            service_id: u32::from(self.service_id),
            resolved_backends: self.resolved.clone(),
            slot_count: u32::from(self.slot_count),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MigrationRec {
    pub id: String,
    pub source_key: String,
    pub target_key: String,
    pub source_ip: Option<Ipv4Addr>,
    pub target_ip: Option<Ipv4Addr>,
    pub state: MigrationState,
    pub backend_id: u16,
    pub locked_unix_us: i64,
    pub checkpointed_unix_us: i64,
    pub restore_started_unix_us: i64,
    pub restored_unix_us: i64,
    pub unlocked_unix_us: i64,
    pub switchover_us: i64,
    pub stall_us: i64,
    pub connections_carried: u32,
    pub leave_running: bool,
    pub error: String,
    pub image_dir: String,
    /// Run without p4lb's lock: the source's traffic was never held.
    #[serde(default)]
    pub no_lock: bool,
    /// The source endpoint's node.
    #[serde(default)]
    pub source_node: String,
    /// The node the restore may run on besides the source's (`target_node` of the
    /// events; empty = the source's node only).
    #[serde(default)]
    pub target_node: String,
}

impl MigrationRec {
    pub fn active(&self) -> bool {
        self.state.active()
    }

    pub fn to_api(&self) -> api::Migration {
        api::Migration {
            id: self.id.clone(),
            source_key: self.source_key.clone(),
            target_key: self.target_key.clone(),
            source_ip: self.source_ip.map(|a| a.to_string()).unwrap_or_default(),
            target_ip: self.target_ip.map(|a| a.to_string()).unwrap_or_default(),
            state: self.state.as_str().to_string(),
            locked_unix_us: self.locked_unix_us,
            checkpointed_unix_us: self.checkpointed_unix_us,
            restore_started_unix_us: self.restore_started_unix_us,
            restored_unix_us: self.restored_unix_us,
            unlocked_unix_us: self.unlocked_unix_us,
            switchover_us: self.switchover_us,
            stall_us: self.stall_us,
            connections_carried: self.connections_carried,
            leave_running: self.leave_running,
            error: self.error.clone(),
            image_dir: self.image_dir.clone(),
            no_lock: self.no_lock,
            source_node: self.source_node.clone(),
            target_node: self.target_node.clone(),
            endpoint: None,
        }
    }
}

impl State {
    pub fn new() -> State {
        State {
            version: STATE_VERSION,
            ..Default::default()
        }
    }

    /// Records written before endpoints carried their node (empty `node`) belong to
    /// `local`, the controller's own node; so does the source of such a migration.
    pub fn adopt_unnamed(&mut self, local: &str) {
        for e in self.endpoints.values_mut() {
            if e.node.is_empty() {
                e.node = local.to_string();
            }
        }
        for m in &mut self.migrations {
            if m.source_node.is_empty() {
                m.source_node = local.to_string();
            }
        }
    }

    /// The endpoint using `ip` as its address or as a migrated address.
    pub fn endpoint_by_ip(&self, ip: Ipv4Addr) -> Option<&EndpointRec> {
        self.endpoints
            .values()
            .filter(|e| e.active())
            .find(|e| e.ip == ip || e.migrated_ips.contains(&ip))
    }

    pub fn endpoint_by_backend(&self, backend_id: u16) -> Option<&EndpointRec> {
        if backend_id == 0 {
            return None;
        }
        self.endpoints.values().find(|e| e.backend_id == backend_id)
    }

    pub fn service_by_id(&self, service_id: u16) -> Option<&ServiceRec> {
        self.services.values().find(|s| s.service_id == service_id)
    }

    /// Smallest free data-plane port in `first..=last` that is not in `retired`.
    pub fn free_port(&self, first: u32, last: u32, retired: &BTreeSet<u32>) -> Option<u32> {
        let used: BTreeSet<u32> = self.endpoints.values().map(|e| e.switch_port).collect();
        (first..=last).find(|p| !used.contains(p) && !retired.contains(p))
    }

    /// Smallest free backend id (1..=4095).
    pub fn free_backend_id(&self) -> Option<u16> {
        let used: BTreeSet<u16> = self.endpoints.values().map(|e| e.backend_id).collect();
        (1..=4095u16).find(|b| !used.contains(b))
    }

    /// Smallest free service id (1..=1023).
    pub fn free_service_id(&self) -> Option<u16> {
        let used: BTreeSet<u16> = self.services.values().map(|s| s.service_id).collect();
        (1..=1023u16).find(|s| !used.contains(s))
    }

    /// Drops the oldest finished migrations beyond the history limit.
    pub fn trim_migrations(&mut self) {
        let finished = self.migrations.iter().filter(|m| !m.active()).count();
        if finished <= MIGRATION_HISTORY {
            return;
        }
        let mut excess = finished - MIGRATION_HISTORY;
        self.migrations.retain(|m| {
            if excess > 0 && !m.active() {
                excess -= 1;
                false
            } else {
                true
            }
        });
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    now_us() / 1000
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {

    #[test]
    fn free_port_skips_used_and_retired_ports() {
        let st = State::default();
        assert_eq!(st.free_port(1, 10, &BTreeSet::new()), Some(1));
        assert_eq!(st.free_port(1, 10, &BTreeSet::from([1, 2, 4])), Some(3));
        assert_eq!(st.free_port(1, 2, &BTreeSet::from([1, 2])), None);
    }

    use super::*;

    /// A `state.json` as versions that kept the migration state as a string wrote it.
    const OLD_STATE_JSON: &str = r#"{
  "version": 1,
  "endpoints": {},
  "services": {},
  "migrations": [
    {"id": "mig-1", "source_key": "a/eth0", "target_key": "b/eth0",
     "source_ip": "10.88.0.5", "target_ip": "10.88.0.6", "state": "done",
     "backend_id": 3, "locked_unix_us": 1, "checkpointed_unix_us": 2,
     "restore_started_unix_us": 3, "restored_unix_us": 4, "unlocked_unix_us": 5,
     "switchover_us": 6, "stall_us": 4, "connections_carried": 7,
     "leave_running": false, "error": "", "image_dir": "/img"},
    {"id": "mig-2", "source_key": "c/eth0", "target_key": "", "source_ip": "10.88.0.7",
     "target_ip": null, "state": "aborted", "backend_id": 4, "locked_unix_us": 1,
     "checkpointed_unix_us": 0, "restore_started_unix_us": 0, "restored_unix_us": 0,
     "unlocked_unix_us": 2, "switchover_us": 0, "stall_us": 1,
     "connections_carried": 0, "leave_running": true, "error": "aborted by caller",
     "image_dir": "", "no_lock": true},
    {"id": "mig-3", "source_key": "d/eth0", "target_key": "", "source_ip": "10.88.0.8",
     "target_ip": null, "state": "locked", "backend_id": 5, "locked_unix_us": 1,
     "checkpointed_unix_us": 0, "restore_started_unix_us": 0, "restored_unix_us": 0,
     "unlocked_unix_us": 0, "switchover_us": 0, "stall_us": 0,
     "connections_carried": 0, "leave_running": false, "error": "", "image_dir": ""},
    {"id": "mig-4", "source_key": "e/eth0", "target_key": "", "source_ip": "10.88.0.9",
     "target_ip": null, "state": "checkpointed", "backend_id": 6, "locked_unix_us": 1,
     "checkpointed_unix_us": 2, "restore_started_unix_us": 0, "restored_unix_us": 0,
     "unlocked_unix_us": 0, "switchover_us": 0, "stall_us": 0,
     "connections_carried": 0, "leave_running": false, "error": "", "image_dir": ""},
    {"id": "mig-5", "source_key": "f/eth0", "target_key": "g/eth0",
     "source_ip": "10.88.0.10", "target_ip": null, "state": "restoring", "backend_id": 7,
     "locked_unix_us": 1, "checkpointed_unix_us": 2, "restore_started_unix_us": 3,
     "restored_unix_us": 0, "unlocked_unix_us": 0, "switchover_us": 0, "stall_us": 0,
     "connections_carried": 0, "leave_running": false, "error": "", "image_dir": ""},
    {"id": "mig-6", "source_key": "h/eth0", "target_key": "i/eth0",
     "source_ip": "10.88.0.11", "target_ip": "10.88.0.12", "state": "restored",
     "backend_id": 8, "locked_unix_us": 1, "checkpointed_unix_us": 2,
     "restore_started_unix_us": 3, "restored_unix_us": 4, "unlocked_unix_us": 0,
     "switchover_us": 9, "stall_us": 0, "connections_carried": 2,
     "leave_running": false, "error": "", "image_dir": ""}
  ],
  "next_migration": 6
}"#;

    #[test]
    fn a_state_file_with_string_migration_states_loads_and_is_written_back_the_same() {
        let st: State = serde_json::from_str(OLD_STATE_JSON).expect("old state.json loads");
        let states: Vec<MigrationState> = st.migrations.iter().map(|m| m.state).collect();
        assert_eq!(
            states,
            [
                MigrationState::Done,
                MigrationState::Aborted,
                MigrationState::Locked,
                MigrationState::Checkpointed,
                MigrationState::Restoring,
                MigrationState::Restored,
            ]
        );
        assert!(st.migrations[1].no_lock);
        assert!(!st.migrations[0].no_lock);
        let active: Vec<bool> = st.migrations.iter().map(|m| m.active()).collect();
        assert_eq!(active, [false, false, true, true, true, true]);
        // Written back, each state is the same string; the API shows it too.
        let old: serde_json::Value = serde_json::from_str(OLD_STATE_JSON).unwrap();
        let new = serde_json::to_value(&st).unwrap();
        for (i, m) in st.migrations.iter().enumerate() {
            assert_eq!(new["migrations"][i]["state"], old["migrations"][i]["state"]);
            assert_eq!(
                serde_json::Value::from(m.to_api().state),
                old["migrations"][i]["state"]
            );
        }
    }

    #[test]
    fn an_unknown_migration_state_is_refused() {
        let bad = OLD_STATE_JSON.replace("\"state\": \"restored\"", "\"state\": \"moving\"");
        assert_ne!(bad, OLD_STATE_JSON);
        assert!(serde_json::from_str::<State>(&bad).is_err());
    }

    /// An endpoint as versions before endpoints routed behind their node wrote it.
    const OLD_ENDPOINT_JSON: &str = r#"{
  "version": 1,
  "endpoints": {
    "a/eth0": {"key": "a/eth0", "container_id": "a", "ifname": "eth0",
     "netns_path": "/run/netns/a", "netns_inode": 4026532000, "ip": "10.88.0.5",
     "prefix_len": 24, "mac": [2, 0, 0, 0, 0, 5], "gateway": "10.88.0.1",
     "host_ifname": "veth-a", "switch_port": 3, "backend_id": 1,
     "backend_ip": "10.88.0.5", "locked": false, "state": "ready", "labels": {},
     "network": "p4lb", "migrated_ips": [], "restore_of_ip": null,
     "created_unix_ms": 1, "detached": false, "host_if_local": true, "node": "n1"}
  },
  "services": {},
  "migrations": [],
  "next_migration": 0
}"#;

    #[test]
    fn an_endpoint_without_the_routed_fields_loads_as_a_pod_with_its_own_port() {
        let st: State = serde_json::from_str(OLD_ENDPOINT_JSON).expect("old state.json loads");
        let e = &st.endpoints["a/eth0"];
        assert!(!e.behind_node);
        assert_eq!(e.next_hop_mac, None);
        assert_eq!(e.attached_port(), Some(3));
        assert_eq!(e.dmac(), e.mac);
        assert!(!e.to_api().behind_node);
        // A routed endpoint is written with its fields and read back the same.
        let mut st = st.clone();
        if let Some(e) = st.endpoints.get_mut("a/eth0") {
            e.behind_node = true;
            e.next_hop_mac = Some([2, 0, 0, 0, 0x0b, 1]);
            e.switch_port = 300;
        }
        let back: State = serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        assert_eq!(back, st);
        let e = &back.endpoints["a/eth0"];
        assert_eq!(
            e.attached_port(),
            None,
            "the uplink port is no port of its own"
        );
        assert_eq!(e.dmac(), [2, 0, 0, 0, 0x0b, 1]);
        assert!(e.to_api().behind_node);
    }
}
