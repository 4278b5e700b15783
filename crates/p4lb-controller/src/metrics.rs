//! The controller's metrics in the Prometheus text format (version 0.0.4), for the
//! `Metrics` RPC and, when configured, `GET /metrics` ([`crate::server`]).
//!
//! Counters and the last switchover are `prometheus-client` metrics updated where
//! things happen; what is sampled when rendering (sizes, the switch session's
//! counters) comes in a [`Gauges`] snapshot. Each render registers both in a fresh
//! registry (cheap: the metrics are shared handles), so nothing needs a lock.

use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

/// `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Every metric name starts with it.
const PREFIX: &str = "p4lb_controller";

#[derive(Debug, Default)]
pub struct Metrics {
    pub api_calls: Counter,
    pub api_errors: Counter,
    pub digest_lists: Counter,
    pub conns_learned: Counter,
    pub conns_expired: Counter,
    /// Learned connections refused because `conn.max_entries` were installed.
    pub conns_refused: Counter,
    /// Learned connections the switch did not install (per-update errors).
    pub conn_install_errors: Counter,
    /// Connections removed after a close (RST, or FIN from both sides) and the linger.
    pub conns_closed: Counter,
    /// Digest lists dropped because the controller's digest queue was full.
    pub digest_lists_dropped: Counter,
    pub migrations_started: Counter,
    pub migrations_done: Counter,
    pub migrations_aborted: Counter,
    pub reconciles: Counter,
    pub pipeline_pushes: Counter,
    /// Microseconds.
    pub last_switchover_us: Gauge,
    pub commit: CommitPhases,
}

/// Where the time of state commits goes: cumulative microseconds per phase.
#[derive(Debug, Default)]
pub struct CommitPhases {
    /// Changes made durable.
    pub commits: Counter,
    /// Requests put into the commit queue.
    pub queued: Counter,
    /// Durable saves of the state (a group of queued changes shares one).
    pub saves: Counter,
    /// Queued changes waiting for their group.
    pub queue_wait_us: Counter,
    /// Attaching switch ports.
    pub port_us: Counter,
    /// Computing the desired table entries.
    pub desired_us: Counter,
    /// Writing the difference to the switch.
    pub write_us: Counter,
    /// The durable save of the state.
    pub save_us: Counter,
}

