//! The controller core: the state behind one lock, and the task that reacts to the
//! switch (reconcile on every new session, idle timeouts). Changes of the state go
//! through [`crate::commit`].
//!
//! Digest lists go through a bounded queue ([`DIGEST_QUEUE_LISTS`]) to a task of their
//! own, so that a digest storm neither blocks the switch session nor makes API calls
//! wait for more than one list; a full queue drops (and counts) lists. Learned
//! connections are capped at `conn.max_entries` ([`Controller::on_digest`]), closed ones
//! go after a linger ([`Controller::on_close`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, Mutex};

use p4lb_p4::entries as p;
use p4lb_p4::{tables, ConnEvent, ConnLearn, FiveTuple};
use p4lb_proto::api;
use p4lb_proto::p4runtime::{update::Type, DigestList, IdleTimeoutNotification};

use crate::commit::{self, QueueTx};
pub use crate::commit::{Change, Committed, OnAck};
use crate::config::{Config, SwitchKind, Uplink};
use crate::conn::{self, CloseKind, CloseOutcome, ConnTable};
use crate::conn_store;
use crate::desired::Shape;
use crate::embedded::EmbeddedSwitch;
use crate::error::{Error, Result};
use crate::metrics::{Gauges, Metrics};
use crate::southbound::forwarding;
use crate::southbound::ports::PortAttacher;
use crate::southbound::programmer::{table_update, Programmer};
use crate::southbound::session::{SwitchEvent, SwitchSession, Target};
use crate::state::{now_ms, State};
use crate::store::Store;

/// Everything guarded by the controller lock.
pub struct Inner {
    pub state: State,
    pub prog: Programmer,
    pub conns: ConnTable,
    /// The switch holds what `state` implies (set after each reconciliation).
    pub synced: bool,
    /// `state` holds a change answered before it was saved
    /// ([`Controller::commit_deferred`]); the deferred save or the next save
    /// of any commit covers it.
    pub unsaved: bool,
}

pub struct Controller {
    pub cfg: Config,
    pub shape: Shape,
    pub store: Store,
    pub link: Arc<SwitchSession>,
    pub ports: PortAttacher,
    pub metrics: Metrics,
    pub events: broadcast::Sender<api::Event>,
    pub inner: Mutex<Inner>,
    pub digest_id: u32,
    pub idle_timeout_ns: i64,
    /// The node this controller runs on ([`Config::local_node`]): the node of callers on
    /// the Unix socket.
    pub node_name: String,
    /// The nodes' uplinks (`[[uplinks]]`), parsed: the ports and MACs of endpoints
    /// routed behind their node.
    pub uplinks: Vec<Uplink>,
    /// The address the API's TCP listener is bound to, once it is.
    pub api_tcp_addr: std::sync::OnceLock<std::net::SocketAddr>,
    embedded: Mutex<Option<EmbeddedSwitch>>,
    pub(crate) queue: QueueTx,
    digests: mpsc::Sender<DigestList>,
    /// Wakes the deferred save ([`commit::deferred_save_loop`]).
    pub(crate) save_soon: Arc<tokio::sync::Notify>,
    /// Netlink sockets kept in the namespaces of this node's endpoints: a caller's
    /// addresses are read over them at each migration event ([`crate::identity`]).
    pub(crate) addr_sockets: Arc<p4lb_netns::AddrSockets>,
}

/// Digest lists waiting for the digest task. A list holds up to
/// `conn.digest_max_list_size` members; beyond this many lists the newest are dropped
/// (acknowledged, so that the switch reports their connections again on their next
/// packet) and counted in `p4lb_controller_digest_lists_dropped_total`.
pub const DIGEST_QUEUE_LISTS: usize = 64;

