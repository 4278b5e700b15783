//! The commit path. A change is applied to the switch (ports first, then the table
//! entries), becomes the current state in memory, and is made durable by one save of
//! the whole state before its caller is answered. A failure before the save undoes
//! the change; a failed save undoes everything back to the last durable state.
//!
//! Requests that go through the commit queue ([`Controller::commit_queued`]) and
//! arrive together form a group, committed with one save (group commit):
//! - each request is built against the state its predecessors left; a refused
//!   request (bad input, address taken) leaves the others alone;
//! - the group's final state is saved while its ports are attached and its table
//!   entries written (one diff and one write for the whole group); every caller is
//!   answered once both are done;
//! - if a port or the write fails, all of that is undone and the group is redone one
//!   request at a time from the durable state, so only the failing request fails,
//!   and the redone state is saved again;
//! - if the save fails, the whole group is undone and every request in it fails.
//!
//! Nobody is answered before the save covering their change, so a crash at any point
//! loses no acknowledged change. The one exception is asked for by name:
//! [`Controller::commit_deferred`] answers a change that leaves the switch as it is
//! and is saved right after the answer (by a background save, or by the next
//! commit's save, whichever comes first); its caller must be able to do without it
//! after a crash (RESTORE_STARTED, see migration.rs). The migration events that must
//! reach the switch ([`Controller::commit_writing_while_saving`]) save while the
//! switch takes the entries, as a group does. One double fault is not covered: when a group is redone
//! after its speculative save reached the disk and the redone save then fails too, the
//! file holds the speculative state (changes whose callers got an error) until the next
//! successful save.

use std::collections::HashSet;
use std::sync::Weak;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::conn::ConnTable;
use crate::controller::{Controller, Inner};
use crate::desired::entries_differ;
use crate::error::{Error, Result};
use crate::metrics::{CommitPhases, Metrics};
use crate::state::State;
use crate::store::Store;

/// Most requests one save covers.
const MAX_GROUP: usize = 256;
/// Requests that may wait in the commit queue before callers wait to enqueue.
const QUEUE_DEPTH: usize = 1024;

/// A prepared change of the state, with its side effects on the switch.
pub struct Change {
    pub state: State,
    /// Ports to attach before the tables are written.
    pub port_adds: Vec<(u32, String)>,
    /// Ports to detach once the change is durable.
    pub port_removes: Vec<u32>,
    /// Learned connections to remove (by backend id / service id).
    pub drop_backends: Vec<u16>,
    pub drop_services: Vec<u16>,
    /// Refuse (UNAVAILABLE, nothing changed) when the switch cannot be written.
    pub require_switch: bool,
    /// Runs after the switch acknowledged the write and before the durable save
    /// (records timings in the same save).
    pub on_ack: Option<OnAck>,
}

/// Callback of [`Change::on_ack`].
pub type OnAck = Box<dyn FnOnce(&mut State, Instant) + Send>;

impl Change {
    pub fn new(state: State) -> Change {
        Change {
            state,
            port_adds: Vec::new(),
            port_removes: Vec::new(),
            drop_backends: Vec::new(),
            drop_services: Vec::new(),
            require_switch: false,
            on_ack: None,
        }
    }
}

/// What a commit did.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    /// The switch acknowledged the entries (false: pushed at reconnection, or
    /// nothing to change).
    pub written: bool,
    /// When the switch acknowledged the table write.
    pub acked_at: Instant,
}

/// A change applied to the switch and current in memory, not yet durable.
struct Staged {
    /// The state before this change.
    previous: State,
    /// Ports this change attached (detached again if the save fails).
    attached: Vec<u32>,
    port_removes: Vec<u32>,
    drop_backends: Vec<u16>,
    drop_services: Vec<u16>,
    written: bool,
    acked_at: Instant,
}

impl Staged {
    fn committed(&self) -> Committed {
        Committed {
            written: self.written,
            acked_at: self.acked_at,
        }
    }
}

