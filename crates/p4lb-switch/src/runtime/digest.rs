//! The `conn_learn` digest engine: batches the data path's learn messages into DigestList
//! messages for the primary, honouring the DigestEntry config (max_list_size, max_timeout_ns,
//! ack_timeout_ns) the way BMv2's P4Runtime server does: while a list is un-acked (and
//! ack_timeout_ns > 0) the same message is not reported again; an ack, or the ack timeout,
//! forgets it.
//!
//! What the engine holds is bounded: at most [`MAX_PENDING_DIGEST_MESSAGES`] messages
//! waiting to be sent or acknowledged (newer ones are dropped and counted in
//! [`DigestHandle::dropped`]; the connection's next packet reports them again), and a list
//! holds at most [`MAX_DIGEST_LIST_MESSAGES`] messages whatever `max_list_size` says.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p4lb_proto::p4runtime as p4;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::arbitration::Arbitration;
use crate::limits::{MAX_DIGEST_LIST_MESSAGES, MAX_PENDING_DIGEST_MESSAGES};
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
    /// Messages dropped because the engine held [`MAX_PENDING_DIGEST_MESSAGES`] already.
    pub dropped: Arc<AtomicU64>,
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
        let engine = Engine::new(digest_id, arbitration);
        let dropped = engine.dropped.clone();
        let task = tokio::spawn(engine.run(learn, cmd_rx));
        DigestHandle {
            digest_id,
            cmd,
            config: Mutex::new(None),
            dropped,
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
    /// Messages in `buffer` and `outstanding`.
    held: usize,
    next_list_id: u64,
    dropped: Arc<AtomicU64>,
}

impl Engine {
    fn new(digest_id: u32, arbitration: Arc<Mutex<Arbitration>>) -> Engine {
        Engine {
            digest_id,
            arbitration,
            config: None,
            buffer: Vec::new(),
            buffer_since: None,
            cache: HashSet::new(),
            pending: HashSet::new(),
            outstanding: HashMap::new(),
            held: 0,
            next_list_id: 1,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    fn drop_one(&self) {
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                dropped = n,
                held = self.held,
                "digest messages dropped: {MAX_PENDING_DIGEST_MESSAGES} are waiting to be sent or acknowledged"
            );
        }
    }

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
        let acked = self.ack_timeout().is_some();
        // One list never carries the same message twice; with an ack timeout, neither do
        // un-acked lists.
        if self.pending.contains(&m) || (acked && self.cache.contains(&m)) {
            return;
        }
        if self.held >= MAX_PENDING_DIGEST_MESSAGES {
            self.drop_one();
            return;
        }
        if acked {
            self.cache.insert(m);
        }
        if self.buffer.is_empty() {
            self.buffer_since = Some(Instant::now());
        }
        self.buffer.push(m);
        self.pending.insert(m);
        self.held += 1;
        let list_max = match usize::try_from(cfg.max_list_size) {
            Ok(n) if n > 0 => n.min(MAX_DIGEST_LIST_MESSAGES),
            _ => MAX_DIGEST_LIST_MESSAGES,
        };
        if self.buffer.len() >= list_max || cfg.max_timeout_ns <= 0 {
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
        } else {
            self.held -= list.len();
        }
    }

    fn forget(&mut self, list_id: u64) {
        if let Some((msgs, _)) = self.outstanding.remove(&list_id) {
            self.held -= msgs.len();
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
                    Some(DigestCmd::Config(Some(c))) => {
                        self.config = Some(c);
                        if self.ack_timeout().is_none() {
                            // Nothing waits for an ack any more.
                            self.cache.clear();
                            self.outstanding.clear();
                            self.held = self.buffer.len();
                        }
                    }
                    Some(DigestCmd::Config(None)) => {
                        self.config = None;
                        self.buffer.clear();
                        self.pending.clear();
                        self.buffer_since = None;
                        self.cache.clear();
                        self.outstanding.clear();
                        self.held = 0;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MAX_PENDING_DIGEST_MESSAGES;
    use std::net::Ipv4Addr;

    /// A distinct message per `i` (the literal is the one place that knows the layout).
    fn msg(i: u32) -> LearnMsg {
        LearnMsg {
            src_addr: Ipv4Addr::from(0x0b00_0000 + i),
            dst_addr: Ipv4Addr::new(10, 96, 0, 1),
            protocol: 6,
            src_port: (i % 60000) as u16 + 1024,
            dst_port: 80,
            service_id: 1,
            backend_id: 1,
            event: p4lb_p4::ConnEvent::Learn,
        }
    }

    fn engine(max_list_size: i32) -> Engine {
        let mut e = Engine::new(1, Arc::new(Mutex::new(Arbitration::default())));
        e.config = Some(p4::digest_entry::Config {
            max_timeout_ns: 1_000_000_000,
            max_list_size,
            ack_timeout_ns: 10_000_000_000,
        });
        e
    }

    fn held(e: &Engine) -> usize {
        e.buffer.len() + e.outstanding.values().map(|(m, _)| m.len()).sum::<usize>()
    }

    #[tokio::test]
    async fn a_storm_of_distinct_messages_is_held_up_to_the_bound_and_the_rest_counted() {
        // Nobody acknowledges (no primary): lists stay outstanding until the ack timeout.
        let n = MAX_PENDING_DIGEST_MESSAGES as u32 + 10_000;
        for max_list_size in [64, 0] {
            let mut e = engine(max_list_size);
            for i in 0..n {
                e.learn(msg(i));
            }
            assert!(
                held(&e) <= MAX_PENDING_DIGEST_MESSAGES,
                "max_list_size {max_list_size}: {} held",
                held(&e)
            );
            assert!(e.cache.len() <= MAX_PENDING_DIGEST_MESSAGES);
            assert!(e.buffer.len() <= crate::limits::MAX_DIGEST_LIST_MESSAGES);
            assert_eq!(
                e.dropped.load(std::sync::atomic::Ordering::Relaxed),
                u64::from(n) - held(&e) as u64
            );
        }
    }
}