impl Controller {
    /// Loads the persisted state, starts the switch session (and the embedded
    /// software switch when no address is configured) and the reconciler.
    pub async fn start(cfg: Config) -> anyhow::Result<Arc<Controller>> {
        use anyhow::Context;
        cfg.validate()?;
        if let Some(note) = cfg.digest_timeout_note() {
            tracing::info!("{note}");
        }
        let node_name = cfg.local_node()?;
        let uplinks = cfg.uplinks()?;
        let store = Store::open(&cfg.state_dir)?;
        let mut state = store.load().context("loading persisted state")?;
        // state.json holds the loaded state from here on, and the journal only what
        // follows (store.rs).
        store
            .compact_state(&state)
            .context("writing the loaded state to state.json")?;
        state.adopt_unnamed(&node_name);
        let conns = match conn_store::load(&cfg.state_dir, &state) {
            Ok((t, dropped)) => {
                if !t.is_empty() || dropped > 0 {
                    tracing::info!(
                        connections = t.len(),
                        dropped,
                        "learned connections loaded from the last snapshot"
                    );
                }
                t
            }
            Err(e) => {
                tracing::warn!(error = %e, "learned connections not loaded; starting without them");
                ConnTable::default()
            }
        };
        let (info, ids) = match cfg.p4info_path() {
            Some(path) => forwarding::load(&path)?,
            None => forwarding::load_text(p4lb_p4::P4INFO_TXTPB, "built-in P4Info")?,
        };
        let device_config = match cfg.switch.kind {
            SwitchKind::Bmv2 => {
                let path = if cfg.switch.bmv2_json.as_os_str().is_empty() {
                    p4lb_p4::bmv2::bmv2_json_path_from_env().ok_or_else(|| {
                        anyhow::anyhow!(
                            "switch.bmv2_json is required for kind = \"bmv2\" (or set {})",
                            p4lb_p4::bmv2::BMV2_JSON_ENV
                        )
                    })?
                } else {
                    cfg.switch.bmv2_json.clone()
                };
                std::fs::read(&path)
                    .with_context(|| format!("reading BMv2 JSON {}", path.display()))?
            }
            SwitchKind::Software => Vec::new(),
        };
        let mut embedded = None;
        let mut in_process = None;
        let address = if cfg.switch.address.is_empty() && cfg.switch.kind == SwitchKind::Software {
            let e = EmbeddedSwitch::start(&cfg).await?;
            let a = e.address.clone();
            in_process = e.in_process();
            embedded = Some(e);
            a
        } else {
            cfg.switch.address.clone()
        };
        if address.is_empty() {
            anyhow::bail!("switch.address is required for kind = \"bmv2\"");
        }
        let router_mac = crate::addr::parse_mac("switch.router_mac", &cfg.switch.router_mac)?;
        let target = Target {
            address: address.clone(),
            device_id: cfg.switch.device_id,
            election_id: cfg.switch.election_id,
            pipeline: forwarding::pipeline_config(info, device_config),
            digest_id: ids.conn_learn_digest,
            digest_config: p4lb_proto::p4runtime::digest_entry::Config {
                max_timeout_ns: cfg.digest_max_timeout_ns(),
                max_list_size: cfg.conn.digest_max_list_size,
                ack_timeout_ns: 1_000_000_000,
            },
            reconnect_max: Duration::from_millis(cfg.switch.reconnect_max_ms),
            tls: if address.starts_with("https://") {
                Some(crate::southbound::tls::client_config(
                    &cfg.switch.tls_ca,
                    &cfg.switch.tls_cert,
                    &cfg.switch.tls_key,
                )?)
            } else {
                None
            },
            in_process,
        };
        let (link, rx) = SwitchSession::spawn(target);
        let ports = match cfg.switch.kind {
            SwitchKind::Software => PortAttacher::Software(link.clone()),
            SwitchKind::Bmv2 => PortAttacher::bmv2(&cfg.switch.thrift, cfg.switch.bmv2_queue_depth),
        };
        let (events, _) = broadcast::channel(1024);
        let (queue, queue_rx) = commit::queue();
        let (digests, digests_rx) = mpsc::channel(DIGEST_QUEUE_LISTS);
        let ctl = Arc::new(Controller {
            shape: Shape {
                router_mac: crate::addr::mac_u64(&router_mac),
                arp_proxy_all: cfg.switch.arp_proxy_all,
            },
            store,
            link,
            ports,
            metrics: Metrics::default(),
            events,
            inner: Mutex::new(Inner {
                state,
                prog: Programmer::new(cfg.switch.write_batch),
                conns,
                synced: false,
                unsaved: false,
            }),
            digest_id: ids.conn_learn_digest,
            idle_timeout_ns: cfg.idle_timeout_ns(),
            node_name,
            uplinks,
            api_tcp_addr: std::sync::OnceLock::new(),
            cfg,
            embedded: Mutex::new(embedded),
            queue,
            digests,
            save_soon: Arc::new(tokio::sync::Notify::new()),
            addr_sockets: Arc::new(p4lb_netns::AddrSockets::new(
                crate::limits::MAX_KEPT_NETNS_SOCKETS,
            )),
        });
        tokio::spawn(commit::deferred_save_loop(
            Arc::downgrade(&ctl),
            ctl.save_soon.clone(),
        ));
        tokio::spawn(commit::commit_loop(Arc::downgrade(&ctl), queue_rx));
        tokio::spawn(event_loop(Arc::downgrade(&ctl), rx));
        tokio::spawn(digest_loop(Arc::downgrade(&ctl), digests_rx));
        tokio::spawn(close_loop(
            Arc::downgrade(&ctl),
            close_tick(ctl.cfg.conn.close_linger_ms),
        ));
        if ctl.cfg.conn.sweep_interval_ms > 0 && ctl.cfg.conn.idle_timeout_ms > 0 {
            tokio::spawn(sweep_loop(
                Arc::downgrade(&ctl),
                Duration::from_millis(ctl.cfg.conn.sweep_interval_ms),
            ));
        }
        let every = ctl.cfg.endpoints.liveness_interval_ms;
        tokio::spawn(crate::liveness::liveness_loop(
            Arc::downgrade(&ctl),
            (every > 0).then(|| Duration::from_millis(every)),
        ));
        tokio::spawn(crate::lock_watch::lock_watch_loop(
            Arc::downgrade(&ctl),
            crate::lock_watch::watch_interval(ctl.cfg.migration.restore_lock_timeout_ms),
        ));
        if ctl.cfg.conn.persist_interval_ms > 0 {
            tokio::spawn(persist_conns_loop(
                Arc::downgrade(&ctl),
                Duration::from_millis(ctl.cfg.conn.persist_interval_ms),
            ));
        }
        tracing::info!(switch = %address, kind = ctl.cfg.switch.kind.as_str(), "controller started");
        Ok(ctl)
    }

