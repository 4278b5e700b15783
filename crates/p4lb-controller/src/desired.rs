//! The table entries a [`State`] implies. Pure: the same state always gives the same
//! entries, which is what reconciliation diffs the switch against. Each endpoint and
//! each service gives its own entries; [`DesiredIndex`] keeps them part by part so
//! that a change costs only the parts it changed (the commit path's switchover).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;

use prost::Message;

use p4lb_p4::entries as p;
use p4lb_proto::p4runtime::TableEntry;

use crate::state::{EndpointRec, ServiceRec, State};

/// Identity of a table entry: table id and its (canonical) match.
pub type EntryKey = Vec<u8>;

/// The key of an entry (table id + encoded match fields).
pub fn entry_key(e: &TableEntry) -> EntryKey {
    let mut m = e.r#match.clone();
    m.sort_by_key(|f| f.field_id);
    let k = TableEntry {
        table_id: e.table_id,
        r#match: m,
        priority: e.priority,
        ..Default::default()
    };
    k.encode_to_vec()
}

/// Whether two entries with the same key carry the same action.
pub fn same_action(a: &TableEntry, b: &TableEntry) -> bool {
    p::action_of(a) == p::action_of(b)
}

/// Options that shape the entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub router_mac: u64,
    pub arp_proxy_all: bool,
}

/// The part of the state an entry comes from, ordered as [`desired`] visits them: the
/// global entries, then the endpoints by key, then the services by name. When two parts
/// give one key different actions, the later part's entry is the desired one. Only
/// parts of one kind can meet on a key (each table is filled by one kind), and the
/// ARP entries two parts may share are identical.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum PartId {
    Global,
    Endpoint(String),
    Service(String),
}

/// Entries that depend on no endpoint or service.
fn global_entries(shape: Shape) -> Vec<TableEntry> {
    let mut out = Vec::new();
    if shape.arp_proxy_all {
        out.push(p::arp_proxy(Ipv4Addr::UNSPECIFIED, 0, shape.router_mac));
    }
    out
}

/// The entries of one endpoint: its port's source MAC; when active, its routes, its
/// backend row and the proxy ARP of its addresses and gateway. An endpoint routed
/// behind its node is reached through the node's uplink: its port is the uplink's and
/// the destination MAC the node's uplink MAC ([`EndpointRec::dmac`]). The endpoints of
/// one uplink all give the same `port_smac` entry, which [`DesiredIndex`] keeps while
/// any of them does.
fn endpoint_entries(ep: &EndpointRec, shape: Shape) -> Vec<TableEntry> {
    let mut out = vec![p::port_smac(ep.switch_port, shape.router_mac)];
    if !ep.active() {
        return out;
    }
    let mac = crate::addr::mac_u64(&ep.dmac());
    let routed = ep.routed_ips();
    for ip in &routed {
        if ep.locked {
            out.push(p::route_locked(*ip, 32));
        } else {
            out.push(p::route_to_port(*ip, 32, ep.switch_port, mac));
        }
    }
    if ep.backend_id != 0 {
        if ep.locked {
            out.push(p::backend_locked(ep.backend_id));
        } else {
            out.push(p::backend_forward(
                ep.backend_id,
                ep.backend_ip,
                mac,
                ep.switch_port,
            ));
        }
    }
    let arp: BTreeSet<Ipv4Addr> = routed.into_iter().chain(ep.gateway).collect();
    out.extend(
        arp.into_iter()
            .map(|ip| p::arp_proxy(ip, 32, shape.router_mac)),
    );
    out
}

/// The entries of one service: its VIP match, its reverse row, its Maglev slots and the
/// proxy ARP of its VIP.
fn service_entries(svc: &ServiceRec, shape: Shape) -> Vec<TableEntry> {
    let mut out = Vec::with_capacity(svc.slots.len() + 3);
    out.push(p::vip_service(
        svc.vip,
        svc.protocol,
        svc.port,
        svc.service_id,
        svc.slot_count,
        svc.effective_target_port(),
    ));
    out.push(p::service_vip(svc.service_id, svc.vip, svc.port));
    for (slot, b) in svc.slots.iter().enumerate() {
        if *b != 0 {
            out.push(p::maglev_slot(svc.service_id, slot as u16, *b));
        }
    }
    out.push(p::arp_proxy(svc.vip, 32, shape.router_mac));
    out
}

