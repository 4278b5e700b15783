//! Names and IDs of the p4lb pipeline (docs/pipeline.md) and builders for the table
//! entries the controller writes. A unit test checks these IDs against the P4Info.

use std::net::Ipv4Addr;

use p4lb_proto::p4runtime::{
    field_match::{Exact, FieldMatchType as MatchType, Lpm},
    table_action, Action, FieldMatch, TableAction, TableEntry,
};

pub mod table {
    pub const ARP_PROXY: u32 = 0x0200_0001;
    pub const VIP_SERVICES: u32 = 0x0200_0002;
    pub const CONN_TABLE: u32 = 0x0200_0003;
    pub const MAGLEV_SLOTS: u32 = 0x0200_0004;
    pub const BACKENDS: u32 = 0x0200_0005;
    pub const CONN_REVERSE: u32 = 0x0200_0006;
    pub const SERVICE_VIP: u32 = 0x0200_0007;
    pub const IPV4_ROUTES: u32 = 0x0200_0008;
    pub const L2_FORWARD: u32 = 0x0200_0009;
    pub const PORT_SMAC: u32 = 0x0200_000A;

    /// Every table with its P4Info name.
    pub const ALL: &[(u32, &str)] = &[
        (ARP_PROXY, "P4lbIngress.arp_proxy"),
        (VIP_SERVICES, "P4lbIngress.vip_services"),
        (CONN_TABLE, "P4lbIngress.conn_table"),
        (MAGLEV_SLOTS, "P4lbIngress.maglev_slots"),
        (BACKENDS, "P4lbIngress.backends"),
        (CONN_REVERSE, "P4lbIngress.conn_reverse"),
        (SERVICE_VIP, "P4lbIngress.service_vip"),
        (IPV4_ROUTES, "P4lbIngress.ipv4_routes"),
        (L2_FORWARD, "P4lbIngress.l2_forward"),
        (PORT_SMAC, "P4lbEgress.port_smac"),
    ];

    /// Tables whose entries the controller derives from its persisted state.
    pub const STATIC: &[u32] = &[
        ARP_PROXY,
        VIP_SERVICES,
        MAGLEV_SLOTS,
        BACKENDS,
        SERVICE_VIP,
        IPV4_ROUTES,
        PORT_SMAC,
    ];

    pub fn name(id: u32) -> &'static str {
        ALL.iter()
            .find(|(i, _)| *i == id)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }
}

pub mod action {
    pub const NOP: u32 = 0x0100_0000;
    pub const ARP_REPLY: u32 = 0x0100_0001;
    pub const SET_SERVICE: u32 = 0x0100_0002;
    pub const CONN_PIN: u32 = 0x0100_0003;
    pub const CONN_MISS: u32 = 0x0100_0004;
    pub const SET_BACKEND: u32 = 0x0100_0005;
    pub const BACKEND_FORWARD: u32 = 0x0100_0006;
    pub const BACKEND_LOCKED: u32 = 0x0100_0007;
    pub const REWRITE_SRC: u32 = 0x0100_0008;
    pub const ROUTE_TO_PORT: u32 = 0x0100_0009;
    pub const ROUTE_LOCKED: u32 = 0x0100_000A;
    pub const ROUTE_DROP: u32 = 0x0100_000B;
    pub const L2_OUTPUT: u32 = 0x0100_000C;
    pub const L2_DROP: u32 = 0x0100_000D;
    pub const SET_SMAC: u32 = 0x0100_000E;

    /// Every action with its P4Info name.
    pub const ALL: &[(u32, &str)] = &[
        (NOP, "nop"),
        (ARP_REPLY, "P4lbIngress.arp_reply"),
        (SET_SERVICE, "P4lbIngress.set_service"),
        (CONN_PIN, "P4lbIngress.conn_pin"),
        (CONN_MISS, "P4lbIngress.conn_miss"),
        (SET_BACKEND, "P4lbIngress.set_backend"),
        (BACKEND_FORWARD, "P4lbIngress.backend_forward"),
        (BACKEND_LOCKED, "P4lbIngress.backend_locked"),
        (REWRITE_SRC, "P4lbIngress.rewrite_src"),
        (ROUTE_TO_PORT, "P4lbIngress.route_to_port"),
        (ROUTE_LOCKED, "P4lbIngress.route_locked"),
        (ROUTE_DROP, "P4lbIngress.route_drop"),
        (L2_OUTPUT, "P4lbIngress.l2_output"),
        (L2_DROP, "P4lbIngress.l2_drop"),
        (SET_SMAC, "P4lbEgress.set_smac"),
    ];