    /// Stops talking to the switch (and stops the embedded switch), after the state
    /// was written to `state.json` (a compaction of the journal, [`crate::store`]) and a
    /// last snapshot of the learned connections.
    pub async fn shutdown(&self) {
        if let Err(e) = self.save_deferred().await {
            tracing::warn!(error = %e, "saving a change answered before its save, at shutdown");
        }
        if let Err(e) = self.compact().await {
            tracing::warn!(error = %e, "writing the state to state.json at shutdown");
        }
        if let Err(e) = self.persist_conns(None).await {
            tracing::warn!(error = %e, "saving learned connections at shutdown");
        }
        self.link.close();
        if let Some(mut e) = self.embedded.lock().await.take() {
            e.shutdown().await;
        }
    }

    /// Publishes an event to Watch subscribers.
    pub fn emit(&self, kind: &str, action: &str, key: &str, detail: String) {
        let _ = self.events.send(api::Event {
            unix_ms: now_ms(),
            kind: kind.to_string(),
            action: action.to_string(),
            key: key.to_string(),
            detail,
        });
    }

    /// Waits until the switch is programmed (tests, benchmarks, startup).
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.inner.lock().await.synced && self.link.is_connected() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Brings the switch to the state: ports, state-derived tables, learned
    /// connections. `fresh`: the pipeline was just pushed (the switch is empty).
    pub async fn reconcile(&self, fresh: bool) -> Result<()> {
        let started = Instant::now();
        let mut g = self.inner.lock().await;
        g.synced = false;
        self.reconcile_ports(&g.state).await?;
        if fresh {
            g.prog.clear();
        } else {
            g.prog.resync(&self.link).await?;
        }
        let inner = &mut *g;
        let static_writes = inner
            .prog
            .apply_state(&self.link, &inner.state, self.shape)
            .await?
            .writes;
        let conn_writes = self.reconcile_conns(&mut g, fresh).await?;
        g.synced = true;
        Metrics::inc(&self.metrics.reconciles);
        if fresh {
            Metrics::inc(&self.metrics.pipeline_pushes);
        }
        tracing::info!(
            fresh,
            static_writes,
            conn_writes,
            entries = g.prog.len(),
            connections = g.conns.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "switch reconciled"
        );
        drop(g);
        self.emit(
            "switch",
            "reconciled",
            self.link.address(),
            format!("fresh={fresh}"),
        );
        Ok(())
    }