/// Whether two versions of a service give the same entries: only its match fields and
/// its slots count (which endpoints it resolved to changes at every migration, its
/// slots do not: the target takes the source's backend id).
fn same_service_entries(a: &ServiceRec, b: &ServiceRec) -> bool {
    same_except_slots(a, b) && a.slots == b.slots
}

/// Whether two versions of a service differ at most in which backend some slots name.
fn same_except_slots(a: &ServiceRec, b: &ServiceRec) -> bool {
    a.vip == b.vip
        && a.protocol == b.protocol
        && a.port == b.port
        && a.effective_target_port() == b.effective_target_port()
        && a.service_id == b.service_id
        && a.slot_count == b.slot_count
        && a.slots.len() == b.slots.len()
}

/// Desired entries of the state-derived tables, keyed by [`entry_key`].
pub fn desired(state: &State, shape: Shape) -> BTreeMap<EntryKey, TableEntry> {
    let mut out = BTreeMap::new();
    let parts = std::iter::once(global_entries(shape))
        .chain(
            state
                .endpoints
                .values()
                .map(|ep| endpoint_entries(ep, shape)),
        )
        .chain(
            state
                .services
                .values()
                .map(|svc| service_entries(svc, shape)),
        );
    for e in parts.flatten() {
        out.insert(entry_key(&e), e);
    }
    out
}

/// Whether two states may imply different entries: false only when every endpoint and
/// service that differs between them gives the same entries in both. Cheaper than
/// comparing two [`desired`] maps, which build every entry of every service.
pub fn entries_differ(a: &State, b: &State, shape: Shape) -> bool {
    let endpoints = a.endpoints.keys().chain(b.endpoints.keys());
    for k in endpoints {
        match (a.endpoints.get(k), b.endpoints.get(k)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => {
                if endpoint_entries(x, shape) != endpoint_entries(y, shape) {
                    return true;
                }
            }
            _ => return true,
        }
    }
    for k in a.services.keys().chain(b.services.keys()) {
        match (a.services.get(k), b.services.get(k)) {
            (Some(x), Some(y)) if same_service_entries(x, y) => {}
            (Some(_), Some(_)) => return true,
            _ => return true,
        }
    }
    false
}

/// The desired entries kept up to date part by part, so that a change of one endpoint
/// costs that endpoint's entries, not every entry of every service (a service's
/// Maglev slots are most of the table). [`DesiredIndex::sync`] brings it to a state
/// and names the keys whose desired entry may have changed; for any state, the
/// entries it holds are exactly [`desired`]'s (tested against it).
#[derive(Debug, Default)]
pub struct DesiredIndex {
    shape: Option<Shape>,
    endpoints: HashMap<String, EndpointRec>,
    services: HashMap<String, ServiceRec>,
    /// The keys each part contributes.
    parts: HashMap<PartId, Vec<EntryKey>>,
    /// Every contribution to a key, by part; the last part's entry is the desired one.
    by_key: HashMap<EntryKey, BTreeMap<PartId, TableEntry>>,
}

impl DesiredIndex {
    /// Brings the index to `state`; returns the keys whose desired entry may have
    /// changed (each once).
    pub fn sync(&mut self, state: &State, shape: Shape) -> Vec<EntryKey> {
        let mut touched = HashSet::new();
        if self.shape != Some(shape) {
            touched.extend(self.by_key.keys().cloned());
            *self = DesiredIndex {
                shape: Some(shape),
                ..DesiredIndex::default()
            };
            self.put(PartId::Global, global_entries(shape), &mut touched);
        }
        let gone: Vec<String> = self
            .endpoints
            .keys()
            .filter(|k| !state.endpoints.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            self.endpoints.remove(&k);
            self.take(&PartId::Endpoint(k), &mut touched);
        }
        for (k, ep) in &state.endpoints {
            if self.endpoints.get(k) == Some(ep) {
                continue;
            }
            let id = PartId::Endpoint(k.clone());
            self.take(&id, &mut touched);
            self.put(id, endpoint_entries(ep, shape), &mut touched);
            self.endpoints.insert(k.clone(), ep.clone());
        }
        let gone: Vec<String> = self
            .services
            .keys()
            .filter(|k| !state.services.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            self.services.remove(&k);
            self.take(&PartId::Service(k), &mut touched);
        }
        for (k, svc) in &state.services {
            let had = self.services.get(k);
            if had.is_some_and(|had| same_service_entries(had, svc)) {
                continue;
            }
            let id = PartId::Service(k.clone());
            match had {
                // Only slots moved (a backend joined or left): those slots' entries.
                Some(had) if same_except_slots(had, svc) => {
                    let moved: Vec<(usize, u16)> = had
                        .slots
                        .iter()
                        .zip(&svc.slots)
                        .enumerate()
                        .filter(|(_, (a, b))| a != b)
                        .map(|(slot, (_, b))| (slot, *b))
                        .collect();
                    for (slot, b) in moved {
                        let e = p::maglev_slot(svc.service_id, slot as u16, b);
                        let key = entry_key(&e);
                        self.replace(&id, key, (b != 0).then_some(e), &mut touched);
                    }
                }
                _ => {
                    self.take(&id, &mut touched);
                    self.put(id, service_entries(svc, shape), &mut touched);
                }
            }
            self.services.insert(k.clone(), svc.clone());
        }
        touched.into_iter().collect()
    }

