//! What happens at checkpoint and restore. Migration events move a backend from a
//! source endpoint to a target endpoint without dropping its clients' connections:
//!
//! - LOCK (source): the source's backend row → `backend_locked`, its routes →
//!   `route_locked`. Nothing reaches the frozen process; nothing reaches the target.
//! - CHECKPOINTED, RESTORE_STARTED: recorded (RESTORE_STARTED also locks a target
//!   that is already registered). A RESTORE_STARTED that leaves the switch as it is
//!   (the target was registered locked) is answered before it is saved
//!   ([`Controller::commit_deferred`]): a crash loses at most that record, and the
//!   restore goes on from `checkpointed`. Every other event is saved before its
//!   answer.
//! - RESTORED_AT (target): the repoint. The target takes over the source's backend id
//!   (so `conn_table` entries pinned to it follow with no change), the backend row
//!   points at the target's port and MAC, and the source's address moves with the
//!   container: it becomes a migrated address of the target, routed to the target.
//!   The restored sockets exist, so the rows forward at once: this write is the
//!   switchover.
//! - UNLOCK (target, or source if nothing was restored): forward again and end the
//!   migration. An UNLOCK from a target that never sent RESTORED_AT repoints first.
//! - ABORT: unlock the source. SNAPSHOT_DONE: unlock the source of a checkpoint that
//!   was not a migration (leave-running).
//!
//! The container's old address moves with it: it is configured in the target netns
//! and the backend keeps DNATing to it, so neither the images nor `conn_reverse`
//! entries change (docs/migration.md, section 1).
//!
//! # States and events
//!
//! A migration's [`MigrationState`] changes only through [`next_state`]; each event
//! has one handler (`on_lock`, `on_checkpointed`, `on_restore_started`,
//! `on_restored_at`, `on_unlock`, `on_end`) for its side effects, and
//! [`Controller::migration_event`] finds the migration, asks [`next_state`] and calls
//! the handler. LOCK starts a new migration in `locked`; it is refused (FAILED_PRECONDITION
//! "endpoint … is already locked by migration …") while the endpoint is the source of
//! an active one. Every other event is about an existing migration:
//!
//! | state \ event | CHECKPOINTED | RESTORE_STARTED | RESTORED_AT | UNLOCK | ABORT | SNAPSHOT_DONE |
//! |---|---|---|---|---|---|---|
//! | `locked` | `checkpointed` | `restoring` | `restored` | `done` | `aborted` | `done` |
//! | `checkpointed` | `checkpointed` | `restoring` | `restored` | `done` | `aborted` | `done` |
//! | `restoring` | `restoring` | `restoring` | `restored` | `done` | `aborted` | `done` |
//! | `restored` | `restored` | `restoring` | `restored` | `done` | `aborted` | `done` |
//! | `done` | refused | refused | refused | refused | refused | refused |
//! | `aborted` | refused | refused | refused | refused | refused | refused |
//!
//! "refused": FAILED_PRECONDITION "migration `id` is already done|aborted". A handler
//! may still refuse an allowed transition for its own reasons (an unknown caller,
//! an identity that does not match, a target that is not active); then nothing changes.
//!
//! The restore-side events (RESTORE_STARTED, RESTORED_AT, UNLOCK) are accepted only
//! from the migration's designated target (`is_designated_target`): an event names
//! a migration but never chooses whose backend moves.
//!
//! # Nodes
//!
//! A caller on the Unix socket proves its endpoint with its identity (resolved here); a
//! caller over TCP names it (`endpoint_key`), and a node may name only its own
//! endpoints ([`Caller::Node`]). A migration records its source's node; a restore on
//! another node (its registration with `restore_of_ip`, or of the source's own key) is
//! allowed only through a migration that the source's checkpoint started
//! (`checkpointed` or `restoring`) and whose `target_node` is that node
//! ([`cross_node_restore`]). `target_node` is set by the source's node, an admin or a
//! local caller, on LOCK or while the migration is still `locked`.

use std::time::Instant;

use p4lb_api::NO_ENDPOINT_FOR_CALLER;
use p4lb_proto::api::{self, MigrationPhase};

use crate::addr::parse_opt_ipv4;
use crate::caller::Caller;
use crate::controller::{Change, Controller, Inner};
use crate::error::{Error, Result};
use crate::identity::{self, Netns};
use crate::metrics::Metrics;
use crate::services::refresh_services;
use crate::state::{now_us, EndpointRec, EndpointState, MigrationRec, MigrationState, State};