/// What applying a group to the switch did.
struct Applied {
    /// Ports attached (detached again if the group is undone).
    attached: Vec<u32>,
    /// The switch acknowledged the entries.
    written: bool,
    /// A port or the write failed: the group is redone one request at a time.
    failed: bool,
    /// Time spent bringing the desired entries to the group's state.
    desired: Duration,
}

/// A request waiting in the commit queue.
pub(crate) trait Pending: Send {
    fn queued_at(&self) -> Instant;
    /// Builds the change against `state`; `None`: nothing to change. Called again
    /// when its group is redone one request at a time.
    fn prepare(&mut self, state: &State) -> Result<Option<Change>>;
    /// Answers the caller.
    fn answer(self: Box<Self>, r: Result<Committed>);
}

/// The sending side of the commit queue.
pub(crate) type QueueTx = mpsc::Sender<Box<dyn Pending>>;
/// The receiving side, consumed by [`commit_loop`].
pub(crate) type QueueRx = mpsc::Receiver<Box<dyn Pending>>;

pub(crate) fn queue() -> (QueueTx, QueueRx) {
    mpsc::channel(QUEUE_DEPTH)
}

/// A typed request: `prepare` returns the change and what its caller gets back.
struct Request<T, F> {
    prepare: F,
    out: Option<T>,
    queued_at: Instant,
    reply: oneshot::Sender<Result<(T, Committed)>>,
}

impl<T, F> Pending for Request<T, F>
where
    T: Send + 'static,
    F: FnMut(&State) -> Result<(Option<Change>, T)> + Send + 'static,
{
    fn queued_at(&self) -> Instant {
        self.queued_at
    }

    fn prepare(&mut self, state: &State) -> Result<Option<Change>> {
        self.out = None;
        let (change, out) = (self.prepare)(state)?;
        self.out = Some(out);
        Ok(change)
    }

    fn answer(self: Box<Self>, r: Result<Committed>) {
        let Request { out, reply, .. } = *self;
        let r = r.and_then(|c| {
            out.map(|o| (o, c)).ok_or_else(|| {
                Error::Internal("commit request answered before it was prepared".into())
            })
        });
        // The caller may have gone away; its change stays committed.
        let _ = reply.send(r);
    }
}

/// Takes groups of requests off the queue and commits each group with one save.
pub(crate) async fn commit_loop(ctl: Weak<Controller>, mut rx: QueueRx) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        let Some(ctl) = ctl.upgrade() else { return };
        ctl.commit_group(group).await;
    }
}

/// How long a change answered before its save waits for the next commit's save
/// to cover it before it is saved on its own.
pub const DEFERRED_SAVE_AFTER: Duration = Duration::from_millis(100);

