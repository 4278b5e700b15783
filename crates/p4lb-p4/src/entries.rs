//! Typed builders of the table entries of p4lb.p4, and reading them back.
//!
//! Every builder takes its table, action, match-field and parameter IDs from [`tables`] and
//! [`actions`], so a change to a table is a change to those constants (checked against the
//! P4Info) and to the builder here. Values are canonical bytestrings ([`crate::bytes`]).

use std::net::Ipv4Addr;

use p4lb_proto::p4runtime::{
    action::Param,
    field_match::{Exact, FieldMatchType, Lpm},
    table_action, Action, FieldMatch, TableAction, TableEntry,
};

use crate::bytes;
use crate::schema::{ActionInfo, MatchFieldInfo};
use crate::{actions, tables};

/// A connection as one direction of it is keyed in `conn_table` (client → VIP) and
/// `conn_reverse` (backend → client); both tables share this key layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub sport: u16,
    pub dport: u16,
}

/// The key of `conn_table`, in the order of [`FiveTuple`]'s fields.
const CONN_TABLE_KEY: [MatchFieldInfo; 5] = [
    tables::conn_table::SRC_ADDR,
    tables::conn_table::DST_ADDR,
    tables::conn_table::PROTOCOL,
    tables::conn_table::L4_SPORT,
    tables::conn_table::L4_DPORT,
];

/// The key of `conn_reverse`, in the order of [`FiveTuple`]'s fields.
const CONN_REVERSE_KEY: [MatchFieldInfo; 5] = [
    tables::conn_reverse::SRC_ADDR,
    tables::conn_reverse::DST_ADDR,
    tables::conn_reverse::PROTOCOL,
    tables::conn_reverse::L4_SPORT,
    tables::conn_reverse::L4_DPORT,
];

impl FiveTuple {
    fn values(&self) -> [u64; 5] {
        [
            ip(self.src),
            ip(self.dst),
            u64::from(self.protocol),
            u64::from(self.sport),
            u64::from(self.dport),
        ]
    }

    fn matches(&self, key: &[MatchFieldInfo; 5]) -> Vec<FieldMatch> {
        key.iter()
            .zip(self.values())
            .map(|(f, v)| exact(f.id, v))
            .collect()
    }

    /// Reads a five-tuple back from the match of a `conn_table` or `conn_reverse` entry.
    pub fn from_matches(m: &[FieldMatch]) -> Option<FiveTuple> {
        let get = |f: &MatchFieldInfo| -> Option<u64> {
            m.iter().find_map(|x| match &x.field_match_type {
                Some(FieldMatchType::Exact(e)) if x.field_id == f.id => {
                    Some(bytes::to_u64(&e.value))
                }
                _ => None,
            })
        };
        let [src, dst, protocol, sport, dport] = &CONN_TABLE_KEY;
        Some(FiveTuple {
            src: Ipv4Addr::from(get(src)? as u32),
            dst: Ipv4Addr::from(get(dst)? as u32),
            protocol: get(protocol)? as u8,
            sport: get(sport)? as u16,
            dport: get(dport)? as u16,
        })
    }
}

fn ip(a: Ipv4Addr) -> u64 {
    u64::from(u32::from(a))
}

/// An exact match of `v` on match field `field_id`.
pub fn exact(field_id: u32, v: u64) -> FieldMatch {
    FieldMatch {
        field_id,
        field_match_type: Some(FieldMatchType::Exact(Exact {
            value: bytes::encode(v),
        })),
    }
}

/// An LPM match of `v/prefix_len` on match field `field_id`.
pub fn lpm(field_id: u32, v: u64, prefix_len: i32) -> FieldMatch {
    FieldMatch {
        field_id,
        field_match_type: Some(FieldMatchType::Lpm(Lpm {
            value: bytes::encode(v),
            prefix_len,
        })),
    }
}

/// A direct action call: `params` are the values in the action's parameter order.
pub fn action(a: &ActionInfo, params: &[u64]) -> Option<TableAction> {
    action_with_ids(
        a.id,
        a.params.iter().map(|p| p.id).zip(params.iter().copied()),
    )
}