/// PERMISSION_DENIED unless node `node` may restore migration `m`'s source: the
/// source's own node, or the node `m` names as its target once the source's checkpoint
/// finished (`checkpointed` or `restoring`).
pub fn cross_node_restore(m: &MigrationRec, node: &str) -> Result<()> {
    if m.source_node == node {
        return Ok(());
    }
    let checkpointed = matches!(
        m.state,
        MigrationState::Checkpointed | MigrationState::Restoring
    );
    if checkpointed && m.target_node == node {
        return Ok(());
    }
    let target = if m.target_node.is_empty() {
        String::from("it names no target node")
    } else {
        format!("its target node is {}", m.target_node)
    };
    Err(Error::denied(format!(
        "node {node} may not restore endpoint {} of node {}: only through a checkpointed \
         migration that names {node} as its target_node (migration {} is {}, {target})",
        m.source_key, m.source_node, m.id, m.state
    )))
}

/// The phase of a MigrationEvent request (UNSPECIFIED and unknown values refused).
pub fn parse_phase(phase: i32) -> Result<MigrationPhase> {
    MigrationPhase::try_from(phase)
        .ok()
        .filter(|p| *p != MigrationPhase::Unspecified)
        .ok_or_else(|| Error::invalid(format!("phase {phase} is not a migration phase")))
}

/// The state migration `id` moves to on `phase` (the table in the module doc), or
/// why the event is refused. LOCK is no event of an existing migration: it starts one.
pub fn next_state(
    id: &str,
    state: MigrationState,
    phase: MigrationPhase,
) -> Result<MigrationState> {
    use MigrationState as S;
    if !state.active() {
        return Err(Error::precondition(format!(
            "migration {id} is already {state}"
        )));
    }
    Ok(match phase {
        MigrationPhase::Checkpointed if state == S::Locked => S::Checkpointed,
        MigrationPhase::Checkpointed => state,
        MigrationPhase::RestoreStarted => S::Restoring,
        MigrationPhase::RestoredAt => S::Restored,
        MigrationPhase::Unlock | MigrationPhase::SnapshotDone => S::Done,
        MigrationPhase::Abort => S::Aborted,
        MigrationPhase::Lock | MigrationPhase::Unspecified => {
            return Err(Error::invalid(format!(
                "{} is no event of migration {id}",
                phase.as_str_name()
            )))
        }
    })
}

/// What a migration event answers: the migration after it, and the caller's
/// endpoint after it (`None` when the caller has none), which the action script
/// would otherwise need a second call for.
#[derive(Debug, Clone)]
pub struct EventAnswer {
    pub migration: MigrationRec,
    pub endpoint: Option<EndpointRec>,
}

/// One migration event as the handlers see it.
struct Event<'a> {
    r: &'a api::MigrationEventRequest,
    /// The caller's namespace (callers on the Unix socket); `None` for callers over
    /// TCP, which name their endpoint instead (`endpoint_key`).
    ns: Option<&'a Netns>,
    /// How the caller named its endpoint, for messages.
    described: String,
    /// The active endpoint living in the caller's netns, or the one it named.
    caller: Option<String>,
    now: i64,
}

impl Event<'_> {
    /// The caller's endpoint, or PERMISSION_DENIED.
    fn registered_caller(&self) -> Result<String> {
        self.caller
            .clone()
            .ok_or_else(|| Error::denied(format!("{} is no registered endpoint", self.described)))
    }
}

/// What a handler changed besides the state, for the commit.
#[derive(Debug, Default)]
struct Effects {
    /// The switch must take the change before the caller is answered.
    require_switch: bool,
    /// The backend moved to the target: the switchover.
    repointed: bool,
    /// A backend whose learned connections must go.
    drop_backend: Option<u16>,
    /// The caller may be answered before the change is durable
    /// ([`Controller::commit_deferred`]): its loss on a crash is recovered
    /// without it (see `on_restore_started`).
    save_after_answer: bool,
}

/// The active endpoint living in `ns` (preferring one whose address is configured there).
fn endpoint_in(st: &State, ns: &Netns) -> Option<String> {
    let mut candidates: Vec<_> = st
        .endpoints
        .values()
        .filter(|e| e.active() && e.netns_inode == ns.inode && e.netns_inode != 0)
        .collect();
    if let Some(addrs) = &ns.addrs {
        candidates.sort_by_key(|e| !addrs.contains(&e.ip));
    }
    candidates.first().map(|e| e.key.clone())
}

