//! Actions of p4lb.p4: P4Info IDs, names and parameters.
//!
//! Each action has a module with `ID`, `NAME`, one constant per parameter and `INFO`.

use crate::schema::{ActionInfo, ParamInfo};

macro_rules! param {
    ($id:expr, $name:expr, $bits:expr) => {
        ParamInfo {
            id: $id,
            name: $name,
            bitwidth: $bits,
        }
    };
}

/// p4lb's own empty action (default of most tables).
pub mod nop {
    use super::*;
    pub const ID: u32 = 0x0100_0000;
    pub const NAME: &str = "nop";
    pub const INFO: ActionInfo = ActionInfo {
        id: ID,
        name: NAME,
        params: &[],
    };
}

/// Answer an ARP request with `mac`.
pub mod arp_reply {
    use super::*;
    pub const ID: u32 = 0x0100_0001;
    pub const NAME: &str = "P4lbIngress.arp_reply";
    pub const MAC: ParamInfo = param!(1, "mac", 48);
    pub const INFO: ActionInfo = ActionInfo {
        id: ID,
        name: NAME,
        params: &[MAC],
    };
}

/// VIP hit: which service, its Maglev table size and the backends' port.
pub mod set_service {
    use super::*;
    pub const ID: u32 = 0x0100_0002;
    pub const NAME: &str = "P4lbIngress.set_service";
    pub const SERVICE_ID: ParamInfo = param!(1, "service_id", 16);
    pub const SLOT_COUNT: ParamInfo = param!(2, "slot_count", 16);
    pub const TARGET_PORT: ParamInfo = param!(3, "target_port", 16);
    pub const INFO: ActionInfo = ActionInfo {
        id: ID,
        name: NAME,
        params: &[SERVICE_ID, SLOT_COUNT, TARGET_PORT],
    };
}

/// Known connection: keep its backend.
pub mod conn_pin {
    use super::*;
    pub const ID: u32 = 0x0100_0003;
    pub const NAME: &str = "P4lbIngress.conn_pin";
    pub const BACKEND_ID: ParamInfo = param!(1, "backend_id", 16);
    pub const INFO: ActionInfo = ActionInfo {
        id: ID,
        name: NAME,
        params: &[BACKEND_ID],
    };
}

/// Default of `conn_table`: new connection (Maglev + digest).
pub mod conn_miss {
    use super::*;
    pub const ID: u32 = 0x0100_0004;
    pub const NAME: &str = "P4lbIngress.conn_miss";
    pub const INFO: ActionInfo = ActionInfo {
        id: ID,
        name: NAME,
        params: &[],
    };
}

/// Maglev slot → backend.
pub mod set_backend {
    use super::*;
    pub const ID: u32 = 0x0100_0005;
    pub const NAME: &str = "P4lbIngress.set_backend";
    pub const BACKEND_ID: ParamInfo = param!(1, "backend_id", 16);
    pub const INFO: ActionInfo = ActionInfo {
        id: ID,
        name: NAME,
        params: &[BACKEND_ID],
    };
}

/// DNAT to the backend and send it out of `port`.
pub mod backend_forward {
    use super::*;
    pub const ID: u32 = 0x0100_0006;
    pub const NAME: &str = "P4lbIngress.backend_forward";
    pub const IP: ParamInfo = param!(1, "ip", 32);
    pub const DMAC: ParamInfo = param!(2, "dmac", 48);
    pub const PORT: ParamInfo = param!(3, "port", 9);
    pub const INFO: ActionInfo = ActionInfo {
        id: ID,
        name: NAME,
        params: &[IP, DMAC, PORT],
    };
}

/// Backend is migrating: drop (`drops[1]`).
pub mod backend_locked {
    use super::*;
    pub const ID: u32 = 0x0100_0007;
    pub const NAME: &str = "P4lbIngress.backend_locked";
    pub const INFO: ActionInfo = ActionInfo {
        id: ID,
        name: NAME,
        params: &[],
    };
}