    /// The desired entry of `key`.
    pub fn get(&self, key: &EntryKey) -> Option<&TableEntry> {
        self.by_key.get(key)?.values().next_back()
    }

    /// Every desired entry (what [`desired`] gives for the last synced state).
    pub fn to_map(&self) -> BTreeMap<EntryKey, TableEntry> {
        self.by_key
            .iter()
            .filter_map(|(k, c)| Some((k.clone(), c.values().next_back()?.clone())))
            .collect()
    }

    /// Number of desired entries.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Sets (or, with `None`, removes) part `id`'s entry for `key`. A key the part no
    /// longer gives may stay in its key list: taking it later is a no-op.
    fn replace(
        &mut self,
        id: &PartId,
        key: EntryKey,
        entry: Option<TableEntry>,
        touched: &mut HashSet<EntryKey>,
    ) {
        match entry {
            Some(e) => {
                self.by_key
                    .entry(key.clone())
                    .or_default()
                    .insert(id.clone(), e);
                self.parts.entry(id.clone()).or_default().push(key.clone());
            }
            None => {
                if let Some(c) = self.by_key.get_mut(&key) {
                    c.remove(id);
                    if c.is_empty() {
                        self.by_key.remove(&key);
                    }
                }
            }
        }
        touched.insert(key);
    }

    fn take(&mut self, id: &PartId, touched: &mut HashSet<EntryKey>) {
        for k in self.parts.remove(id).unwrap_or_default() {
            if let Some(c) = self.by_key.get_mut(&k) {
                c.remove(id);
                if c.is_empty() {
                    self.by_key.remove(&k);
                }
            }
            touched.insert(k);
        }
    }

    fn put(&mut self, id: PartId, entries: Vec<TableEntry>, touched: &mut HashSet<EntryKey>) {
        let mut keys = Vec::with_capacity(entries.len());
        for e in entries {
            let k = entry_key(&e);
            self.by_key
                .entry(k.clone())
                .or_default()
                .insert(id.clone(), e);
            touched.insert(k.clone());
            keys.push(k);
        }
        self.parts.insert(id, keys);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::state::EndpointState;

    const SHAPE: Shape = Shape {
        router_mac: 0x02_00_00_00_00_fe,
        arp_proxy_all: false,
    };

    /// A small deterministic generator (xorshift), so a failure replays.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn ep(i: u64, rng: &mut Rng) -> EndpointRec {
        // Few addresses and ports, so endpoints meet on keys (routes, backends, ports).
        let ip = Ipv4Addr::new(10, 88, 0, 1 + rng.below(6) as u8);
        let migrated_ips = (0..rng.below(3))
            .map(|_| Ipv4Addr::new(10, 88, 0, 1 + rng.below(6) as u8))
            .collect();
        // The fields are drawn in the order written: keep it, so a seed replays.
        EndpointRec {
            mac: [2, 0, 0, 0, rng.below(3) as u8, i as u8],
            gateway: (rng.below(2) == 0).then_some(Ipv4Addr::new(10, 88, 0, 254)),
            switch_port: 1 + rng.below(4) as u32,
            backend_id: rng.below(4) as u16,
            locked: rng.below(3) == 0,
            state: match rng.below(5) {
                0 => EndpointState::Migrated,
                1 => EndpointState::Stale,
                2 => EndpointState::Restoring,
                _ => EndpointState::Ready,
            },
            migrated_ips,
            behind_node: rng.below(3) == 0,
            next_hop_mac: (rng.below(2) == 0).then_some([2, 0, 0, 0, 0x0b, rng.below(2) as u8]),
            ..EndpointRec::sample(&format!("c{i}/eth0"), ip, 0)
        }
    }