/// Whether endpoint `key` is the one migration `m` designated to restore it. The
/// target is chosen by the registration, never by the event: the source itself
/// (restored in place, or re-registered under its old id), the target the migration
/// already recorded, or — while none is recorded — an endpoint registered as a restore
/// of the migration's source address (`restore_of_ip`, the CNI plugin's locked ADD).
fn is_designated_target(st: &State, m: &MigrationRec, key: &str) -> bool {
    if key == m.source_key {
        return true;
    }
    if !m.target_key.is_empty() {
        return key == m.target_key;
    }
    st.endpoints
        .get(key)
        .is_some_and(|e| e.restore_of_ip.is_some() && e.restore_of_ip == m.source_ip)
}

/// PERMISSION_DENIED unless `key` is migration `i`'s designated target (on the source's
/// node or the migration's target node).
fn require_designated_target(st: &State, i: usize, key: &str, phase: &str) -> Result<()> {
    let m = &st.migrations[i];
    if let Some(e) = st.endpoints.get(key) {
        if e.node != m.source_node && e.node != m.target_node {
            return Err(Error::denied(format!(
                "endpoint {key} of node {} may not send {phase} for migration {}: its source \
                 is on node {} and it names {} as target node",
                e.node,
                m.id,
                m.source_node,
                if m.target_node.is_empty() {
                    "no other node"
                } else {
                    m.target_node.as_str()
                }
            )));
        }
    }
    if is_designated_target(st, m, key) {
        return Ok(());
    }
    let expected = if !m.target_key.is_empty() {
        format!("its target is endpoint {}", m.target_key)
    } else {
        match m.source_ip {
            Some(ip) => format!(
                "its target is the endpoint registered as a restore of {ip} (or its source {})",
                m.source_key
            ),
            None => format!("its only endpoint is its source {}", m.source_key),
        }
    };
    Err(Error::denied(format!(
        "endpoint {key} may not send {phase} for migration {}: {expected}",
        m.id
    )))
}

impl Controller {
    /// The caller is endpoint `key`: its namespace is the endpoint's (local callers), or
    /// it named `key` (callers over TCP, whose node was checked when it named it).
    fn verify_endpoint(&self, st: &State, ev: &Event, key: &str) -> Result<()> {
        let e = st
            .endpoints
            .get(key)
            .ok_or_else(|| Error::not_found(format!("no endpoint {key}")))?;
        let Some(ns) = ev.ns else {
            if ev.caller.as_deref() == Some(key) {
                return Ok(());
            }
            return Err(Error::denied(format!(
                "{} is not endpoint {key}, which this event is about",
                ev.described
            )));
        };
        // A migration target may carry the source's address instead of its own.
        let others: Vec<_> = e
            .migrated_ips
            .iter()
            .copied()
            .chain(e.restore_of_ip)
            .collect();
        let ok_ip = identity::configured_ip(ns, e.ip, &others);
        identity::verify(
            ns,
            e.netns_inode,
            ok_ip,
            &format!("endpoint {key}"),
            self.cfg.identity.check_addresses,
        )
    }

    /// Finds the migration an event is about: by id, by source address, or by the
    /// caller's endpoint.
    fn find_migration(
        &self,
        st: &State,
        r: &api::MigrationEventRequest,
        caller: Option<&str>,
    ) -> Result<usize> {
        if !r.migration_id.is_empty() {
            return st
                .migrations
                .iter()
                .position(|m| m.id == r.migration_id)
                .ok_or_else(|| Error::not_found(format!("no migration {}", r.migration_id)));
        }
        if let Some(ip) = parse_opt_ipv4("source_ip", &r.source_ip)? {
            return st
                .migrations
                .iter()
                .rposition(|m| m.active() && m.source_ip == Some(ip))
                .ok_or_else(|| Error::not_found(format!("no active migration of {ip}")));
        }
        if let Some(key) = caller {
            let e = st.endpoints.get(key);
            let found = st.migrations.iter().rposition(|m| {
                m.active()
                    && (m.source_key == key
                        || m.target_key == key
                        || e.map(|e| {
                            m.source_ip.is_some()
                                && (e.restore_of_ip == m.source_ip || Some(e.ip) == m.source_ip)
                        })
                        .unwrap_or(false))
            });
            if let Some(i) = found {
                return Ok(i);
            }
        }
        Err(Error::not_found(
            "no migration found: give migration_id or source_ip",
        ))
    }

    /// MigrationEvent from a caller on the controller's own host.
    pub async fn migration_event(&self, r: api::MigrationEventRequest) -> Result<MigrationRec> {
        self.migration_event_as(&Caller::InProcess, r)
            .await
            .map(|a| a.migration)
    }

