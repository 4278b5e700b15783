//! What the p4lb pipeline looks like from the control plane: the tables, actions, counters,
//! register and digest of `crates/p4lb-p4/p4lb.p4` (docs/pipeline.md), described by NAME. A P4Info is
//! accepted only if it contains every object here with the same widths and match kinds;
//! its IDs are then taken from the P4Info (see [`super::bind`]).

/// The tables of p4lb.p4, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableKind {
    ArpProxy,
    VipServices,
    ConnTable,
    MaglevSlots,
    Backends,
    ConnReverse,
    ServiceVip,
    Ipv4Routes,
    L2Forward,
    PortSmac,
}

impl TableKind {
    pub const ALL: [TableKind; 10] = [
        TableKind::ArpProxy,
        TableKind::VipServices,
        TableKind::ConnTable,
        TableKind::MaglevSlots,
        TableKind::Backends,
        TableKind::ConnReverse,
        TableKind::ServiceVip,
        TableKind::Ipv4Routes,
        TableKind::L2Forward,
        TableKind::PortSmac,
    ];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The actions of p4lb.p4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionKind {
    Nop,
    ArpReply,
    SetService,
    ConnPin,
    ConnMiss,
    SetBackend,
    BackendForward,
    BackendLocked,
    RewriteSrc,
    RouteToPort,
    RouteLocked,
    RouteDrop,
    L2Output,
    L2Drop,
    SetSmac,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    Exact,
    Lpm,
}

pub struct FieldSpec {
    /// Last component of the P4Info match-field name (`hdr.ipv4.dst_addr` -> `dst_addr`).
    pub name: &'static str,
    pub bits: u32,
    pub kind: MatchKind,
}

pub struct TableSpec {
    pub kind: TableKind,
    pub name: &'static str,
    pub fields: &'static [FieldSpec],
    pub actions: &'static [ActionKind],
    pub default_action: ActionKind,
    pub idle_timeout: bool,
}

pub struct ParamSpec {
    pub name: &'static str,
    pub bits: u32,
    /// A parameter the pipeline can do without (older revisions of the contract lack it).
    pub optional: bool,
}

pub struct ActionSpec {
    pub kind: ActionKind,
    /// Last component of the P4Info action name.
    pub name: &'static str,
    pub params: &'static [ParamSpec],
}

const fn exact(name: &'static str, bits: u32) -> FieldSpec {
    FieldSpec {
        name,
        bits,
        kind: MatchKind::Exact,
    }
}

const fn lpm(name: &'static str, bits: u32) -> FieldSpec {
    FieldSpec {
        name,
        bits,
        kind: MatchKind::Lpm,
    }
}

const fn param(name: &'static str, bits: u32) -> ParamSpec {
    ParamSpec {
        name,
        bits,
        optional: false,
    }
}

const FIVE_TUPLE: &[FieldSpec] = &[
    exact("src_addr", 32),
    exact("dst_addr", 32),
    exact("protocol", 8),
    exact("l4_sport", 16),
    exact("l4_dport", 16),
];

pub const TABLES: &[TableSpec] = &[
    TableSpec {
        kind: TableKind::ArpProxy,
        name: "P4lbIngress.arp_proxy",
        fields: &[lpm("tpa", 32)],
        actions: &[ActionKind::ArpReply, ActionKind::Nop],
        default_action: ActionKind::Nop,
        idle_timeout: false,
    },
    TableSpec {
        kind: TableKind::VipServices,
        name: "P4lbIngress.vip_services",
        fields: &[
            exact("dst_addr", 32),
            exact("protocol", 8),
            exact("l4_dport", 16),
        ],
        actions: &[ActionKind::SetService, ActionKind::Nop],
        default_action: ActionKind::Nop,
        idle_timeout: false,
    },
    TableSpec {
        kind: TableKind::ConnTable,
        name: "P4lbIngress.conn_table",
        fields: FIVE_TUPLE,
        actions: &[ActionKind::ConnPin, ActionKind::ConnMiss],
        default_action: ActionKind::ConnMiss,
        idle_timeout: true,
    },
    TableSpec {
        kind: TableKind::MaglevSlots,
        name: "P4lbIngress.maglev_slots",
        fields: &[exact("service_id", 16), exact("slot", 16)],
        actions: &[ActionKind::SetBackend, ActionKind::Nop],
        default_action: ActionKind::Nop,
        idle_timeout: false,
    },
    TableSpec {
        kind: TableKind::Backends,
        name: "P4lbIngress.backends",
        fields: &[exact("backend_id", 16)],
        actions: &[
            ActionKind::BackendForward,
            ActionKind::BackendLocked,
            ActionKind::Nop,
        ],
        default_action: ActionKind::Nop,
        idle_timeout: false,
    },
    TableSpec {
        kind: TableKind::ConnReverse,
        name: "P4lbIngress.conn_reverse",
        fields: FIVE_TUPLE,
        actions: &[ActionKind::RewriteSrc, ActionKind::Nop],
        default_action: ActionKind::Nop,
        idle_timeout: false,
    },
    TableSpec {
        kind: TableKind::ServiceVip,
        name: "P4lbIngress.service_vip",
        fields: &[exact("mark", 16)],
        actions: &[ActionKind::RewriteSrc, ActionKind::Nop],
        default_action: ActionKind::Nop,
        idle_timeout: false,
    },
    TableSpec {
        kind: TableKind::Ipv4Routes,
        name: "P4lbIngress.ipv4_routes",
        fields: &[lpm("dst_addr", 32)],
        actions: &[
            ActionKind::RouteToPort,
            ActionKind::RouteLocked,
            ActionKind::RouteDrop,
        ],
        default_action: ActionKind::RouteDrop,
        idle_timeout: false,
    },
    TableSpec {
        kind: TableKind::L2Forward,
        name: "P4lbIngress.l2_forward",
        fields: &[exact("dst_addr", 48)],
        actions: &[ActionKind::L2Output, ActionKind::L2Drop],
        default_action: ActionKind::L2Drop,
        idle_timeout: false,
    },
    TableSpec {
        kind: TableKind::PortSmac,
        name: "P4lbEgress.port_smac",
        fields: &[exact("egress_port", 9)],
        actions: &[ActionKind::SetSmac, ActionKind::Nop],
        default_action: ActionKind::Nop,
        idle_timeout: false,
    },
];

pub const ACTIONS: &[ActionSpec] = &[
    ActionSpec {
        kind: ActionKind::Nop,
        name: "nop",
        params: &[],
    },
    ActionSpec {
        kind: ActionKind::ArpReply,
        name: "arp_reply",
        params: &[param("mac", 48)],
    },
    ActionSpec {
        kind: ActionKind::SetService,
        name: "set_service",
        params: &[
            param("service_id", 16),
            param("slot_count", 16),
            param("target_port", 16),
        ],
    },
    ActionSpec {
        kind: ActionKind::ConnPin,
        name: "conn_pin",
        params: &[param("backend_id", 16)],
    },
    ActionSpec {
        kind: ActionKind::ConnMiss,
        name: "conn_miss",
        params: &[],
    },
    ActionSpec {
        kind: ActionKind::SetBackend,
        name: "set_backend",
        params: &[param("backend_id", 16)],
    },
    ActionSpec {
        kind: ActionKind::BackendForward,
        name: "backend_forward",
        params: &[param("ip", 32), param("dmac", 48), param("port", 9)],
    },
    ActionSpec {
        kind: ActionKind::BackendLocked,
        name: "backend_locked",
        params: &[],
    },
    ActionSpec {
        kind: ActionKind::RewriteSrc,
        name: "rewrite_src",
        params: &[
            param("vip", 32),
            param("vport", 16),
            ParamSpec {
                name: "service_id",
                bits: 16,
                optional: true,
            },
        ],
    },
    ActionSpec {
        kind: ActionKind::RouteToPort,
        name: "route_to_port",
        params: &[param("port", 9), param("dmac", 48)],
    },
    ActionSpec {
        kind: ActionKind::RouteLocked,
        name: "route_locked",
        params: &[],
    },
    ActionSpec {
        kind: ActionKind::RouteDrop,
        name: "route_drop",
        params: &[],
    },
    ActionSpec {
        kind: ActionKind::L2Output,
        name: "l2_output",
        params: &[param("port", 9)],
    },
    ActionSpec {
        kind: ActionKind::L2Drop,
        name: "l2_drop",
        params: &[],
    },
    ActionSpec {
        kind: ActionKind::SetSmac,
        name: "set_smac",
        params: &[param("mac", 48)],
    },
];

pub fn action_spec(kind: ActionKind) -> &'static ActionSpec {
    // ACTIONS lists every kind exactly once (checked by a unit test).
    ACTIONS
        .iter()
        .find(|a| a.kind == kind)
        .unwrap_or(&ACTIONS[0])
}

