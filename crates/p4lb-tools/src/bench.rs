//! `p4lb-tools bench-migration`: one Podman migration to a new address, with
//! p4lb's own share of the stall measured step by step against CRIU's time in
//! the same run. It keeps the hand-wired `--network ns:` path
//! ([`World::migrate`]'s steps: a new namespace at the same path wired by the CNI
//! plugin with a restore hint), whose CNI DEL/ADD it times separately; the
//! Podman-native path of `make demo` runs the same CRIU action script and controller
//! steps.
//!
//! - CRIU's statistics (`podman ... --print-stats`) and the total time of each
//!   CRIU run (the last timestamp of its `dump.log` / `restore.log`);
//! - the time CRIU spends inside p4lb's action script, per action: CRIU logs
//!   `(seconds) [<script path>]` when it starts the script and its next
//!   timestamped line comes after the script exited (the script's own output
//!   lines in between carry no CRIU timestamp);
//! - the controller's switchover (UNLOCK with the repoint → switch ack) and its lock →
//!   unlock stall;
//! - the wait after unlock: from the controller's unlock to the reply to each
//!   connection's slowest request (p50, p99, max over the connections);
//! - the wall-clock spans of the orchestration (podman export/import, removing
//!   the old pod, CNI DEL/ADD), which are the runtime's, not p4lb's.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use p4lb_e2e::judge::judge;
use p4lb_e2e::scenario::{self, World, POD_NETNS};
use p4lb_testbed::session::helper_binary;
use serde_json::Value;

const CONNS: usize = 20;
const RATE: f64 = 20.0;
/// The goal: what p4lb runs inside CRIU adds at most this to CRIU's time.
const GOAL_MS: f64 = 5.0;

/// CRIU's statistics of the one container in podman's `--print-stats` output.
fn criu_stats(what: &str, out: &str) -> Result<(Value, Value)> {
    let start = out
        .find('{')
        .with_context(|| format!("{what}: no JSON statistics in {out:?}"))?;
    let v: Value = serde_json::from_str(out[start..].trim())
        .with_context(|| format!("{what}: statistics are not JSON: {out:?}"))?;
    let c = v["container_statistics"][0].clone();
    if c.is_null() {
        bail!("{what}: no container statistics in {v}");
    }
    Ok((v, c))
}

fn ms(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN) / 1000.0
}

/// The timestamp (seconds since CRIU started) of a CRIU log line
/// `(SS.uuuuuu) ...` and the rest of the line; None for other lines (output
/// of scripts, of plugins).
fn stamped(line: &str) -> Option<(f64, &str)> {
    let rest = line.strip_prefix('(')?;
    let close = rest.find(')')?;
    let t: f64 = rest[..close].trim().parse().ok()?;
    Some((t, &rest[close + 1..]))
}

/// Time spent by CRIU in one action (all invocations of the script for it).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ActionTime {
    pub(crate) action: String,
    pub(crate) runs: usize,
    pub(crate) ms: f64,
    /// The part of `ms` from runs that ended at a CRIU line other than the
    /// start of a script: an upper bound (CRIU may have worked before
    /// it logged that line); the rest is exact.
    pub(crate) bound_ms: f64,
    /// What the script measured itself (`elapsed_us` of its last log line):
    /// its time from start to exit, without process creation.
    self_ms: f64,
}

/// What one CRIU log says about p4lb's action script.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScriptTimes {
    /// In the order CRIU ran the actions.
    pub(crate) actions: Vec<ActionTime>,
    /// The action of a last run the log ends with (no end time), and what
    /// that run measured itself.
    untimed: Option<(String, f64)>,
    /// The last timestamp of the log: how long the CRIU run took.
    pub(crate) criu_total_ms: f64,
}

impl ScriptTimes {
    fn total_ms(&self) -> f64 {
        self.actions.iter().map(|a| a.ms).sum()
    }

    fn bound_ms(&self) -> f64 {
        self.actions.iter().map(|a| a.bound_ms).sum()
    }

    /// The script's own time over all its runs (the untimed last one too).
    fn self_ms(&self) -> f64 {
        self.actions.iter().map(|a| a.self_ms).sum::<f64>()
            + self.untimed.as_ref().map(|(_, m)| *m).unwrap_or(0.0)
    }

    /// Time of the actions that run while the controller holds the lock
    /// (from network-lock to pre-resume, where the restore side unlocks; pre-dump
    /// runs before the freeze, post-resume after the unlock).
    fn in_lock_ms(&self) -> f64 {
        self.actions
            .iter()
            .filter(|a| !matches!(a.action.as_str(), "pre-dump" | "post-resume"))
            .map(|a| a.ms)
            .sum()
    }
}