    /// MigrationEvent: finds the migration, checks the transition, runs the event's
    /// handler and commits the result.
    pub async fn migration_event_as(
        &self,
        caller: &Caller,
        r: api::MigrationEventRequest,
    ) -> Result<EventAnswer> {
        let received = Instant::now();
        let phase = parse_phase(r.phase)?;
        if !r.target_node.is_empty() {
            crate::nodes::check_node_name("target_node", &r.target_node)?;
        }
        let ns = if caller.is_local() {
            if !r.endpoint_key.is_empty() {
                return Err(Error::invalid(
                    "endpoint_key is for callers over TCP; a local caller proves its endpoint \
                     with identity",
                ));
            }
            Some(identity::resolve_with(
                r.identity.as_ref(),
                self.cfg.identity.check_addresses,
                Some(&self.addr_sockets),
            )?)
        } else {
            None
        };
        let resolved = received.elapsed();
        let mut g = self.inner.lock().await;
        let locked = received.elapsed();
        let mut st = g.state.clone();
        let (described, endpoint) = match &ns {
            Some(ns) => (ns.described.clone(), endpoint_in(&st, ns)),
            None => (
                format!("endpoint_key {:?}", r.endpoint_key),
                self.named_endpoint(&st, caller, &r.endpoint_key)?,
            ),
        };
        let ev = Event {
            r: &r,
            ns: ns.as_ref(),
            described,
            caller: endpoint,
            now: now_us(),
        };
        let (idx, fx) = if phase == MigrationPhase::Lock {
            let (i, fx) = self.on_lock(&mut st, &ev)?;
            self.set_target_node(&mut st, i, caller, &r.target_node, MigrationState::Locked)?;
            (i, fx)
        } else {
            let i = self.find_migration(&st, &r, ev.caller.as_deref())?;
            let before = st.migrations[i].state;
            let next = next_state(&st.migrations[i].id, st.migrations[i].state, phase)?;
            let fx = match phase {
                MigrationPhase::Checkpointed => self.on_checkpointed(&mut st, i, &ev)?,
                MigrationPhase::RestoreStarted => self.on_restore_started(&mut st, i, &ev)?,
                MigrationPhase::RestoredAt => self.on_restored_at(&mut st, i, &ev)?,
                MigrationPhase::Unlock => self.on_unlock(&mut st, i, &ev)?,
                // ABORT and SNAPSHOT_DONE (next_state refused LOCK and UNSPECIFIED).
                _ => self.on_end(&mut st, i, &ev, phase == MigrationPhase::Abort)?,
            };
            st.migrations[i].state = next;
            self.set_target_node(&mut st, i, caller, &r.target_node, before)?;
            (i, fx)
        };
        let caller_key = ev.caller.clone();
        let handled = received.elapsed();
        self.commit_event(&mut g, st, idx, fx, received).await?;
        // Where an event's time goes, for a slow switchover or action script.
        tracing::debug!(
            phase = phase.as_str_name(),
            identity_us = resolved.as_micros() as u64,
            wait_us = (locked - resolved).as_micros() as u64,
            handler_us = (handled - locked).as_micros() as u64,
            commit_us = (received.elapsed() - handled).as_micros() as u64,
            "migration event timings"
        );
        let rec = g.state.migrations[idx].clone();
        let endpoint = caller_key.and_then(|k| g.state.endpoints.get(&k).cloned());
        drop(g);
        match phase {
            MigrationPhase::Lock => Metrics::inc(&self.metrics.migrations_started),
            MigrationPhase::Abort => Metrics::inc(&self.metrics.migrations_aborted),
            MigrationPhase::Unlock | MigrationPhase::SnapshotDone => {
                Metrics::inc(&self.metrics.migrations_done)
            }
            _ => {}
        }
        tracing::info!(
            id = %rec.id,
            phase = phase.as_str_name(),
            source = %rec.source_key,
            target = %rec.target_key,
            switchover_us = rec.switchover_us,
            stall_us = rec.stall_us,
            "migration event"
        );
        self.emit(
            "migration",
            phase.as_str_name(),
            &rec.id,
            rec.state.as_str().to_string(),
        );
        Ok(EventAnswer {
            migration: rec,
            endpoint,
        })
    }

