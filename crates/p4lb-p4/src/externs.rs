//! Counters, the transit registers and the `conn_learn` digest of p4lb.p4.

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
    /// Backend or endpoint locked (migrating): the packet went to the hold port
    /// ([`HOLD_PORT`](crate::HOLD_PORT)), held by a target that can, dropped by one that cannot.
    Locked = 1,
    /// No IPv4 route (or a `route_drop` route).
    NoRoute = 2,
    /// Truncated or malformed frame.
    ParserError = 3,
    /// TTL ≤ 1 on arrival.
    Ttl = 4,
    /// VIP traffic without a usable backend.
    NoBackend = 5,
    /// Sent to the hold port while the target's hold buffer was full (counted by the target,
    /// not by the P4 program).
    HoldFull = 6,
}

impl DropReason {
    pub const ALL: [DropReason; 6] = [
        DropReason::Locked,
        DropReason::NoRoute,
        DropReason::ParserError,
        DropReason::Ttl,
        DropReason::NoBackend,
        DropReason::HoldFull,
    ];

    /// The counter index.
    pub fn index(self) -> u32 {
        self as u32
    }
}

/// Cells of every transit register (all of them are indexed alike).
pub const TRANSIT_SIZE: i32 = 65536;

/// Transit marks: `service_id + 1` of the pending VIP connection whose tuple the slot
/// holds, 0 = free. Every transit register is indexed by `crc16(client, backend, protocol,
/// client port, backend port)` of the connection after DNAT (docs/pipeline.md).
pub mod transit_marks {
    use super::*;
    pub const ID: u32 = 0x1600_0001;
    pub const NAME: &str = "P4lbIngress.transit_marks";
    pub const SIZE: i32 = TRANSIT_SIZE;
    pub const BITWIDTH: u32 = 16;
    pub const INFO: RegisterInfo = RegisterInfo {
        id: ID,
        name: NAME,
        size: SIZE,
        bitwidth: BITWIDTH,
    };
}

/// Transit slot: the client's address of the pending connection.
pub mod transit_client {
    use super::*;
    pub const ID: u32 = 0x1600_0002;
    pub const NAME: &str = "P4lbIngress.transit_client";
    pub const SIZE: i32 = TRANSIT_SIZE;
    pub const BITWIDTH: u32 = 32;
    pub const INFO: RegisterInfo = RegisterInfo {
        id: ID,
        name: NAME,
        size: SIZE,
        bitwidth: BITWIDTH,
    };
}

/// Transit slot: the backend's address (after DNAT) of the pending connection.
pub mod transit_backend {
    use super::*;
    pub const ID: u32 = 0x1600_0003;
    pub const NAME: &str = "P4lbIngress.transit_backend";
    pub const SIZE: i32 = TRANSIT_SIZE;
    pub const BITWIDTH: u32 = 32;
    pub const INFO: RegisterInfo = RegisterInfo {
        id: ID,
        name: NAME,
        size: SIZE,
        bitwidth: BITWIDTH,
    };
}

/// Transit slot: the client's port of the pending connection.
pub mod transit_client_port {
    use super::*;
    pub const ID: u32 = 0x1600_0004;
    pub const NAME: &str = "P4lbIngress.transit_client_port";
    pub const SIZE: i32 = TRANSIT_SIZE;
    pub const BITWIDTH: u32 = 16;
    pub const INFO: RegisterInfo = RegisterInfo {
        id: ID,
        name: NAME,
        size: SIZE,
        bitwidth: BITWIDTH,
    };
}

/// Transit slot: the backend's port (the service's target port) of the pending connection.
pub mod transit_backend_port {
    use super::*;
    pub const ID: u32 = 0x1600_0005;
    pub const NAME: &str = "P4lbIngress.transit_backend_port";
    pub const SIZE: i32 = TRANSIT_SIZE;
    pub const BITWIDTH: u32 = 16;
    pub const INFO: RegisterInfo = RegisterInfo {
        id: ID,
        name: NAME,
        size: SIZE,
        bitwidth: BITWIDTH,
    };
}

/// Transit slot: the IP protocol of the pending connection.
pub mod transit_protocol {
    use super::*;
    pub const ID: u32 = 0x1600_0006;
    pub const NAME: &str = "P4lbIngress.transit_protocol";
    pub const SIZE: i32 = TRANSIT_SIZE;
    pub const BITWIDTH: u32 = 8;
    pub const INFO: RegisterInfo = RegisterInfo {
        id: ID,
        name: NAME,
        size: SIZE,
        bitwidth: BITWIDTH,
    };
}

/// Transit slot: its state, one of [`NEW`](transit_state::NEW) (a new attempt),
/// [`REPLY_SEEN`](transit_state::REPLY_SEEN) (the backend's reply went through the slot; for
/// TCP its SYN-ACK) and [`ESTABLISHED`](transit_state::ESTABLISHED) (the client proved itself:
/// every later packet asks to be learned until the connection is pinned).
pub mod transit_state {
    use super::*;
    pub const ID: u32 = 0x1600_0007;
    pub const NAME: &str = "P4lbIngress.transit_state";
    pub const SIZE: i32 = TRANSIT_SIZE;
    pub const BITWIDTH: u32 = 2;
    pub const NEW: u32 = 0;
    pub const REPLY_SEEN: u32 = 1;
    pub const ESTABLISHED: u32 = 2;
    pub const INFO: RegisterInfo = RegisterInfo {
        id: ID,
        name: NAME,
        size: SIZE,
        bitwidth: BITWIDTH,
    };
}

/// Transit slot (TCP): the backend's ISN + 1, from its SYN-ACK: the `ack_no` the client's
/// handshake-completing ACK must carry to be learned.
pub mod transit_server_ack {
    use super::*;
    pub const ID: u32 = 0x1600_0008;
    pub const NAME: &str = "P4lbIngress.transit_server_ack";
    pub const SIZE: i32 = TRANSIT_SIZE;
    pub const BITWIDTH: u32 = 32;
    pub const INFO: RegisterInfo = RegisterInfo {
        id: ID,
        name: NAME,
        size: SIZE,
        bitwidth: BITWIDTH,
    };
}

/// A VIP connection event: learned (a `conn_table` miss that completed its handshake
/// through a transit slot) or closing (FIN/RST seen on a pinned connection, either side).
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
    /// What happened: [`ConnEvent`](crate::digest::ConnEvent) (0 learn, 1 FIN, 2 RST).
    pub const EVENT: DigestFieldInfo = DigestFieldInfo {
        name: "event",
        bitwidth: 8,
    };
    pub const INFO: DigestInfo = DigestInfo {
        id: ID,
        name: NAME,
        fields: &[
            SRC_ADDR, DST_ADDR, PROTOCOL, SRC_PORT, DST_PORT, SERVICE_ID, BACKEND_ID, EVENT,
        ],
    };
}

pub const COUNTERS: &[CounterInfo] = &[backend_packets::INFO, service_packets::INFO, drops::INFO];
pub const REGISTERS: &[RegisterInfo] = &[
    transit_marks::INFO,
    transit_client::INFO,
    transit_backend::INFO,
    transit_client_port::INFO,
    transit_backend_port::INFO,
    transit_protocol::INFO,
    transit_state::INFO,
    transit_server_ack::INFO,
];
pub const DIGESTS: &[DigestInfo] = &[conn_learn::INFO];
