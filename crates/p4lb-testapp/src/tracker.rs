//! Per-connection bookkeeping of the client: which replies arrived, in which
//! order, intact or not, and how long the connection stalled.
//!
//! Requests are numbered from 1. Every reply is checked against what the
//! client sent: its number (in order, duplicated, late, or skipping some),
//! its checksum and echoed payload, the server's own count of requests on the
//! connection, and (stateful servers) that the server state never goes back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::protocol::{self, ReplyHeader};
use crate::report::{ConnReport, ConnState};

/// What one reply turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The reply the client was waiting for.
    InOrder,
    /// A reply whose number was already answered.
    Duplicate,
    /// Arrived after replies with higher numbers (it had been counted lost).
    Late,
    /// Jumped ahead: `skipped` replies before it are missing (counted lost).
    Gap { skipped: u64 },
    /// Names a request that was never sent.
    Unknown,
}

/// Bookkeeping of one connection.
#[derive(Debug)]
pub struct Tracker {
    salt: u32,
    payload_len: usize,
    next_to_send: u64,
    next_expected: u64,
    missing: BTreeSet<u64>,
    last_state: u64,
    last_progress: Instant,
    longest_stall: Duration,
    /// When each request without a reply yet was sent, by sequence number.
    sent_at: BTreeMap<u64, Instant>,
    /// The request that waited longest for its reply: how long, and when the reply came.
    slowest: Option<(Duration, Instant)>,
    /// `now` of [`Tracker::new`] and the wall clock then (µs since the Unix epoch): turns
    /// instants into wall-clock times other programs can compare with theirs.
    anchor: (Instant, i64),
    report: ConnReport,
}

impl Tracker {
    /// A connection that sends `payload_len` bytes per request, started at `now`.
    pub fn new(id: usize, salt: u32, payload_len: usize, now: Instant) -> Self {
        Tracker {
            salt,
            payload_len,
            next_to_send: 1,
            next_expected: 1,
            missing: BTreeSet::new(),
            last_state: 0,
            last_progress: now,
            longest_stall: Duration::ZERO,
            sent_at: BTreeMap::new(),
            slowest: None,
            anchor: (now, unix_us_now()),
            report: ConnReport::new(id),
        }
    }

    fn reply_bytes(&self) -> u64 {
        (protocol::REPLY_HEADER_LEN + self.payload_len) as u64
    }

    /// The next request frame to send; records it as sent at `now`.
    pub fn next_request(&mut self, now: Instant) -> (u64, Vec<u8>) {
        let seq = self.next_to_send;
        self.next_to_send += 1;
        self.sent_at.insert(seq, now);
        let p = protocol::payload(self.salt, seq, self.payload_len);
        let frame = protocol::encode_request(seq, &p);
        self.report.requests_sent += 1;
        self.report.bytes_sent += frame.len() as u64;
        (seq, frame)
    }

    /// Number of requests sent and not answered yet.
    pub fn outstanding(&self) -> u64 {
        self.next_to_send - self.next_expected + self.missing.len() as u64
    }

    /// Records one reply (header and echoed payload) received at `now`.
    pub fn on_reply(&mut self, h: &ReplyHeader, echoed: &[u8], now: Instant) -> Verdict {
        let frame_bytes = (protocol::REPLY_HEADER_LEN + echoed.len()) as u64;
        self.report.bytes_received += frame_bytes;
        if h.seq == 0 || h.seq >= self.next_to_send {
            self.report.corrupt_replies += 1;
            return Verdict::Unknown;
        }
        let verdict = if h.seq == self.next_expected {
            self.next_expected += 1;
            Verdict::InOrder
        } else if h.seq > self.next_expected {
            let skipped = h.seq - self.next_expected;
            self.missing.extend(self.next_expected..h.seq);
            self.report.lost_bytes += skipped * self.reply_bytes();
            self.next_expected = h.seq + 1;
            Verdict::Gap { skipped }
        } else if self.missing.remove(&h.seq) {
            self.report.lost_bytes -= self.reply_bytes();
            self.report.out_of_order_bytes += frame_bytes;
            Verdict::Late
        } else {
            self.report.duplicated_bytes += frame_bytes;
            return Verdict::Duplicate;
        };

        if let Some(sent) = self.sent_at.remove(&h.seq) {
            let waited = now.saturating_duration_since(sent);
            if self.slowest.is_none_or(|(d, _)| waited > d) {
                self.slowest = Some((waited, now));
            }
        }
        let expected = protocol::payload(self.salt, h.seq, self.payload_len);
        if h.checksum != protocol::checksum(&expected) || echoed != expected.as_slice() {
            self.report.corrupt_replies += 1;
        } else {
            self.report.requests_done += 1;
        }
        if verdict == Verdict::InOrder && h.server_count != h.seq {
            self.report.server_count_mismatches += 1;
        }
        if h.state != 0 {
            if h.state <= self.last_state {
                self.report.state_regressions += 1;
            }
            self.last_state = h.state;
        }
        self.progress(now);
        verdict
    }