    async fn reconcile_ports(&self, state: &State) -> Result<()> {
        let want = wanted_ports(state, &self.uplinks);
        self.ports.prepare().await;
        let have = self.ports.list().await?;
        let (first, last) = (self.cfg.ports.first, self.cfg.ports.last);
        for (port, iface) in &have {
            // Only ports of the range are the controller's to remove; uplink ports are
            // outside it (config.rs) and stay.
            let owned = (first..=last).contains(port);
            if owned && want.get(port) != Some(iface) {
                self.ports.remove(*port).await?;
            }
        }
        for (port, iface) in &want {
            if have.get(port) != Some(iface) {
                if let Err(e) = self.ports.add(*port, iface).await {
                    let what = if (first..=last).contains(port) {
                        "re-attaching an endpoint's port"
                    } else {
                        "attaching a node's uplink port"
                    };
                    tracing::warn!(port, iface = %iface, error = %e, "{what}");
                }
            }
        }
        Ok(())
    }

    async fn reconcile_conns(&self, g: &mut Inner, fresh: bool) -> Result<usize> {
        let (have_fwd, have_rev): (HashSet<FiveTuple>, HashSet<FiveTuple>) = if fresh {
            (HashSet::new(), HashSet::new())
        } else {
            let fwd = self.link.read_table(tables::conn_table::ID, false).await?;
            let rev = self
                .link
                .read_table(tables::conn_reverse::ID, false)
                .await?;
            let have_fwd: HashSet<FiveTuple> = fwd
                .iter()
                .filter_map(|e| FiveTuple::from_matches(&e.r#match))
                .collect();
            // The switch kept running: it is the truth. A connection it no longer holds
            // (removed while this controller was down, after the last snapshot) is not
            // written back; every one it holds is adopted.
            let before = g.conns.len();
            g.conns.retain(|t, _| have_fwd.contains(t));
            let forgotten = before - g.conns.len();
            if forgotten > 0 {
                tracing::info!(
                    forgotten,
                    "learned connections no longer on the switch dropped from the snapshot"
                );
            }
            let (adopted, _) = conn::adopt(&g.state, &fwd);
            for (t, c) in adopted {
                g.conns.insert(t, c);
            }
            (
                have_fwd,
                rev.iter()
                    .filter_map(|e| FiveTuple::from_matches(&e.r#match))
                    .collect(),
            )
        };
        // Drop what no longer resolves (backend or service gone).
        let state = &g.state;
        g.conns.retain(|t, c| {
            conn::resolve(
                state,
                &conn::Learned {
                    tuple: *t,
                    service_id: c.service_id,
                    backend_id: c.backend_id,
                },
            )
            .is_some()
        });
        let want_fwd: HashSet<FiveTuple> = g.conns.iter().map(|(t, _)| *t).collect();
        let want_rev: HashSet<FiveTuple> = g.conns.iter().map(|(_, c)| c.reverse).collect();
        let mut ups = Vec::new();
        for t in have_fwd.difference(&want_fwd) {
            ups.push(table_update(Type::Delete, p::conn_key(t)));
        }
        for t in have_rev.difference(&want_rev) {
            ups.push(table_update(Type::Delete, p::conn_reverse_key(t)));
        }
        for (t, c) in g.conns.iter() {
            if !have_fwd.contains(t) {
                ups.push(table_update(
                    Type::Insert,
                    p::conn_pin(t, c.backend_id, self.idle_timeout_ns),
                ));
            }
            if !have_rev.contains(&c.reverse) {
                ups.push(table_update(
                    Type::Insert,
                    p::conn_reverse(&c.reverse, c.vip, c.vport, c.service_id),
                ));
            }
        }
        let n = ups.len();
        for chunk in ups.chunks(self.cfg.switch.write_batch) {
            match self.link.write(chunk.to_vec()).await {
                Ok(()) => {}
                // The switch applied what it could: a refused connection is lost, the
                // session and the rest of the reconciliation are not.
                Err(f) if f.per_update() => {
                    tracing::warn!(error = %f.summary(), "reconciling learned connections");
                    self.metrics.conn_install_errors.inc_by(f.failed() as u64);
                }
                Err(f) => return Err(Error::from(f)),
            }
        }
        Ok(n)
    }

    /// Hands a digest list to the digest task without waiting. When its queue is full
    /// the list is dropped, counted and acknowledged (the switch then reports its
    /// connections again on their next packet). Returns false when it was dropped.
    pub async fn enqueue_digest(&self, d: DigestList) -> bool {
        match self.digests.try_send(d) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(d) | mpsc::error::TrySendError::Closed(d)) => {
                Metrics::inc(&self.metrics.digest_lists_dropped);
                let n = self.metrics.digest_lists_dropped.get();
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n,
                        "digest lists dropped: {DIGEST_QUEUE_LISTS} are waiting already"
                    );
                }
                self.link.ack_digest(d.digest_id, d.list_id).await;
                false
            }
        }
    }

