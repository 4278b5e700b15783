//! The transit slots: the registers `transit_marks`, `transit_client`, `transit_backend`,
//! `transit_client_port`, `transit_backend_port`, `transit_protocol`, `transit_state` and
//! `transit_server_ack` of p4lb.p4, read and written together at one index.
//!
//! A slot holds one pending VIP connection (one that `conn_table` does not pin yet): its
//! tuple after DNAT, `service_id + 1` (the mark; 0 = free), its [`State`] and, for TCP, the
//! backend's ISN + 1. The index is `crc16` of the tuple, so
//! different connections can share an index; a slot is used only by a packet whose tuple
//! equals the stored one exactly ([`Slot::holds`]), never by a mere hash collision.
//! docs/switch-pipeline.md describes what uses them (backend, reverse).

use p4lb_p4::externs::transit_state;
use p4lb_p4::hash::transit_crc;

use crate::program::RegisterKind as R;
use crate::state::Dataplane;

/// A connection between a client and a backend, after DNAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub client: u32,
    pub backend: u32,
    pub protocol: u8,
    pub client_port: u16,
    pub backend_port: u16,
}

impl Tuple {
    /// `hash(meta.transit_index, HashAlgorithm.crc16, 32w0, {client, protocol, client port,
    /// backend port}, TRANSIT_SIZE)` ([`transit_crc`]: why the backend's address is not in it).
    pub fn index(&self, dp: &Dataplane) -> usize {
        let size = dp.register(R::Mark).size().max(1);
        let crc = transit_crc(
            self.client,
            self.protocol,
            self.client_port,
            self.backend_port,
        );
        usize::from(crc) % size
    }
}

/// `transit_state`: how far a pending connection got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A new attempt (SYN, or a UDP flow's first datagram): nothing seen back yet.
    New,
    /// The backend's reply went through the slot (TCP: its SYN-ACK).
    ReplySeen,
    /// The client proved itself (the handshake-completing ACK, or a UDP datagram after the
    /// reply): every later packet asks to be learned until the connection is pinned, so a
    /// lost digest is not final.
    Established,
}

impl State {
    fn from_cell(v: u32) -> State {
        match v {
            transit_state::REPLY_SEEN => State::ReplySeen,
            transit_state::ESTABLISHED => State::Established,
            // 3 is never written by the pipeline (a P4Runtime write can put it there): the
            // weakest state, so it proves nothing.
            _ => State::New,
        }
    }

    fn cell(self) -> u32 {
        match self {
            State::New => transit_state::NEW,
            State::ReplySeen => transit_state::REPLY_SEEN,
            State::Established => transit_state::ESTABLISHED,
        }
    }
}

/// One slot as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub mark: u16,
    pub tuple: Tuple,
    pub state: State,
    pub server_ack: u32,
}

impl Slot {
    /// The slot is in use and stores exactly `t`.
    pub fn holds(&self, t: &Tuple) -> bool {
        self.mark != 0 && self.tuple == *t
    }
}

/// Reads every register of the slot at `idx`.
pub fn read(dp: &Dataplane, idx: usize) -> Slot {
    Slot {
        mark: dp.register(R::Mark).read(idx) as u16,
        tuple: Tuple {
            client: dp.register(R::Client).read(idx),
            backend: dp.register(R::Backend).read(idx),
            protocol: dp.register(R::Protocol).read(idx) as u8,
            client_port: dp.register(R::ClientPort).read(idx) as u16,
            backend_port: dp.register(R::BackendPort).read(idx) as u16,
        },
        state: State::from_cell(dp.register(R::State).read(idx)),
        server_ack: dp.register(R::ServerAck).read(idx),
    }
}

/// A new attempt: the slot at `idx` now holds `t` for `mark`, nothing seen yet.
pub fn start(dp: &Dataplane, idx: usize, t: &Tuple, mark: u16) {
    dp.register(R::Mark).write(idx, u32::from(mark));
    dp.register(R::Client).write(idx, t.client);
    dp.register(R::Backend).write(idx, t.backend);
    dp.register(R::ClientPort)
        .write(idx, u32::from(t.client_port));
    dp.register(R::BackendPort)
        .write(idx, u32::from(t.backend_port));
    dp.register(R::Protocol).write(idx, u32::from(t.protocol));
    dp.register(R::State).write(idx, State::New.cell());
    dp.register(R::ServerAck).write(idx, 0);
}

/// The backend's reply went through the slot of a new attempt; a TCP SYN-ACK also stores its
/// ISN + 1. A slot past [`State::New`] keeps its state (a retransmitted SYN-ACK does not undo
/// a proof).
pub fn reply_seen(dp: &Dataplane, idx: usize, server_ack: Option<u32>) {
    // The raw cell, as the P4 program compares it: 3 (never written by the pipeline) is left.
    if dp.register(R::State).read(idx) != transit_state::NEW {
        return;
    }
    if let Some(ack) = server_ack {
        dp.register(R::ServerAck).write(idx, ack);
    }
    dp.register(R::State).write(idx, State::ReplySeen.cell());
}

/// The client of the slot at `idx` proved itself.
pub fn established(dp: &Dataplane, idx: usize) {
    dp.register(R::State).write(idx, State::Established.cell());
}

/// Frees the slot at `idx`.
pub fn free(dp: &Dataplane, idx: usize) {
    dp.register(R::Mark).write(idx, 0);
    dp.register(R::State).write(idx, State::New.cell());
}