/// `elapsed_us=N` in a line of the script's output, in ms.
fn self_reported_ms(line: &str) -> Option<f64> {
    let v = line.split_once("elapsed_us=")?.1;
    let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse::<f64>().ok().map(|us| us / 1000.0)
}

/// Whether a CRIU log line (without its timestamp) is the start of an action
/// script: `[<path>]`.
fn is_script_start(rest: &str) -> bool {
    rest.len() > 2 && rest.starts_with("[/") && rest.ends_with(']')
}

/// Reads a CRIU log: every run of `script` from its `[script]` line to the
/// next timestamped line, attributed to the action of the last `Running
/// <action> scripts` line, with the time the script reported itself.
pub(crate) fn script_times(log: &str, script: &str) -> Result<ScriptTimes> {
    let marker = format!("[{script}]");
    let mut action = String::new();
    // The running script: its action, start, and self-reported time.
    let mut open: Option<(String, f64, f64)> = None;
    let mut actions: Vec<ActionTime> = Vec::new();
    let mut last = None;
    for line in log.lines() {
        let Some((t, rest)) = stamped(line) else {
            if let (Some(o), Some(m)) = (open.as_mut(), self_reported_ms(line)) {
                o.2 += m;
            }
            continue;
        };
        last = Some(t);
        let rest = rest.trim();
        if let Some((a, start, own)) = open.take() {
            let d = (t - start) * 1000.0;
            // Ended by the start of the next script (this one or another):
            // exact. Ended by another CRIU line: CRIU may have worked before
            // logging it.
            let bound = if is_script_start(rest) { 0.0 } else { d };
            match actions.iter_mut().find(|x| x.action == a) {
                Some(x) => {
                    x.runs += 1;
                    x.ms += d;
                    x.bound_ms += bound;
                    x.self_ms += own;
                }
                None => actions.push(ActionTime {
                    action: a,
                    runs: 1,
                    ms: d,
                    bound_ms: bound,
                    self_ms: own,
                }),
            }
        }
        if let Some(a) = rest
            .strip_prefix("Running ")
            .and_then(|r| r.strip_suffix(" scripts"))
        {
            action = a.to_string();
        } else if rest == marker {
            if action.is_empty() {
                bail!("the script ran before any `Running <action> scripts` line: {line:?}");
            }
            open = Some((action.clone(), t, 0.0));
        }
    }
    // CRIU may log nothing after the last script it runs (post-resume):
    // that run has no end time.
    let untimed = open.map(|(a, _, own)| (a, own));
    let Some(last) = last else {
        bail!("no timestamped CRIU line in the log");
    };
    Ok(ScriptTimes {
        actions,
        untimed,
        criu_total_ms: last * 1000.0,
    })
}