    /// Installs the connections of a digest list and acknowledges it.
    ///
    /// At most `conn.max_entries` connections are installed: beyond, new ones are
    /// refused and counted (installed ones are never evicted for them). A connection
    /// whose entries the switch refuses is not recorded, and what the switch may hold of
    /// it is deleted again; per-update errors are logged and counted, never a session
    /// error.
    pub async fn on_digest(&self, d: DigestList) {
        Metrics::inc(&self.metrics.digest_lists);
        let mut g = self.inner.lock().await;
        let cap = usize::try_from(self.cfg.conn.max_entries).unwrap_or(usize::MAX);
        let mut room = cap.saturating_sub(g.conns.len());
        let mut refused = 0u64;
        let mut new: Vec<(FiveTuple, conn::ConnRec)> = Vec::new();
        let mut seen = HashSet::new();
        for data in &d.data {
            let Some(m) = ConnLearn::from_p4data(data) else {
                tracing::warn!("malformed conn_learn digest member");
                continue;
            };
            let l = conn::Learned::from(&m);
            let kind = match m.event {
                ConnEvent::Learn => None,
                ConnEvent::Fin => Some(CloseKind::Fin),
                ConnEvent::Rst => Some(CloseKind::Rst),
            };
            if let Some(kind) = kind {
                // A close event names the client tuple on both sides; the backend side
                // carries backend id 0 (conn_reverse does not know the backend).
                let side = if m.backend_id == 0 {
                    conn::Side::Backend
                } else {
                    conn::Side::Client
                };
                let linger = Duration::from_millis(self.cfg.conn.close_linger_ms);
                g.conns
                    .close_side(l.tuple, side, kind, Instant::now(), linger);
                continue;
            }
            if g.conns.contains(&l.tuple) || !seen.insert(l.tuple) {
                continue;
            }
            let Some(c) = conn::resolve(&g.state, &l) else {
                tracing::debug!(?l, "digest for an unknown service or backend");
                continue;
            };
            if room == 0 {
                refused += 1;
                continue;
            }
            room -= 1;
            new.push((l.tuple, c));
        }
        if refused > 0 {
            let before = self.metrics.conns_refused.get();
            self.metrics.conns_refused.inc_by(refused);
            // Warn when the count passes a power of two: a storm logs a few lines.
            if (before + refused).ilog2() != before.checked_ilog2().unwrap_or(u32::MAX) {
                tracing::warn!(
                    refused_total = before + refused,
                    max_entries = cap,
                    "connection table full: new connections refused"
                );
            }
        }
        // Two updates per connection; whole connections per write.
        let per_write = (self.cfg.switch.write_batch / 2).max(1);
        for chunk in new.chunks(per_write) {
            let ups: Vec<_> = chunk
                .iter()
                .flat_map(|(t, c)| ConnTable::inserts(t, c, self.idle_timeout_ns))
                .collect();
            match self.link.write(ups).await {
                Ok(()) => {
                    for (t, c) in chunk {
                        g.conns.insert(*t, *c);
                        Metrics::inc(&self.metrics.conns_learned);
                    }
                }
                Err(f) if f.per_update() => {
                    // 0 = inserted, 6 = ALREADY_EXISTS (the switch had it: adopt it).
                    let ok = |k: Option<i32>| matches!(k, Some(0) | Some(6));
                    let mut undo = Vec::new();
                    for (i, (t, c)) in chunk.iter().enumerate() {
                        if ok(f.code(2 * i)) && ok(f.code(2 * i + 1)) {
                            g.conns.insert(*t, *c);
                            Metrics::inc(&self.metrics.conns_learned);
                        } else {
                            // Refused or unknown: whatever half the switch took goes.
                            Metrics::inc(&self.metrics.conn_install_errors);
                            for (j, u) in ConnTable::deletes(t, c).into_iter().enumerate() {
                                if f.code(2 * i + j) != Some(6) {
                                    undo.push(u);
                                }
                            }
                        }
                    }
                    if !f.only(6) {
                        tracing::warn!(error = %f.summary(), "installing learned connections");
                    }
                    if let Err(e) = self.link.write(undo).await {
                        tracing::debug!(error = %e.summary(), "removing what the switch took of refused connections");
                    }
                }
                Err(f) => {
                    // No per-update answer (the session broke): the next reconciliation
                    // adopts what the switch holds.
                    tracing::warn!(error = %f.summary(), "installing learned connections");
                    break;
                }
            }
        }
        drop(g);
        self.link.ack_digest(d.digest_id, d.list_id).await;
    }