/// A direct action call with explicit parameter IDs (for actions outside the contract).
pub fn action_with_ids(
    action_id: u32,
    params: impl IntoIterator<Item = (u32, u64)>,
) -> Option<TableAction> {
    Some(TableAction {
        r#type: Some(table_action::Type::Action(Action {
            action_id,
            params: params
                .into_iter()
                .map(|(param_id, v)| Param {
                    param_id,
                    value: bytes::encode(v),
                })
                .collect(),
        })),
    })
}

/// A table entry of `table_id` with match `m` and `action` (None: key only, for deletes and
/// reads).
pub fn entry(table_id: u32, m: Vec<FieldMatch>, action: Option<TableAction>) -> TableEntry {
    TableEntry {
        table_id,
        r#match: m,
        action,
        ..Default::default()
    }
}

// ---- one builder per kind of entry ----

/// An `arp_proxy` entry answering for `tpa/prefix_len` with `mac`; prefix length 0 (match
/// everything) omits the field, as P4Runtime requires for a don't-care LPM match.
pub fn arp_proxy(tpa: Ipv4Addr, prefix_len: i32, mac: u64) -> TableEntry {
    let m = if prefix_len == 0 {
        Vec::new()
    } else {
        vec![lpm(tables::arp_proxy::TPA.id, ip(tpa), prefix_len)]
    };
    entry(
        tables::arp_proxy::ID,
        m,
        action(&actions::arp_reply::INFO, &[mac]),
    )
}

/// A `vip_services` entry: (VIP, protocol, port) → `set_service`.
pub fn vip_service(
    vip: Ipv4Addr,
    protocol: u8,
    port: u16,
    service_id: u16,
    slot_count: u16,
    target_port: u16,
) -> TableEntry {
    use tables::vip_services as t;
    entry(
        t::ID,
        vec![
            exact(t::DST_ADDR.id, ip(vip)),
            exact(t::PROTOCOL.id, u64::from(protocol)),
            exact(t::L4_DPORT.id, u64::from(port)),
        ],
        action(
            &actions::set_service::INFO,
            &[
                u64::from(service_id),
                u64::from(slot_count),
                u64::from(target_port),
            ],
        ),
    )
}

/// A `conn_table` entry pinning the client's tuple `t` to `backend_id`.
pub fn conn_pin(t: &FiveTuple, backend_id: u16, idle_timeout_ns: i64) -> TableEntry {
    let mut e = entry(
        tables::conn_table::ID,
        t.matches(&CONN_TABLE_KEY),
        action(&actions::conn_pin::INFO, &[u64::from(backend_id)]),
    );
    e.idle_timeout_ns = idle_timeout_ns;
    e
}

/// A `conn_table` entry with only its key (for deletes).
pub fn conn_key(t: &FiveTuple) -> TableEntry {
    entry(tables::conn_table::ID, t.matches(&CONN_TABLE_KEY), None)
}

/// A `conn_reverse` entry: the backend's reply tuple `t` → source rewritten to the VIP.
pub fn conn_reverse(t: &FiveTuple, vip: Ipv4Addr, vport: u16, service_id: u16) -> TableEntry {
    entry(
        tables::conn_reverse::ID,
        t.matches(&CONN_REVERSE_KEY),
        action(
            &actions::rewrite_src::INFO,
            &[ip(vip), u64::from(vport), u64::from(service_id)],
        ),
    )
}

/// A `conn_reverse` entry with only its key (for deletes).
pub fn conn_reverse_key(t: &FiveTuple) -> TableEntry {
    entry(tables::conn_reverse::ID, t.matches(&CONN_REVERSE_KEY), None)
}

/// A `maglev_slots` entry: (service, slot) → backend.
pub fn maglev_slot(service_id: u16, slot: u16, backend_id: u16) -> TableEntry {
    use tables::maglev_slots as t;
    entry(
        t::ID,
        vec![
            exact(t::SERVICE_ID.id, u64::from(service_id)),
            exact(t::SLOT.id, u64::from(slot)),
        ],
        action(&actions::set_backend::INFO, &[u64::from(backend_id)]),
    )
}

