//! The table entries a [`State`] implies. Pure: the same state always gives the same
//! entries, which is what reconciliation diffs the switch against.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use prost::Message;

use p4lb_p4::entries as p;
use p4lb_proto::p4runtime::TableEntry;

use crate::state::State;

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
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub router_mac: u64,
    pub arp_proxy_all: bool,
}

/// Desired entries of the state-derived tables, keyed by [`entry_key`].
pub fn desired(state: &State, shape: Shape) -> BTreeMap<EntryKey, TableEntry> {
    let mut out = BTreeMap::new();
    let mut put = |e: TableEntry| {
        out.insert(entry_key(&e), e);
    };
    let mut arp: BTreeSet<Ipv4Addr> = BTreeSet::new();
    if shape.arp_proxy_all {
        put(p::arp_proxy(Ipv4Addr::UNSPECIFIED, 0, shape.router_mac));
    }
    for ep in state.endpoints.values() {
        put(p::port_smac(ep.switch_port, shape.router_mac));
        if !ep.active() {
            continue;
        }
        let mac = crate::addr::mac_u64(&ep.mac);
        for ip in ep.routed_ips() {
            if ep.locked {
                put(p::route_locked(ip, 32));
            } else {
                put(p::route_to_port(ip, 32, ep.switch_port, mac));
            }
            arp.insert(ip);
        }
        if let Some(gw) = ep.gateway {
            arp.insert(gw);
        }
        if ep.backend_id != 0 {
            if ep.locked {
                put(p::backend_locked(ep.backend_id));
            } else {
                put(p::backend_forward(
                    ep.backend_id,
                    ep.backend_ip,
                    mac,
                    ep.switch_port,
                ));
            }
        }
    }
    for svc in state.services.values() {
        let proto = svc.protocol;
        put(p::vip_service(
            svc.vip,
            proto,
            svc.port,
            svc.service_id,
            svc.slot_count,
            svc.effective_target_port(),
        ));
        put(p::service_vip(svc.service_id, svc.vip, svc.port));
        for (slot, b) in svc.slots.iter().enumerate() {
            if *b != 0 {
                put(p::maglev_slot(svc.service_id, slot as u16, *b));
            }
        }
        arp.insert(svc.vip);
    }
    for ip in arp {
        put(p::arp_proxy(ip, 32, shape.router_mac));
    }
    out
}
