//! `p4lb-tools bench-baseline`: the Podman checkpoint/restore scenario, same
//! IP, no lock: the baseline p4lb improves on. It measures; `make test` does
//! not run it. With [`BaselineOptions::in_place`] it is the runtime's own
//! checkpoint and restore instead (same container, same namespace, CRIU's own
//! network lock), which `bench-migration` measures beside p4lb's migration.
//!
//! A `p4lb-testapp server` container joins a network namespace wired by a
//! [`Topology`]; a `p4lb-testapp client` in another namespace holds long-lived
//! connections to it. The container is checkpointed (`--tcp-established
//! --export`), removed, its namespace is recreated at the same path with the
//! same address, and it is restored (`--import --tcp-established`). The
//! client's reports before and after tell which connections survived.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use p4lb_e2e::judge::judge;
use p4lb_e2e::scenario::reports;
use p4lb_testbed::images::{TESTAPP_IN_IMAGE, TEST_IMAGE};
use p4lb_testbed::session::Testbed;
use p4lb_testbed::topology::{topology, Topology};
use p4lb_testbed::{cgroups, paths, wait};

/// Settings of the scenario.
#[derive(Debug, Clone)]
pub struct BaselineOptions {
    pub tries: usize,
    pub conns: usize,
    /// Requests per second per connection.
    pub rate: f64,
    /// Traffic before the checkpoint and after the restore.
    pub settle: Duration,
    /// How long the address is up in the recreated namespace before the
    /// restore starts (real orchestration wires the new pod first).
    pub ip_up_before_restore: Duration,
    /// Checkpoint and restore the container where it is (no export, no removal,
    /// the namespace kept, CRIU's own network lock): what the runtime does
    /// without p4lb when nothing moves.
    pub in_place: bool,
}

impl Default for BaselineOptions {
    fn default() -> Self {
        BaselineOptions {
            tries: 5,
            conns: 20,
            rate: 20.0,
            settle: Duration::from_millis(1500),
            ip_up_before_restore: Duration::ZERO,
            in_place: false,
        }
    }
}

/// Outcome of one checkpoint/restore.
#[derive(Debug, Clone)]
pub struct TryResult {
    pub conns: u64,
    /// Connections that were open before and completed requests after the restore.
    pub survived: u64,
    pub reset: u64,
    pub failed: u64,
    pub checkpoint_ms: u64,
    pub restore_ms: u64,
    pub longest_stall_ms: u64,
    pub requests_before: u64,
    pub requests_after: u64,
    /// Why the restore failed, if it did.
    pub restore_error: Option<String>,
}

/// Outcome of all tries.
#[derive(Debug, Clone)]
pub struct BaselineResult {
    pub ip_up_before_restore: Duration,
    pub in_place: bool,
    pub tries: Vec<TryResult>,
}

impl BaselineResult {
    /// Tries whose restore failed.
    pub fn restores_failed(&self) -> usize {
        self.tries
            .iter()
            .filter(|t| t.restore_error.is_some())
            .count()
    }

    /// Tries in which every connection survived.
    pub fn tries_all_survived(&self) -> usize {
        self.tries
            .iter()
            .filter(|t| t.conns > 0 && t.survived == t.conns)
            .count()
    }

    /// Connections that survived, over all tries.
    pub fn conns_survived(&self) -> (u64, u64) {
        self.tries
            .iter()
            .fold((0, 0), |(s, n), t| (s + t.survived, n + t.conns))
    }

    /// What every run of the baseline must show, whatever its survival rate
    /// (that is measured, not required): as many tries as asked, at least one
    /// restore that succeeded, every try with all its connections, traffic
    /// before the checkpoint, and timed checkpoint and restore.
    pub fn check(&self, opts: &BaselineOptions) -> Result<()> {
        if self.tries.len() != opts.tries {
            bail!("{} tries run, {} asked", self.tries.len(), opts.tries);
        }
        if self.restores_failed() >= self.tries.len() {
            bail!("no restore succeeded: {}", self.summary());
        }
        for t in &self.tries {
            if t.conns != opts.conns as u64 {
                bail!("{} connections, {} asked: {t:?}", t.conns, opts.conns);
            }
            if t.survived + t.reset + t.failed > t.conns {
                bail!("more outcomes than connections: {t:?}");
            }
            if t.requests_before < opts.conns as u64 {
                bail!("no traffic before: {t:?}");
            }
            if t.checkpoint_ms == 0 || t.restore_ms == 0 {
                bail!("checkpoint or restore not timed: {t:?}");
            }
        }
        Ok(())
    }