/// The lines of a CRIU log that the timing of `script` rests on: each
/// `Running <action> scripts` line, each start of the script, its output and
/// the CRIU line that follows it.
pub(crate) fn script_excerpt(log: &str, script: &str) -> String {
    let marker = format!("[{script}]");
    let mut out = String::new();
    let mut inside = false;
    for line in log.lines() {
        let keep = match stamped(line) {
            Some((_, rest)) => {
                let rest = rest.trim();
                let starts = rest == marker;
                let keep = inside || starts || rest.starts_with("Running ");
                inside = starts;
                keep
            }
            None => inside,
        };
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The CRIU log `name` (dump.log, restore.log) of container `id`, as podman
/// keeps it in the container's directory.
pub(crate) fn criu_log(w: &World, id: &str, name: &str) -> Result<String> {
    let found = w.sh(&format!(
        "find /var/lib/containers /run/containers -name {name} -path '*{id}*' 2>/dev/null"
    ))?;
    let path = found.lines().next().with_context(|| {
        format!(
            "no {name} of container {id} under /var/lib/containers or /run/containers \
                 (podman keeps it only with --keep)"
        )
    })?;
    w.sh(&format!("cat {path}"))
        .with_context(|| format!("reading {path}"))
}

fn print_side(side: &str, t: &ScriptTimes) {
    for a in &t.actions {
        println!(
            "  {side:<8} {:<22} {:>4} {:>9.2} {:>9.2} {:>11.2} {:>9.2}",
            a.action,
            a.runs,
            a.ms,
            a.ms / a.runs as f64,
            a.bound_ms,
            a.self_ms
        );
    }
    if let Some((a, own)) = &t.untimed {
        println!(
            "  {side:<8} {a:<22} {:>4} {:>9} {:>9} {:>11} {own:>9.2}   (the log ends with this \
             run: no end time)",
            1, "-", "", ""
        );
    }
    println!(
        "  {side:<8} {:<22} {:>4} {:>9.2} {:>9} {:>11.2} {:>9.2}   (CRIU run {:.1} ms, p4lb {:.1}% \
         of it)",
        "sum",
        t.actions.iter().map(|a| a.runs).sum::<usize>(),
        t.total_ms(),
        "",
        t.bound_ms(),
        t.self_ms(),
        t.criu_total_ms,
        100.0 * t.total_ms() / t.criu_total_ms
    );
}

/// Which build of the action script and the controller runs
/// (`P4LB_BENCH_PROFILE`: `debug`, the default, as in the tests; `release`; or
/// `static`, the statically linked release build the packages ship, from `make
/// release-static`). The profile's action script, controller, CNI plugin and
/// netavark plugin replace the debug ones (in /etc/criu/*.conf, as the controller,
/// as the plugin the bench runs, in /usr/libexec/netavark), before anything is
/// registered.
fn use_profile(w: &mut World) -> Result<String> {
    let profile = std::env::var("P4LB_BENCH_PROFILE").unwrap_or_else(|_| "debug".into());
    let target = p4lb_testbed::paths::target_dir();
    let (dir, build) = match profile.as_str() {
        "debug" => return Ok(profile),
        "release" => (
            target.join("release"),
            "cargo build --release -p p4lb-criu-action -p p4lb-controller -p p4lb-cni -p \
             p4lb-netavark",
        ),
        "static" => (
            target
                .join(p4lb_testbed::testapp::STATIC_TARGET)
                .join("release"),
            "make release-static (the helpers are linked without PIE: see the Makefile)",
        ),
        _ => bail!("P4LB_BENCH_PROFILE must be debug, release or static, not {profile:?}"),
    };
    let inside = |name: &str| -> Result<String> {
        let host = dir.join(name);
        if !host.is_file() {
            bail!("{} is missing; build it first: {build}", host.display());
        }
        p4lb_testbed::paths::inside_target(&host)
            .map(|p| p.display().to_string())
            .with_context(|| format!("{} is outside the target dir", host.display()))
    };
    let action = inside("p4lb-criu-action")?;
    let controller = inside("p4lb-controller")?;
    let cni = inside("p4lb")?;
    let netavark = inside("p4lb-netavark")?;
    w.stop_controller()?;
    w.sh(&format!(
        "for f in runc.conf crun.conf default.conf; do \
         sed -i 's|{old}|{action}|g' /etc/criu/$f; done; grep -h action-script /etc/criu/*.conf; \
         install -m 0755 {netavark} /usr/libexec/netavark/p4lb",
        old = w.action
    ))?;
    w.action = action;
    w.controller = controller;
    w.cni = cni;
    w.start_controller()?;
    Ok(profile)
}

/// Runs the benchmark; prints the figures.
pub fn bench_migration(switch: scenario::SwitchTarget) -> Result<()> {
    let helper = helper_binary()?;
    println!("switch: {}", switch.name());
    let mut w = scenario::World::start_on(helper, switch).context("setting up the testbed")?;
    let profile = use_profile(&mut w)?;
    let floor = crate::criu_floor::enabled();
    if floor {
        crate::criu_floor::install(&w, &w.action)?;
    }
    let w = w;
    w.pod_netns("cli", "cli", "clients", "")?;
    w.pod_netns("srv", "srv0", "pods", "")?;
    w.add_service()?;
    w.run_server("web", &[])?;
    let id = w.sh("podman inspect -f '{{.Id}}' web")?.trim().to_string();
    let client = w.start_client(CONNS, RATE)?;
    std::thread::sleep(Duration::from_secs(3));
    client.mark()?;

    let archive = "/tmp/ck-bench.tar";
    let commits_before = crate::criu_floor::Commits::read(&w)?;
    let t = Instant::now();
    let (ok, out, err) = w.try_sh(&format!(
        "podman container checkpoint --tcp-established --compress none --print-stats --keep \
         --export {archive} web"
    ))?;
    let checkpoint_wall = t.elapsed();
    if !ok {
        bail!("checkpoint failed: {out}{err}\n{}", w.diag());
    }
    let (dump_all, dump) = criu_stats("checkpoint", &out)?;
    let dump_log = criu_log(&w, &id, "dump.log")?;
    let dump_times = script_times(&dump_log, &w.action).context("reading CRIU's dump.log")?;
    let old_ip = w.record_in(archive)?.source.ip.to_string();
    let t = Instant::now();
    w.sh("podman rm -f web >/dev/null")?;
    let rm_wall = t.elapsed();
    let t = Instant::now();
    w.cni("DEL", "srv0", POD_NETNS, "pods", "")?;
    w.sh("ip netns del srv")?;
    let del_wall = t.elapsed();
    let t = Instant::now();
    let new_ip = w.pod_netns(
        "srv",
        "srv1",
        "pods",
        &format!("IgnoreUnknown=1;P4LB_RESTORE_FROM={old_ip}"),
    )?;
    let add_wall = t.elapsed();
    let t = Instant::now();
    let (ok, out, err) = w.try_sh(&format!(
        "podman container restore --import {archive} --tcp-established --print-stats --keep"
    ))?;
    let restore_wall = t.elapsed();
    if !ok {
        bail!("restore failed: {out}{err}\n{}", w.diag());
    }
    let (restore_all, restore) = criu_stats("restore", &out)?;
    let commits_after = crate::criu_floor::Commits::read(&w)?;
    let restored_id = w.sh("podman inspect -f '{{.Id}}' web")?.trim().to_string();
    p4lb_testbed::cgroups::prune_restore_copies(&restored_id);
    let restore_log = criu_log(&w, &restored_id, "restore.log")?;
    let restore_times =
        script_times(&restore_log, &w.action).context("reading CRIU's restore.log")?;
    std::thread::sleep(Duration::from_secs(3));
    let (done, survived) = finished(client)?;
    let after = &done.last;
    let migs = w.migrations()?;
    let m = migs
        .last()
        .context("the controller recorded no migration")?;
    w.sh(&format!("rm -f {archive}"))?;

    if let Some(dir) = std::env::var_os("P4LB_BENCH_LOGS") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let controller_log = w.sh("cat /tmp/controller.log")?;
        for (name, log) in [
            ("dump.log", &dump_log),
            ("restore.log", &restore_log),
            ("controller.log", &controller_log),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, log).with_context(|| format!("writing {}", path.display()))?;
        }
        println!("CRIU's and the controller's logs kept in {}", dir.display());
    }
    if std::env::var_os("P4LB_BENCH_VERBOSE").is_some() {
        println!(
            "dump.log, p4lb's script:\n{}",
            script_excerpt(&dump_log, &w.action)
        );
        println!(
            "restore.log, p4lb's script:\n{}",
            script_excerpt(&restore_log, &w.action)
        );
    }
    println!("podman --print-stats, checkpoint: {dump_all}");
    println!("podman --print-stats, restore:    {restore_all}");
    let ds = &dump["criu_statistics"];
    let rs = &restore["criu_statistics"];
    let freezing = ms(&ds["freezing_time"]);
    let frozen = ms(&ds["frozen_time"]);
    let memdump = ms(&ds["memdump_time"]);
    let memwrite = ms(&ds["memwrite_time"]);
    let restore_time = ms(&rs["restore_time"]);
    let forking = ms(&rs["forking_time"]);
    let criu = frozen + restore_time;
    let stall = m.stall_us as f64 / 1000.0;
    let switchover = m.switchover_us as f64 / 1000.0;
    let client_stall = after.totals.longest_stall_ms as f64;
    let span = |a: i64, b: i64| (b - a) as f64 / 1000.0;
    println!(
        "migration {:?} ({old_ip} -> {new_ip}), {CONNS} connections at {RATE}/s each:",
        m.id
    );
    println!(
        "  CRIU dump:    freezing {freezing:.1} ms, frozen {frozen:.1} ms (memdump {memdump:.1}, \
         memwrite {memwrite:.1}); the CRIU run {:.1} ms",
        dump_times.criu_total_ms
    );
    println!(
        "  CRIU restore: restore {restore_time:.1} ms (forking {forking:.1}); the CRIU run \
         {:.1} ms",
        restore_times.criu_total_ms
    );

    println!(
        "p4lb's action script inside CRIU ({}, {profile} build; controller, CNI and netavark \
         plugins {profile} builds), from CRIU's log timestamps (start of the script -> CRIU's next line; each action runs \
         the script once per CRIU config file that names it):",
        w.action
    );
    println!(
        "  {:<8} {:<22} {:>4} {:>9} {:>9} {:>11} {:>9}",
        "side", "action", "runs", "ms", "ms/run", "upper-bound", "self"
    );
    println!(
        "  (upper-bound: the part of ms from runs that ended at a CRIU line other than the \
         start of a script; CRIU may have worked before it logged that line. self: what the \
         script measured itself from its start to its exit, without process creation)"
    );
    print_side("dump", &dump_times);
    print_side("restore", &restore_times);
    let p4lb = dump_times.total_ms() + restore_times.total_ms();
    let p4lb_lock = dump_times.in_lock_ms() + restore_times.in_lock_ms();
    let criu_runs = dump_times.criu_total_ms + restore_times.criu_total_ms;
    let criu_own = criu_runs - p4lb;
    let exact = (p4lb - dump_times.bound_ms() - restore_times.bound_ms()).max(0.0);
    let own = dump_times.self_ms() + restore_times.self_ms();
    // At least what the script measured itself, or the exact part if larger.
    let at_least = own.max(exact);
    println!(
        "  p4lb inside CRIU, exact part (runs ended by the start of a script): \
         {exact:.2} ms"
    );
    println!("  p4lb inside CRIU, as the script measured itself (all runs): {own:.2} ms");
    println!(
        "  p4lb inside CRIU, both sides:           {p4lb:>9.2} ms (of it while the backend is \
         locked: {p4lb_lock:.2} ms)"
    );
    println!(
        "  CRIU runs (dump.log + restore.log):     {criu_runs:>9.2} ms, without p4lb's script \
         {criu_own:.2} ms: p4lb adds {p4lb:.2} ms (+{:.1}%)",
        100.0 * p4lb / criu_own
    );
    println!(
        "  CRIU frozen + restore (--print-stats):  {criu:>9.2} ms (includes the in-lock \
         actions: {p4lb_lock:.2} ms = {:.1}%)",
        100.0 * p4lb_lock / criu
    );
    println!(
        "  controller switchover (UNLOCK with the repoint -> switch ack, inside pre-resume): \
         {switchover:.2} ms"
    );
    println!(
        "  goal \"p4lb adds <= {GOAL_MS} ms to CRIU's time\": {} (p4lb inside CRIU {p4lb:.2} \
         ms, at least {at_least:.2} ms; while locked {p4lb_lock:.2} ms)",
        if p4lb <= GOAL_MS {
            "HOLDS"
        } else if at_least > GOAL_MS {
            "DOES NOT HOLD"
        } else {
            "NOT DECIDED (the exact part is within the goal, the upper bound is not)"
        }
    );

    let mut first_rows = None;
    if floor {
        let (fd, fr) = crate::criu_floor::floors_of(&dump_log, &restore_log)?;
        let (rows, unpaired) =
            crate::criu_floor::compare_migration((&fd, &fr), &dump_times, &restore_times);
        let (_, fl) = crate::criu_floor::print(&rows, &unpaired);
        first_rows = Some(rows);
        println!(
            "  the two do-nothing scripts around p4lb's add about 2 x {fl:.2} ms to the CRIU runs \
             above (of it in the lock about 2 x {:.2} ms); P4LB_BENCH_FLOOR=0 leaves them out",
            fd.in_lock_ms() + fr.in_lock_ms()
        );
    }
    println!(
        "  the controller from the checkpoint to the end of the restore (the script's five \
         events, and the CNI plugin's registrations): {}",
        commits_before.since(&commits_after)
    );

    println!("orchestration (the runtime's, not p4lb's), wall clock:");
    println!(
        "  podman checkpoint {} ms (podman's own figure {:.1}, runtime {:.1}); podman rm {} ms; \
         CNI DEL + netns del {} ms; netns add + CNI ADD (p4lb plugin, registers locked) {} ms; \
         podman restore {} ms (podman's own figure {:.1}, runtime {:.1})",
        checkpoint_wall.as_millis(),
        ms(&dump_all["podman_checkpoint_duration"]),
        ms(&dump["runtime_checkpoint_duration"]),
        rm_wall.as_millis(),
        del_wall.as_millis(),
        add_wall.as_millis(),
        restore_wall.as_millis(),
        ms(&restore_all["podman_restore_duration"]),
        ms(&restore["runtime_restore_duration"]),
    );
    println!(
        "  controller's view: lock -> checkpointed {:.1} ms, checkpointed -> restore started \
         {:.1} ms, restore started -> repointed {:.1} ms, repointed -> unlocked {:.1} ms (the \
         action script's UNLOCK repoints and unlocks at once)",
        span(m.locked_unix_us, m.checkpointed_unix_us),
        span(m.checkpointed_unix_us, m.restore_started_unix_us),
        span(m.restore_started_unix_us, m.restored_unix_us),
        span(m.restored_unix_us, m.unlocked_unix_us),
    );
    println!("  p4lb lock -> unlock stall:       {stall:.1} ms");
    println!("  client longest stall:            {client_stall:.1} ms");
    let waits = p4lb_testapp::report::waits_after_unlock(
        &after.connections,
        &[(m.locked_unix_us, m.unlocked_unix_us)],
    );
    println!(
        "  wait after unlock (unlock -> the reply to each connection's slowest request): {}",
        p4lb_testapp::report::waits_after_unlock_line(&waits)
    );
    println!(
        "  lock -> unlock minus CRIU frozen + restore: {:.1} ms (everything around CRIU: \
         podman's export/import and container setup, the pod rewiring); the client waits \
         {:.1} ms more than lock -> unlock (the request interval, {:.0} ms, and whatever \
         the wait after unlock adds)",
        stall - criu,
        client_stall - stall,
        1000.0 / RATE
    );
    println!(
        "  connections: {survived}/{CONNS} survived, {} reset, {} failed",
        after.totals.reset, after.totals.failed
    );
    if after.totals.reset != 0 || after.totals.failed != 0 || survived != CONNS as u64 {
        bail!("connections were lost: {}", done.stderr);
    }

    // The same move on one host without the archive (the p4lb netavark network,
    // `podman container checkpoint` then `restore --ignore-static-ip` of the same
    // container: a new address, no export, `rm` or import), and the runtime's own
    // checkpoint and restore of the same server without p4lb (in place: same
    // namespace, same address, CRIU's network lock), same connections and rate;
    // alternating, `rounds` times each, so that both see the same machine.
    w.sh("podman rm -f -t 0 web >/dev/null")?;
    w.cni("DEL", "srv1", POD_NETNS, "pods", "")?;
    w.sh("ip netns del srv")?;
    w.create_network(NATIVE_NET, NATIVE_SUBNET)?;
    w.run_server_on_network("web", NATIVE_NET)?;
    let rounds = rounds()?;
    let mut natives = Vec::new();
    let mut owns = Vec::new();
    for r in 1..=rounds {
        let native = in_place_p4lb(&w, r, floor).with_context(|| {
            format!("p4lb's migration in place (the netavark plugin), round {r}")
        })?;
        native.print(r);
        let base = crate::baseline::run_baseline(
            &w.tb,
            &crate::baseline::BaselineOptions {
                tries: 1,
                conns: CONNS,
                rate: RATE,
                in_place: true,
                ..Default::default()
            },
        )
        .with_context(|| {
            format!("the runtime's own checkpoint/restore (in place, without p4lb), round {r}")
        })?;
        let own = base
            .tries
            .into_iter()
            .next()
            .context("the baseline ran no try")?;
        if let Some(e) = &own.restore_error {
            bail!("the runtime's own restore failed: {e}");
        }
        if own.survived != own.conns {
            bail!(
                "the runtime's own checkpoint/restore kept {}/{} connections ({} reset, {} failed)",
                own.survived,
                own.conns,
                own.reset,
                own.failed
            );
        }
        println!(
            "round {r}, the runtime's own checkpoint + restore without p4lb (in place, same \
             address, CRIU's lock): checkpoint {} ms, restore {} ms; client longest stall {} \
             ms; {}/{} connections kept",
            own.checkpoint_ms, own.restore_ms, own.longest_stall_ms, own.survived, own.conns
        );
        natives.push(native);
        owns.push(own);
    }
    if let Some(first) = first_rows {
        let mut all = vec![first];
        all.extend(natives.iter().filter_map(|n| n.floor_rows.clone()));
        crate::criu_floor::print_over_migrations(&all);
    }
    let own_stall = median(owns.iter().map(|o| o.longest_stall_ms as f64));
    let own_wall = median(owns.iter().map(|o| (o.checkpoint_ms + o.restore_ms) as f64));
    let native_stall = median(natives.iter().map(|n| n.client_stall_ms as f64));
    let native_wall = median(
        natives
            .iter()
            .map(|n| (n.checkpoint_ms + n.restore_ms) as f64),
    );
    let mut waits: Vec<i64> = natives.iter().flat_map(|n| n.waits.clone()).collect();
    waits.sort_unstable();
    println!(
        "over {rounds} rounds (medians): the runtime's own client longest stall {own_stall:.0} \
         ms, podman checkpoint + restore {own_wall:.0} ms; p4lb in place: client longest stall \
         {native_stall:.0} ms, podman checkpoint + restore {native_wall:.0} ms; p4lb in place, \
         wait after unlock: {}",
        p4lb_testapp::report::waits_after_unlock_line(&waits)
    );
    println!(
        "p4lb's migration in place to a new address (checkpoint, restore --ignore-static-ip) \
         against the runtime's own, same run: client longest stall {:.2} x (median over \
         {rounds} rounds; per round {}); podman checkpoint + restore wall clock {:.2} x",
        native_stall / own_stall.max(1.0),
        natives
            .iter()
            .zip(&owns)
            .map(|(n, o)| format!(
                "{:.2}",
                n.client_stall_ms as f64 / (o.longest_stall_ms.max(1) as f64)
            ))
            .collect::<Vec<_>>()
            .join(", "),
        native_wall / own_wall.max(1.0)
    );
    println!(
        "p4lb's migration to a new address (export, new pod, import, one run) against it: \
         client longest stall {client_stall:.0} ms = {:.2} x the runtime's own median stall; \
         podman checkpoint + restore wall clock {} ms = {:.2} x",
        client_stall / own_stall.max(1.0),
        checkpoint_wall.as_millis() + restore_wall.as_millis(),
        (checkpoint_wall + restore_wall).as_millis() as f64 / own_wall.max(1.0)
    );
    if dump_times.actions.is_empty() || restore_times.actions.is_empty() {
        bail!(
            "CRIU's logs show no run of {} (is it the action script in /etc/criu/*.conf?)",
            w.action
        );
    }
    Ok(())
}

