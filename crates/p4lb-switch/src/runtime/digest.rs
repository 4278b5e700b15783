//! The `conn_learn` digest engine: batches the data path's learn messages into DigestList
//! messages for the primary, honouring the DigestEntry config (max_list_size, max_timeout_ns,
//! ack_timeout_ns) the way BMv2's P4Runtime server does: while a list is un-acked (and
//! ack_timeout_ns > 0) the same message is not reported again; an ack, or the ack timeout,
//! forgets it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p4lb_proto::p4runtime as p4;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::arbitration::Arbitration;
use crate::state::{Dataplane, LearnMsg};

#[derive(Debug)]
pub enum DigestCmd {
    Config(Option<p4::digest_entry::Config>),
    Ack(u64),
}

/// Control handle of a running engine.
#[derive(Debug)]
pub struct DigestHandle {
    pub digest_id: u32,
    cmd: mpsc::UnboundedSender<DigestCmd>,
    /// The configured entry (Read answers with it).
    pub config: Mutex<Option<p4::DigestEntry>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DigestHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DigestHandle {
    pub fn spawn(
        dp: &Arc<Dataplane>,
        learn: mpsc::Receiver<LearnMsg>,
        arbitration: Arc<Mutex<Arbitration>>,
    ) -> DigestHandle {
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let digest_id = dp.program.digest.id;
        let engine = Engine {
            digest_id,
            arbitration,
            config: None,
            buffer: Vec::new(),
            buffer_since: None,
            cache: HashSet::new(),
            pending: HashSet::new(),
            outstanding: HashMap::new(),
            next_list_id: 1,
        };
        let task = tokio::spawn(engine.run(learn, cmd_rx));
        DigestHandle {
            digest_id,
            cmd,
            config: Mutex::new(None),
            task,
        }
    }

    pub fn set_config(&self, c: Option<p4::digest_entry::Config>) {
        let _ = self.cmd.send(DigestCmd::Config(c));
    }

    pub fn ack(&self, list_id: u64) {
        let _ = self.cmd.send(DigestCmd::Ack(list_id));
    }
}

struct Engine {
    digest_id: u32,
    arbitration: Arc<Mutex<Arbitration>>,
    config: Option<p4::digest_entry::Config>,
    buffer: Vec<LearnMsg>,
    buffer_since: Option<Instant>,
    cache: HashSet<LearnMsg>,
    /// The messages in `buffer` (without an ack timeout, `cache` is not kept).
    pending: HashSet<LearnMsg>,
    /// list id -> (messages, sent at)
    outstanding: HashMap<u64, (Vec<LearnMsg>, Instant)>,
    next_list_id: u64,
}

impl Engine {
    fn ack_timeout(&self) -> Option<Duration> {
        let ns = self.config.as_ref()?.ack_timeout_ns;
        (ns > 0).then(|| Duration::from_nanos(ns as u64))
    }

    fn max_timeout(&self) -> Duration {
        let ns = self.config.as_ref().map(|c| c.max_timeout_ns).unwrap_or(0);
        Duration::from_nanos(ns.max(0) as u64)
    }

    fn learn(&mut self, m: LearnMsg) {
        let Some(cfg) = self.config else {
            return;
        };
        // One list never carries the same message twice; with an ack timeout, neither do
        // un-acked lists.
        let fresh = if self.ack_timeout().is_some() {
            self.cache.insert(m)
        } else {
            self.pending.insert(m)
        };
        if !fresh {
            return;
        }
        if self.buffer.is_empty() {
            self.buffer_since = Some(Instant::now());
        }
        self.buffer.push(m);
        if (cfg.max_list_size > 0 && self.buffer.len() >= cfg.max_list_size as usize)
            || cfg.max_timeout_ns <= 0
        {
            self.send();
        }
    }

    fn send(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let list = std::mem::take(&mut self.buffer);
        self.pending.clear();
        self.buffer_since = None;
        let list_id = self.next_list_id;
        self.next_list_id += 1;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let msg = p4::StreamMessageResponse {
            update: Some(p4::stream_message_response::Update::Digest(
                p4::DigestList {
                    digest_id: self.digest_id,
                    list_id,
                    data: list.iter().map(LearnMsg::to_p4data).collect(),
                    timestamp,
                },
            )),
        };
        if let Some(tx) = self.arbitration.lock().primary_tx() {
            if tx.try_send(Ok(msg)).is_err() {
                tracing::warn!(list_id, "digest list dropped: primary's stream is full");
            }
        }
        if self.ack_timeout().is_some() {
            self.outstanding.insert(list_id, (list, Instant::now()));
        }
    }

    fn forget(&mut self, list_id: u64) {
        if let Some((msgs, _)) = self.outstanding.remove(&list_id) {
            for m in msgs {
                self.cache.remove(&m);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let a = self.buffer_since.map(|t| t + self.max_timeout());
        let b = self
            .ack_timeout()
            .and_then(|to| self.outstanding.values().map(|(_, t)| *t + to).min());
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if let Some(since) = self.buffer_since {
            if now >= since + self.max_timeout() {
                self.send();
            }
        }
        if let Some(to) = self.ack_timeout() {
            let expired: Vec<u64> = self
                .outstanding
                .iter()
                .filter(|(_, (_, t))| now >= *t + to)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                self.forget(id);
            }
        }
    }

    async fn run(
        mut self,
        mut learn: mpsc::Receiver<LearnMsg>,
        mut cmd: mpsc::UnboundedReceiver<DigestCmd>,
    ) {
        loop {
            let deadline = self
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                c = cmd.recv() => match c {
                    Some(DigestCmd::Config(Some(c))) => self.config = Some(c),
                    Some(DigestCmd::Config(None)) => {
                        self.config = None;
                        self.buffer.clear();
                        self.pending.clear();
                        self.buffer_since = None;
                        self.cache.clear();
                        self.outstanding.clear();
                    }
                    Some(DigestCmd::Ack(id)) => self.forget(id),
                    None => return,
                },
                m = learn.recv() => match m {
                    Some(m) => self.learn(m),
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline) => self.on_timer(),
            }
        }
    }
}