    /// Handles a close event of a connection: `tuple` is its client tuple (client ->
    /// VIP) or its backend's reply tuple. A RST, or a FIN once both sides sent one,
    /// schedules the removal of its entries `conn.close_linger_ms` later (0 = at once);
    /// the close task ([`Controller::reap_closed`]) deletes them then. A tuple that is no
    /// installed connection changes nothing.
    pub async fn on_close(&self, tuple: FiveTuple, kind: CloseKind) -> CloseOutcome {
        let out = {
            let mut g = self.inner.lock().await;
            self.note_close(&mut g, tuple, kind)
        };
        if self.cfg.conn.close_linger_ms == 0 && matches!(out, CloseOutcome::Scheduled(_)) {
            self.reap_closed(Instant::now()).await;
        }
        out
    }

    /// [`Controller::on_close`] for a caller that holds the controller lock already (the
    /// digest handler): records the close and schedules the removal; the close task
    /// deletes the entries once the linger is over (within its tick when the linger is 0).
    pub fn note_close(&self, g: &mut Inner, tuple: FiveTuple, kind: CloseKind) -> CloseOutcome {
        let linger = Duration::from_millis(self.cfg.conn.close_linger_ms);
        g.conns.close(&tuple, kind, Instant::now(), linger)
    }

    /// Deletes the closed connections whose linger ended by `now`; returns how many.
    pub async fn reap_closed(&self, now: Instant) -> usize {
        let mut g = self.inner.lock().await;
        let due = g.conns.closed_due(now);
        if due.is_empty() {
            return 0;
        }
        let mut ups = Vec::new();
        for t in &due {
            if let Some(c) = g.conns.remove(t) {
                ups.extend(ConnTable::deletes(t, &c));
                Metrics::inc(&self.metrics.conns_closed);
            }
        }
        for chunk in ups.chunks(self.cfg.switch.write_batch) {
            if let Err(f) = self.link.write(chunk.to_vec()).await {
                if !f.only(5) {
                    tracing::warn!(error = %f.summary(), "removing closed connections");
                }
            }
        }
        due.len()
    }