    fn svc(i: u64, rng: &mut Rng) -> ServiceRec {
        let slot_count = 13;
        ServiceRec {
            name: format!("s{i}"),
            vip: Ipv4Addr::new(10, 96, 0, 1 + rng.below(3) as u8),
            protocol: 6,
            port: 80,
            target_port: 0,
            backends: Vec::new(),
            selector: String::new(),
            name_pattern: String::new(),
            service_id: 1 + rng.below(3) as u16,
            slot_count,
            resolved: Vec::new(),
            slots: (0..slot_count).map(|_| rng.below(4) as u16).collect(),
        }
    }

    /// After every step of a random walk over states (endpoints and services added,
    /// changed and removed; endpoints that share addresses, ports and backend ids;
    /// services that share VIPs and ids; slots that move), the index holds exactly `desired`'s entries,
    /// and every key whose entry changed is among the keys it reports touched.
    #[test]
    fn the_index_follows_desired_through_a_random_walk() {
        for seed in 1..=20u64 {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
            let mut state = State::default();
            let mut index = DesiredIndex::default();
            let mut before = BTreeMap::new();
            for step in 0..300 {
                let i = rng.below(8);
                match rng.below(5) {
                    0 | 1 => {
                        let e = ep(i, &mut rng);
                        state.endpoints.insert(e.key.clone(), e);
                    }
                    2 => {
                        let s = svc(i, &mut rng);
                        state.services.insert(s.name.clone(), s);
                    }
                    3 => {
                        // Some slots move to another backend (or to none).
                        if let Some(s) = state.services.get_mut(&format!("s{i}")) {
                            for _ in 0..1 + rng.below(4) {
                                let slot = rng.below(s.slots.len() as u64) as usize;
                                s.slots[slot] = rng.below(4) as u16;
                            }
                        }
                    }
                    _ => {
                        state.endpoints.remove(&format!("c{i}/eth0"));
                        state.services.remove(&format!("s{i}"));
                    }
                }
                let touched: HashSet<EntryKey> = index.sync(&state, SHAPE).into_iter().collect();
                let want = desired(&state, SHAPE);
                assert_eq!(
                    index.to_map(),
                    want,
                    "seed {seed} step {step}: index != desired"
                );
                for (k, e) in &want {
                    if before.get(k) != Some(e) {
                        assert!(
                            touched.contains(k),
                            "seed {seed} step {step}: a changed key was not reported"
                        );
                    }
                }
                for k in before.keys() {
                    if !want.contains_key(k) {
                        assert!(
                            touched.contains(k),
                            "seed {seed} step {step}: a removed key was not reported"
                        );
                    }
                }
                assert!(
                    !entries_differ(&state, &state.clone(), SHAPE),
                    "a state differs from itself"
                );
                before = want;
            }
        }
    }

