//! Primary/backup arbitration over StreamChannel (P4Runtime spec ≥ 1.1, "Client Arbitration
//! and Controller Replication").
//!
//! - The primary is the live stream with the highest election id, provided that id is at
//!   least the highest election id a primary has held while streams stayed open: when the
//!   primary disconnects, a backup with a lower id does not take over; the device has no
//!   primary until a client arbitrates with an id at least that high (BMv2 promotes the next
//!   backup instead). The remembered id is forgotten when the last stream closes, so a
//!   restarted controller is never locked out of an idle switch.
//! - A stream whose arbitration update has no election id is a backup forever.
//! - Answers: OK to the primary, ALREADY_EXISTS to a backup while there is a primary,
//!   NOT_FOUND while there is none; `election_id` is the primary's, or the highest one
//!   remembered. Every change of primary (including to none) is announced to all streams,
//!   otherwise only the stream that sent the update hears back.

use p4lb_proto::google::rpc;
use p4lb_proto::p4runtime as p4;
use tokio::sync::mpsc;
use tonic::{Code, Status};

pub type StreamTx = mpsc::Sender<Result<p4::StreamMessageResponse, Status>>;

#[derive(Debug)]
struct Conn {
    id: u64,
    /// `None`: the stream arbitrated without an election id.
    election_id: Option<u128>,
    tx: StreamTx,
}

#[derive(Debug, Default)]
pub struct Arbitration {
    conns: Vec<Conn>,
    next_id: u64,
    /// The highest election id a primary held since the last time no stream was open.
    highest: Option<u128>,
}

pub fn u128_of(e: &Option<p4::Uint128>) -> u128 {
    e.as_ref()
        .map(|e| (u128::from(e.high) << 64) | u128::from(e.low))
        .unwrap_or(0)
}

/// The election id of an arbitration update, `None` when it has none.
pub fn election_of(e: &Option<p4::Uint128>) -> Option<u128> {
    e.is_some().then(|| u128_of(e))
}

fn to_uint128(v: u128) -> p4::Uint128 {
    p4::Uint128 {
        high: (v >> 64) as u64,
        low: v as u64,
    }
}

impl Arbitration {
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    fn primary_index(&self) -> Option<usize> {
        let (i, id) = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.election_id.map(|id| (i, id)))
            .max_by_key(|(_, id)| *id)?;
        (self.highest.is_none_or(|h| id >= h)).then_some(i)
    }

    pub fn primary_election_id(&self) -> Option<u128> {
        self.primary_index().and_then(|i| self.conns[i].election_id)
    }

    /// Is a request with this election id (absent = none) allowed to write? Without any
    /// stream, only a request without an election id; otherwise only the primary's.
    pub fn may_write(&self, election_id: &Option<p4::Uint128>) -> bool {
        match self.primary_election_id() {
            None => election_id.is_none() && self.conns.is_empty(),
            Some(p) => election_id.is_some() && u128_of(election_id) == p,
        }
    }

    pub fn primary_tx(&self) -> Option<&StreamTx> {
        self.primary_index().map(|i| &self.conns[i].tx)
    }

    /// Records the primary's id as the highest seen; returns the primary's connection id.
    fn settle(&mut self) -> Option<u64> {
        let p = self.primary_index()?;
        let id = self.conns[p].election_id;
        if id > self.highest {
            self.highest = id;
        }
        Some(self.conns[p].id)
    }

    fn notify(&self, idx: usize, device_id: u64) {
        let primary = self.primary_index();
        let (code, message) = match primary {
            Some(p) if p == idx => (Code::Ok, "Is primary"),
            Some(_) => (Code::AlreadyExists, "Is backup"),
            None => (Code::NotFound, "No primary"),
        };
        let shown = primary
            .and_then(|p| self.conns[p].election_id)
            .or(self.highest);
        let msg = p4::StreamMessageResponse {
            update: Some(p4::stream_message_response::Update::Arbitration(
                p4::MasterArbitrationUpdate {
                    device_id,
                    role: None,
                    election_id: shown.map(to_uint128),
                    status: Some(rpc::Status {
                        code: code as i32,
                        message: message.into(),
                        details: vec![],
                    }),
                },
            )),
        };
        let _ = self.conns[idx].tx.try_send(Ok(msg));
    }

    fn notify_all(&self, device_id: u64) {
        for i in 0..self.conns.len() {
            self.notify(i, device_id);
        }
    }

    /// A stream's first arbitration message (`None`: no election id). Returns its
    /// connection id.
    pub fn add(
        &mut self,
        election_id: Option<u128>,
        tx: StreamTx,
        device_id: u64,
    ) -> Result<u64, Status> {
        if election_id.is_some() && self.conns.iter().any(|c| c.election_id == election_id) {
            return Err(Status::invalid_argument("Election id already exists"));
        }
        let id = self.next_id;
        self.next_id += 1;
        let was = self.primary_index().map(|i| self.conns[i].id);
        self.conns.push(Conn {
            id,
            election_id,
            tx,
        });
        let now = self.settle();
        if was != now {
            self.notify_all(device_id);
        } else {
            self.notify(self.conns.len() - 1, device_id);
        }
        Ok(id)
    }

    /// A later arbitration message on an established stream.
    pub fn update(
        &mut self,
        conn: u64,
        election_id: Option<u128>,
        device_id: u64,
    ) -> Result<(), Status> {
        let Some(idx) = self.conns.iter().position(|c| c.id == conn) else {
            return Err(Status::internal("unknown stream"));
        };
        if self.conns[idx].election_id == election_id {
            self.notify(idx, device_id);
            return Ok(());
        }
        if election_id.is_some()
            && self
                .conns
                .iter()
                .any(|c| c.id != conn && c.election_id == election_id)
        {
            return Err(Status::invalid_argument("New election id already exists"));
        }
        let was = self.primary_index().map(|i| self.conns[i].id);
        self.conns[idx].election_id = election_id;
        let now = self.settle();
        if was != now {
            self.notify_all(device_id);
        } else {
            self.notify(idx, device_id);
        }
        Ok(())
    }

    pub fn remove(&mut self, conn: u64, device_id: u64) {
        let was = self.primary_index().map(|i| self.conns[i].id);
        self.conns.retain(|c| c.id != conn);
        if self.conns.is_empty() {
            self.highest = None;
        }
        let now = self.settle();
        if was != now {
            self.notify_all(device_id);
        }
    }

    pub fn is_primary_conn(&self, conn: u64) -> bool {
        self.primary_index().map(|i| self.conns[i].id) == Some(conn)
    }
}