    /// The endpoint a caller over TCP named (`endpoint_key`). An admin may name none, or
    /// one that is not registered or not active (`None`: the event's handler decides). A
    /// node must name an active endpoint of its own: every event of a node is about one of
    /// its endpoints (INVALID_ARGUMENT, NOT_FOUND or PERMISSION_DENIED otherwise).
    fn named_endpoint(&self, st: &State, caller: &Caller, key: &str) -> Result<Option<String>> {
        let node = caller.restricted_to();
        if key.is_empty() {
            if let Some(n) = node {
                return Err(Error::invalid(format!(
                    "node {n}: a migration event over TCP names its endpoint (endpoint_key)"
                )));
            }
            return Ok(None);
        }
        let Some(e) = st.endpoints.get(key) else {
            if node.is_some() {
                return Err(Error::not_found(format!("no endpoint {key}")));
            }
            return Ok(None);
        };
        caller.require_own(&format!("endpoint {key}"), &e.node)?;
        if !e.active() && node.is_some() {
            return Err(Error::precondition(format!(
                "endpoint {key} is {}: it sends no migration events",
                e.state.as_str()
            )));
        }
        Ok(e.active().then(|| key.to_string()))
    }

    /// Records `target_node` on migration `i` (nothing when empty): from the source's
    /// node, an admin or a local caller, while the migration was `locked` before this
    /// event; afterwards only the value it has already.
    fn set_target_node(
        &self,
        st: &mut State,
        i: usize,
        caller: &Caller,
        target: &str,
        before: MigrationState,
    ) -> Result<()> {
        let m = &mut st.migrations[i];
        if target.is_empty() || m.target_node == target {
            return Ok(());
        }
        if let Some(n) = caller.restricted_to() {
            if n != m.source_node {
                return Err(Error::denied(format!(
                    "node {n} may not set the target node of migration {}: only its source's \
                     node {} (or an admin) may",
                    m.id, m.source_node
                )));
            }
        }
        if before != MigrationState::Locked {
            return Err(Error::precondition(format!(
                "migration {} is {before}: its target node is set before it is checkpointed \
                 (it is {:?})",
                m.id, m.target_node
            )));
        }
        m.target_node = target.to_string();
        Ok(())
    }

    /// Commits the state an event produced; records the switchover when the
    /// backend moved.
    async fn commit_event(
        &self,
        g: &mut Inner,
        mut st: State,
        idx: usize,
        fx: Effects,
        received: Instant,
    ) -> Result<()> {
        refresh_services(&mut st);
        let switchover = fx.repointed;
        let carried = g.conns.count_backend(st.migrations[idx].backend_id) as u32;
        let mut change = Change::new(st);
        change.require_switch = fx.require_switch;
        change.drop_backends.extend(fx.drop_backend);
        if switchover {
            change.on_ack = Some(Box::new(move |s: &mut State, acked: Instant| {
                let m = &mut s.migrations[idx];
                m.switchover_us = acked.duration_since(received).as_micros() as i64;
                m.connections_carried = carried;
            }));
        }
        if fx.save_after_answer {
            self.commit_deferred(g, change).await?;
        } else {
            self.commit_writing_while_saving(g, change).await?;
        }
        if switchover {
            self.metrics
                .last_switchover_us
                .set(g.state.migrations[idx].switchover_us);
        }
        Ok(())
    }

    /// LOCK: a new migration of the caller's endpoint, which stops receiving
    /// traffic (unless the caller runs without p4lb's lock).
    fn on_lock(&self, st: &mut State, ev: &Event) -> Result<(usize, Effects)> {
        let key = ev.caller.clone().ok_or_else(|| {
            Error::not_found(format!("{NO_ENDPOINT_FOR_CALLER} {}", ev.described))
        })?;
        self.verify_endpoint(st, ev, &key)?;
        if let Some(m) = st
            .migrations
            .iter()
            .find(|m| m.active() && m.source_key == key)
        {
            return Err(Error::precondition(format!(
                "endpoint {key} is already locked by migration {}",
                m.id
            )));
        }
        st.next_migration += 1;
        let ep = st
            .endpoints
            .get_mut(&key)
            .ok_or_else(|| Error::not_found(format!("no endpoint {key}")))?;
        if ev.r.no_lock {
            tracing::warn!(
                endpoint = %key,
                "migration without p4lb's lock: the source keeps receiving traffic"
            );
        } else {
            ep.locked = true;
            ep.state = EndpointState::Locked;
        }
        let m = MigrationRec {
            id: format!("mig-{}", st.next_migration),
            source_key: key.clone(),
            source_node: ep.node.clone(),
            source_ip: Some(ep.ip),
            state: MigrationState::Locked,
            backend_id: ep.backend_id,
            locked_unix_us: ev.now,
            leave_running: ev.r.leave_running,
            image_dir: ev.r.image_dir.clone(),
            no_lock: ev.r.no_lock,
            ..Default::default()
        };
        st.migrations.push(m);
        st.trim_migrations();
        let fx = Effects {
            require_switch: true,
            ..Default::default()
        };
        Ok((st.migrations.len() - 1, fx))
    }