/// A `backends` entry forwarding (DNAT) to `ip`, MAC `dmac`, out of `port`.
pub fn backend_forward(backend_id: u16, ipa: Ipv4Addr, dmac: u64, port: u32) -> TableEntry {
    entry(
        tables::backends::ID,
        vec![exact(
            tables::backends::BACKEND_ID.id,
            u64::from(backend_id),
        )],
        action(
            &actions::backend_forward::INFO,
            &[ip(ipa), dmac, u64::from(port)],
        ),
    )
}

/// A `backends` entry of a locked (migrating) backend.
pub fn backend_locked(backend_id: u16) -> TableEntry {
    entry(
        tables::backends::ID,
        vec![exact(
            tables::backends::BACKEND_ID.id,
            u64::from(backend_id),
        )],
        action(&actions::backend_locked::INFO, &[]),
    )
}

/// A `service_vip` entry: transit mark (`service_id + 1`) → source rewritten to the VIP.
pub fn service_vip(service_id: u16, vip: Ipv4Addr, vport: u16) -> TableEntry {
    entry(
        tables::service_vip::ID,
        vec![exact(
            tables::service_vip::MARK.id,
            u64::from(service_id) + 1,
        )],
        action(
            &actions::rewrite_src::INFO,
            &[ip(vip), u64::from(vport), u64::from(service_id)],
        ),
    )
}

/// An `ipv4_routes` entry: `dst/prefix_len` → out of `port` towards `dmac`.
pub fn route_to_port(dst: Ipv4Addr, prefix_len: i32, port: u32, dmac: u64) -> TableEntry {
    entry(
        tables::ipv4_routes::ID,
        vec![lpm(tables::ipv4_routes::DST_ADDR.id, ip(dst), prefix_len)],
        action(&actions::route_to_port::INFO, &[u64::from(port), dmac]),
    )
}

/// An `ipv4_routes` entry of a locked (migrating) endpoint.
pub fn route_locked(dst: Ipv4Addr, prefix_len: i32) -> TableEntry {
    entry(
        tables::ipv4_routes::ID,
        vec![lpm(tables::ipv4_routes::DST_ADDR.id, ip(dst), prefix_len)],
        action(&actions::route_locked::INFO, &[]),
    )
}

/// An `l2_forward` entry: destination MAC → out of `port`.
pub fn l2_output(dst_mac: u64, port: u32) -> TableEntry {
    entry(
        tables::l2_forward::ID,
        vec![exact(tables::l2_forward::DST_ADDR.id, dst_mac)],
        action(&actions::l2_output::INFO, &[u64::from(port)]),
    )
}

/// A `port_smac` entry: egress port → source MAC.
pub fn port_smac(port: u32, mac: u64) -> TableEntry {
    entry(
        tables::port_smac::ID,
        vec![exact(tables::port_smac::EGRESS_PORT.id, u64::from(port))],
        action(&actions::set_smac::INFO, &[mac]),
    )
}

// ---- reading entries back ----

/// Action ID and parameter values (in parameter-ID order as sent) of an entry; `None`
/// without a direct action.
pub fn action_of(e: &TableEntry) -> Option<(u32, Vec<u64>)> {
    match e.action.as_ref()?.r#type.as_ref()? {
        table_action::Type::Action(a) => Some((
            a.action_id,
            a.params.iter().map(|p| bytes::to_u64(&p.value)).collect(),
        )),
        _ => None,
    }
}