    pub fn short_name(id: u32) -> &'static str {
        ALL.iter()
            .find(|(i, _)| *i == id)
            .map(|(_, n)| n.rsplit('.').next().unwrap_or(n))
            .unwrap_or("?")
    }
}

pub const DIGEST_CONN_LEARN: u32 = 0x1700_0001;
pub const COUNTER_BACKEND_PACKETS: u32 = 0x1200_0001;
pub const COUNTER_SERVICE_PACKETS: u32 = 0x1200_0002;
pub const COUNTER_DROPS: u32 = 0x1200_0003;

/// P4Runtime canonical byte string of `v` (no leading zero bytes, at least one byte).
pub fn canon(v: u64) -> Vec<u8> {
    let b = v.to_be_bytes();
    let first = b.iter().position(|x| *x != 0).unwrap_or(7);
    b[first..].to_vec()
}

/// Canonical form of an arbitrary big-endian byte string.
pub fn canon_bytes(b: &[u8]) -> Vec<u8> {
    let first = b
        .iter()
        .position(|x| *x != 0)
        .unwrap_or(b.len().saturating_sub(1));
    if b.is_empty() {
        return vec![0];
    }
    b[first..].to_vec()
}

/// Big-endian integer value of a byte string (values up to 64 bits).
pub fn value_u64(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
}

fn exact(field_id: u32, v: u64) -> FieldMatch {
    FieldMatch {
        field_id,
        field_match_type: Some(MatchType::Exact(Exact { value: canon(v) })),
    }
}

fn lpm(field_id: u32, addr: Ipv4Addr, prefix_len: i32) -> FieldMatch {
    FieldMatch {
        field_id,
        field_match_type: Some(MatchType::Lpm(Lpm {
            value: canon(u64::from(u32::from(addr))),
            prefix_len,
        })),
    }
}

fn act(action_id: u32, params: &[u64]) -> Option<TableAction> {
    Some(TableAction {
        r#type: Some(table_action::Type::Action(Action {
            action_id,
            params: params
                .iter()
                .enumerate()
                .map(|(i, v)| p4lb_proto::p4runtime::action::Param {
                    param_id: i as u32 + 1,
                    value: canon(*v),
                })
                .collect(),
        })),
    })
}

fn entry(table_id: u32, m: Vec<FieldMatch>, action: Option<TableAction>) -> TableEntry {
    TableEntry {
        table_id,
        r#match: m,
        action,
        ..Default::default()
    }
}

fn ip(a: Ipv4Addr) -> u64 {
    u64::from(u32::from(a))
}

/// A client's (or backend's) view of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub sport: u16,
    pub dport: u16,
}

impl FiveTuple {
    fn matches(&self) -> Vec<FieldMatch> {
        vec![
            exact(1, ip(self.src)),
            exact(2, ip(self.dst)),
            exact(3, u64::from(self.protocol)),
            exact(4, u64::from(self.sport)),
            exact(5, u64::from(self.dport)),
        ]
    }

    /// Reads a five-tuple back from a conn_table/conn_reverse entry's match.
    pub fn from_matches(m: &[FieldMatch]) -> Option<FiveTuple> {
        let mut v = [None; 5];
        for f in m {
            if let Some(MatchType::Exact(e)) = &f.field_match_type {
                if (1..=5).contains(&f.field_id) {
                    v[f.field_id as usize - 1] = Some(value_u64(&e.value));
                }
            }
        }
        Some(FiveTuple {
            src: Ipv4Addr::from(v[0]? as u32),
            dst: Ipv4Addr::from(v[1]? as u32),
            protocol: v[2]? as u8,
            sport: v[3]? as u16,
            dport: v[4]? as u16,
        })
    }
}

/// An arp_proxy entry; prefix length 0 (match everything) omits the field, as
/// P4Runtime requires for a don't-care LPM match.
pub fn arp_proxy(tpa: Ipv4Addr, prefix_len: i32, router_mac: u64) -> TableEntry {
    let m = if prefix_len == 0 {
        Vec::new()
    } else {
        vec![lpm(1, tpa, prefix_len)]
    };
    entry(table::ARP_PROXY, m, act(action::ARP_REPLY, &[router_mac]))
}