    /// CHECKPOINTED: the source's dump finished.
    fn on_checkpointed(&self, st: &mut State, i: usize, ev: &Event) -> Result<Effects> {
        let src = st.migrations[i].source_key.clone();
        if st.endpoints.contains_key(&src) {
            self.verify_endpoint(st, ev, &src)?;
        }
        st.migrations[i].checkpointed_unix_us = ev.now;
        // Saved before the answer although the switch does not change: lost in a
        // crash, the migration would be `locked` again, and the CNI plugin would
        // register the restore target as a fresh start (only a checkpointed migration
        // makes a restore hint count), unlocked and in its services before CRIU ran.
        Ok(Effects::default())
    }

    /// RESTORE_STARTED: a restore began; a target that is already registered is
    /// locked until the migration unlocks it.
    fn on_restore_started(&self, st: &mut State, i: usize, ev: &Event) -> Result<Effects> {
        let mut fx = Effects::default();
        if ev.caller.is_none() && ev.ns.is_some() {
            // A local caller restores into its own namespace, which must be a
            // registered endpoint: refused before anything changes.
            return Err(Error::not_found(format!(
                "{NO_ENDPOINT_FOR_CALLER} {}: the CNI plugin registers the restore target \
                 (locked) before the restore",
                ev.described
            )));
        }
        if let Some(key) = ev.caller.as_deref() {
            self.verify_endpoint(st, ev, key)?;
            require_designated_target(st, i, key, "RESTORE_STARTED")?;
            if key != st.migrations[i].source_key {
                if let Some(t) = st.endpoints.get_mut(key) {
                    if !t.locked {
                        t.locked = true;
                        t.state = EndpointState::Restoring;
                        fx.require_switch = true;
                    }
                }
                st.migrations[i].target_key = key.to_string();
            }
        }
        st.migrations[i].restore_started_unix_us = ev.now;
        // Nothing for the switch: the answer need not wait for the save. Lost on a
        // controller crash before the save, the migration is `checkpointed` again
        // after the restart: RESTORED_AT and UNLOCK are accepted from
        // `checkpointed` (next_state), the target is found as the endpoint
        // registered as a restore of the source's address (is_designated_target),
        // and it stays locked because it was registered locked (durably) by the
        // CNI plugin; a target that was not locked yet changes the switch here and
        // is saved before the answer.
        fx.save_after_answer = !fx.require_switch;
        Ok(fx)
    }

    /// RESTORED_AT: the caller (the target) takes over the backend.
    fn on_restored_at(&self, st: &mut State, i: usize, ev: &Event) -> Result<Effects> {
        let key = ev.caller.clone().ok_or_else(|| {
            Error::not_found(format!(
                "{NO_ENDPOINT_FOR_CALLER} {} (register the target first)",
                ev.described
            ))
        })?;
        self.verify_endpoint(st, ev, &key)?;
        require_designated_target(st, i, &key, "RESTORED_AT")?;
        self.repoint(st, i, &key)?;
        st.migrations[i].restored_unix_us = ev.now;
        Ok(Effects {
            require_switch: true,
            repointed: true,
            drop_backend: None,
            save_after_answer: false,
        })
    }

    /// UNLOCK: the caller forwards again and the migration ends; a target that
    /// never sent RESTORED_AT takes over the backend first.
    fn on_unlock(&self, st: &mut State, i: usize, ev: &Event) -> Result<Effects> {
        let key = ev.registered_caller()?;
        self.verify_endpoint(st, ev, &key)?;
        require_designated_target(st, i, &key, "UNLOCK")?;
        let m = st.migrations[i].clone();
        let mut repointed = false;
        if key != m.source_key && m.state != MigrationState::Restored {
            // Restore finished without a RESTORED_AT: repoint now.
            self.repoint(st, i, &key)?;
            repointed = true;
            st.migrations[i].restored_unix_us = ev.now;
        } else if key != m.source_key && key != m.target_key {
            return Err(Error::denied(format!(
                "endpoint {key} is neither source nor target of migration {}",
                m.id
            )));
        }
        if let Some(e) = st.endpoints.get_mut(&key) {
            e.locked = false;
            e.state = EndpointState::Ready;
        }
        Ok(Effects {
            require_switch: true,
            repointed,
            drop_backend: self.finish_migration(st, i, ev.now),
            save_after_answer: false,
        })
    }

