//! Counters, the transit register and the `conn_learn` digest of p4lb.p4.

use crate::schema::{CounterInfo, DigestFieldInfo, DigestInfo, RegisterInfo};

/// Packets/bytes forwarded to each backend, indexed by backend_id (1..4095).
pub mod backend_packets {
    use super::*;
    pub const ID: u32 = 0x1200_0001;
    pub const NAME: &str = "P4lbIngress.backend_packets";
    pub const SIZE: i64 = 4096;
    pub const INFO: CounterInfo = CounterInfo {
        id: ID,
        name: NAME,
        size: SIZE,
    };
}

/// Packets/bytes of each service (both directions), indexed by service_id (1..1023).
pub mod service_packets {
    use super::*;
    pub const ID: u32 = 0x1200_0002;
    pub const NAME: &str = "P4lbIngress.service_packets";
    pub const SIZE: i64 = 1024;
    pub const INFO: CounterInfo = CounterInfo {
        id: ID,
        name: NAME,
        size: SIZE,
    };
}

/// Dropped packets, indexed by [`DropReason`].
pub mod drops {
    use super::*;
    pub const ID: u32 = 0x1200_0003;
    pub const NAME: &str = "P4lbIngress.drops";
    pub const SIZE: i64 = 16;
    pub const INFO: CounterInfo = CounterInfo {
        id: ID,
        name: NAME,
        size: SIZE,
    };
}

/// Why a packet was dropped: the index into [`drops`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DropReason {
    /// Backend or endpoint locked (migrating).
    Locked = 1,
    /// No IPv4 route (or a `route_drop` route).
    NoRoute = 2,
    /// Truncated or malformed frame.
    ParserError = 3,
    /// TTL ≤ 1 on arrival.
    Ttl = 4,
    /// VIP traffic without a usable backend.
    NoBackend = 5,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::Locked,
        DropReason::NoRoute,
        DropReason::ParserError,
        DropReason::Ttl,
        DropReason::NoBackend,
    ];

    /// The counter index.
    pub fn index(self) -> u32 {
        self as u32
    }
}

/// Transit marks: `service_id + 1` of a pending VIP connection, 0 = none.
pub mod transit_marks {
    use super::*;
    pub const ID: u32 = 0x1600_0001;
    pub const NAME: &str = "P4lbIngress.transit_marks";
    pub const SIZE: i32 = 65536;
    pub const BITWIDTH: u32 = 16;
    pub const INFO: RegisterInfo = RegisterInfo {
        id: ID,
        name: NAME,
        size: SIZE,
        bitwidth: BITWIDTH,
    };
}

/// New VIP connection learned on a `conn_table` miss.
///
/// v1model cannot pin a digest's ID: p4c derives it from the name (see docs/pipeline.md).
pub mod conn_learn {
    use super::*;
    pub const ID: u32 = 0x176f_0187;
    pub const NAME: &str = "conn_learn";
    pub const SRC_ADDR: DigestFieldInfo = DigestFieldInfo {
        name: "src_addr",
        bitwidth: 32,
    };
    pub const DST_ADDR: DigestFieldInfo = DigestFieldInfo {
        name: "dst_addr",
        bitwidth: 32,
    };
    pub const PROTOCOL: DigestFieldInfo = DigestFieldInfo {
        name: "protocol",
        bitwidth: 8,
    };
    pub const SRC_PORT: DigestFieldInfo = DigestFieldInfo {
        name: "src_port",
        bitwidth: 16,
    };
    pub const DST_PORT: DigestFieldInfo = DigestFieldInfo {
        name: "dst_port",
        bitwidth: 16,
    };
    pub const SERVICE_ID: DigestFieldInfo = DigestFieldInfo {
        name: "service_id",
        bitwidth: 16,
    };
    pub const BACKEND_ID: DigestFieldInfo = DigestFieldInfo {
        name: "backend_id",
        bitwidth: 16,
    };
    pub const INFO: DigestInfo = DigestInfo {
        id: ID,
        name: NAME,
        fields: &[
            SRC_ADDR, DST_ADDR, PROTOCOL, SRC_PORT, DST_PORT, SERVICE_ID, BACKEND_ID,
        ],
    };
}

pub const COUNTERS: &[CounterInfo] = &[backend_packets::INFO, service_packets::INFO, drops::INFO];
pub const REGISTERS: &[RegisterInfo] = &[transit_marks::INFO];
pub const DIGESTS: &[DigestInfo] = &[conn_learn::INFO];