    /// A human summary.
    pub fn summary(&self) -> String {
        let (s, n) = self.conns_survived();
        let mode = if self.in_place {
            String::from("in place, CRIU's own network lock")
        } else {
            format!(
                "exported and imported, no lock, address up {} ms before restore",
                self.ip_up_before_restore.as_millis()
            )
        };
        let mut out = format!(
            "baseline (podman checkpoint/restore, same IP, {mode}): {}/{} tries kept every \
             connection; {s}/{n} connections survived; {} restores failed\n",
            self.tries_all_survived(),
            self.tries.len(),
            self.restores_failed()
        );
        for (i, t) in self.tries.iter().enumerate() {
            out.push_str(&format!(
                "  try {}: {}/{} survived, {} reset, {} failed; checkpoint {} ms, restore {} ms, \
                 longest stall {} ms, requests {} before / {} after\n",
                i + 1,
                t.survived,
                t.conns,
                t.reset,
                t.failed,
                t.checkpoint_ms,
                t.restore_ms,
                t.longest_stall_ms,
                t.requests_before,
                t.requests_after
            ));
            if let Some(e) = &t.restore_error {
                out.push_str(&format!(
                    "    RESTORE FAILED: {}\n",
                    e.lines().next().unwrap_or("")
                ));
            }
        }
        out
    }
}

/// Runs the baseline scenario in `tb` (images must be built, see
/// [`p4lb_testbed::images::build_podman_images`]).
pub fn run_baseline(tb: &Testbed, opts: &BaselineOptions) -> Result<BaselineResult> {
    let testapp = paths::inside_target(&paths::static_testapp())
        .context("static testapp outside the target dir")?;
    let testapp = testapp.display().to_string();
    let topo = topology("mig")
        .bridge(true)
        .node("client", "10.77.0.1/24")
        .node("pod", "10.77.0.2/24")
        .build(tb)?;
    let mut tries = Vec::new();
    for i in 0..opts.tries {
        let r = one_try(tb, &topo, &testapp, opts, i);
        let _ = tb.run(&["podman", "rm", "-f", "-t", "0", &format!("p4lb-srv-{i}")]);
        let _ = tb.sh(&format!("rm -f /tmp/p4lb-ckpt-{i}.tar"));
        tries.push(r?);
    }
    drop(topo);
    Ok(BaselineResult {
        ip_up_before_restore: opts.ip_up_before_restore,
        in_place: opts.in_place,
        tries,
    })
}

