//! The controller core: the state behind one lock, and the task that reacts to the
//! switch (reconcile on every new session, digests, idle timeouts). Changes of the
//! state go through [`crate::commit`].

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, Mutex};

use p4lb_p4::entries as p;
use p4lb_p4::{tables, FiveTuple};
use p4lb_proto::api;
use p4lb_proto::p4runtime::{update::Type, DigestList, IdleTimeoutNotification};

use crate::commit::{self, QueueTx};
pub use crate::commit::{Change, Committed, OnAck};
use crate::config::{Config, SwitchKind};
use crate::conn::{self, ConnTable};
use crate::conn_store;
use crate::desired::{desired, Shape};
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
    embedded: Mutex<Option<EmbeddedSwitch>>,
    pub(crate) queue: QueueTx,
}

impl Controller {
    /// Loads the persisted state, starts the switch session (and the embedded
    /// software switch when no address is configured) and the reconciler.
    pub async fn start(cfg: Config) -> anyhow::Result<Arc<Controller>> {
        use anyhow::Context;
        cfg.validate()?;
        if let Some(note) = cfg.digest_timeout_note() {
            tracing::info!("{note}");
        }
        let store = Store::open(&cfg.state_dir)?;
        let state = store.load().context("loading persisted state")?;
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
        let address = if cfg.switch.address.is_empty() && cfg.switch.kind == SwitchKind::Software {
            let e = EmbeddedSwitch::start(&cfg).await?;
            let a = e.address.clone();
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
        };
        let (link, rx) = SwitchSession::spawn(target);
        let ports = match cfg.switch.kind {
            SwitchKind::Software => PortAttacher::Software(link.clone()),
            SwitchKind::Bmv2 => PortAttacher::bmv2(&cfg.switch.thrift),
        };
        let (events, _) = broadcast::channel(1024);
        let (queue, queue_rx) = commit::queue();
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
            }),
            digest_id: ids.conn_learn_digest,
            idle_timeout_ns: cfg.idle_timeout_ns(),
            cfg,
            embedded: Mutex::new(embedded),
            queue,
        });
        tokio::spawn(commit::commit_loop(Arc::downgrade(&ctl), queue_rx));
        tokio::spawn(event_loop(Arc::downgrade(&ctl), rx));
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

    /// Stops talking to the switch (and stops the embedded switch), after a last
    /// snapshot of the learned connections.
    pub async fn shutdown(&self) {
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
        let want = desired(&g.state, self.shape);
        let static_writes = g.prog.apply(&self.link, &want).await?;
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
        let want: BTreeMap<u32, String> = state
            .endpoints
            .values()
            .filter(|e| !e.host_ifname.is_empty())
            .map(|e| (e.switch_port, e.host_ifname.clone()))
            .collect();
        let have = self.ports.list().await?;
        let (first, last) = (self.cfg.ports.first, self.cfg.ports.last);
        for (port, iface) in &have {
            let owned = (first..=last).contains(port);
            if owned && want.get(port) != Some(iface) {
                self.ports.remove(*port).await?;
            }
        }
        for (port, iface) in &want {
            if have.get(port) != Some(iface) {
                if let Err(e) = self.ports.add(*port, iface).await {
                    tracing::warn!(port, iface = %iface, error = %e, "re-attaching an endpoint's port");
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
            let (adopted, _) = conn::adopt(&g.state, &fwd);
            for (t, c) in adopted {
                g.conns.insert(t, c);
            }
            (
                fwd.iter()
                    .filter_map(|e| FiveTuple::from_matches(&e.r#match))
                    .collect(),
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
            self.link.write(chunk.to_vec()).await.map_err(Error::from)?;
        }
        Ok(n)
    }

    /// Installs the connections of a digest list (one batch) and acknowledges it.
    pub async fn on_digest(&self, d: DigestList) {
        Metrics::inc(&self.metrics.digest_lists);
        let mut g = self.inner.lock().await;
        let mut ups = Vec::new();
        let mut new: Vec<(FiveTuple, conn::ConnRec)> = Vec::new();
        let mut seen = HashSet::new();
        for data in &d.data {
            let Some(l) = conn::parse_learned(data) else {
                tracing::warn!("malformed conn_learn digest member");
                continue;
            };
            if g.conns.contains(&l.tuple) || !seen.insert(l.tuple) {
                continue;
            }
            let Some(c) = conn::resolve(&g.state, &l) else {
                tracing::debug!(?l, "digest for an unknown service or backend");
                continue;
            };
            ups.extend(ConnTable::inserts(&l.tuple, &c, self.idle_timeout_ns));
            new.push((l.tuple, c));
        }
        if !ups.is_empty() {
            match self.link.write(ups).await {
                Ok(()) => {
                    for (t, c) in new.drain(..) {
                        g.conns.insert(t, c);
                        Metrics::inc(&self.metrics.conns_learned);
                    }
                }
                Err(f) if !f.codes.is_empty() => {
                    for (i, (t, c)) in new.drain(..).enumerate() {
                        let ok = |k: Option<&i32>| matches!(k, Some(0) | Some(6) | None);
                        if ok(f.codes.get(2 * i)) && ok(f.codes.get(2 * i + 1)) {
                            g.conns.insert(t, c);
                            Metrics::inc(&self.metrics.conns_learned);
                        }
                    }
                    if !f.only(6) {
                        tracing::warn!(error = %f.summary(), "installing learned connections");
                    }
                }
                Err(f) => tracing::warn!(error = %f.summary(), "installing learned connections"),
            }
        }
        drop(g);
        self.link.ack_digest(d.digest_id, d.list_id).await;
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
        if let Err(f) = self.link.write(ups).await {
            if !f.only(5) {
                tracing::warn!(error = %f.summary(), "removing idle connections");
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
        }
    }
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
            SwitchEvent::Digest(d) => ctl.on_digest(d).await,
            SwitchEvent::Idle(n) => ctl.on_idle(n).await,
        }
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