    /// ABORT (`aborted`) or SNAPSHOT_DONE: whoever holds the backend carries
    /// traffic again and the migration ends.
    fn on_end(&self, st: &mut State, i: usize, ev: &Event, aborted: bool) -> Result<Effects> {
        let m = st.migrations[i].clone();
        let key = ev.registered_caller()?;
        if key != m.source_key && key != m.target_key {
            return Err(Error::denied(format!(
                "endpoint {key} is neither source nor target of migration {}",
                m.id
            )));
        }
        self.verify_endpoint(st, ev, &key)?;
        let holder = if m.state == MigrationState::Restored {
            m.target_key.clone()
        } else {
            m.source_key.clone()
        };
        if let Some(e) = st.endpoints.get_mut(&holder) {
            if e.active() {
                e.locked = false;
                e.state = EndpointState::Ready;
            }
        }
        if aborted {
            st.migrations[i].error = String::from("aborted by caller");
        }
        Ok(Effects {
            require_switch: true,
            repointed: false,
            drop_backend: self.finish_migration(st, i, ev.now),
            save_after_answer: false,
        })
    }

    /// Moves migration `i`'s backend to `target_key` (the source's address moves
    /// with the container).
    pub fn repoint(&self, st: &mut State, i: usize, target_key: &str) -> Result<()> {
        let m = st.migrations[i].clone();
        if target_key == m.source_key {
            // Restored in place: nothing moves.
            st.migrations[i].target_key = target_key.to_string();
            st.migrations[i].target_ip = m.source_ip;
            return Ok(());
        }
        let source = st.endpoints.get(&m.source_key).cloned();
        let target = st
            .endpoints
            .get(target_key)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no endpoint {target_key}")))?;
        if !target.active() {
            return Err(Error::precondition(format!(
                "endpoint {target_key} is not active"
            )));
        }
        let backend_id = m.backend_id;
        let source_ip = m
            .source_ip
            .ok_or_else(|| Error::precondition("migration has no source address"))?;
        // Addresses moving with the container.
        let mut moving = vec![source_ip];
        if let Some(s) = &source {
            moving.extend(s.migrated_ips.iter().copied());
        }
        for ip in &moving {
            if let Some(o) = st.endpoint_by_ip(*ip) {
                if o.key != target_key && o.key != m.source_key {
                    return Err(Error::exists(format!(
                        "{ip} is used by endpoint {}, cannot move it to {target_key}",
                        o.key
                    )));
                }
            }
        }
        let backend_ip = source.as_ref().map(|s| s.backend_ip).unwrap_or(source_ip);
        if let Some(s) = st.endpoints.get_mut(&m.source_key) {
            s.backend_id = 0;
            s.locked = false;
            s.state = EndpointState::Migrated;
        }
        let labels = source
            .as_ref()
            .map(|s| s.labels.clone())
            .unwrap_or_default();
        let t = st
            .endpoints
            .get_mut(target_key)
            .ok_or_else(|| Error::not_found(format!("no endpoint {target_key}")))?;
        t.backend_id = backend_id;
        t.backend_ip = backend_ip;
        // The switch keeps holding the backend's packets until UNLOCK, which the
        // restore side sends once CRIU has restored the tasks (their sockets out of
        // repair mode), just before they run. A migration without p4lb's lock
        // (`lock = false`) holds nothing.
        if m.no_lock {
            t.locked = false;
            t.state = EndpointState::Ready;
        } else {
            t.locked = true;
            t.state = EndpointState::Locked;
        }
        for ip in moving {
            if ip != t.ip && !t.migrated_ips.contains(&ip) {
                t.migrated_ips.push(ip);
            }
        }
        for (k, v) in labels {
            t.labels.entry(k).or_insert(v);
        }
        let target_ip = t.ip;
        for svc in st.services.values_mut() {
            for b in svc.backends.iter_mut() {
                if *b == m.source_key {
                    *b = target_key.to_string();
                }
            }
        }
        let mm = &mut st.migrations[i];
        mm.target_key = target_key.to_string();
        mm.target_ip = Some(target_ip);
        Ok(())
    }