    fn progress(&mut self, now: Instant) {
        let stall = now.saturating_duration_since(self.last_progress);
        self.longest_stall = self.longest_stall.max(stall);
        self.last_progress = now;
    }

    /// `t` on the wall clock (µs since the Unix epoch), through the anchor.
    fn unix_us(&self, t: Instant) -> i64 {
        let (at, unix) = self.anchor;
        match t.checked_duration_since(at) {
            Some(d) => unix + d.as_micros() as i64,
            None => unix - at.saturating_duration_since(t).as_micros() as i64,
        }
    }

    /// Marks the connection established (stall time counts from here).
    pub fn on_connected(&mut self, local: String, remote: String, now: Instant) {
        self.report.local = local;
        self.report.remote = remote;
        self.report.state = ConnState::Open;
        self.last_progress = now;
    }

    /// Records how the connection ended at `now` (a wait for a reply up to
    /// then counts as a stall).
    pub fn on_end(&mut self, state: ConnState, error: Option<String>, now: Instant) {
        if self.report.state == ConnState::Open && self.outstanding() > 0 {
            self.progress(now);
        }
        if state == ConnState::Reset {
            self.report.resets += 1;
        }
        self.report.state = state;
        self.report.error = error;
    }

    /// A snapshot of the report at `now`; a connection still waiting for a
    /// reply counts its current wait as a stall.
    pub fn report(&self, now: Instant) -> ConnReport {
        let mut r = self.report.clone();
        let mut stall = self.longest_stall;
        if let Some((waited, at)) = self.slowest {
            r.slowest_request_ms = waited.as_millis() as u64;
            r.slowest_reply_unix_us = self.unix_us(at);
        }
        if r.state == ConnState::Open && self.outstanding() > 0 {
            stall = stall.max(now.saturating_duration_since(self.last_progress));
        }
        r.longest_stall_ms = stall.as_millis() as u64;
        r.missing_replies = self.missing.len() as u64;
        r
    }
}