    /// `entries_differ` is false exactly when `desired` is the same, for states one
    /// random change apart (a change that touches no entry, such as labels, included).
    #[test]
    fn entries_differ_agrees_with_desired() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut a = State::default();
        for i in 0..6 {
            let e = ep(i, &mut rng);
            a.endpoints.insert(e.key.clone(), e);
            let s = svc(i, &mut rng);
            a.services.insert(s.name.clone(), s);
        }
        let mut same = 0;
        for _ in 0..500 {
            let mut b = a.clone();
            let i = rng.below(8);
            match rng.below(3) {
                0 => {
                    let e = ep(i, &mut rng);
                    b.endpoints.insert(e.key.clone(), e);
                }
                1 => {
                    if let Some(e) = b.endpoints.get_mut(&format!("c{i}/eth0")) {
                        e.labels.insert("k".into(), "v".into());
                    }
                }
                _ => {
                    let s = svc(i, &mut rng);
                    b.services.insert(s.name.clone(), s);
                }
            }
            let differ = desired(&a, SHAPE) != desired(&b, SHAPE);
            if !differ {
                same += 1;
            }
            // Conservative by design: it may say "differ" for a change that another
            // part shadows, but never "same" for a change of the entries.
            if !entries_differ(&a, &b, SHAPE) {
                assert!(!differ, "entries_differ missed a change of the entries");
            }
            a = b;
        }
        assert!(same > 0, "the walk never produced an entry-neutral change");
    }

    /// A change of one endpoint touches that endpoint's keys, not the services' slots.
    #[test]
    fn a_switchover_touches_only_the_endpoint() {
        let mut rng = Rng(7);
        let mut state = State::default();
        let mut e = ep(1, &mut rng);
        e.state = EndpointState::Ready;
        e.locked = true;
        e.backend_id = 1;
        state.endpoints.insert(e.key.clone(), e.clone());
        for i in 0..10 {
            let s = svc(i, &mut rng);
            state.services.insert(s.name.clone(), s);
        }
        let mut index = DesiredIndex::default();
        index.sync(&state, SHAPE);
        e.locked = false;
        state.endpoints.insert(e.key.clone(), e.clone());
        let touched = index.sync(&state, SHAPE);
        assert_eq!(touched.len(), endpoint_entries(&e, SHAPE).len());
        assert_eq!(index.to_map(), desired(&state, SHAPE));
    }

    const UPLINK_MAC: [u8; 6] = [2, 0, 0, 0, 0x0b, 1];
    const UPLINK_PORT: u32 = 300;

    /// A ready endpoint routed behind a node whose uplink is port 300.
    fn routed(i: u8, backend_id: u16) -> EndpointRec {
        let ip = Ipv4Addr::new(10, 88, 1, i);
        EndpointRec {
            mac: [2, 0, 0, 0, 1, i],
            host_ifname: format!("veth{i}"),
            backend_id,
            node: String::from("node-b"),
            behind_node: true,
            next_hop_mac: Some(UPLINK_MAC),
            ..EndpointRec::sample(&format!("r{i}/eth0"), ip, UPLINK_PORT)
        }
    }

    #[test]
    fn a_routed_endpoint_is_forwarded_to_its_nodes_uplink_port_and_mac() {
        let e = routed(5, 7);
        let uplink_mac = crate::addr::mac_u64(&UPLINK_MAC);
        let got = endpoint_entries(&e, SHAPE);
        assert!(got.contains(&p::route_to_port(e.ip, 32, UPLINK_PORT, uplink_mac)));
        assert!(got.contains(&p::backend_forward(7, e.ip, uplink_mac, UPLINK_PORT)));
        assert!(got.contains(&p::port_smac(UPLINK_PORT, SHAPE.router_mac)));
        // The pod's own MAC is no destination: the node routes to the pod.
        let pod_mac = crate::addr::mac_u64(&e.mac);
        assert!(!got
            .iter()
            .any(|x| *x == p::route_to_port(e.ip, 32, UPLINK_PORT, pod_mac)));
        // A pod of its own keeps its MAC.
        let mut own = e.clone();
        own.behind_node = false;
        own.next_hop_mac = None;
        own.switch_port = 4;
        let got = endpoint_entries(&own, SHAPE);
        assert!(got.contains(&p::route_to_port(e.ip, 32, 4, pod_mac)));
        assert!(got.contains(&p::backend_forward(7, e.ip, pod_mac, 4)));
    }

    /// Two endpoints behind one uplink give the same `port_smac` entry: both are kept,
    /// neither conflicts, and the entry stays until the last of them goes.
    #[test]
    fn routed_endpoints_share_their_uplinks_port_entry() {
        let (a, b) = (routed(5, 7), routed(6, 8));
        let mut state = State::default();
        state.endpoints.insert(a.key.clone(), a.clone());
        state.endpoints.insert(b.key.clone(), b.clone());
        let mut index = DesiredIndex::default();
        index.sync(&state, SHAPE);
        let want = desired(&state, SHAPE);
        assert_eq!(index.to_map(), want);
        let smac = p::port_smac(UPLINK_PORT, SHAPE.router_mac);
        let smac_key = entry_key(&smac);
        assert_eq!(want.get(&smac_key), Some(&smac));
        let uplink_mac = crate::addr::mac_u64(&UPLINK_MAC);
        for e in [&a, &b] {
            let r = p::route_to_port(e.ip, 32, UPLINK_PORT, uplink_mac);
            assert_eq!(want.get(&entry_key(&r)), Some(&r));
            let f = p::backend_forward(e.backend_id, e.ip, uplink_mac, UPLINK_PORT);
            assert_eq!(want.get(&entry_key(&f)), Some(&f));
        }
        state.endpoints.remove(&a.key);
        index.sync(&state, SHAPE);
        assert_eq!(index.to_map(), desired(&state, SHAPE));
        assert_eq!(index.get(&smac_key), Some(&smac), "b still uses the uplink");
        state.endpoints.remove(&b.key);
        index.sync(&state, SHAPE);
        assert!(index.is_empty(), "{:?}", index.to_map());
    }
}
