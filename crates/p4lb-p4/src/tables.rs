//! Tables of p4lb.p4: P4Info IDs, names, keys, actions and sizes.
//!
//! Each table has a module with `ID`, `NAME`, `SIZE`, one constant per match field and `INFO`.

use crate::actions;
use crate::schema::{ActionRefInfo, ActionScope, MatchFieldInfo, MatchKind, TableInfo};

macro_rules! field {
    ($id:expr, $name:expr, $bits:expr, $kind:ident) => {
        MatchFieldInfo {
            id: $id,
            name: $name,
            bitwidth: $bits,
            kind: MatchKind::$kind,
        }
    };
}

macro_rules! entry_action {
    ($m:ident) => {
        ActionRefInfo {
            action_id: actions::$m::ID,
            scope: ActionScope::TableAndDefault,
        }
    };
}

macro_rules! default_only {
    ($m:ident) => {
        ActionRefInfo {
            action_id: actions::$m::ID,
            scope: ActionScope::DefaultOnly,
        }
    };
}

/// ARP proxy: target protocol address (LPM) → `arp_reply(mac)`.
pub mod arp_proxy {
    use super::*;
    pub const ID: u32 = 0x0200_0001;
    pub const NAME: &str = "P4lbIngress.arp_proxy";
    pub const SIZE: i64 = 1024;
    pub const TPA: MatchFieldInfo = field!(1, "hdr.arp.tpa", 32, Lpm);
    pub const INFO: TableInfo = TableInfo {
        id: ID,
        name: NAME,
        match_fields: &[TPA],
        actions: &[entry_action!(arp_reply), default_only!(nop)],
        const_default_action_id: actions::nop::ID,
        size: SIZE,
        idle_timeout: false,
    };
}

/// VIPs: (VIP, protocol, port) → `set_service`.
pub mod vip_services {
    use super::*;
    pub const ID: u32 = 0x0200_0002;
    pub const NAME: &str = "P4lbIngress.vip_services";
    pub const SIZE: i64 = 1024;
    pub const DST_ADDR: MatchFieldInfo = field!(1, "hdr.ipv4.dst_addr", 32, Exact);
    pub const PROTOCOL: MatchFieldInfo = field!(2, "hdr.ipv4.protocol", 8, Exact);
    pub const L4_DPORT: MatchFieldInfo = field!(3, "meta.l4_dport", 16, Exact);
    pub const INFO: TableInfo = TableInfo {
        id: ID,
        name: NAME,
        match_fields: &[DST_ADDR, PROTOCOL, L4_DPORT],
        actions: &[entry_action!(set_service), default_only!(nop)],
        const_default_action_id: actions::nop::ID,
        size: SIZE,
        idle_timeout: false,
    };
}

/// Pinned connections, keyed by the client's 5-tuple (dst = VIP). Supports idle timeout.
pub mod conn_table {
    use super::*;
    pub const ID: u32 = 0x0200_0003;
    pub const NAME: &str = "P4lbIngress.conn_table";
    pub const SIZE: i64 = 65536;
    pub const SRC_ADDR: MatchFieldInfo = field!(1, "hdr.ipv4.src_addr", 32, Exact);
    pub const DST_ADDR: MatchFieldInfo = field!(2, "hdr.ipv4.dst_addr", 32, Exact);
    pub const PROTOCOL: MatchFieldInfo = field!(3, "hdr.ipv4.protocol", 8, Exact);
    pub const L4_SPORT: MatchFieldInfo = field!(4, "meta.l4_sport", 16, Exact);
    pub const L4_DPORT: MatchFieldInfo = field!(5, "meta.l4_dport", 16, Exact);
    pub const INFO: TableInfo = TableInfo {
        id: ID,
        name: NAME,
        match_fields: &[SRC_ADDR, DST_ADDR, PROTOCOL, L4_SPORT, L4_DPORT],
        actions: &[entry_action!(conn_pin), default_only!(conn_miss)],
        const_default_action_id: actions::conn_miss::ID,
        size: SIZE,
        idle_timeout: true,
    };
}

/// Maglev: (service, slot) → backend.
pub mod maglev_slots {
    use super::*;
    pub const ID: u32 = 0x0200_0004;
    pub const NAME: &str = "P4lbIngress.maglev_slots";
    pub const SIZE: i64 = 65536;
    pub const SERVICE_ID: MatchFieldInfo = field!(1, "meta.service_id", 16, Exact);
    pub const SLOT: MatchFieldInfo = field!(2, "meta.slot", 16, Exact);
    pub const INFO: TableInfo = TableInfo {
        id: ID,
        name: NAME,
        match_fields: &[SERVICE_ID, SLOT],
        actions: &[entry_action!(set_backend), default_only!(nop)],
        const_default_action_id: actions::nop::ID,
        size: SIZE,
        idle_timeout: false,
    };
}

/// Backends: id → forward (DNAT) or locked.
pub mod backends {
    use super::*;
    pub const ID: u32 = 0x0200_0005;
    pub const NAME: &str = "P4lbIngress.backends";
    pub const SIZE: i64 = 4096;
    pub const BACKEND_ID: MatchFieldInfo = field!(1, "meta.backend_id", 16, Exact);
    pub const INFO: TableInfo = TableInfo {
        id: ID,
        name: NAME,
        match_fields: &[BACKEND_ID],
        actions: &[
            entry_action!(backend_forward),
            entry_action!(backend_locked),
            default_only!(nop),
        ],
        const_default_action_id: actions::nop::ID,
        size: SIZE,
        idle_timeout: false,
    };
}

