//! Idle timeout of `conn_table` entries: entries with `idle_timeout_ns` that were not hit for
//! that long are reported once to the primary in an IdleTimeoutNotification (reported again
//! only after another hit and another idle period). The controller decides what to delete.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p4lb_proto::p4runtime as p4;
use parking_lot::Mutex;

use super::arbitration::Arbitration;
use super::entry::encode_entry;
use crate::state::Dataplane;

/// How often tables are swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(50);

pub async fn sweep(dp: Weak<Dataplane>, arbitration: Arc<Mutex<Arbitration>>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(dp) = dp.upgrade() else {
            return;
        };
        let expired = collect(&dp);
        if expired.is_empty() {
            continue;
        }
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let msg = p4::StreamMessageResponse {
            update: Some(
                p4::stream_message_response::Update::IdleTimeoutNotification(
                    p4::IdleTimeoutNotification {
                        table_entry: expired,
                        timestamp,
                    },
                ),
            ),
        };
        if let Some(tx) = arbitration.lock().primary_tx() {
            let _ = tx.try_send(Ok(msg));
        }
    }
}

fn collect(dp: &Dataplane) -> Vec<p4::TableEntry> {
    let now = dp.now_ns();
    let mut out = Vec::new();
    for t in dp.tables.iter().filter(|t| t.info.idle_timeout) {
        let d = t.data.read();
        for e in d.exact.values().chain(d.lpm.iter()) {
            if e.idle_timeout_ns <= 0 || e.idle_notified.load(Ordering::Relaxed) {
                continue;
            }
            let last = e.last_hit.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= e.idle_timeout_ns as u64 {
                e.idle_notified.store(true, Ordering::Relaxed);
                out.push(encode_entry(&dp.program, &t.info, e));
            }
        }
    }
    out
}