    /// Removes connections the switch reports idle.
    pub async fn on_idle(&self, n: IdleTimeoutNotification) {
        let tuples: Vec<FiveTuple> = n
            .table_entry
            .iter()
            .filter(|e| e.table_id == tables::conn_table::ID)
            .filter_map(|e| FiveTuple::from_matches(&e.r#match))
            .collect();
        self.expire(&tuples).await;
    }

    async fn expire(&self, tuples: &[FiveTuple]) {
        if tuples.is_empty() {
            return;
        }
        let mut g = self.inner.lock().await;
        let mut ups = Vec::new();
        for t in tuples {
            match g.conns.remove(t) {
                Some(c) => ups.extend(ConnTable::deletes(t, &c)),
                None => ups.push(table_update(Type::Delete, p::conn_key(t))),
            }
        }
        let n = tuples.len();
        for chunk in ups.chunks(self.cfg.switch.write_batch) {
            if let Err(f) = self.link.write(chunk.to_vec()).await {
                if !f.only(5) {
                    tracing::warn!(error = %f.summary(), "removing idle connections");
                }
            }
        }
        for _ in 0..n {
            Metrics::inc(&self.metrics.conns_expired);
        }
    }

    /// One controller-driven idle sweep (fallback for targets without
    /// notifications): removes conn_table entries idle longer than the timeout.
    pub async fn sweep(&self) -> Result<usize> {
        if self.idle_timeout_ns <= 0 || !self.link.is_connected() {
            return Ok(0);
        }
        let entries = self.link.read_table(tables::conn_table::ID, true).await?;
        let idle: Vec<FiveTuple> = entries
            .iter()
            .filter(|e| {
                e.time_since_last_hit
                    .as_ref()
                    .map(|t| t.elapsed_ns >= self.idle_timeout_ns)
                    .unwrap_or(false)
            })
            .filter_map(|e| FiveTuple::from_matches(&e.r#match))
            .collect();
        self.expire(&idle).await;
        Ok(idle.len())
    }

    /// Sampled gauges for metrics and status.
    pub async fn gauges(&self) -> Gauges {
        let g = self.inner.lock().await;
        use std::sync::atomic::Ordering::Relaxed;
        Gauges {
            switch_connected: self.link.is_connected() && g.synced,
            endpoints: g.state.endpoints.len(),
            services: g.state.services.len(),
            active_migrations: g.state.migrations.iter().filter(|m| m.active()).count(),
            table_entries: g.prog.len(),
            conn_entries: g.conns.len(),
            switch_writes: self.link.writes.load(Relaxed),
            switch_updates: self.link.updates.load(Relaxed),
            switch_sessions: self.link.reconnects.load(Relaxed),
            commit_queue: self.queued(),
            netns_sockets: self.addr_sockets.len(),
        }
    }
}

/// The ports the switch should have (number → interface): the attached interface of
/// every endpoint with a port of its own ([`crate::state::EndpointRec::attached_port`]),
/// and every configured uplink with an interface to attach.
pub fn wanted_ports(state: &State, uplinks: &[Uplink]) -> BTreeMap<u32, String> {
    let mut want: BTreeMap<u32, String> = state
        .endpoints
        .values()
        .filter_map(|e| Some((e.attached_port()?, e.host_ifname.clone())))
        .collect();
    for u in uplinks.iter().filter(|u| !u.interface.is_empty()) {
        want.insert(u.port, u.interface.clone());
    }
    want
}

/// Attempts of one reconciliation whose table writes the switch refused, after
/// which the pipeline is pushed again (once per switch session).
const REPUSH_AFTER_FAILURES: u32 = 3;

async fn event_loop(ctl: std::sync::Weak<Controller>, mut rx: mpsc::Receiver<SwitchEvent>) {
    while let Some(ev) = rx.recv().await {
        let Some(ctl) = ctl.upgrade() else { return };
        match ev {
            SwitchEvent::Up { generation, fresh } => {
                let mut delay = Duration::from_millis(20);
                let mut fresh = fresh;
                let mut repushed = false;
                let mut refused = 0u32;
                for attempt in 1.. {
                    match ctl.reconcile(fresh).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(generation, attempt, error = %e, "reconciling the switch");
                            if !ctl.link.is_connected() {
                                break;
                            }
                            fresh = false;
                            if matches!(e, Error::SwitchWrite(_)) {
                                refused += 1;
                            }
                            if refused >= REPUSH_AFTER_FAILURES && !repushed {
                                // The switch keeps refusing the same reconcile's writes on a
                                // live session: its P4Runtime layer disagrees with its tables
                                // (BMv2 tables edited through its own CLI). Start the switch
                                // over once; every table is then written again. Other
                                // failures (a port that cannot be attached) are not helped
                                // by this and only retried.
                                repushed = true;
                                tracing::warn!(
                                    generation,
                                    attempts = attempt,
                                    "reconciling keeps failing; pushing the pipeline again \
                                     (the switch's tables are cleared and rewritten)"
                                );
                                match ctl.link.repush_pipeline().await {
                                    Ok(()) => {
                                        fresh = true;
                                        continue;
                                    }
                                    Err(e) => {
                                        tracing::warn!(generation, error = %e, "pushing the pipeline again")
                                    }
                                }
                            }
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(2));
                        }
                    }
                }
            }
            SwitchEvent::Down { .. } => {
                ctl.inner.lock().await.synced = false;
                ctl.emit("switch", "disconnected", ctl.link.address(), String::new());
            }
            SwitchEvent::Digest(d) => {
                ctl.enqueue_digest(d).await;
            }
            SwitchEvent::Idle(n) => ctl.on_idle(n).await,
        }
    }
}

async fn digest_loop(ctl: std::sync::Weak<Controller>, mut rx: mpsc::Receiver<DigestList>) {
    while let Some(d) = rx.recv().await {
        let Some(ctl) = ctl.upgrade() else { return };
        ctl.on_digest(d).await;
    }
}

/// How often the close task looks for connections whose linger ended: a quarter of the
/// linger, between 10 ms and 500 ms.
fn close_tick(linger_ms: u64) -> Duration {
    Duration::from_millis((linger_ms / 4).clamp(10, 500))
}

async fn close_loop(ctl: std::sync::Weak<Controller>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(ctl) = ctl.upgrade() else { return };
        ctl.reap_closed(Instant::now()).await;
    }
}