/// Canonicalizes every bytestring of an entry read back from a switch and sorts its match
/// fields and parameters by ID, so that it compares equal to what the builders produce.
pub fn canonicalize(e: &mut TableEntry) {
    for f in &mut e.r#match {
        match &mut f.field_match_type {
            Some(FieldMatchType::Exact(x)) => x.value = bytes::canonical(&x.value),
            Some(FieldMatchType::Lpm(x)) => x.value = bytes::canonical(&x.value),
            _ => {}
        }
    }
    e.r#match.sort_by_key(|f| f.field_id);
    if let Some(TableAction {
        r#type: Some(table_action::Type::Action(a)),
    }) = &mut e.action
    {
        for p in &mut a.params {
            p.value = bytes::canonical(&p.value);
        }
        a.params.sort_by_key(|p| p.param_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple() -> FiveTuple {
        FiveTuple {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 96, 0, 1),
            protocol: 6,
            sport: 40000,
            dport: 80,
        }
    }

    #[test]
    fn five_tuple_round_trips_through_both_connection_tables() {
        let t = tuple();
        let e = conn_pin(&t, 3, 0);
        assert_eq!(e.table_id, tables::conn_table::ID);
        assert_eq!(FiveTuple::from_matches(&e.r#match), Some(t));
        assert_eq!(action_of(&e), Some((actions::conn_pin::ID, vec![3])));
        let r = conn_reverse(&t, Ipv4Addr::new(10, 96, 0, 1), 80, 1);
        assert_eq!(FiveTuple::from_matches(&r.r#match), Some(t));
        assert_eq!(conn_key(&t).r#match, e.r#match);
        assert_eq!(conn_reverse_key(&t).r#match, r.r#match);
    }

    #[test]
    fn conn_tables_share_one_key_layout() {
        for (a, b) in CONN_TABLE_KEY.iter().zip(&CONN_REVERSE_KEY) {
            assert_eq!((a.id, a.name, a.bitwidth), (b.id, b.name, b.bitwidth));
        }
        assert_eq!(
            tables::conn_table::INFO.match_fields,
            CONN_TABLE_KEY.as_slice()
        );
        assert_eq!(
            tables::conn_reverse::INFO.match_fields,
            CONN_REVERSE_KEY.as_slice()
        );
    }

    #[test]
    fn entries_use_the_ids_and_parameters_of_their_table() {
        let ip = Ipv4Addr::new(10, 0, 0, 2);
        let t = tuple();
        let all = [
            arp_proxy(ip, 32, 0x0200_0000_00fe),
            vip_service(ip, 6, 80, 1, 7, 8080),
            conn_pin(&t, 1, 0),
            maglev_slot(1, 2, 3),
            backend_forward(1, ip, 0x0200_0000_0001, 2),
            backend_locked(1),
            conn_reverse(&t, ip, 80, 1),
            service_vip(1, ip, 80),
            route_to_port(ip, 32, 1, 0x0200_0000_0001),
            route_locked(ip, 32),
            l2_output(0x0200_0000_0001, 1),
            port_smac(1, 0x0200_0000_00fe),
        ];
        for e in &all {
            let t = tables::by_id(e.table_id).expect("a table of the program");
            assert_eq!(e.r#match.len(), t.match_fields.len(), "{}", t.name);
            for m in &e.r#match {
                assert!(t.match_field(m.field_id).is_some(), "{}", t.name);
            }
            let (aid, params) = action_of(e).expect("a direct action");
            assert!(t.action_ref(aid).is_some(), "{}", t.name);
            let a = actions::by_id(aid).expect("an action of the program");
            assert_eq!(params.len(), a.params.len(), "{}", a.name);
        }
        // A covering ARP prefix is a don't-care match: no field.
        assert!(arp_proxy(Ipv4Addr::UNSPECIFIED, 0, 1).r#match.is_empty());
        assert_eq!(
            action_of(&service_vip(4, ip, 80)),
            Some((actions::rewrite_src::ID, vec![0x0a00_0002, 80, 4]))
        );
        assert_eq!(
            service_vip(4, ip, 80).r#match,
            vec![exact(tables::service_vip::MARK.id, 5)]
        );
    }

    #[test]
    fn canonicalize_undoes_padding_and_order() {
        let want = backend_forward(1, Ipv4Addr::new(10, 0, 0, 2), 0x0200_0000_0001, 2);
        let mut got = want.clone();
        if let Some(table_action::Type::Action(a)) =
            got.action.as_mut().and_then(|a| a.r#type.as_mut())
        {
            a.params.reverse();
            a.params[0].value = vec![0, 0, 2];
        }
        if let Some(FieldMatchType::Exact(x)) = got.r#match[0].field_match_type.as_mut() {
            x.value = vec![0, 1];
        }
        assert_ne!(got, want);
        canonicalize(&mut got);
        assert_eq!(got, want);
    }
}