/// The p4lb network the in-place move runs on (`podman network create -d p4lb`).
const NATIVE_NET: &str = "p4bench";
const NATIVE_SUBNET: &str = "10.89.0.0/24";

/// Stops the client; its output and how many connections survived the migration
/// (open at the mark, answered after it).
fn finished(client: scenario::Client<'_>) -> Result<(scenario::ClientOutput, u64)> {
    let done = client.finish()?;
    let before = done
        .interim
        .first()
        .context("the client printed no interim report")?;
    let (survived, _) = judge(before, &done.last)?;
    Ok((done, survived))
}

/// How many times the in-place comparison runs (`P4LB_BENCH_ROUNDS`, 1–20,
/// default 3).
fn rounds() -> Result<usize> {
    match std::env::var("P4LB_BENCH_ROUNDS") {
        Err(_) => Ok(3),
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if (1..=20).contains(&n) => Ok(n),
            _ => bail!("P4LB_BENCH_ROUNDS must be a number from 1 to 20, not {v:?}"),
        },
    }
}

/// The median of `values` (the mean of the two middle ones for an even count; 0
/// for none).
pub(crate) fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// What [`in_place_p4lb`] measured.
struct InPlace {
    old_ip: String,
    new_ip: String,
    checkpoint_ms: u128,
    restore_ms: u128,
    lock_unlock_ms: f64,
    switchover_ms: f64,
    client_stall_ms: u64,
    waits: Vec<i64>,
    survived: u64,
    /// p4lb's action script against the floor in this move's CRIU runs (with the
    /// floor scripts installed).
    floor_rows: Option<Vec<crate::criu_floor::Compared>>,
}