/// Backend → client replies of known VIP connections (keyed by the reply's 5-tuple).
pub mod conn_reverse {
    use super::*;
    pub const ID: u32 = 0x0200_0006;
    pub const NAME: &str = "P4lbIngress.conn_reverse";
    pub const SIZE: i64 = 65536;
    pub const SRC_ADDR: MatchFieldInfo = field!(1, "hdr.ipv4.src_addr", 32, Exact);
    pub const DST_ADDR: MatchFieldInfo = field!(2, "hdr.ipv4.dst_addr", 32, Exact);
    pub const PROTOCOL: MatchFieldInfo = field!(3, "hdr.ipv4.protocol", 8, Exact);
    pub const L4_SPORT: MatchFieldInfo = field!(4, "meta.l4_sport", 16, Exact);
    pub const L4_DPORT: MatchFieldInfo = field!(5, "meta.l4_dport", 16, Exact);
    pub const INFO: TableInfo = TableInfo {
        id: ID,
        name: NAME,
        match_fields: &[SRC_ADDR, DST_ADDR, PROTOCOL, L4_SPORT, L4_DPORT],
        actions: &[entry_action!(rewrite_src), default_only!(nop)],
        const_default_action_id: actions::nop::ID,
        size: SIZE,
        idle_timeout: false,
    };
}

/// Transit mark (service_id + 1) → the service's VIP, for replies not yet in `conn_reverse`.
pub mod service_vip {
    use super::*;
    pub const ID: u32 = 0x0200_0007;
    pub const NAME: &str = "P4lbIngress.service_vip";
    pub const SIZE: i64 = 1024;
    pub const MARK: MatchFieldInfo = field!(1, "meta.mark", 16, Exact);
    pub const INFO: TableInfo = TableInfo {
        id: ID,
        name: NAME,
        match_fields: &[MARK],
        actions: &[entry_action!(rewrite_src), default_only!(nop)],
        const_default_action_id: actions::nop::ID,
        size: SIZE,
        idle_timeout: false,
    };
}

/// IPv4 routes (LPM on the destination).
pub mod ipv4_routes {
    use super::*;
    pub const ID: u32 = 0x0200_0008;
    pub const NAME: &str = "P4lbIngress.ipv4_routes";
    pub const SIZE: i64 = 4096;
    pub const DST_ADDR: MatchFieldInfo = field!(1, "hdr.ipv4.dst_addr", 32, Lpm);
    pub const INFO: TableInfo = TableInfo {
        id: ID,
        name: NAME,
        match_fields: &[DST_ADDR],
        actions: &[
            entry_action!(route_to_port),
            entry_action!(route_locked),
            entry_action!(route_drop),
        ],
        const_default_action_id: actions::route_drop::ID,
        size: SIZE,
        idle_timeout: false,
    };
}

/// Non-IPv4, non-ARP frames: destination MAC → port.
pub mod l2_forward {
    use super::*;
    pub const ID: u32 = 0x0200_0009;
    pub const NAME: &str = "P4lbIngress.l2_forward";
    pub const SIZE: i64 = 1024;
    pub const DST_ADDR: MatchFieldInfo = field!(1, "hdr.ethernet.dst_addr", 48, Exact);
    pub const INFO: TableInfo = TableInfo {
        id: ID,
        name: NAME,
        match_fields: &[DST_ADDR],
        actions: &[entry_action!(l2_output), entry_action!(l2_drop)],
        const_default_action_id: actions::l2_drop::ID,
        size: SIZE,
        idle_timeout: false,
    };
}

/// Egress: port → source MAC (applied to IPv4 packets only).
pub mod port_smac {
    use super::*;
    pub const ID: u32 = 0x0200_000A;
    pub const NAME: &str = "P4lbEgress.port_smac";
    pub const SIZE: i64 = 512;
    pub const EGRESS_PORT: MatchFieldInfo = field!(1, "standard_metadata.egress_port", 9, Exact);
    pub const INFO: TableInfo = TableInfo {
        id: ID,
        name: NAME,
        match_fields: &[EGRESS_PORT],
        actions: &[entry_action!(set_smac), default_only!(nop)],
        const_default_action_id: actions::nop::ID,
        size: SIZE,
        idle_timeout: false,
    };
}

/// Every table of the program, ingress first, in pipeline order.
pub const ALL: &[TableInfo] = &[
    arp_proxy::INFO,
    vip_services::INFO,
    conn_table::INFO,
    maglev_slots::INFO,
    backends::INFO,
    conn_reverse::INFO,
    service_vip::INFO,
    ipv4_routes::INFO,
    l2_forward::INFO,
    port_smac::INFO,
];

/// Looks a table up by P4Info ID.
pub fn by_id(id: u32) -> Option<&'static TableInfo> {
    ALL.iter().find(|t| t.id == id)
}

/// Looks a table up by P4Info name.
pub fn by_name(name: &str) -> Option<&'static TableInfo> {
    ALL.iter().find(|t| t.name == name)
}