pub fn vip_service(
    vip: Ipv4Addr,
    protocol: u8,
    port: u16,
    service_id: u16,
    slot_count: u16,
    target_port: u16,
) -> TableEntry {
    entry(
        table::VIP_SERVICES,
        vec![
            exact(1, ip(vip)),
            exact(2, u64::from(protocol)),
            exact(3, u64::from(port)),
        ],
        act(
            action::SET_SERVICE,
            &[
                u64::from(service_id),
                u64::from(slot_count),
                u64::from(target_port),
            ],
        ),
    )
}

pub fn conn_pin(t: &FiveTuple, backend_id: u16, idle_timeout_ns: i64) -> TableEntry {
    let mut e = entry(
        table::CONN_TABLE,
        t.matches(),
        act(action::CONN_PIN, &[u64::from(backend_id)]),
    );
    e.idle_timeout_ns = idle_timeout_ns;
    e
}

/// A conn_table entry with only its key (for deletes).
pub fn conn_key(t: &FiveTuple) -> TableEntry {
    entry(table::CONN_TABLE, t.matches(), None)
}

pub fn conn_reverse(t: &FiveTuple, vip: Ipv4Addr, vport: u16, service_id: u16) -> TableEntry {
    entry(
        table::CONN_REVERSE,
        t.matches(),
        act(
            action::REWRITE_SRC,
            &[ip(vip), u64::from(vport), u64::from(service_id)],
        ),
    )
}

pub fn conn_reverse_key(t: &FiveTuple) -> TableEntry {
    entry(table::CONN_REVERSE, t.matches(), None)
}

pub fn maglev_slot(service_id: u16, slot: u16, backend_id: u16) -> TableEntry {
    entry(
        table::MAGLEV_SLOTS,
        vec![exact(1, u64::from(service_id)), exact(2, u64::from(slot))],
        act(action::SET_BACKEND, &[u64::from(backend_id)]),
    )
}

pub fn backend_forward(backend_id: u16, ipa: Ipv4Addr, dmac: u64, port: u32) -> TableEntry {
    entry(
        table::BACKENDS,
        vec![exact(1, u64::from(backend_id))],
        act(action::BACKEND_FORWARD, &[ip(ipa), dmac, u64::from(port)]),
    )
}

pub fn backend_locked(backend_id: u16) -> TableEntry {
    entry(
        table::BACKENDS,
        vec![exact(1, u64::from(backend_id))],
        act(action::BACKEND_LOCKED, &[]),
    )
}

pub fn service_vip(service_id: u16, vip: Ipv4Addr, vport: u16) -> TableEntry {
    entry(
        table::SERVICE_VIP,
        vec![exact(1, u64::from(service_id) + 1)],
        act(
            action::REWRITE_SRC,
            &[ip(vip), u64::from(vport), u64::from(service_id)],
        ),
    )
}

pub fn route_to_port(dst: Ipv4Addr, prefix_len: i32, port: u32, dmac: u64) -> TableEntry {
    entry(
        table::IPV4_ROUTES,
        vec![lpm(1, dst, prefix_len)],
        act(action::ROUTE_TO_PORT, &[u64::from(port), dmac]),
    )
}

pub fn route_locked(dst: Ipv4Addr, prefix_len: i32) -> TableEntry {
    entry(
        table::IPV4_ROUTES,
        vec![lpm(1, dst, prefix_len)],
        act(action::ROUTE_LOCKED, &[]),
    )
}

pub fn port_smac(port: u32, mac: u64) -> TableEntry {
    entry(
        table::PORT_SMAC,
        vec![exact(1, u64::from(port))],
        act(action::SET_SMAC, &[mac]),
    )
}

/// Action id and parameter values of an entry (None without a direct action).
pub fn action_of(e: &TableEntry) -> Option<(u32, Vec<u64>)> {
    match e.action.as_ref()?.r#type.as_ref()? {
        table_action::Type::Action(a) => Some((
            a.action_id,
            a.params.iter().map(|p| value_u64(&p.value)).collect(),
        )),
        _ => None,
    }
}

/// Canonicalizes every byte string of an entry read back from a switch, so that
/// it compares equal to what the controller builds.
pub fn canonicalize(e: &mut TableEntry) {
    for f in &mut e.r#match {
        match &mut f.field_match_type {
            Some(MatchType::Exact(x)) => x.value = canon_bytes(&x.value),
            Some(MatchType::Lpm(x)) => x.value = canon_bytes(&x.value),
            _ => {}
        }
    }
    e.r#match.sort_by_key(|f| f.field_id);
    if let Some(TableAction {
        r#type: Some(table_action::Type::Action(a)),
    }) = &mut e.action
    {
        for p in &mut a.params {
            p.value = canon_bytes(&p.value);
        }
        a.params.sort_by_key(|p| p.param_id);
    }
}

