//! The client's report: one entry per connection plus totals, as JSON (for
//! programs) and as a short human summary.

use serde::{Deserialize, Serialize};

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnState {
    /// Not connected yet.
    Connecting,
    /// Established and streaming.
    Open,
    /// The client closed it at the end of the run.
    Done,
    /// Reset by the peer (RST) or broken pipe.
    Reset,
    /// The peer closed it (EOF) while the client still expected replies.
    ClosedByPeer,
    /// Could not connect.
    ConnectFailed,
    /// Any other error (timeout, protocol desync, ...).
    Failed,
}

/// Figures of one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnReport {
    pub id: usize,
    pub local: String,
    pub remote: String,
    pub state: ConnState,
    pub error: Option<String>,
    pub requests_sent: u64,
    /// Replies received in order (or late) with an intact payload.
    pub requests_done: u64,
    pub resets: u64,
    pub lost_bytes: u64,
    pub duplicated_bytes: u64,
    pub out_of_order_bytes: u64,
    pub missing_replies: u64,
    pub corrupt_replies: u64,
    pub server_count_mismatches: u64,
    pub state_regressions: u64,
    pub longest_stall_ms: u64,
    /// The longest a request waited for its reply (sent → reply received).
    #[serde(default)]
    pub slowest_request_ms: u64,
    /// Wall clock (µs since the Unix epoch) when that reply came; 0 when no reply came.
    #[serde(default)]
    pub slowest_reply_unix_us: i64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl ConnReport {
    /// An empty report for connection `id`.
    pub fn new(id: usize) -> Self {
        ConnReport {
            id,
            local: String::new(),
            remote: String::new(),
            state: ConnState::Connecting,
            error: None,
            requests_sent: 0,
            requests_done: 0,
            resets: 0,
            lost_bytes: 0,
            duplicated_bytes: 0,
            out_of_order_bytes: 0,
            missing_replies: 0,
            corrupt_replies: 0,
            server_count_mismatches: 0,
            state_regressions: 0,
            longest_stall_ms: 0,
            slowest_request_ms: 0,
            slowest_reply_unix_us: 0,
            bytes_sent: 0,
            bytes_received: 0,
        }
    }

    /// True when nothing went wrong on this connection.
    pub fn is_clean(&self) -> bool {
        matches!(
            self.state,
            ConnState::Open | ConnState::Done | ConnState::Connecting
        ) && self.resets == 0
            && self.lost_bytes == 0
            && self.duplicated_bytes == 0
            && self.out_of_order_bytes == 0
            && self.corrupt_replies == 0
            && self.server_count_mismatches == 0
            && self.state_regressions == 0
    }
}

/// Sums over all connections.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub connections: u64,
    pub clean: u64,
    pub open: u64,
    pub reset: u64,
    pub failed: u64,
    pub requests_sent: u64,
    pub requests_done: u64,
    pub resets: u64,
    pub lost_bytes: u64,
    pub duplicated_bytes: u64,
    pub out_of_order_bytes: u64,
    pub corrupt_replies: u64,
    pub server_count_mismatches: u64,
    pub state_regressions: u64,
    pub longest_stall_ms: u64,
}

/// A whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// False for an interim report (SIGUSR1), true for the one at exit.
    pub r#final: bool,
    pub elapsed_ms: u64,
    pub totals: Totals,
    pub connections: Vec<ConnReport>,
}

impl Report {
    /// Builds a report and its totals from per-connection figures.
    pub fn new(is_final: bool, elapsed_ms: u64, connections: Vec<ConnReport>) -> Self {
        let mut t = Totals::default();
        for c in &connections {
            t.connections += 1;
            t.clean += u64::from(c.is_clean());
            match c.state {
                ConnState::Open | ConnState::Done => t.open += 1,
                ConnState::Reset => t.reset += 1,
                ConnState::ClosedByPeer | ConnState::ConnectFailed | ConnState::Failed => {
                    t.failed += 1
                }
                ConnState::Connecting => {}
            }
            t.requests_sent += c.requests_sent;
            t.requests_done += c.requests_done;
            t.resets += c.resets;
            t.lost_bytes += c.lost_bytes;
            t.duplicated_bytes += c.duplicated_bytes;
            t.out_of_order_bytes += c.out_of_order_bytes;
            t.corrupt_replies += c.corrupt_replies;
            t.server_count_mismatches += c.server_count_mismatches;
            t.state_regressions += c.state_regressions;
            t.longest_stall_ms = t.longest_stall_ms.max(c.longest_stall_ms);
        }
        Report {
            r#final: is_final,
            elapsed_ms,
            totals: t,
            connections,
        }
    }