    /// Ends migration `i` (its final state is the dispatcher's); returns the
    /// backend id whose connections must go (a detached source that never handed
    /// its backend over).
    fn finish_migration(&self, st: &mut State, i: usize, now: i64) -> Option<u16> {
        let m = &mut st.migrations[i];
        m.unlocked_unix_us = now;
        m.stall_us = now - m.locked_unix_us;
        let src = m.source_key.clone();
        // A source whose runtime already deleted it was kept only for this migration.
        let detached = st.endpoints.get(&src).map(|e| e.detached).unwrap_or(false);
        if detached {
            if let Some(e) = st.endpoints.remove(&src) {
                for svc in st.services.values_mut() {
                    svc.backends.retain(|b| b != &src);
                }
                return (e.backend_id != 0).then_some(e.backend_id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use MigrationState as S;

    /// The module doc's table, row by row: the state after CHECKPOINTED,
    /// RESTORE_STARTED, RESTORED_AT, UNLOCK, ABORT, SNAPSHOT_DONE (None: refused).
    const TABLE: [(MigrationState, [Option<MigrationState>; 6]); 6] = [
        (
            S::Locked,
            [
                Some(S::Checkpointed),
                Some(S::Restoring),
                Some(S::Restored),
                Some(S::Done),
                Some(S::Aborted),
                Some(S::Done),
            ],
        ),
        (
            S::Checkpointed,
            [
                Some(S::Checkpointed),
                Some(S::Restoring),
                Some(S::Restored),
                Some(S::Done),
                Some(S::Aborted),
                Some(S::Done),
            ],
        ),
        (
            S::Restoring,
            [
                Some(S::Restoring),
                Some(S::Restoring),
                Some(S::Restored),
                Some(S::Done),
                Some(S::Aborted),
                Some(S::Done),
            ],
        ),
        (
            S::Restored,
            [
                Some(S::Restored),
                Some(S::Restoring),
                Some(S::Restored),
                Some(S::Done),
                Some(S::Aborted),
                Some(S::Done),
            ],
        ),
        (S::Done, [None; 6]),
        (S::Aborted, [None; 6]),
    ];

    const EVENTS: [MigrationPhase; 6] = [
        MigrationPhase::Checkpointed,
        MigrationPhase::RestoreStarted,
        MigrationPhase::RestoredAt,
        MigrationPhase::Unlock,
        MigrationPhase::Abort,
        MigrationPhase::SnapshotDone,
    ];

    #[test]
    fn every_state_and_event_follows_the_transition_table() {
        assert_eq!(
            TABLE.map(|(s, _)| s),
            MigrationState::ALL,
            "the table covers every state"
        );
        for (state, row) in TABLE {
            for (phase, want) in EVENTS.into_iter().zip(row) {
                let got = next_state("mig-7", state, phase);
                match (want, got) {
                    (Some(w), Ok(g)) => assert_eq!(g, w, "{state} + {phase:?}"),
                    (None, Err(Error::FailedPrecondition(m))) => {
                        assert_eq!(m, format!("migration mig-7 is already {state}"))
                    }
                    (w, g) => panic!("{state} + {phase:?}: want {w:?}, got {g:?}"),
                }
            }
        }
    }

    #[test]
    fn another_node_restores_only_a_checkpointed_migration_naming_it() {
        let mut m = MigrationRec {
            id: "mig-1".into(),
            source_key: "a1/eth0".into(),
            source_node: "node-a".into(),
            ..Default::default()
        };
        for state in MigrationState::ALL {
            m.state = state;
            assert!(
                cross_node_restore(&m, "node-a").is_ok(),
                "the source's node"
            );
            assert!(cross_node_restore(&m, "node-b").is_err(), "no target node");
        }
        m.target_node = "node-b".into();
        for state in MigrationState::ALL {
            m.state = state;
            let ok = matches!(state, S::Checkpointed | S::Restoring);
            assert_eq!(cross_node_restore(&m, "node-b").is_ok(), ok, "{state}");
            let e = cross_node_restore(&m, "node-c").unwrap_err();
            assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
        }
    }

    #[test]
    fn lock_starts_a_migration_and_is_no_event_of_one() {
        for state in MigrationState::ALL {
            for phase in [MigrationPhase::Lock, MigrationPhase::Unspecified] {
                let e = next_state("mig-7", state, phase).expect_err("refused");
                if state.active() {
                    assert!(matches!(e, Error::InvalidArgument(_)), "{state}: {e:?}");
                } else {
                    assert_eq!(e.to_string(), format!("migration mig-7 is already {state}"));
                }
            }
        }
        assert_eq!(MigrationState::default(), MigrationState::Locked);
    }
}
