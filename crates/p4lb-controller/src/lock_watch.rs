//! No endpoint stays locked without a live migration.
//!
//! An endpoint registered locked for a restore (state `restoring`) waits for its
//! migration to unlock it, and a migration's source is locked while it is frozen.
//! If that migration is gone, done or aborted, or the restore has waited longer
//! than `migration.restore_lock_timeout_ms`, nothing would ever unlock it and every
//! connection to it would time out. [`stale_locks`] finds such endpoints; the
//! periodic [`lock_watch_loop`] unlocks them (their backend forwards again) with a
//! warning and an `endpoint unlocked` event.

use std::sync::Weak;
use std::time::Duration;

use crate::controller::{Change, Controller};
use crate::error::Result;
use crate::services::refresh_services;
use crate::state::{now_ms, EndpointRec, EndpointState, MigrationRec, MigrationState, State};

/// Whether migration `m` is the one holding endpoint `e`'s lock.
fn holds(m: &MigrationRec, e: &EndpointRec) -> bool {
    m.active()
        && (m.source_key == e.key
            || m.target_key == e.key
            || (e.restore_of_ip.is_some() && m.source_ip == e.restore_of_ip))
}

/// A lock [`stale_locks`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleLock {
    pub key: String,
    /// Why it is released (logged and sent as the event's detail).
    pub why: String,
    /// No active migration holds it: the endpoint is no restore target any more.
    pub orphaned: bool,
}

/// The locked endpoints no live migration will unlock, with why: a lock no active
/// migration holds, or a restore that waited longer than `timeout_ms` (counted
/// from its registration).
pub fn stale_locks(st: &State, now_unix_ms: i64, timeout_ms: u64) -> Vec<StaleLock> {
    let timeout = i64::try_from(timeout_ms).unwrap_or(i64::MAX);
    st.endpoints
        .values()
        .filter(|e| e.locked && e.active())
        .filter_map(|e| {
            let held = st.migrations.iter().any(|m| holds(m, e));
            // A target that took over its source's backend stays locked until UNLOCK:
            // bounded like a restore.
            let restore = e.state == EndpointState::Restoring
                || st.migrations.iter().any(|m| {
                    m.active() && m.state == MigrationState::Restored && m.target_key == e.key
                });
            let age = now_unix_ms.saturating_sub(e.created_unix_ms);
            let orphaned = !held && (restore_named(e) || e.state == EndpointState::Locked);
            let why = if orphaned {
                String::from("no active migration holds its lock")
            } else if restore && age > timeout {
                format!(
                    "its restore waited {} ms (restore_lock_timeout_ms = {timeout})",
                    age
                )
            } else {
                return None;
            };
            Some(StaleLock {
                key: e.key.clone(),
                why,
                orphaned,
            })
        })
        .collect()
}

/// A restore target that names the source address it restores (the CNI plugin's
/// locked ADD); a plain locked registration is bounded by the timeout only.
fn restore_named(e: &EndpointRec) -> bool {
    e.state == EndpointState::Restoring && e.restore_of_ip.is_some()
}

impl Controller {
    /// Unlocks every endpoint [`stale_locks`] names; returns their keys.
    pub async fn release_stale_locks(&self) -> Result<Vec<String>> {
        let timeout = self.cfg.migration.restore_lock_timeout_ms;
        let mut g = self.inner.lock().await;
        let stale = stale_locks(&g.state, now_ms(), timeout);
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        let mut st: State = g.state.clone();
        for s in &stale {
            if let Some(e) = st.endpoints.get_mut(&s.key) {
                e.locked = false;
                e.state = EndpointState::Ready;
                if s.orphaned {
                    // Never the designated target of a later migration of that address.
                    e.restore_of_ip = None;
                }
            }
        }
        refresh_services(&mut st);
        self.commit(&mut g, Change::new(st)).await?;
        drop(g);
        for s in &stale {
            tracing::warn!(key = %s.key, "locked endpoint unlocked: {}", s.why);
            self.emit("endpoint", "unlocked", &s.key, s.why.clone());
        }
        Ok(stale.into_iter().map(|s| s.key).collect())
    }
}

/// How often the watch looks: a tenth of the timeout, between 100 ms and 1 s.
pub fn watch_interval(timeout_ms: u64) -> Duration {
    Duration::from_millis((timeout_ms / 10).clamp(100, 1000))
}

/// Runs [`Controller::release_stale_locks`] every `every` while the controller lives.
pub async fn lock_watch_loop(ctl: Weak<Controller>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(ctl) = ctl.upgrade() else { return };
        if let Err(e) = ctl.release_stale_locks().await {
            tracing::warn!(error = %e, "releasing stale endpoint locks");
        }
    }
}
