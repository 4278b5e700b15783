//! What happens at checkpoint and restore. Migration events move a backend from a
//! source endpoint to a target endpoint without dropping its clients' connections:
//!
//! - LOCK (source): the source's backend row → `backend_locked`, its routes →
//!   `route_locked`. Nothing reaches the frozen process; nothing reaches the target.
//! - CHECKPOINTED, RESTORE_STARTED: recorded (RESTORE_STARTED also locks a target
//!   that is already registered).
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
//! Address strategy: [`AddressStrategy::MoveAddress`] (implemented): the container's
//! old IP is configured in the target netns and the backend keeps DNATing to it, so
//! neither the images nor `conn_reverse` entries change. A strategy that rewrites
//! the images to the target's own IP would instead set the backend row's address to
//! the target IP and re-key `conn_reverse` entries; it is a variant of
//! [`Controller::repoint`].

use std::time::Instant;

use p4lb_proto::api::{self, MigrationPhase};

use crate::addr::parse_opt_ipv4;
use crate::controller::{Change, Controller};
use crate::error::{Error, Result};
use crate::identity::{self, Netns};
use crate::metrics::Metrics;
use crate::services::refresh_services;
use crate::state::{now_us, EndpointState, MigrationRec, State};

/// How a migrated container's address is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressStrategy {
    /// The old IP moves with the container into the target netns.
    MoveAddress,
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