/// Reverse path: source becomes the VIP (and VIP port); counts `service_packets[service_id]`.
pub mod rewrite_src {
    use super::*;
    pub const ID: u32 = 0x0100_0008;
    pub const NAME: &str = "P4lbIngress.rewrite_src";
    pub const VIP: ParamInfo = param!(1, "vip", 32);
    pub const VPORT: ParamInfo = param!(2, "vport", 16);
    pub const SERVICE_ID: ParamInfo = param!(3, "service_id", 16);
    pub const INFO: ActionInfo = ActionInfo {
        id: ID,
        name: NAME,
        params: &[VIP, VPORT, SERVICE_ID],
    };
}

/// Route out of `port` towards `dmac` (TTL decremented).
pub mod route_to_port {
    use super::*;
    pub const ID: u32 = 0x0100_0009;
    pub const NAME: &str = "P4lbIngress.route_to_port";
    pub const PORT: ParamInfo = param!(1, "port", 9);
    pub const DMAC: ParamInfo = param!(2, "dmac", 48);
    pub const INFO: ActionInfo = ActionInfo {
        id: ID,
        name: NAME,
        params: &[PORT, DMAC],
    };
}

/// Destination endpoint is locked (migrating): drop (`drops[1]`).
pub mod route_locked {
    use super::*;
    pub const ID: u32 = 0x0100_000A;
    pub const NAME: &str = "P4lbIngress.route_locked";
    pub const INFO: ActionInfo = ActionInfo {
        id: ID,
        name: NAME,
        params: &[],
    };
}

/// No route: drop (`drops[2]`). Also the default of `ipv4_routes`.
pub mod route_drop {
    use super::*;
    pub const ID: u32 = 0x0100_000B;
    pub const NAME: &str = "P4lbIngress.route_drop";
    pub const INFO: ActionInfo = ActionInfo {
        id: ID,
        name: NAME,
        params: &[],
    };
}

/// Plain L2 output.
pub mod l2_output {
    use super::*;
    pub const ID: u32 = 0x0100_000C;
    pub const NAME: &str = "P4lbIngress.l2_output";
    pub const PORT: ParamInfo = param!(1, "port", 9);
    pub const INFO: ActionInfo = ActionInfo {
        id: ID,
        name: NAME,
        params: &[PORT],
    };
}

/// Plain L2 drop (default of `l2_forward`).
pub mod l2_drop {
    use super::*;
    pub const ID: u32 = 0x0100_000D;
    pub const NAME: &str = "P4lbIngress.l2_drop";
    pub const INFO: ActionInfo = ActionInfo {
        id: ID,
        name: NAME,
        params: &[],
    };
}

/// Egress: source MAC of the egress port.
pub mod set_smac {
    use super::*;
    pub const ID: u32 = 0x0100_000E;
    pub const NAME: &str = "P4lbEgress.set_smac";
    pub const MAC: ParamInfo = param!(1, "mac", 48);
    pub const INFO: ActionInfo = ActionInfo {
        id: ID,
        name: NAME,
        params: &[MAC],
    };
}

/// Every action of the program.
pub const ALL: &[ActionInfo] = &[
    nop::INFO,
    arp_reply::INFO,
    set_service::INFO,
    conn_pin::INFO,
    conn_miss::INFO,
    set_backend::INFO,
    backend_forward::INFO,
    backend_locked::INFO,
    rewrite_src::INFO,
    route_to_port::INFO,
    route_locked::INFO,
    route_drop::INFO,
    l2_output::INFO,
    l2_drop::INFO,
    set_smac::INFO,
];

/// Looks an action up by P4Info ID.
pub fn by_id(id: u32) -> Option<&'static ActionInfo> {
    ALL.iter().find(|a| a.id == id)
}

/// Looks an action up by P4Info name.
pub fn by_name(name: &str) -> Option<&'static ActionInfo> {
    ALL.iter().find(|a| a.name == name)
}