/// Human-readable match of an entry ("dst_addr=10.0.0.1/32").
pub fn format_match(e: &TableEntry) -> String {
    let names: &[&str] = match e.table_id {
        table::ARP_PROXY => &["tpa"],
        table::VIP_SERVICES => &["dst_addr", "protocol", "l4_dport"],
        table::CONN_TABLE | table::CONN_REVERSE => {
            &["src_addr", "dst_addr", "protocol", "l4_sport", "l4_dport"]
        }
        table::MAGLEV_SLOTS => &["service_id", "slot"],
        table::BACKENDS => &["backend_id"],
        table::SERVICE_VIP => &["mark"],
        table::IPV4_ROUTES => &["dst_addr"],
        table::L2_FORWARD => &["dst_mac"],
        table::PORT_SMAC => &["egress_port"],
        _ => &[],
    };
    let is_addr = |t: u32, fid: u32| match t {
        table::ARP_PROXY | table::IPV4_ROUTES => fid == 1,
        table::VIP_SERVICES => fid == 1,
        table::CONN_TABLE | table::CONN_REVERSE => fid <= 2,
        _ => false,
    };
    e.r#match
        .iter()
        .map(|f| {
            let name = names
                .get(f.field_id as usize - 1)
                .copied()
                .unwrap_or("field");
            let (v, plen) = match &f.field_match_type {
                Some(MatchType::Exact(x)) => (value_u64(&x.value), None),
                Some(MatchType::Lpm(x)) => (value_u64(&x.value), Some(x.prefix_len)),
                _ => (0, None),
            };
            let vs = if is_addr(e.table_id, f.field_id) {
                Ipv4Addr::from(v as u32).to_string()
            } else {
                v.to_string()
            };
            match plen {
                Some(p) => format!("{name}={vs}/{p}"),
                None => format!("{name}={vs}"),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Human-readable action of an entry ("backend_forward(ip=10.0.0.2, ...)").
pub fn format_action(e: &TableEntry) -> String {
    let Some((id, params)) = action_of(e) else {
        return String::from("-");
    };
    let mac = |v: u64| crate::addr::format_mac(&mac_bytes(v));
    let ipf = |v: u64| Ipv4Addr::from(v as u32).to_string();
    let args = match (id, params.as_slice()) {
        (action::ARP_REPLY, [m]) => format!("mac={}", mac(*m)),
        (action::SET_SERVICE, [s, c, t]) => {
            format!("service_id={s}, slot_count={c}, target_port={t}")
        }
        (action::CONN_PIN, [b]) | (action::SET_BACKEND, [b]) => format!("backend_id={b}"),
        (action::BACKEND_FORWARD, [i, m, p]) => {
            format!("ip={}, dmac={}, port={p}", ipf(*i), mac(*m))
        }
        (action::REWRITE_SRC, [i, p, s]) => {
            format!("vip={}, vport={p}, service_id={s}", ipf(*i))
        }
        (action::ROUTE_TO_PORT, [p, m]) => format!("port={p}, dmac={}", mac(*m)),
        (action::L2_OUTPUT, [p]) => format!("port={p}"),
        (action::SET_SMAC, [m]) => format!("mac={}", mac(*m)),
        _ => params
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    format!("{}({args})", action::short_name(id))
}

pub fn mac_bytes(v: u64) -> [u8; 6] {
    let b = v.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_bytes() {
        assert_eq!(canon(0), vec![0]);
        assert_eq!(canon(1), vec![1]);
        assert_eq!(canon(0x0a00_0001), vec![0x0a, 0, 0, 1]);
        assert_eq!(canon_bytes(&[0, 0, 5]), vec![5]);
        assert_eq!(canon_bytes(&[0, 0]), vec![0]);
    }

    #[test]
    fn five_tuple_round_trip() {
        let t = FiveTuple {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 96, 0, 1),
            protocol: 6,
            sport: 40000,
            dport: 80,
        };
        let e = conn_pin(&t, 3, 0);
        assert_eq!(FiveTuple::from_matches(&e.r#match), Some(t));
        assert_eq!(action_of(&e), Some((action::CONN_PIN, vec![3])));
        assert_eq!(
            format_match(&e),
            "src_addr=10.0.0.1 dst_addr=10.96.0.1 protocol=6 l4_sport=40000 l4_dport=80"
        );
    }
}