impl Controller {
    fn verify_endpoint(&self, st: &State, ns: &Netns, key: &str) -> Result<()> {
        let e = st
            .endpoints
            .get(key)
            .ok_or_else(|| Error::not_found(format!("no endpoint {key}")))?;
        // A migration target may carry the source's address instead of its own.
        let ok_ip = ns
            .addrs
            .as_ref()
            .and_then(|a| {
                std::iter::once(e.ip)
                    .chain(e.migrated_ips.iter().copied())
                    .chain(e.restore_of_ip)
                    .find(|ip| a.contains(ip))
            })
            .unwrap_or(e.ip);
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

    /// MigrationEvent.
    pub async fn migration_event(&self, r: api::MigrationEventRequest) -> Result<MigrationRec> {
        let received = Instant::now();
        let phase = MigrationPhase::try_from(r.phase)
            .ok()
            .filter(|p| *p != MigrationPhase::Unspecified)
            .ok_or_else(|| Error::invalid(format!("phase {} is not a migration phase", r.phase)))?;
        let ns = identity::resolve(r.identity.as_ref(), self.cfg.identity.check_addresses)?;
        let mut g = self.inner.lock().await;
        let mut st = g.state.clone();
        let caller = endpoint_in(&st, &ns);
        let now = now_us();
        let mut require_switch = false;
        let mut repointed = false;
        let mut drop_backend = None;
        if phase != MigrationPhase::Lock {
            let i = self.find_migration(&st, &r, caller.as_deref())?;
            let m = &st.migrations[i];
            if !m.active() {
                return Err(Error::precondition(format!(
                    "migration {} is already {}",
                    m.id, m.state
                )));
            }
        }
        let idx = match phase {
            MigrationPhase::Lock => {
                let key = caller.clone().ok_or_else(|| {
                    Error::not_found(format!("no endpoint is registered for {}", ns.described))
                })?;
                self.verify_endpoint(&st, &ns, &key)?;
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
                if r.no_lock {
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
                    source_ip: Some(ep.ip),
                    state: String::from("locked"),
                    backend_id: ep.backend_id,
                    locked_unix_us: now,
                    leave_running: r.leave_running,
                    image_dir: r.image_dir.clone(),
                    no_lock: r.no_lock,
                    ..Default::default()
                };
                st.migrations.push(m);
                st.trim_migrations();
                require_switch = true;
                st.migrations.len() - 1
            }
            MigrationPhase::Checkpointed => {
                let i = self.find_migration(&st, &r, caller.as_deref())?;
                let src = st.migrations[i].source_key.clone();
                if st.endpoints.contains_key(&src) {
                    self.verify_endpoint(&st, &ns, &src)?;
                }
                let m = &mut st.migrations[i];
                m.checkpointed_unix_us = now;
                if m.state == "locked" {
                    m.state = String::from("checkpointed");
                }
                i
            }
            MigrationPhase::RestoreStarted => {
                let i = self.find_migration(&st, &r, caller.as_deref())?;
                if let Some(key) = caller.as_deref() {
                    self.verify_endpoint(&st, &ns, key)?;
                    if key != st.migrations[i].source_key {
                        if let Some(t) = st.endpoints.get_mut(key) {
                            if !t.locked {
                                t.locked = true;
                                t.state = EndpointState::Restoring;
                                require_switch = true;
                            }
                        }
                        st.migrations[i].target_key = key.to_string();
                    }
                }
                let m = &mut st.migrations[i];
                m.restore_started_unix_us = now;
                m.state = String::from("restoring");
                i
            }
            MigrationPhase::RestoredAt => {
                let key = caller.clone().ok_or_else(|| {
                    Error::not_found(format!(
                        "no endpoint is registered for {} (register the target first)",
                        ns.described
                    ))
                })?;
                self.verify_endpoint(&st, &ns, &key)?;
                let i = self.find_migration(&st, &r, Some(&key))?;
                self.repoint(&mut st, i, &key)?;
                repointed = true;
                st.migrations[i].restored_unix_us = now;
                st.migrations[i].state = String::from("restored");
                require_switch = true;
                i
            }
            MigrationPhase::Unlock => {
                let i = self.find_migration(&st, &r, caller.as_deref())?;
                let key = caller.clone().ok_or_else(|| {
                    Error::denied(format!("{} is no registered endpoint", ns.described))
                })?;
                self.verify_endpoint(&st, &ns, &key)?;
                let m = st.migrations[i].clone();
                if key != m.source_key && m.state != "restored" {
                    // Restore finished without a RESTORED_AT: repoint now.
                    self.repoint(&mut st, i, &key)?;
                    repointed = true;
                    st.migrations[i].restored_unix_us = now;
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
                drop_backend = self.finish_migration(&mut st, i, now, "done");
                require_switch = true;
                i
            }
            MigrationPhase::Abort | MigrationPhase::SnapshotDone => {
                let i = self.find_migration(&st, &r, caller.as_deref())?;
                let m = st.migrations[i].clone();
                let key = caller.clone().ok_or_else(|| {
                    Error::denied(format!("{} is no registered endpoint", ns.described))
                })?;
                if key != m.source_key && key != m.target_key {
                    return Err(Error::denied(format!(
                        "endpoint {key} is neither source nor target of migration {}",
                        m.id
                    )));
                }
                self.verify_endpoint(&st, &ns, &key)?;
                // Whoever holds the backend now carries traffic again.
                let holder = if m.state == "restored" {
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
                let outcome = if phase == MigrationPhase::Abort {
                    "aborted"
                } else {
                    "done"
                };
                if phase == MigrationPhase::Abort {
                    st.migrations[i].error = String::from("aborted by caller");
                }
                drop_backend = self.finish_migration(&mut st, i, now, outcome);
                require_switch = true;
                i
            }
            MigrationPhase::Unspecified => unreachable!("filtered above"),
        };
        refresh_services(&mut st);
        let switchover = repointed;
        let carried = g.conns.count_backend(st.migrations[idx].backend_id) as u32;
        let mut change = Change::new(st);
        change.require_switch = require_switch;
        change.drop_backends.extend(drop_backend);
        if switchover {
            change.on_ack = Some(Box::new(move |s: &mut State, acked: Instant| {
                let m = &mut s.migrations[idx];
                m.switchover_us = acked.duration_since(received).as_micros() as i64;
                m.connections_carried = carried;
            }));
        }
        self.commit(&mut g, change).await?;
        if switchover {
            self.metrics.last_switchover_us.store(
                g.state.migrations[idx].switchover_us as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let rec = g.state.migrations[idx].clone();
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
        self.emit("migration", phase.as_str_name(), &rec.id, rec.state.clone());
        Ok(rec)
    }

    /// Moves migration `i`'s backend to `target_key` (address strategy: the
    /// source's address moves with the container).
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
        // Its sockets exist now: forward to it at once.
        t.locked = false;
        t.state = EndpointState::Ready;
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

    /// Ends migration `i`; returns the backend id whose connections must go (a
    /// detached source that never handed its backend over).
    fn finish_migration(&self, st: &mut State, i: usize, now: i64, outcome: &str) -> Option<u16> {
        let m = &mut st.migrations[i];
        m.unlocked_unix_us = now;
        m.stall_us = now - m.locked_unix_us;
        m.state = outcome.to_string();
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