impl Controller {
    /// Writes the learned connections to `conns.json` unless the table is still
    /// at version `last`; returns the version written (or found unchanged).
    pub async fn persist_conns(&self, last: Option<u64>) -> Result<u64> {
        let (version, snap) = {
            let g = self.inner.lock().await;
            let v = g.conns.version();
            if Some(v) == last {
                return Ok(v);
            }
            (v, conn_store::snapshot(&g.conns))
        };
        let dir = self.cfg.state_dir.clone();
        tokio::task::spawn_blocking(move || conn_store::save(&dir, &snap))
            .await
            .map_err(|e| Error::Internal(format!("saving learned connections: {e}")))??;
        Ok(version)
    }
}

async fn persist_conns_loop(ctl: std::sync::Weak<Controller>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut last = None;
    loop {
        tick.tick().await;
        let Some(ctl) = ctl.upgrade() else { return };
        match ctl.persist_conns(last).await {
            Ok(v) => last = Some(v),
            Err(e) => tracing::warn!(error = %e, "saving learned connections"),
        }
    }
}

async fn sweep_loop(ctl: std::sync::Weak<Controller>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(ctl) = ctl.upgrade() else { return };
        if let Err(e) = ctl.sweep().await {
            tracing::debug!(error = %e, "idle sweep");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::EndpointRec;

    fn ep(key: &str, port: u32, host_if: &str, behind_node: bool) -> EndpointRec {
        let ip = std::net::Ipv4Addr::new(10, 88, 0, port as u8);
        EndpointRec {
            host_ifname: host_if.into(),
            behind_node,
            next_hop_mac: behind_node.then_some([2, 0, 0, 0, 0x0b, 1]),
            ..EndpointRec::sample(key, ip, port)
        }
    }

    /// The switch should have the pods' own interfaces and the uplinks the controller
    /// attaches; an endpoint routed behind its node adds no port of its own.
    #[test]
    fn wanted_ports_are_the_pods_own_and_the_configured_uplinks() {
        let mut st = State::new();
        for e in [
            ep("a", 1, "veth-a", false),
            ep("b", 300, "veth-b", true),
            ep("c", 301, "veth-c", true),
            ep("d", 2, "", false),
        ] {
            st.endpoints.insert(e.key.clone(), e);
        }
        let uplinks = crate::config::sample_uplinks();
        let want = wanted_ports(&st, &uplinks);
        assert_eq!(
            want,
            BTreeMap::from([(1, "veth-a".to_string()), (300, "p4lbup-b".to_string())])
        );
    }
}