fn one_try(
    tb: &Testbed,
    topo: &Topology<'_, Testbed>,
    testapp: &str,
    opts: &BaselineOptions,
    i: usize,
) -> Result<TryResult> {
    let pod = topo.node("pod")?.clone();
    let name = format!("p4lb-srv-{i}");
    let archive = format!("/tmp/p4lb-ckpt-{i}.tar");
    tb.run(&[
        "podman",
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        &format!("ns:{}", pod.netns_path()),
        TEST_IMAGE,
        TESTAPP_IN_IMAGE,
        "server",
        "--listen",
        "0.0.0.0:7000",
        "--stateful",
    ])?;
    wait::until(20, "the server container to listen", || {
        tb.run(&["podman", "logs", &name])
            .map(|l| l.contains("listening"))
            .unwrap_or(false)
            || tb
                .output(&["podman", "logs", &name])
                .map(|o| String::from_utf8_lossy(&o.stderr).contains("listening"))
                .unwrap_or(false)
    })?;

    let pidfile = format!("/tmp/p4lb-client-{i}.pid");
    let client_cmd = format!(
        "echo $$ > {pidfile}; exec ip netns exec {ns} {testapp} client --target {ip}:7000 \
         --conns {conns} --rate {rate}",
        ns = topo.node("client")?.netns,
        ip = pod.ip,
        conns = opts.conns,
        rate = opts.rate,
    );
    let client = tb.spawn(&["/bin/sh", "-c", &client_cmd])?;
    let client_guard = KillOnDrop {
        tb,
        pidfile: pidfile.clone(),
    };
    std::thread::sleep(opts.settle);
    tb.sh(&format!("kill -USR1 $(cat {pidfile})"))?;
    // Let the interim report reach stdout before the checkpoint.
    std::thread::sleep(Duration::from_millis(200));

    let t = Instant::now();
    let mut checkpoint = vec!["podman", "container", "checkpoint", "--tcp-established"];
    if !opts.in_place {
        checkpoint.extend(["--export", &archive]);
    }
    checkpoint.push(&name);
    tb.run(&checkpoint)
        .map_err(|e| with_criu_log(tb, e, "dump.log"))?;
    let checkpoint_ms = t.elapsed().as_millis() as u64;
    let t = Instant::now();
    let restored = if opts.in_place {
        // Where it was: the namespace and its address stay, CRIU locks and unlocks.
        tb.run(&["podman", "container", "restore", "--tcp-established", &name])
    } else {
        tb.run(&["podman", "rm", "-f", &name])?;
        // Same path, same address, no lock: what a plain restore elsewhere does.
        topo.recreate_node("pod", true)?;
        std::thread::sleep(opts.ip_up_before_restore);
        tb.run(&[
            "podman",
            "container",
            "restore",
            "--import",
            &archive,
            "--tcp-established",
        ])
    }
    .map_err(|e| with_criu_log(tb, e, "restore.log"));
    let restore_ms = t.elapsed().as_millis() as u64;
    // A failed restore is a result of the try (its connections are lost),
    // reported with CRIU's error; the caller decides what it tolerates.
    let restore_error = match restored {
        Ok(_) => {
            let id = tb.run(&["podman", "inspect", "-f", "{{.Id}}", &name])?;
            cgroups::prune_restore_copies(id.trim());
            let state = tb.run(&["podman", "inspect", "-f", "{{.State.Status}}", &name])?;
            (state.trim() != "running").then(|| {
                format!(
                    "restored container {name} is {:?}, not running",
                    state.trim()
                )
            })
        }
        Err(e) => Some(e.to_string()),
    };
    std::thread::sleep(opts.settle);
    // The client exits by itself when every connection has ended.
    tb.sh(&format!("kill -TERM $(cat {pidfile}) 2>/dev/null || true"))?;
    drop(client_guard);
    let out = client
        .wait_with_output()
        .context("waiting for the client")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reps = reports(&stdout)?;
    let (before, after) = match (
        reps.iter().find(|r| !r.r#final),
        reps.iter().find(|r| r.r#final),
    ) {
        (Some(b), Some(a)) => (b, a),
        _ => bail!(
            "the client printed no interim/final report pair; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    };
    let (survived, requests_after) = judge(before, after)?;
    Ok(TryResult {
        conns: after.totals.connections,
        survived,
        reset: after.totals.reset,
        failed: after.totals.failed,
        checkpoint_ms,
        restore_ms,
        longest_stall_ms: after.totals.longest_stall_ms,
        requests_before: before.totals.requests_done,
        requests_after,
        restore_error,
    })
}

/// Adds the tail of the newest CRIU log (`dump.log` / `restore.log`) to a
/// failed checkpoint or restore.
fn with_criu_log(tb: &Testbed, e: p4lb_testbed::Error, log: &str) -> anyhow::Error {
    let tail = tb
        .sh(&format!(
            "f=$(ls -t /var/lib/containers/storage/overlay-containers/*/userdata/{log} 2>/dev/null \
             | head -n 1); [ -n \"$f\" ] && grep -E 'Error|Warn' \"$f\" | tail -n 15"
        ))
        .unwrap_or_default();
    anyhow!("{e}\nCRIU {log} (errors and warnings):\n{tail}")
}

/// Stops the client (by its pid file inside the testbed) if a step fails.
struct KillOnDrop<'a> {
    tb: &'a Testbed,
    pidfile: String,
}

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.tb.sh(&format!(
            "[ -f {p} ] && kill -TERM $(cat {p}) 2>/dev/null; rm -f {p}",
            p = self.pidfile
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_tries() {
        let t = |s| TryResult {
            conns: 2,
            survived: s,
            reset: 2 - s,
            failed: 0,
            checkpoint_ms: 1,
            restore_ms: 1,
            longest_stall_ms: 1,
            requests_before: 1,
            requests_after: 1,
            restore_error: None,
        };
        let mut r = BaselineResult {
            ip_up_before_restore: Duration::ZERO,
            in_place: false,
            tries: vec![t(2), t(0), t(1)],
        };
        assert_eq!(r.tries_all_survived(), 1);
        assert_eq!(r.conns_survived(), (3, 6));
        assert!(r.summary().contains("1/3 tries"));
        assert!(r.summary().contains("no lock"), "{}", r.summary());
        r.in_place = true;
        assert!(
            r.summary().contains("CRIU's own network lock"),
            "{}",
            r.summary()
        );
    }

    #[test]
    fn check_requires_a_restore_and_traffic_but_not_survival() {
        let opts = BaselineOptions {
            tries: 2,
            conns: 2,
            ..Default::default()
        };
        let t = |survived, requests_before, restore_error: Option<&str>| TryResult {
            conns: 2,
            survived,
            reset: 2 - survived,
            failed: 0,
            checkpoint_ms: 1,
            restore_ms: 1,
            longest_stall_ms: 1,
            requests_before,
            requests_after: 1,
            restore_error: restore_error.map(str::to_string),
        };
        let r = |tries| BaselineResult {
            ip_up_before_restore: Duration::ZERO,
            in_place: false,
            tries,
        };
        r(vec![t(0, 2, None), t(0, 2, Some("CRIU failed"))])
            .check(&opts)
            .unwrap();
        assert!(r(vec![t(2, 2, None)]).check(&opts).is_err());
        assert!(r(vec![t(0, 2, Some("a")), t(0, 2, Some("b"))])
            .check(&opts)
            .is_err());
        assert!(r(vec![t(2, 2, None), t(2, 1, None)]).check(&opts).is_err());
    }
}