    /// A few lines for people.
    pub fn human(&self) -> String {
        let t = &self.totals;
        let mut s = format!(
            "{} report after {:.1}s: {}/{} connections clean, {} reset, {} failed\n\
             requests: {} sent, {} done; bytes lost {}, duplicated {}, out of order {}; \
             corrupt replies {}; longest stall {} ms\n",
            if self.r#final { "final" } else { "interim" },
            self.elapsed_ms as f64 / 1000.0,
            t.clean,
            t.connections,
            t.reset,
            t.failed,
            t.requests_sent,
            t.requests_done,
            t.lost_bytes,
            t.duplicated_bytes,
            t.out_of_order_bytes,
            t.corrupt_replies,
            t.longest_stall_ms,
        );
        for c in self.connections.iter().filter(|c| !c.is_clean()) {
            s.push_str(&format!(
                "  conn {} {} -> {}: {:?}{}\n",
                c.id,
                c.local,
                c.remote,
                c.state,
                c.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
        s
    }
}

/// Waits after unlock: for every connection, the time from the unlock of a migration to
/// the reply of its slowest request (one that met the lock: it waited longest), in µs
/// (negative: the reply came before the controller recorded the unlock). The migration is
/// the last one locked before that reply. `migrations` are `(locked, unlocked)` wall-clock
/// times (µs since the Unix epoch); unfinished ones (unlocked 0) are skipped.
pub fn waits_after_unlock(connections: &[ConnReport], migrations: &[(i64, i64)]) -> Vec<i64> {
    let mut waits: Vec<i64> = connections
        .iter()
        .filter(|c| c.slowest_reply_unix_us > 0)
        .filter_map(|c| {
            let end = c.slowest_reply_unix_us;
            migrations
                .iter()
                .filter(|(locked, unlocked)| *unlocked > 0 && *locked <= end)
                .max_by_key(|(locked, _)| *locked)
                .map(|(_, unlocked)| end - unlocked)
        })
        .collect();
    waits.sort_unstable();
    waits
}

/// p50, p99 and max of sorted values (nearest rank); `None` when there are none.
pub fn p50_p99_max(sorted: &[i64]) -> Option<(i64, i64, i64)> {
    let last = sorted.len().checked_sub(1)?;
    let rank =
        |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    Some((rank(0.50), rank(0.99), sorted[last]))
}

/// "p50 …, p99 …, max … ms over N connections" of [`waits_after_unlock`].
pub fn waits_after_unlock_line(waits: &[i64]) -> String {
    match p50_p99_max(waits) {
        Some((p50, p99, max)) => format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} connections",
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0,
            max as f64 / 1000.0,
            waits.len()
        ),
        None => "no connection stalled".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn waits_after_unlock_belong_to_the_last_migration_locked_before_the_stall_ended() {
        let conn = |end: i64| ConnReport {
            slowest_reply_unix_us: end,
            ..ConnReport::new(0)
        };
        let migs = [(1_000, 2_000), (10_000, 12_000), (20_000, 0)];
        let conns = [conn(2_500), conn(12_040), conn(11_990), conn(0), conn(500)];
        // 2_500 after the first unlock, 12_040 and 11_990 around the second; 0 has no
        // ended stall, 500 precedes every lock; the third migration is unfinished.
        assert_eq!(waits_after_unlock(&conns, &migs), vec![-10, 40, 500]);
        assert_eq!(p50_p99_max(&[-10, 40, 500]), Some((40, 500, 500)));
        assert_eq!(p50_p99_max(&[]), None);
        let hundred: Vec<i64> = (1..=100).collect();
        assert_eq!(p50_p99_max(&hundred), Some((50, 99, 100)));
    }

    use super::*;

    #[test]
    fn totals_sum_connections() {
        let mut a = ConnReport::new(0);
        a.state = ConnState::Done;
        a.requests_sent = 10;
        a.requests_done = 10;
        a.longest_stall_ms = 5;
        let mut b = ConnReport::new(1);
        b.state = ConnState::Reset;
        b.resets = 1;
        b.requests_sent = 4;
        b.requests_done = 3;
        b.longest_stall_ms = 900;
        let r = Report::new(true, 1500, vec![a, b]);
        assert_eq!(r.totals.connections, 2);
        assert_eq!(r.totals.clean, 1);
        assert_eq!(r.totals.open, 1);
        assert_eq!(r.totals.reset, 1);
        assert_eq!(r.totals.requests_sent, 14);
        assert_eq!(r.totals.requests_done, 13);
        assert_eq!(r.totals.longest_stall_ms, 900);
        let h = r.human();
        assert!(h.contains("1/2 connections clean"), "{h}");
        assert!(h.contains("conn 1"), "{h}");
    }

    #[test]
    fn json_roundtrip() {
        let r = Report::new(false, 3, vec![ConnReport::new(0)]);
        let j = serde_json::to_string(&r).unwrap();
        assert!(j.contains("\"final\":false"), "{j}");
        let back: Report = serde_json::from_str(&j).unwrap();
        assert_eq!(back, r);
    }
}
