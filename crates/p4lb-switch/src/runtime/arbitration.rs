//! Primary/backup arbitration over StreamChannel (P4Runtime spec, "Client Arbitration and
//! Controller Replication"). Like BMv2's server, the live stream with the highest election
//! id is the primary; every change of primary is announced to all streams, otherwise only
//! the stream that sent the update hears back.

use p4lb_proto::google::rpc;
use p4lb_proto::p4runtime as p4;
use tokio::sync::mpsc;
use tonic::{Code, Status};

pub type StreamTx = mpsc::Sender<Result<p4::StreamMessageResponse, Status>>;

#[derive(Debug)]
struct Conn {
    id: u64,
    election_id: u128,
    tx: StreamTx,
}

#[derive(Debug, Default)]
pub struct Arbitration {
    conns: Vec<Conn>,
    next_id: u64,
}

pub fn u128_of(e: &Option<p4::Uint128>) -> u128 {
    e.as_ref()
        .map(|e| (u128::from(e.high) << 64) | u128::from(e.low))
        .unwrap_or(0)
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
        self.conns
            .iter()
            .enumerate()
            .max_by_key(|(_, c)| c.election_id)
            .map(|(i, _)| i)
    }

    pub fn primary_election_id(&self) -> Option<u128> {
        self.primary_index().map(|i| self.conns[i].election_id)
    }

    /// Is a request with this election id (absent = none) allowed to write?
    pub fn may_write(&self, election_id: &Option<p4::Uint128>) -> bool {
        match self.primary_election_id() {
            None => election_id.is_none(),
            Some(p) => election_id.is_some() && u128_of(election_id) == p,
        }
    }

    pub fn primary_tx(&self) -> Option<&StreamTx> {
        self.primary_index().map(|i| &self.conns[i].tx)
    }

    fn notify(&self, idx: usize, device_id: u64) {
        let Some(p) = self.primary_index() else {
            return;
        };
        let primary_id = self.conns[p].election_id;
        let status = if idx == p {
            rpc::Status {
                code: Code::Ok as i32,
                message: "Is primary".into(),
                details: vec![],
            }
        } else {
            rpc::Status {
                code: Code::AlreadyExists as i32,
                message: "Is backup".into(),
                details: vec![],
            }
        };
        let msg = p4::StreamMessageResponse {
            update: Some(p4::stream_message_response::Update::Arbitration(
                p4::MasterArbitrationUpdate {
                    device_id,
                    role: None,
                    election_id: Some(to_uint128(primary_id)),
                    status: Some(status),
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

    /// A stream's first arbitration message. Returns its connection id.
    pub fn add(&mut self, election_id: u128, tx: StreamTx, device_id: u64) -> Result<u64, Status> {
        if self.conns.iter().any(|c| c.election_id == election_id) {
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
        let now = self.primary_index().map(|i| self.conns[i].id);
        if was != now {
            self.notify_all(device_id);
        } else {
            self.notify(self.conns.len() - 1, device_id);
        }
        Ok(id)
    }

    /// A later arbitration message on an established stream.
    pub fn update(&mut self, conn: u64, election_id: u128, device_id: u64) -> Result<(), Status> {
        let Some(idx) = self.conns.iter().position(|c| c.id == conn) else {
            return Err(Status::internal("unknown stream"));
        };
        if self.conns[idx].election_id == election_id {
            self.notify(idx, device_id);
            return Ok(());
        }
        if self
            .conns
            .iter()
            .any(|c| c.id != conn && c.election_id == election_id)
        {
            return Err(Status::invalid_argument("New election id already exists"));
        }
        let was = self.primary_index().map(|i| self.conns[i].id);
        self.conns[idx].election_id = election_id;
        let now = self.primary_index().map(|i| self.conns[i].id);
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
        if was == Some(conn) {
            self.notify_all(device_id);
        }
    }

    pub fn is_primary_conn(&self, conn: u64) -> bool {
        self.primary_index().map(|i| self.conns[i].id) == Some(conn)
    }
}
