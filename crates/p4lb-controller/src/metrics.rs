//! Counters exported in Prometheus text format (Metrics RPC and, when configured,
//! an HTTP listener).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub api_calls: AtomicU64,
    pub api_errors: AtomicU64,
    pub digest_lists: AtomicU64,
    pub conns_learned: AtomicU64,
    pub conns_expired: AtomicU64,
    pub migrations_started: AtomicU64,
    pub migrations_done: AtomicU64,
    pub migrations_aborted: AtomicU64,
    pub reconciles: AtomicU64,
    pub pipeline_pushes: AtomicU64,
    pub last_switchover_us: AtomicU64,
    pub commit: CommitPhases,
}

/// Where the time of state commits goes: cumulative microseconds per phase.
#[derive(Debug, Default)]
pub struct CommitPhases {
    /// Changes made durable.
    pub commits: AtomicU64,
    /// Requests put into the commit queue.
    pub queued: AtomicU64,
    /// Durable saves of the state (a group of queued changes shares one).
    pub saves: AtomicU64,
    /// Queued changes waiting for their group.
    pub queue_wait_us: AtomicU64,
    /// Attaching switch ports.
    pub port_us: AtomicU64,
    /// Computing the desired table entries.
    pub desired_us: AtomicU64,
    /// Writing the difference to the switch.
    pub write_us: AtomicU64,
    /// The durable save of the state.
    pub save_us: AtomicU64,
}

impl CommitPhases {
    pub fn add(c: &AtomicU64, d: std::time::Duration) {
        c.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Gauges sampled when rendering.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    pub switch_connected: bool,
    pub endpoints: usize,
    pub services: usize,
    pub active_migrations: usize,
    pub table_entries: usize,
    pub conn_entries: usize,
    pub switch_writes: u64,
    pub switch_updates: u64,
    pub switch_sessions: u64,
    pub commit_queue: usize,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, g: Gauges) -> String {
        let mut s = String::new();
        let mut line = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP p4lb_controller_{name} {help}");
            let _ = writeln!(s, "# TYPE p4lb_controller_{name} {kind}");
            let _ = writeln!(s, "p4lb_controller_{name} {v}");
        };
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        line(
            "api_calls_total",
            "counter",
            "API calls served.",
            c(&self.api_calls),
        );
        line(
            "api_errors_total",
            "counter",
            "API calls refused or failed.",
            c(&self.api_errors),
        );
        line(
            "digest_lists_total",
            "counter",
            "conn_learn digest lists processed.",
            c(&self.digest_lists),
        );
        line(
            "connections_learned_total",
            "counter",
            "Connections installed from digests.",
            c(&self.conns_learned),
        );
        line(
            "connections_expired_total",
            "counter",
            "Connections removed as idle.",
            c(&self.conns_expired),
        );
        line(
            "migrations_started_total",
            "counter",
            "Migrations locked.",
            c(&self.migrations_started),
        );
        line(
            "migrations_done_total",
            "counter",
            "Migrations unlocked.",
            c(&self.migrations_done),
        );
        line(
            "migrations_aborted_total",
            "counter",
            "Migrations aborted.",
            c(&self.migrations_aborted),
        );
        line(
            "reconciles_total",
            "counter",
            "Switch reconciliations.",
            c(&self.reconciles),
        );
        line(
            "pipeline_pushes_total",
            "counter",
            "Reconciliations that had to push the pipeline (switch was empty).",
            c(&self.pipeline_pushes),
        );
        line(
            "last_switchover_microseconds",
            "gauge",
            "Switchover latency of the last migration.",
            c(&self.last_switchover_us),
        );
        line(
            "commits_total",
            "counter",
            "State changes made durable.",
            c(&self.commit.commits),
        );
        line(
            "commit_queued_total",
            "counter",
            "Changes queued for a group commit.",
            c(&self.commit.queued),
        );
        line(
            "commit_saves_total",
            "counter",
            "Durable saves of the state (changes committed as a group share one).",
            c(&self.commit.saves),
        );
        for (phase, v) in [
            ("queue_wait", &self.commit.queue_wait_us),
            ("port", &self.commit.port_us),
            ("desired", &self.commit.desired_us),
            ("write", &self.commit.write_us),
            ("save", &self.commit.save_us),
        ] {
            line(
                &format!("commit_{phase}_microseconds_total"),
                "counter",
                "Time spent in this phase of state commits.",
                c(v),
            );
        }
        line(
            "commit_queue_depth",
            "gauge",
            "Changes waiting in the commit queue.",
            g.commit_queue as u64,
        );
        line(
            "switch_connected",
            "gauge",
            "1 when primary on the switch.",
            u64::from(g.switch_connected),
        );
        line(
            "endpoints",
            "gauge",
            "Registered endpoints.",
            g.endpoints as u64,
        );
        line(
            "services",
            "gauge",
            "Configured services.",
            g.services as u64,
        );
        line(
            "active_migrations",
            "gauge",
            "Migrations in progress.",
            g.active_migrations as u64,
        );
        line(
            "table_entries",
            "gauge",
            "State-derived table entries installed.",
            g.table_entries as u64,
        );
        line(
            "connection_entries",
            "gauge",
            "Learned connections installed.",
            g.conn_entries as u64,
        );
        line(
            "switch_writes_total",
            "counter",
            "P4Runtime Write requests.",
            g.switch_writes,
        );
        line(
            "switch_updates_total",
            "counter",
            "P4Runtime updates written.",
            g.switch_updates,
        );
        line(
            "switch_sessions_total",
            "counter",
            "P4Runtime sessions established.",
            g.switch_sessions,
        );
        s
    }
}