/// Indirect counters, by index in [`COUNTERS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterKind {
    BackendPackets = 0,
    ServicePackets = 1,
    Drops = 2,
}

pub const COUNTERS: &[(CounterKind, &str)] = &[
    (CounterKind::BackendPackets, "P4lbIngress.backend_packets"),
    (CounterKind::ServicePackets, "P4lbIngress.service_packets"),
    (CounterKind::Drops, "P4lbIngress.drops"),
];

/// Drop reasons (indexes into `P4lbIngress.drops`).
pub mod drop_reason {
    pub const LOCKED: usize = 1;
    pub const NO_ROUTE: usize = 2;
    pub const PARSER_ERROR: usize = 3;
    pub const TTL: usize = 4;
    pub const NO_BACKEND: usize = 5;
}

pub const TRANSIT_REGISTER: &str = "P4lbIngress.transit_marks";
pub const TRANSIT_BITS: u32 = 16;

pub const DIGEST: &str = "conn_learn";
/// Members of `conn_learn_t`, in order.
pub const DIGEST_FIELDS: &[(&str, u32)] = &[
    ("src_addr", 32),
    ("dst_addr", 32),
    ("protocol", 8),
    ("src_port", 16),
    ("dst_port", 16),
    ("service_id", 16),
    ("backend_id", 16),
];