/// The wall clock, µs since the Unix epoch.
pub fn unix_us_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::checksum;

    fn reply(t: &Tracker, seq: u64, server_count: u64, state: u64) -> (ReplyHeader, Vec<u8>) {
        let p = protocol::payload(t.salt, seq, t.payload_len);
        (
            ReplyHeader {
                seq,
                server_count,
                checksum: checksum(&p),
                state,
                len: p.len() as u32,
            },
            p,
        )
    }

    fn feed(t: &mut Tracker, seq: u64, now: Instant) -> Verdict {
        let (h, p) = reply(t, seq, seq, 0);
        t.on_reply(&h, &p, now)
    }

    #[test]
    fn the_slowest_request_and_when_its_reply_came_are_reported_on_the_wall_clock() {
        let t0 = Instant::now();
        let mut t = Tracker::new(0, 9, 16, t0);
        let start = t.anchor.1;
        t.on_connected("a".into(), "b".into(), t0);
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let (s1, _) = t.next_request(ms(0));
        feed(&mut t, s1, ms(10));
        // Two requests meet a lock; the first waits longest.
        let (s2, _) = t.next_request(ms(100));
        let (s3, _) = t.next_request(ms(300));
        feed(&mut t, s2, ms(1_900));
        feed(&mut t, s3, ms(1_901));
        let r = t.report(ms(2_000));
        assert_eq!(r.slowest_request_ms, 1_800);
        assert_eq!(r.slowest_reply_unix_us, start + 1_900_000);
        assert_eq!(r.longest_stall_ms, 1_890);
    }

    #[test]
    fn clean_stream_counts_everything_once() {
        let t0 = Instant::now();
        let mut t = Tracker::new(0, 9, 16, t0);
        t.on_connected("a".into(), "b".into(), t0);
        for i in 1..=5u64 {
            let (seq, frame) = t.next_request(t0);
            assert_eq!(seq, i);
            assert_eq!(frame.len(), protocol::REQUEST_HEADER_LEN + 16);
            assert_eq!(
                feed(&mut t, seq, t0 + Duration::from_millis(10 * i)),
                Verdict::InOrder
            );
        }
        let r = t.report(t0 + Duration::from_millis(50));
        assert_eq!(r.requests_sent, 5);
        assert_eq!(r.requests_done, 5);
        assert_eq!(r.lost_bytes + r.duplicated_bytes + r.out_of_order_bytes, 0);
        assert_eq!(r.corrupt_replies, 0);
        assert_eq!(r.longest_stall_ms, 10);
        assert_eq!(
            r.bytes_received,
            5 * (protocol::REPLY_HEADER_LEN as u64 + 16)
        );
        assert!(r.is_clean());
    }

    #[test]
    fn gap_then_late_reply_moves_bytes_from_lost_to_out_of_order() {
        let t0 = Instant::now();
        let mut t = Tracker::new(1, 1, 8, t0);
        for _ in 0..4 {
            t.next_request(t0);
        }
        let frame = protocol::REPLY_HEADER_LEN as u64 + 8;
        assert_eq!(feed(&mut t, 1, t0), Verdict::InOrder);
        assert_eq!(feed(&mut t, 4, t0), Verdict::Gap { skipped: 2 });
        assert_eq!(t.report(t0).lost_bytes, 2 * frame);
        assert_eq!(t.report(t0).missing_replies, 2);
        assert_eq!(feed(&mut t, 2, t0), Verdict::Late);
        let r = t.report(t0);
        assert_eq!(r.lost_bytes, frame);
        assert_eq!(r.out_of_order_bytes, frame);
        assert_eq!(r.missing_replies, 1);
        assert_eq!(r.requests_done, 3);
        assert!(!r.is_clean());
    }

    #[test]
    fn duplicates_unknown_and_corrupt_replies_are_counted() {
        let t0 = Instant::now();
        let mut t = Tracker::new(2, 5, 4, t0);
        t.next_request(t0);
        t.next_request(t0);
        assert_eq!(feed(&mut t, 1, t0), Verdict::InOrder);
        assert_eq!(feed(&mut t, 1, t0), Verdict::Duplicate);
        assert_eq!(feed(&mut t, 7, t0), Verdict::Unknown);
        let (mut h, mut p) = reply(&t, 2, 2, 0);
        p[0] ^= 0xff;
        h.checksum ^= 1;
        assert_eq!(t.on_reply(&h, &p, t0), Verdict::InOrder);
        let r = t.report(t0);
        assert_eq!(r.duplicated_bytes, protocol::REPLY_HEADER_LEN as u64 + 4);
        assert_eq!(r.corrupt_replies, 2);
        assert_eq!(r.requests_done, 1);
    }

    #[test]
    fn server_count_and_state_regressions() {
        let t0 = Instant::now();
        let mut t = Tracker::new(3, 5, 4, t0);
        for _ in 0..3 {
            t.next_request(t0);
        }
        let (h, p) = reply(&t, 1, 1, 10);
        t.on_reply(&h, &p, t0);
        // A restarted server counts from 1 again and loses its state.
        let (h, p) = reply(&t, 2, 1, 1);
        t.on_reply(&h, &p, t0);
        let (h, p) = reply(&t, 3, 3, 2);
        t.on_reply(&h, &p, t0);
        let r = t.report(t0);
        assert_eq!(r.server_count_mismatches, 1);
        assert_eq!(r.state_regressions, 1);
    }

    #[test]
    fn open_wait_counts_as_stall_and_reset_is_recorded() {
        let t0 = Instant::now();
        let mut t = Tracker::new(4, 5, 4, t0);
        t.on_connected("a".into(), "b".into(), t0);
        t.next_request(t0);
        assert_eq!(t.outstanding(), 1);
        assert_eq!(
            t.report(t0 + Duration::from_millis(700)).longest_stall_ms,
            700
        );
        t.on_end(
            ConnState::Reset,
            Some("connection reset by peer".into()),
            t0 + Duration::from_millis(800),
        );
        let r = t.report(t0 + Duration::from_millis(900));
        assert_eq!(r.resets, 1);
        assert_eq!(r.state, ConnState::Reset);
        // The wait until the reset counts; a closed connection stops accumulating.
        assert_eq!(r.longest_stall_ms, 800);
    }
}