impl CommitPhases {
    /// Adds `d` in microseconds.
    pub fn add(c: &Counter, d: Duration) {
        c.inc_by(d.as_micros() as u64);
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
    pub netns_sockets: usize,
}

/// A sampled size as a gauge value.
fn size(v: usize) -> ConstGauge {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

impl Metrics {
    pub fn inc(c: &Counter) {
        c.inc();
    }

    /// The Prometheus text of every metric (names `p4lb_controller_*`; counters end
    /// in `_total`). Help texts get their final period from the encoder.
    pub fn render(&self, g: Gauges) -> String {
        let mut r = Registry::with_prefix(PREFIX);
        for (name, help, c) in [
            ("api_calls", "API calls served", &self.api_calls),
            (
                "api_errors",
                "API calls refused or failed",
                &self.api_errors,
            ),
            (
                "digest_lists",
                "conn_learn digest lists processed",
                &self.digest_lists,
            ),
            (
                "connections_learned",
                "Connections installed from digests",
                &self.conns_learned,
            ),
            (
                "connections_expired",
                "Connections removed as idle",
                &self.conns_expired,
            ),
            (
                "connections_refused",
                "Learned connections refused because conn.max_entries were installed",
                &self.conns_refused,
            ),
            (
                "connection_install_errors",
                "Learned connections the switch did not install",
                &self.conn_install_errors,
            ),
            (
                "connections_closed",
                "Connections removed after a close (RST, or FIN from both sides) and the linger",
                &self.conns_closed,
            ),
            (
                "digest_lists_dropped",
                "Digest lists dropped because the controller's digest queue was full",
                &self.digest_lists_dropped,
            ),
            (
                "migrations_started",
                "Migrations locked",
                &self.migrations_started,
            ),
            (
                "migrations_done",
                "Migrations unlocked",
                &self.migrations_done,
            ),
            (
                "migrations_aborted",
                "Migrations aborted",
                &self.migrations_aborted,
            ),
            ("reconciles", "Switch reconciliations", &self.reconciles),
            (
                "pipeline_pushes",
                "Reconciliations that had to push the pipeline (switch was empty)",
                &self.pipeline_pushes,
            ),
        ] {
            r.register(name, help, c.clone());
        }
        r.register(
            "last_switchover_microseconds",
            "Switchover latency of the last migration",
            self.last_switchover_us.clone(),
        );
        let c = &self.commit;
        for (name, help, v) in [
            ("commits", "State changes made durable", &c.commits),
            (
                "commit_queued",
                "Changes queued for a group commit",
                &c.queued,
            ),
            (
                "commit_saves",
                "Durable saves of the state (changes committed as a group share one)",
                &c.saves,
            ),
        ] {
            r.register(name, help, v.clone());
        }
        for (phase, v) in [
            ("queue_wait", &c.queue_wait_us),
            ("port", &c.port_us),
            ("desired", &c.desired_us),
            ("write", &c.write_us),
            ("save", &c.save_us),
        ] {
            r.register(
                format!("commit_{phase}_microseconds"),
                "Time spent in this phase of state commits",
                v.clone(),
            );
        }
        for (name, help, v) in [
            (
                "commit_queue_depth",
                "Changes waiting in the commit queue",
                g.commit_queue,
            ),
            (
                "switch_connected",
                "1 when primary on the switch",
                usize::from(g.switch_connected),
            ),
            ("endpoints", "Registered endpoints", g.endpoints),
            ("services", "Configured services", g.services),
            (
                "active_migrations",
                "Migrations in progress",
                g.active_migrations,
            ),
            (
                "table_entries",
                "State-derived table entries installed",
                g.table_entries,
            ),
            (
                "connection_entries",
                "Learned connections installed",
                g.conn_entries,
            ),
            (
                "netns_sockets_kept",
                "Netlink sockets kept in endpoints' network namespaces to check callers' addresses",
                g.netns_sockets,
            ),
        ] {
            r.register(name, help, size(v));
        }
        for (name, help, v) in [
            ("switch_writes", "P4Runtime Write requests", g.switch_writes),
            (
                "switch_updates",
                "P4Runtime updates written",
                g.switch_updates,
            ),
            (
                "switch_sessions",
                "P4Runtime sessions established",
                g.switch_sessions,
            ),
        ] {
            r.register(name, help, ConstCounter::new(v));
        }
        let mut s = String::new();
        if let Err(e) = prometheus_text::encode(&mut s, &r) {
            // Writing into a String does not fail; say so if the encoder ever does.
            tracing::error!(error = %e, "encoding metrics");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric with its type, as the controller has always exported them.
    const EXPORTED: [(&str, &str); 34] = [
        ("api_calls_total", "counter"),
        ("api_errors_total", "counter"),
        ("digest_lists_total", "counter"),
        ("connections_learned_total", "counter"),
        ("connections_expired_total", "counter"),
        ("connections_refused_total", "counter"),
        ("connection_install_errors_total", "counter"),
        ("connections_closed_total", "counter"),
        ("digest_lists_dropped_total", "counter"),
        ("migrations_started_total", "counter"),
        ("migrations_done_total", "counter"),
        ("migrations_aborted_total", "counter"),
        ("reconciles_total", "counter"),
        ("pipeline_pushes_total", "counter"),
        ("last_switchover_microseconds", "gauge"),
        ("commits_total", "counter"),
        ("commit_queued_total", "counter"),
        ("commit_saves_total", "counter"),
        ("commit_queue_wait_microseconds_total", "counter"),
        ("commit_port_microseconds_total", "counter"),
        ("commit_desired_microseconds_total", "counter"),
        ("commit_write_microseconds_total", "counter"),
        ("commit_save_microseconds_total", "counter"),
        ("commit_queue_depth", "gauge"),
        ("switch_connected", "gauge"),
        ("endpoints", "gauge"),
        ("services", "gauge"),
        ("active_migrations", "gauge"),
        ("table_entries", "gauge"),
        ("connection_entries", "gauge"),
        ("netns_sockets_kept", "gauge"),
        ("switch_writes_total", "counter"),
        ("switch_updates_total", "counter"),
        ("switch_sessions_total", "counter"),
    ];

    #[test]
    fn every_metric_keeps_its_name_type_help_and_value() {
        let m = Metrics::default();
        Metrics::inc(&m.api_calls);
        Metrics::inc(&m.api_calls);
        m.last_switchover_us.set(1234);
        CommitPhases::add(&m.commit.save_us, Duration::from_millis(3));
        let text = m.render(Gauges {
            switch_connected: true,
            endpoints: 5,
            switch_writes: 9,
            ..Default::default()
        });
        let lines: Vec<&str> = text.lines().collect();
        // HELP, TYPE and one sample per metric, nothing else.
        assert_eq!(lines.len(), EXPORTED.len() * 3, "{text}");
        for (name, kind) in EXPORTED {
            let full = format!("{PREFIX}_{name}");
            let i = lines
                .iter()
                .position(|l| l.starts_with(&format!("# HELP {full} ")))
                .unwrap_or_else(|| panic!("no HELP for {full}:\n{text}"));
            assert!(lines[i].ends_with('.'), "{}", lines[i]);
            assert_eq!(lines[i + 1], format!("# TYPE {full} {kind}"));
            let sample = lines[i + 2]
                .strip_prefix(&format!("{full} "))
                .unwrap_or_else(|| panic!("no sample for {full}:\n{text}"));
            assert!(sample.parse::<u64>().is_ok(), "{}", lines[i + 2]);
        }
        for want in [
            "p4lb_controller_api_calls_total 2",
            "p4lb_controller_last_switchover_microseconds 1234",
            "p4lb_controller_commit_save_microseconds_total 3000",
            "p4lb_controller_switch_connected 1",
            "p4lb_controller_endpoints 5",
            "p4lb_controller_switch_writes_total 9",
            "# HELP p4lb_controller_api_calls_total API calls served.",
        ] {
            assert!(lines.contains(&want), "{want} in:\n{text}");
        }
    }
}