/// Saves changes answered before their save ([`Controller::commit_deferred`])
/// [`DEFERRED_SAVE_AFTER`] after it is woken, unless a commit's save covered them
/// meanwhile (the next migration event usually follows within that time); a
/// failed save is retried every 100 ms while the change is still unsaved.
pub(crate) async fn deferred_save_loop(
    ctl: Weak<Controller>,
    wake: std::sync::Arc<tokio::sync::Notify>,
) {
    loop {
        wake.notified().await;
        tokio::time::sleep(DEFERRED_SAVE_AFTER).await;
        loop {
            let Some(c) = ctl.upgrade() else { return };
            match c.save_deferred().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "saving a change answered before its save; retrying");
                }
            }
            drop(c);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Controller {
    /// Applies a change and makes it durable while the caller holds the lock.
    pub async fn commit(&self, g: &mut Inner, change: Change) -> Result<Committed> {
        let mut staged = self.stage(g, change).await?;
        let durable = std::mem::take(&mut staged.previous);
        let committed = staged.committed();
        self.settle(g, durable, std::slice::from_ref(&staged))
            .await?;
        Metrics::inc(&self.metrics.commit.commits);
        Ok(committed)
    }

    /// Makes a change current and answers before it is durable: the save runs
    /// right after, off the caller's path ([`deferred_save_loop`]), unless another
    /// commit's save covers it first. Only for a change whose loss on a crash its
    /// caller recovers from, and only when it leaves the switch exactly as it is and
    /// has nothing that waits for durability (ports, learned connections to drop,
    /// an acknowledgement time): any other change is committed with [`Controller::commit`].
    pub async fn commit_deferred(&self, g: &mut Inner, change: Change) -> Result<Committed> {
        let plain = !change.require_switch
            && change.on_ack.is_none()
            && change.port_adds.is_empty()
            && change.port_removes.is_empty()
            && change.drop_backends.is_empty()
            && change.drop_services.is_empty()
            && !entries_differ(&change.state, &g.state, self.shape);
        if !plain {
            return self.commit(g, change).await;
        }
        let acked_at = Instant::now();
        make_current(g, change, Vec::new(), false, acked_at);
        g.unsaved = true;
        self.save_soon.notify_one();
        Metrics::inc(&self.metrics.commit.commits);
        Ok(Committed {
            written: false,
            acked_at,
        })
    }

    /// [`Controller::commit`] for a change that must reach the switch
    /// (`require_switch`) and attaches or detaches no port: the migration events
    /// that lock, unlock or repoint. The save of the new state runs while the
    /// switch takes the entries, and the caller is answered once both are done, so
    /// it still never hears of a change that is not durable. If the switch refuses,
    /// its entries are put back, the state stays as it was and is saved again (if
    /// that save fails too, the file holds the refused change until the next
    /// successful save: the double fault of a group, module doc). If the save
    /// fails, the entries are put back. What `on_ack` records after the
    /// acknowledgement (the switchover time) becomes current then and is saved
    /// by the deferred save or the next commit: a crash right after the answer
    /// loses those figures, never the change.
    pub async fn commit_writing_while_saving(
        &self,
        g: &mut Inner,
        mut change: Change,
    ) -> Result<Committed> {
        let plain = change.require_switch
            && change.port_adds.is_empty()
            && change.port_removes.is_empty()
            && self.link.is_connected()
            && g.synced;
        if !plain {
            return self.commit(g, change).await;
        }
        // Encoded on the save's thread too: the switch takes the entries meanwhile.
        let save = self.spawn_save_of(change.state.clone());
        let t = Instant::now();
        let applied = g
            .prog
            .apply_state(&self.link, &change.state, self.shape)
            .await;
        let t_desired = applied.as_ref().map(|p| p.desired).unwrap_or_default();
        let t_write = t.elapsed().saturating_sub(t_desired);
        let entries = applied.as_ref().map(|p| p.writes).unwrap_or_default();
        let acked_at = Instant::now();
        let saved = self.finish_save(save, 1).await;
        if let Err(e) = applied {
            if let Err(e2) = g.prog.apply_state(&self.link, &g.state, self.shape).await {
                tracing::warn!(error = %e2, "restoring previous entries after a failed write");
            }
            if saved.is_ok() {
                // The file holds the refused change: save the state as it is.
                let again = match Store::encode(&g.state, &self.store.path()) {
                    Ok(data) => self.finish_save(self.spawn_save(data), 1).await,
                    Err(e3) => Err(e3),
                };
                if let Err(e3) = again {
                    tracing::warn!(
                        error = %e3,
                        "saving the state back after a refused write: the state file holds the \
                         refused change until the next successful save"
                    );
                }
            }
            return Err(e);
        }
        if let Err(e) = saved {
            if let Err(e2) = g.prog.apply_state(&self.link, &g.state, self.shape).await {
                tracing::warn!(error = %e2, "restoring the durable state's entries after a failed save");
            }
            return Err(e);
        }
        let phases = &self.metrics.commit;
        CommitPhases::add(&phases.desired_us, t_desired);
        CommitPhases::add(&phases.write_us, t_write);
        tracing::debug!(
            desired_us = t_desired.as_micros() as u64,
            write_us = t_write.as_micros() as u64,
            entries,
            "change written to the switch while saving"
        );
        let on_ack = change.on_ack.take();
        let staged = make_current(g, change, Vec::new(), true, acked_at);
        // The save covered any change answered before its own save.
        g.unsaved = false;
        if let Some(f) = on_ack {
            f(&mut g.state, acked_at);
            g.unsaved = true;
            self.save_soon.notify_one();
        }
        self.after_durable(g, &staged).await;
        Metrics::inc(&phases.commits);
        Ok(Committed {
            written: true,
            acked_at,
        })
    }

    /// Saves the current state if it holds a change answered before its save.
    pub(crate) async fn save_deferred(&self) -> Result<()> {
        let mut g = self.inner.lock().await;
        if !g.unsaved {
            return Ok(());
        }
        let data = Store::encode(&g.state, &self.store.path())?;
        self.finish_save(self.spawn_save(data), 1).await?;
        g.unsaved = false;
        Ok(())
    }

    /// Writes the current state to `state.json` and empties the journal
    /// ([`Store::compact`]), at shutdown.
    pub(crate) async fn compact(&self) -> Result<()> {
        let mut g = self.inner.lock().await;
        let data = Store::encode(&g.state, &self.store.path())?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.compact(&data))
            .await
            .map_err(|e| Error::Internal(format!("state compaction task: {e}")))??;
        g.unsaved = false;
        Ok(())
    }

    /// Queues a change that `prepare` builds against the state current at its turn
    /// (`None`: nothing to change) and waits until it is durable. Requests queued
    /// together share one save. `prepare` must not have side effects: it may run
    /// more than once. The change is made even if the caller goes away.
    pub async fn commit_queued<T, F>(&self, prepare: F) -> Result<(T, Committed)>
    where
        T: Send + 'static,
        F: FnMut(&State) -> Result<(Option<Change>, T)> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let req = Request {
            prepare,
            out: None,
            queued_at: Instant::now(),
            reply,
        };
        self.queue
            .send(Box::new(req))
            .await
            .map_err(|_| Error::Internal("the commit queue is closed".into()))?;
        Metrics::inc(&self.metrics.commit.queued);
        answer
            .await
            .map_err(|_| Error::Internal("the commit queue dropped the request".into()))?
    }

    /// Requests waiting in the commit queue (not yet taken into a group).
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Commits a group of queued requests and answers them.
    async fn commit_group(&self, mut group: Vec<Box<dyn Pending>>) {
        let mut g = self.inner.lock().await;
        for req in &group {
            CommitPhases::add(
                &self.metrics.commit.queue_wait_us,
                req.queued_at().elapsed(),
            );
        }
        let answers = match self.group_at_once(&mut g, &mut group).await {
            Some(answers) => answers,
            None => self.group_one_by_one(&mut g, &mut group).await,
        };
        drop(g);
        for (req, r) in group.into_iter().zip(answers) {
            req.answer(r);
        }
    }

    /// The whole group as one change: the save of its final state runs while the
    /// ports are attached and the entries written. `None` when the group must be
    /// redone one request at a time (a port or the write failed, nothing is left of
    /// it on the switch; or a request needs the one-by-one path).
    async fn group_at_once(
        &self,
        g: &mut Inner,
        group: &mut [Box<dyn Pending>],
    ) -> Option<Vec<Result<Committed>>> {
        if !(self.link.is_connected() && g.synced) {
            return None;
        }
        let mut answers: Vec<Option<Result<Committed>>> = Vec::with_capacity(group.len());
        let mut changes: Vec<Change> = Vec::new();
        for req in group.iter_mut() {
            let current = changes.last().map(|c| &c.state).unwrap_or(&g.state);
            match req.prepare(current) {
                Ok(Some(c)) if c.on_ack.is_some() || c.require_switch => return None,
                Ok(Some(c)) => {
                    changes.push(c);
                    answers.push(None);
                }
                Ok(None) => answers.push(Some(Ok(Committed {
                    written: false,
                    acked_at: Instant::now(),
                }))),
                Err(e) => answers.push(Some(Err(e))),
            }
        }
        let Some(last) = changes.last() else {
            return Some(answers.into_iter().flatten().collect());
        };
        let data = Store::encode(&last.state, &self.store.path()).ok()?;
        let save = self.spawn_save(data);

        let phases = &self.metrics.commit;
        let t = Instant::now();
        let port_adds: Vec<(u32, String)> = changes
            .iter()
            .flat_map(|c| c.port_adds.iter().cloned())
            .collect();
        let (applied, t_port) = self.apply_group(g, &port_adds, &last.state).await;
        let Applied {
            attached,
            written,
            failed,
            desired: t_desired,
        } = applied;
        let t_write = t.elapsed().saturating_sub(t_port + t_desired);
        let acked_at = Instant::now();
        let saved = self.finish_save(save, changes.len()).await;
        if failed {
            self.detach_all(&attached).await;
            return None;
        }
        CommitPhases::add(&phases.port_us, t_port);
        CommitPhases::add(&phases.desired_us, t_desired);
        CommitPhases::add(&phases.write_us, t_write);
        if let Err(e) = saved {
            if written {
                if let Err(e2) = g.prog.apply_state(&self.link, &g.state, self.shape).await {
                    tracing::warn!(error = %e2, "restoring the durable state's entries after a failed save");
                }
            }
            self.detach_all(&attached).await;
            tracing::warn!(error = %e, requests = changes.len(), "a group commit failed and was undone");
            return Some(
                answers
                    .into_iter()
                    .map(|a| a.unwrap_or_else(|| Err(e.replicate())))
                    .collect(),
            );
        }
        // The save covered any change answered before its own save.
        g.unsaved = false;
        let mut done = Vec::with_capacity(changes.len());
        for c in changes {
            Metrics::inc(&phases.commits);
            done.push(make_current(g, c, Vec::new(), written, acked_at));
        }
        for s in &done {
            self.after_durable(g, s).await;
        }
        let committed = Committed { written, acked_at };
        Some(
            answers
                .into_iter()
                .map(|a| a.unwrap_or(Ok(committed)))
                .collect(),
        )
    }

    /// Attaches a group's ports, then writes its entries. On a failure (other than
    /// losing the switch) the entries are restored and `failed` is set; the caller
    /// detaches `attached`. Also returns the time spent attaching ports.
    async fn apply_group(
        &self,
        g: &mut Inner,
        port_adds: &[(u32, String)],
        want: &State,
    ) -> (Applied, Duration) {
        let t = Instant::now();
        let mut out = Applied {
            attached: Vec::new(),
            written: true,
            failed: false,
            desired: Duration::ZERO,
        };
        for (port, iface) in port_adds {
            if let Err(e) = self.ports.add(*port, iface).await {
                tracing::debug!(port, iface = %iface, error = %e, "a port of a group failed: redoing the group one by one");
                out.failed = true;
                return (out, t.elapsed());
            }
            out.attached.push(*port);
        }
        let t_port = t.elapsed();
        match g.prog.apply_state(&self.link, want, self.shape).await {
            Ok(p) => out.desired = p.desired,
            Err(Error::Unavailable(e)) => {
                // Lost the switch mid-way; reconciliation finishes the job.
                tracing::warn!(error = %e, "switch lost during a group commit");
                out.written = false;
                g.synced = false;
            }
            Err(e) => {
                tracing::debug!(error = %e, "a group's write failed: redoing the group one by one");
                out.failed = true;
                if let Err(e2) = g.prog.apply_state(&self.link, &g.state, self.shape).await {
                    tracing::warn!(error = %e2, "restoring previous entries after a failed write");
                }
            }
        }
        (out, t_port)
    }

    /// The group one request at a time from the durable state (each applied on its
    /// own, so a failing one leaves the others), then one save. The save happens
    /// even when nothing changed: a group redone after a failure may have left its
    /// speculative state on disk.
    async fn group_one_by_one(
        &self,
        g: &mut Inner,
        group: &mut [Box<dyn Pending>],
    ) -> Vec<Result<Committed>> {
        let durable = g.state.clone();
        let mut staged: Vec<Staged> = Vec::new();
        let mut answers: Vec<Option<Result<Committed>>> = Vec::with_capacity(group.len());
        for req in group.iter_mut() {
            let r = match req.prepare(&g.state) {
                Ok(Some(change)) => self.stage(g, change).await.map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            match r {
                Ok(Some(mut s)) => {
                    // The group's rollback target is `durable`.
                    s.previous = State::default();
                    staged.push(s);
                    answers.push(None);
                }
                Ok(None) => answers.push(Some(Ok(Committed {
                    written: false,
                    acked_at: Instant::now(),
                }))),
                Err(e) => answers.push(Some(Err(e))),
            }
        }
        let settled = self.settle(g, durable, &staged).await;
        let mut staged = staged.iter();
        answers
            .into_iter()
            .map(|a| match a {
                Some(r) => r,
                None => match (&settled, staged.next()) {
                    (Ok(()), Some(s)) => {
                        Metrics::inc(&self.metrics.commit.commits);
                        Ok(s.committed())
                    }
                    (Err(e), _) => Err(e.replicate()),
                    (Ok(()), None) => Err(Error::Internal("group commit lost a change".into())),
                },
            })
            .collect()
    }

    /// Applies a change to the switch and makes it the current state (not durable
    /// yet). On failure the switch and the state are as they were.
    async fn stage(&self, g: &mut Inner, mut change: Change) -> Result<Staged> {
        let writable = self.link.is_connected() && g.synced;
        if !writable {
            if change.require_switch {
                return Err(Error::Unavailable(format!(
                    "the switch at {} is not connected",
                    self.link.address()
                )));
            }
            let now = Instant::now();
            if let Some(f) = change.on_ack.take() {
                f(&mut change.state, now);
            }
            tracing::warn!(
                "switch not connected: the change is saved and will be pushed when it connects"
            );
            return Ok(make_current(g, change, Vec::new(), false, now));
        }
        let phases = &self.metrics.commit;
        let t = Instant::now();
        let mut attached = Vec::new();
        for (port, iface) in &change.port_adds {
            if let Err(e) = self.ports.add(*port, iface).await {
                self.detach_all(&attached).await;
                return Err(e);
            }
            attached.push(*port);
        }
        let t_port = t.elapsed();
        let mut written = true;
        let applied = g
            .prog
            .apply_state(&self.link, &change.state, self.shape)
            .await;
        let t_desired = applied.as_ref().map(|p| p.desired).unwrap_or_default();
        let t_write = t.elapsed().saturating_sub(t_port + t_desired);
        if let Err(e) = applied {
            if matches!(e, Error::Unavailable(_)) && !change.require_switch {
                // Lost the switch mid-way; reconciliation finishes the job.
                written = false;
                g.synced = false;
            } else {
                self.detach_all(&attached).await;
                if let Err(e2) = g.prog.apply_state(&self.link, &g.state, self.shape).await {
                    tracing::warn!(error = %e2, "restoring previous entries after a failed write");
                }
                return Err(e);
            }
        }
        CommitPhases::add(&phases.port_us, t_port);
        CommitPhases::add(&phases.desired_us, t_desired);
        CommitPhases::add(&phases.write_us, t_write);
        tracing::debug!(
            port_us = t_port.as_micros() as u64,
            desired_us = t_desired.as_micros() as u64,
            write_us = t_write.as_micros() as u64,
            "change applied to the switch"
        );
        let acked_at = Instant::now();
        if let Some(f) = change.on_ack.take() {
            f(&mut change.state, acked_at);
        }
        Ok(make_current(g, change, attached, written, acked_at))
    }

    /// Makes the current state durable, then runs what waits for durability (port
    /// detaches, removal of learned connections). If the save fails, the state, the
    /// table entries and the ports go back to `durable`.
    async fn settle(&self, g: &mut Inner, durable: State, staged: &[Staged]) -> Result<()> {
        let saved = match Store::encode(&g.state, &self.store.path()) {
            Ok(data) => self.finish_save(self.spawn_save(data), staged.len()).await,
            Err(e) => Err(e),
        };
        if let Err(e) = saved {
            self.roll_back(g, durable, staged).await;
            return Err(e);
        }
        // The save covered any change answered before its own save.
        g.unsaved = false;
        for s in staged {
            self.after_durable(g, s).await;
        }
        Ok(())
    }

    /// Starts writing `data` durably, off the async workers.
    fn spawn_save(&self, data: Vec<u8>) -> JoinHandle<(Result<()>, Duration)> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let r = store.write(&data);
            (r, t.elapsed())
        })
    }

    /// [`Controller::spawn_save`] of `state`, encoded on the save's thread.
    fn spawn_save_of(&self, state: State) -> JoinHandle<(Result<()>, Duration)> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let r = Store::encode(&state, &store.path()).and_then(|data| store.write(&data));
            (r, t.elapsed())
        })
    }

    /// Waits for a save started by [`Controller::spawn_save`] (covering `changes`).
    async fn finish_save(
        &self,
        save: JoinHandle<(Result<()>, Duration)>,
        changes: usize,
    ) -> Result<()> {
        let (r, took) = save
            .await
            .map_err(|e| Error::Internal(format!("state save task: {e}")))?;
        CommitPhases::add(&self.metrics.commit.save_us, took);
        Metrics::inc(&self.metrics.commit.saves);
        tracing::debug!(
            save_us = took.as_micros() as u64,
            changes,
            ok = r.is_ok(),
            "state saved"
        );
        r
    }

    async fn roll_back(&self, g: &mut Inner, durable: State, staged: &[Staged]) {
        if staged.iter().any(|s| s.written) {
            if let Err(e) = g.prog.apply_state(&self.link, &durable, self.shape).await {
                tracing::warn!(error = %e, "restoring the durable state's entries after a failed save");
            }
        }
        for s in staged.iter().rev() {
            self.detach_all(&s.attached).await;
        }
        g.state = durable;
    }

    async fn after_durable(&self, g: &mut Inner, s: &Staged) {
        let drop_b: HashSet<u16> = s.drop_backends.iter().copied().collect();
        let drop_s: HashSet<u16> = s.drop_services.iter().copied().collect();
        let drained = if drop_b.is_empty() && drop_s.is_empty() {
            Vec::new()
        } else {
            g.conns
                .drain_where(|c| drop_b.contains(&c.backend_id) || drop_s.contains(&c.service_id))
        };
        if s.written && !drained.is_empty() {
            let ups: Vec<_> = drained
                .iter()
                .flat_map(|(t, c)| ConnTable::deletes(t, c))
                .collect();
            if let Err(f) = self.link.write(ups).await {
                if !f.only(5) {
                    tracing::warn!(error = %f.summary(), "deleting connections of removed backends");
                }
            }
        }
        if s.written {
            for port in &s.port_removes {
                if let Err(e) = self.ports.remove(*port).await {
                    tracing::warn!(port, error = %e, "detaching switch port");
                }
            }
        }
    }

    async fn detach_all(&self, ports: &[u32]) {
        for p in ports {
            if let Err(e) = self.ports.remove(*p).await {
                tracing::warn!(port = p, error = %e, "rolling back a port attachment");
            }
        }
    }
}

/// Makes `change.state` current; the previous state goes into the [`Staged`].
fn make_current(
    g: &mut Inner,
    change: Change,
    attached: Vec<u32>,
    written: bool,
    acked_at: Instant,
) -> Staged {
    let previous = std::mem::replace(&mut g.state, change.state);
    Staged {
        previous,
        attached,
        port_removes: change.port_removes,
        drop_backends: change.drop_backends,
        drop_services: change.drop_services,
        written,
        acked_at,
    }
}