impl InPlace {
    fn print(&self, round: usize) {
        println!(
            "round {round}, p4lb's migration in place ({} -> {}, the netavark plugin, `podman \
             container checkpoint` then `podman container restore --ignore-static-ip`: no \
             export, rm or import), {CONNS} connections at {RATE}/s each:",
            self.old_ip, self.new_ip
        );
        println!(
            "  podman checkpoint {} ms, podman restore {} ms; switchover {:.1} ms; p4lb lock -> \
             unlock {:.1} ms; client longest stall {} ms",
            self.checkpoint_ms,
            self.restore_ms,
            self.switchover_ms,
            self.lock_unlock_ms,
            self.client_stall_ms
        );
        println!(
            "  wait after unlock (unlock -> the reply to each connection's slowest request): {}",
            p4lb_testapp::report::waits_after_unlock_line(&self.waits)
        );
        println!("  connections: {}/{CONNS} survived", self.survived);
    }
}

/// One migration of the server on the p4lb network, in place with a new address
/// ([`World::migrate_podman_in_place`]), with new clients at the main run's number
/// and rate.
fn in_place_p4lb(w: &World, round: usize, floor: bool) -> Result<InPlace> {
    let client = w.start_client(CONNS, RATE)?;
    std::thread::sleep(Duration::from_secs(3));
    client.mark()?;
    // With the floor scripts, podman keeps CRIU's logs (--keep) for their timing.
    let flags = if floor { " --keep" } else { "" };
    let moved = w.migrate_podman_in_place_with("web", NATIVE_NET, round, true, flags)?;
    let floor_rows = if floor {
        let id = w.sh("podman inspect -f '{{.Id}}' web")?;
        let id = id.trim();
        let (dump_log, restore_log) = (
            criu_log(w, id, "dump.log")?,
            criu_log(w, id, "restore.log")?,
        );
        let times = |log: &str, what: &str| {
            script_times(log, &w.action).with_context(|| format!("reading CRIU's {what}"))
        };
        let (fd, fr) = crate::criu_floor::floors_of(&dump_log, &restore_log)?;
        let (rows, _) = crate::criu_floor::compare_migration(
            (&fd, &fr),
            &times(&dump_log, "dump.log")?,
            &times(&restore_log, "restore.log")?,
        );
        Some(rows)
    } else {
        None
    };
    std::thread::sleep(Duration::from_secs(3));
    let (done, survived) = finished(client)?;
    let after = &done.last;
    if after.totals.reset != 0 || after.totals.failed != 0 || survived != CONNS as u64 {
        bail!(
            "connections were lost in the in-place migration: {survived}/{CONNS} survived, {} \
             reset, {} failed: {}",
            after.totals.reset,
            after.totals.failed,
            done.stderr
        );
    }
    let m = w
        .migrations()?
        .into_iter()
        .rev()
        .find(|m| m.source_ip == moved.old_ip)
        .with_context(|| format!("the controller recorded no migration of {}", moved.old_ip))?;
    let waits = p4lb_testapp::report::waits_after_unlock(
        &after.connections,
        &[(m.locked_unix_us, m.unlocked_unix_us)],
    );
    Ok(InPlace {
        old_ip: moved.old_ip,
        new_ip: moved.new_ip,
        checkpoint_ms: moved.checkpoint_ms,
        restore_ms: moved.restore_ms,
        lock_unlock_ms: m.stall_us as f64 / 1000.0,
        switchover_ms: m.switchover_us as f64 / 1000.0,
        client_stall_ms: after.totals.longest_stall_ms,
        waits,
        survived,
        floor_rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_no_values() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }

    const LOG: &str = "(00.000010) Version: 4.2.1
(00.010000) Running network-lock scripts
(00.010100) \t[/x/p4lb-criu-action]
2026-11-22T09:43:49.725768Z  INFO lock taken
(00.016100) \t[/x/p4lb-criu-action]
(00.020100) Running network-lock scripts
(00.020200) \tRPC
(00.030000) Running post-dump scripts
(00.030000) \t[/x/p4lb-criu-action]
p4lb-criu-action: post-dump: done
(00.032500) Writing stats
(01.500000) Dumping finished successfully
";

    #[test]
    fn script_runs_are_timed_to_the_next_criu_line() {
        let t = script_times(LOG, "/x/p4lb-criu-action").unwrap();
        assert_eq!(t.actions.len(), 2);
        assert_eq!(t.actions[0].action, "network-lock");
        assert_eq!(t.actions[0].runs, 2);
        assert!((t.actions[0].ms - 10.0).abs() < 1e-6, "{t:?}");
        assert_eq!(t.actions[1].action, "post-dump");
        assert!((t.actions[1].ms - 2.5).abs() < 1e-6, "{t:?}");
        // The first network-lock run ends where the second starts (exact);
        // the second and the post-dump run end at other CRIU lines.
        assert!((t.actions[0].bound_ms - 4.0).abs() < 1e-6, "{t:?}");
        assert!((t.actions[1].bound_ms - 2.5).abs() < 1e-6, "{t:?}");
        assert!((t.total_ms() - 12.5).abs() < 1e-6);
        assert!((t.criu_total_ms - 1500.0).abs() < 1e-6);
    }

    #[test]
    fn a_last_run_without_end_is_untimed_and_a_log_without_criu_lines_an_error() {
        let cut = "(00.01) Running post-resume scripts\n(00.02) \t[/x/s]\noutput\n";
        let t = script_times(cut, "/x/s").unwrap();
        assert!(t.actions.is_empty(), "{t:?}");
        assert_eq!(
            t.untimed.as_ref().map(|(a, _)| a.as_str()),
            Some("post-resume")
        );
        assert!(script_times("no criu here\n", "/x/s").is_err());
        let other = script_times(LOG, "/y/other").unwrap();
        assert!(other.actions.is_empty());
        assert_eq!(other.untimed, None);
    }

    #[test]
    fn the_scripts_own_time_is_read_from_its_output() {
        let log = "(00.010000) Running network-lock scripts\n\
                   (00.010000) \t[/x/s]\n\
                   2026-01-01T00:00:00Z  INFO locked endpoint a (migration mig-1) action=network-lock elapsed_us=2500\n\
                   (00.014000) Running post-dump scripts\n\
                   (00.014000) \t[/x/s]\n\
                   2026-01-01T00:00:00Z  INFO checkpointed action=post-dump elapsed_us=1250\n";
        let t = script_times(log, "/x/s").unwrap();
        assert!((t.actions[0].self_ms - 2.5).abs() < 1e-9, "{t:?}");
        assert_eq!(
            t.untimed.as_ref().map(|(a, _)| a.as_str()),
            Some("post-dump")
        );
        assert!((t.self_ms() - 3.75).abs() < 1e-9, "{t:?}");
        assert_eq!(self_reported_ms("no figure here"), None);
    }
}
