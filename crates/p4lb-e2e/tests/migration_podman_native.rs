//! End to end, the way a Podman user works: a p4lb network made with `podman
//! network create -d p4lb` (the netavark plugin `p4lb-netavark`, installed as
//! /usr/libexec/netavark/p4lb), `podman run --network NAME`, and migrations that
//! are nothing but `podman container checkpoint --tcp-established --export`,
//! `podman rm` and `podman container restore --import --tcp-established
//! [--ignore-static-ip]`. The plugin tells each restore from a fresh start by
//! asking the controller (a checkpointed migration of the same container), registers
//! the new endpoint locked, and the CRIU action script does the rest. A client
//! outside holds connections to the VIP all along.
//!
//! The client's own namespace is wired by the CNI plugin (it stands for the world
//! outside); the server container only ever sees Podman commands. Those commands
//! are [`p4lb_e2e::scenario::World`]'s Podman-native methods (`create_network`,
//! `run_server_on_network`, `address`, `migrate_podman`), the same ones `make demo` runs.

mod migration_common;

use std::time::Duration;

use migration_common::*;
use p4lb_e2e::judge::judge;
use p4lb_testapp::report::{waits_after_unlock, waits_after_unlock_line};
use p4lb_testbed::images::{TESTAPP_IN_IMAGE, TEST_IMAGE};
use p4lb_testbed::wait;

/// The p4lb network of the server container.
const NET: &str = "p4pods";
const SUBNET: &str = "10.89.0.0/24";

/// Host links made by p4lb (the host ends of its veths).
fn p4lb_links(w: &World) -> Vec<String> {
    w.sh("ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^p4lb' || true")
        .lines()
        .map(str::to_string)
        .collect()
}

/// What the migration tests start from: the client namespace `cli`, the p4lb network
/// `NET`, the VIP service and the stateful server `web` on the network. The guard keeps
/// other tests out; it is dropped after the world.
fn web_behind_the_vip() -> (Serial, World) {
    let s = serial();
    let w = World::start();
    w.pod_netns("cli", "cli", "clients", "");
    w.create_network(NET, SUBNET);
    w.add_service();
    w.run_server_on_network("web", NET);
    (s, w)
}

/// How a migration moves the container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    /// `checkpoint --export`, `rm`, `restore --import`: the archive could go anywhere.
    ExportImport,
    /// `checkpoint`, `restore` of the same container: a move on one host.
    InPlace,
}

impl How {
    fn name(self) -> &'static str {
        match self {
            How::ExportImport => "export/import",
            How::InPlace => "in place",
        }
    }
}

/// The migrations `moves`, in a row, of a stateful server behind the VIP with
/// `conns` client connections; every connection must survive, with no byte lost
/// or duplicated and the server's state kept.
fn migrations_keep_every_connection(ignore_static_ip: bool, moves: &[How], conns: usize) {
    migrations_keep_every_connection_at(ignore_static_ip, moves, conns, 5.0)
}

/// As [`migrations_keep_every_connection`], each connection sending `rate` requests a
/// second.
fn migrations_keep_every_connection_at(
    ignore_static_ip: bool,
    moves: &[How],
    conns: usize,
    rate: f64,
) {
    let migrations = moves.len();
    let (_s, w) = web_behind_the_vip();
    let first_ip = w.address("web", NET);
    let ep = w
        .endpoints()
        .into_iter()
        .find(|e| e.ip == first_ip)
        .unwrap_or_else(|| panic!("no endpoint for {first_ip}\n{}", w.diag()));
    assert_eq!(ep.network, NET, "{ep:?}");
    assert_eq!(ep.labels.get("app").map(String::as_str), Some("web"));
    assert!(!ep.locked, "{ep:?}");

    let client = w.start_client(conns, rate).unwrap();
    // Every connection open (and learned) before the first checkpoint.
    std::thread::sleep(Duration::from_secs(3 + (conns / 1000) as u64));
    client.mark().unwrap();

    let mut history = vec![first_ip.clone()];
    let mut moved = Vec::new();
    for (i, how) in (1..=migrations).zip(moves) {
        let m = match how {
            How::ExportImport => w.migrate_podman("web", NET, i, ignore_static_ip),
            How::InPlace => w.migrate_podman_in_place("web", NET, i, ignore_static_ip),
        };
        assert_eq!(&m.old_ip, history.last().unwrap());
        if ignore_static_ip {
            assert!(
                !history.contains(&m.new_ip),
                "migration {i}: {} is not a new address ({history:?})",
                m.new_ip
            );
        } else {
            assert_eq!(m.new_ip, m.old_ip, "migration {i} did not keep its address");
        }
        history.push(m.new_ip.clone());
        // Every address the container ever had is configured in the new namespace.
        let addrs = w.addrs_in(&w.netns_of("web"));
        for a in &history {
            assert!(addrs.contains(a), "migration {i}: {a} missing in {addrs:?}");
        }
        let eps = w.endpoints();
        let ep = eps
            .iter()
            .find(|e| e.ip == m.new_ip)
            .unwrap_or_else(|| panic!("no endpoint for {}\n{}", m.new_ip, w.diag()));
        assert_eq!(ep.state, "ready", "{ep:?}\n{}", w.diag());
        assert!(!ep.locked, "{ep:?}");
        assert_eq!(
            eps.iter().filter(|e| e.network == NET).count(),
            1,
            "the source endpoint is gone after podman rm: {eps:?}"
        );
        std::thread::sleep(Duration::from_secs(2));
        moved.push(m);
    }
    // Time for every connection to be answered again: 2 s, or twice the longest lock when
    // that is longer. A connection whose packets the switch could not hold (over its hold
    // bound, thousands of connections) resumes at its next retransmission, at most one
    // backed-off interval (≤ the lock) after the unlock.
    let longest_lock = w
        .migrations()
        .iter()
        .map(|m| Duration::from_micros(m.stall_us.max(0) as u64))
        .max()
        .unwrap_or_default();
    std::thread::sleep(Duration::from_secs(2).max(2 * longest_lock));
    let out = client.finish().unwrap();
    let before = out.interim.first().expect("interim report");
    let after = &out.last;

    let migs = w.migrations();
    let mut summary = String::new();
    let mut by_how: Vec<(How, u128, i64)> = Vec::new();
    for ((m, v), how) in moved
        .iter()
        .zip(migs.iter().rev().take(migrations).rev())
        .zip(moves)
    {
        by_how.push((*how, m.checkpoint_ms + m.restore_ms, v.stall_us));
        summary.push_str(&format!(
            "  {} {} ({} -> {}): state {}, switchover {:.1} ms, stall {:.1} ms, conns carried \
             {}, podman checkpoint {} ms, (rm +) restore {} ms\n",
            how.name(),
            v.id,
            m.old_ip,
            m.new_ip,
            v.state,
            v.switchover_us as f64 / 1000.0,
            v.stall_us as f64 / 1000.0,
            v.connections_carried,
            m.checkpoint_ms,
            m.restore_ms
        ));
    }
    // Each way's mean, when the run mixed them: the same machine, container and clients.
    let kinds: std::collections::BTreeSet<&str> = moves.iter().map(|h| h.name()).collect();
    if kinds.len() > 1 {
        let mut stall = Vec::new();
        for how in [How::ExportImport, How::InPlace] {
            let runs: Vec<&(How, u128, i64)> = by_how.iter().filter(|r| r.0 == how).collect();
            let n = runs.len().max(1) as f64;
            let mean_stall = runs.iter().map(|r| r.2 as f64 / 1000.0).sum::<f64>() / n;
            stall.push(mean_stall);
            summary.push_str(&format!(
                "  {}: mean podman checkpoint + restore {:.0} ms, mean lock -> unlock \
                 {mean_stall:.0} ms over {} migrations\n",
                how.name(),
                runs.iter().map(|r| r.1 as f64).sum::<f64>() / n,
                runs.len()
            ));
        }
        summary.push_str(&format!(
            "  lock -> unlock, in place / export-import: {:.2}\n",
            stall[1] / stall[0].max(f64::MIN_POSITIVE)
        ));
    }
    let (survived, more) = judge(before, after).unwrap();
    let t = &after.totals;
    // Unlock -> the reply to each connection's slowest request (one that met a lock).
    let unlocks: Vec<(i64, i64)> = migs
        .iter()
        .map(|v| (v.locked_unix_us, v.unlocked_unix_us))
        .collect();
    let waits = waits_after_unlock(&after.connections, &unlocks);
    record(&format!(
        "podman-native, {migrations} migrations ({}), {conns} connections: {survived} \
         survived, {} reset, {} failed, {} bytes lost, {} duplicated, {} state regressions, \
         {more} requests after the first checkpoint, longest stall {} ms, wait after unlock \
         {}\n{summary}",
        if ignore_static_ip {
            "--ignore-static-ip, a new address each"
        } else {
            "address kept"
        },
        t.reset,
        t.failed,
        t.lost_bytes,
        t.duplicated_bytes,
        t.state_regressions,
        t.longest_stall_ms,
        waits_after_unlock_line(&waits)
    ));
    assert_eq!(migs.len(), migrations, "{migs:?}");
    for v in &migs {
        assert_eq!(v.state, "done", "{v:?}");
    }
    assert_clients_kept(&out, conns);
}

#[test]
fn podman_restore_ignore_static_ip_moves_to_new_addresses_keeping_every_connection() {
    migrations_keep_every_connection(true, &[How::ExportImport; 5], 200);
}

#[test]
fn podman_restore_keeping_the_address_keeps_every_connection_and_the_state() {
    migrations_keep_every_connection(false, &[How::ExportImport; 5], 200);
}

/// Connections for [`podman_migrations_keep_thousands_of_connections`]: 2000 unless
/// `P4LB_E2E_SCALE_CONNS` says otherwise (docs/migration.md runs it with 10 000).
fn scale_conns() -> usize {
    match std::env::var("P4LB_E2E_SCALE_CONNS") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("P4LB_E2E_SCALE_CONNS={v:?} is not a number")),
        Err(_) => 2000,
    }
}

/// Thousands of connections through three migrations in a row, each sending a request
/// every 5 s: every connection kept, no byte lost or duplicated.
#[test]
fn podman_migrations_keep_thousands_of_connections() {
    migrations_keep_every_connection_at(true, &[How::ExportImport; 3], scale_conns(), 0.2);
}

/// A move on one host without an archive (`podman container checkpoint NAME`, `podman
/// container restore --ignore-static-ip NAME`), alternated with export/import in the same
/// run so their times compare.
#[test]
fn podman_in_place_restore_without_export_keeps_every_connection() {
    use How::*;
    migrations_keep_every_connection(true, &[ExportImport, InPlace, ExportImport, InPlace], 100);
}

#[test]
fn podman_network_commands_work_on_p4lb_networks_and_refuse_bad_options() {
    let _s = serial();
    let w = World::start();
    w.create_network(NET, SUBNET);
    w.create_network("p4second", "10.90.0.0/24");
    let ls = w.sh("podman network ls --format '{{.Name}} {{.Driver}}'");
    for n in [NET, "p4second"] {
        assert!(ls.contains(&format!("{n} p4lb")), "{ls}");
    }
    let inspect = w.sh(&format!("podman network inspect {NET}"));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["driver"], "p4lb", "{inspect}");
    assert_eq!(v[0]["subnets"][0]["subnet"], SUBNET, "{inspect}");
    assert_eq!(v[0]["options"]["labels"], "app=web", "{inspect}");

    // One container on each network: two endpoints, each on its own network.
    w.run_server_on_network("one", NET);
    w.run_server_on_network("two", "p4second");
    let (a, b) = (w.address("one", NET), w.address("two", "p4second"));
    assert!(a.starts_with("10.89.0."), "{a}");
    assert!(b.starts_with("10.90.0."), "{b}");
    let eps = w.endpoints();
    for (ip, net) in [(&a, NET), (&b, "p4second")] {
        assert!(
            eps.iter().any(|e| &e.ip == ip && e.network == net),
            "no endpoint {ip} on {net}: {eps:?}"
        );
    }
    // A network in use is refused by Podman as usual.
    let (ok, _, err) = w.try_sh(&format!("podman network rm {NET}"));
    assert!(!ok, "podman network rm of a network in use succeeded");
    assert!(err.contains("in use") || err.contains("used"), "{err}");

    // podman rm tears down: the endpoint and the veth are gone.
    w.sh("podman rm -f one two >/dev/null");
    let eps = w.endpoints();
    assert!(eps.is_empty(), "endpoints left after podman rm: {eps:?}");
    assert!(
        p4lb_links(&w).is_empty(),
        "links left: {:?}",
        p4lb_links(&w)
    );
    w.sh(&format!("podman network rm {NET} p4second"));
    let ls = w.sh("podman network ls --format '{{.Name}}'");
    assert!(!ls.contains(NET) && !ls.contains("p4second"), "{ls}");

    // Bad options: a clear error, and no network.
    for (args, why) in [
        (
            "--subnet 10.91.0.0/24 -o sockett=/x",
            "unknown option \"sockett\"",
        ),
        ("--subnet 10.91.0.0/24 -o mtu=10", "68..65535"),
        (
            "--subnet 10.91.0.0/24 -o labels=container.id=x",
            "identity label",
        ),
        (
            "--subnet 10.91.0.0/24 -o checkpoint_mode=move",
            "migrate, snapshot",
        ),
        (
            "--subnet 10.91.0.0/24 -o socket=relative.sock",
            "absolute path",
        ),
        ("", "needs an IPv4 subnet"),
    ] {
        let (ok, o, e) = w.try_sh(&format!("podman network create -d p4lb {args} p4bad"));
        println!("podman network create -d p4lb {args} p4bad: {}", e.trim());
        assert!(!ok, "{args}: created: {o}");
        assert!(e.contains(why), "{args}: {e:?} does not say {why:?}");
        let (exists, _, _) = w.try_sh("podman network exists p4bad");
        assert!(!exists, "{args}: the network was created anyway");
    }
}

#[test]
fn controller_down_at_podman_run_fails_clearly_and_leaves_nothing() {
    let _s = serial();
    let w = World::start();
    w.create_network(NET, SUBNET);
    w.stop_controller();
    let (ok, o, e) = w.try_sh(&format!(
        "podman run -d --name web --network {NET} {TEST_IMAGE} {TESTAPP_IN_IMAGE} server \
         --listen 0.0.0.0:{PORT}"
    ));
    println!("podman run with the controller down: {}", e.trim());
    assert!(!ok, "podman run succeeded with the controller down: {o}");
    assert!(
        e.contains("p4lb controller unavailable"),
        "podman does not say why: {e:?}"
    );
    assert!(
        p4lb_links(&w).is_empty(),
        "links left: {:?}",
        p4lb_links(&w)
    );
    let running = w.sh("podman ps -q");
    assert!(running.trim().is_empty(), "{running}");

    // Once the controller is back the same container starts, wired and registered.
    w.start_controller();
    w.sh("podman rm -f web >/dev/null 2>&1 || true");
    w.run_server_on_network("web", NET);
    let ip = w.address("web", NET);
    assert!(w.endpoints().iter().any(|e| e.ip == ip), "{}", w.diag());
}

#[test]
fn controller_down_at_checkpoint_or_restore_fails_loudly_and_the_container_stays_restorable() {
    let _s = serial();
    let w = World::start();
    w.create_network(NET, SUBNET);
    w.add_service();
    w.run_server_on_network("web", NET);
    let old_ip = w.address("web", NET);

    // At checkpoint: refused, the container keeps running.
    w.stop_controller();
    let (ok, out) = w.checkpoint("web", "/tmp/ck-down.tar");
    assert!(!ok, "checkpoint succeeded with the controller down: {out}");
    let state = w.sh("podman inspect -f '{{.State.Status}}' web");
    assert_eq!(state.trim(), "running", "the container must keep running");
    w.start_controller();

    // At restore: the plugin cannot ask whether this is a restore; podman says why.
    let (ok, out) = w.checkpoint("web", "/tmp/ck.tar");
    assert!(ok, "checkpoint failed: {out}\n{}", w.diag());
    w.sh("podman rm web >/dev/null");
    w.stop_controller();
    let (ok, o, e) = w.try_sh(
        "podman container restore --import /tmp/ck.tar --tcp-established --ignore-static-ip",
    );
    println!("restore with the controller down: {}", e.trim());
    assert!(!ok, "restore succeeded with the controller down: {o}");
    assert!(e.contains("p4lb controller unavailable"), "{e:?}");
    assert!(
        p4lb_links(&w).is_empty(),
        "links left: {:?}",
        p4lb_links(&w)
    );

    // The archive is still good: with the controller back the restore completes.
    w.start_controller();
    w.sh("podman rm -f web >/dev/null 2>&1 || true");
    let (ok, o, e) = w.try_sh(
        "podman container restore --import /tmp/ck.tar --tcp-established --ignore-static-ip",
    );
    assert!(
        ok,
        "restore after the controller came back: {o}{e}\n{}",
        w.diag()
    );
    let new_ip = w.address("web", NET);
    assert_ne!(new_ip, old_ip);
    let ep = w
        .endpoints()
        .into_iter()
        .find(|e| e.ip == new_ip)
        .unwrap_or_else(|| panic!("no endpoint for {new_ip}\n{}", w.diag()));
    assert_eq!(ep.state, "ready", "{ep:?}");
    assert!(!ep.locked, "{ep:?}");
    let migs = w.migrations();
    let done = migs.iter().filter(|m| m.state == "done").count();
    assert_eq!(done, 1, "{migs:?}");
}

/// The plugin killed while it waits for the controller (SIGKILL, as an OOM kill or
/// a runtime timeout would): `podman run` fails, and nothing is left once the
/// container is removed. The wait is on a frozen controller, which accepts the
/// connection and never answers; the plugin's state at that point is whatever it
/// did before asking.
#[test]
fn plugin_killed_mid_setup_leaves_nothing_after_the_next_teardown() {
    let _s = serial();
    let w = World::start();
    // A long controller timeout, so the plugin is still waiting when it is killed.
    w.sh(&format!(
        "podman network create -d p4lb --subnet {SUBNET} -o labels=app=web \
         -o timeout_ms=120000 {NET}"
    ));
    w.sh("kill -STOP $(cat /tmp/controller.pid)");
    let mut run =
        w.tb.spawn(&[
            "/bin/sh",
            "-c",
            &format!(
                "podman run -d --name web --network {NET} {TEST_IMAGE} {TESTAPP_IN_IMAGE} \
                 server --listen 0.0.0.0:{PORT} >/tmp/run.out 2>&1"
            ),
        ])
        .unwrap();
    wait::until(30, "the plugin to wait for the controller", || {
        w.try_sh("pgrep -f '^/usr/libexec/netavark/p4lb setup'").0
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pid = w.sh("pgrep -f '^/usr/libexec/netavark/p4lb setup'");
    w.sh(&format!("kill -KILL {}", pid.trim()));
    let status = run.wait().unwrap();
    let out = w.sh("cat /tmp/run.out");
    println!("podman run with the plugin killed: {}", out.trim());
    assert!(!status.success(), "podman run succeeded: {out}");
    w.sh("kill -CONT $(cat /tmp/controller.pid)");
    w.sh("podman rm -f web >/dev/null 2>&1 || true");
    assert!(
        p4lb_links(&w).is_empty(),
        "links left: {:?}",
        p4lb_links(&w)
    );
    let eps = w.endpoints();
    assert!(eps.is_empty(), "endpoints left: {eps:?}");
    // The network works afterwards.
    w.run_server_on_network("web", NET);
    let ip = w.address("web", NET);
    assert!(w.endpoints().iter().any(|e| e.ip == ip), "{}", w.diag());
}

/// Figure (not a timed assertion): `podman run -d` until the container runs, on a
/// p4lb network and on Podman's default bridge network, alternating, same run.
#[test]
fn figure_podman_run_on_a_p4lb_network_vs_the_default_bridge() {
    let _s = serial();
    let w = World::start();
    w.create_network(NET, SUBNET);
    let (ok, _, e) = w.try_sh(&format!(
        "podman run -d --name probe --network podman {TEST_IMAGE} sleep 1 >/dev/null && \
         podman rm -f probe >/dev/null"
    ));
    if !ok {
        println!("SKIPPED: Podman's default bridge network does not work here: {e}");
        return;
    }
    let rounds = 5;
    let mut p4lb_ms = Vec::new();
    let mut bridge_ms = Vec::new();
    for i in 0..rounds {
        for (net, out) in [(NET, &mut p4lb_ms), ("podman", &mut bridge_ms)] {
            let name = format!("lat{i}");
            let t = std::time::Instant::now();
            w.sh(&format!(
                "podman run -d --name {name} --network {net} {TEST_IMAGE} sleep 600 >/dev/null"
            ));
            out.push(t.elapsed().as_secs_f64() * 1000.0);
            if net == NET {
                let ip = w.address(&name, NET);
                assert!(
                    w.endpoints().iter().any(|e| e.ip == ip),
                    "{name} not registered\n{}",
                    w.diag()
                );
            }
            w.sh(&format!("podman rm -f -t 0 {name} >/dev/null"));
        }
    }
    assert!(w.endpoints().is_empty(), "{}", w.diag());
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (p, b) = (median(&mut p4lb_ms), median(&mut bridge_ms));
    record(&format!(
        "podman run -d, median of {rounds}: p4lb network {p:.0} ms, default bridge {b:.0} ms \
         (ratio {:.2})",
        p / b
    ));
}

/// One migration of [`figure_criu_network_lock_vs_skip`].
struct LockRow {
    skip: bool,
    client_stall_ms: f64,
    p4lb_stall_ms: f64,
    checkpoint_ms: f64,
    restore_ms: f64,
}

/// Figure (not a timed assertion): CRIU's own network lock vs `network-lock skip`
/// (p4lb's switch lock alone), alternating in the same run, one client session per
/// migration. Every connection must survive either way; the figures are the
/// client's longest stall, p4lb's lock-to-unlock stall and podman's times.
#[test]
fn figure_criu_network_lock_vs_skip() {
    let (_s, w) = web_behind_the_vip();
    let conns = 50;
    let rounds = 3;
    let mut rows: Vec<LockRow> = Vec::new();
    for i in 0..rounds * 2 {
        let skip = i % 2 == 1;
        // The lock method is chosen at dump and stored in the images.
        w.sh(&format!(
            "for f in crun.conf runc.conf; do sed -i '/^network-lock /d' /etc/criu/$f; {} done",
            if skip {
                "echo 'network-lock skip' >> /etc/criu/$f;"
            } else {
                ""
            }
        ));
        let client = w.start_client(conns, 5.0).unwrap();
        std::thread::sleep(Duration::from_secs(2));
        client.mark().unwrap();
        let m = w.migrate_podman("web", NET, 100 + i, true);
        std::thread::sleep(Duration::from_secs(2));
        let out = client.finish().unwrap();
        let before = out.interim.first().expect("interim report");
        let (survived, _) = judge(before, &out.last).unwrap();
        let mode = if skip { "skip" } else { "iptables (default)" };
        assert_eq!(out.last.totals.reset, 0, "{mode}: {}", out.stderr);
        assert_eq!(survived, conns as u64, "{mode}: {}", out.stderr);
        let mig = w.migrations().pop().expect("a migration record");
        assert_eq!(mig.state, "done", "{mig:?}");
        rows.push(LockRow {
            skip,
            client_stall_ms: out.last.totals.longest_stall_ms as f64,
            p4lb_stall_ms: mig.stall_us as f64 / 1000.0,
            checkpoint_ms: m.checkpoint_ms as f64,
            restore_ms: m.restore_ms as f64,
        });
    }
    w.sh("for f in crun.conf runc.conf; do sed -i '/^network-lock /d' /etc/criu/$f; done");
    let avg = |skip: bool, f: &dyn Fn(&LockRow) -> f64| {
        let v: Vec<f64> = rows.iter().filter(|r| r.skip == skip).map(f).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let mut text =
        format!("CRIU network lock, {rounds} migrations each, {conns} connections, all kept:\n");
    for (skip, name) in [(false, "iptables (default)"), (true, "skip")] {
        text.push_str(&format!(
            "  {name:<18}: client longest stall {:.0} ms, p4lb lock->unlock {:.0} ms, \
             podman checkpoint {:.0} ms, rm + restore {:.0} ms\n",
            avg(skip, &|r| r.client_stall_ms),
            avg(skip, &|r| r.p4lb_stall_ms),
            avg(skip, &|r| r.checkpoint_ms),
            avg(skip, &|r| r.restore_ms),
        ));
    }
    text.push_str(&format!(
        "  ratio skip/default: client stall {:.2}, p4lb stall {:.2}",
        avg(true, &|r| r.client_stall_ms) / avg(false, &|r| r.client_stall_ms),
        avg(true, &|r| r.p4lb_stall_ms) / avg(false, &|r| r.p4lb_stall_ms)
    ));
    record(&text);
}

/// Figure (not a timed assertion): the wait after unlock of clients that keep sending while
/// the backend is locked (pipelined: a request every 50 ms whether or not the last one was
/// answered). Their segments meet the lock, unlike a ping-pong client's, whose one request
/// is usually in the frozen server's socket already (docs/migration.md, "At unlock"). One
/// migration to a new address; every connection must survive it.
#[test]
fn figure_wait_after_unlock_of_clients_sending_during_the_lock() {
    let (_s, w) = web_behind_the_vip();
    let conns = 50;
    let client = w.start_pipelined_client(conns, 20.0).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    client.mark().unwrap();
    let m = w.migrate_podman("web", NET, 1, true);
    std::thread::sleep(Duration::from_secs(3));
    let out = client.finish().unwrap();
    let before = out.interim.first().expect("interim report");
    let (survived, _) = judge(before, &out.last).unwrap();
    let t = &out.last.totals;
    let mig = w.migrations().pop().expect("a migration record");
    let waits = waits_after_unlock(
        &out.last.connections,
        &[(mig.locked_unix_us, mig.unlocked_unix_us)],
    );
    let slowest = out
        .last
        .connections
        .iter()
        .map(|c| c.slowest_request_ms)
        .max()
        .unwrap_or(0);
    record(&format!(
        "pipelined clients (a request every 50 ms, not waiting for replies), {conns} \
         connections, one migration ({} -> {}): {survived} survived, {} reset; p4lb lock -> \
         unlock {:.0} ms, client longest stall {} ms, slowest request {slowest} ms, wait after \
         unlock {}",
        m.old_ip,
        m.new_ip,
        t.reset,
        mig.stall_us as f64 / 1000.0,
        t.longest_stall_ms,
        waits_after_unlock_line(&waits)
    ));
    assert_eq!(mig.state, "done", "{mig:?}");
    assert_eq!(t.reset, 0, "{}", out.stderr);
    assert_eq!(t.lost_bytes + t.duplicated_bytes, 0, "{}", out.stderr);
    assert_eq!(survived, conns as u64, "{}", out.stderr);
}

#[test]
fn controller_down_at_podman_rm_still_removes_the_container() {
    let _s = serial();
    let w = World::start();
    w.create_network(NET, SUBNET);
    w.run_server_on_network("web", NET);
    w.stop_controller();
    let (ok, o, e) = w.try_sh("podman rm -f web");
    println!(
        "podman rm with the controller down: {}{}",
        o.trim(),
        e.trim()
    );
    assert!(ok, "podman rm failed with the controller down: {o}{e}");
    let (exists, _, _) = w.try_sh("podman container exists web");
    assert!(!exists, "the container is still there");
    assert!(
        p4lb_links(&w).is_empty(),
        "links left: {:?}",
        p4lb_links(&w)
    );
    // Back up, the controller withdraws the endpoint whose namespace is gone.
    w.start_controller();
    wait::until(30, "the controller to withdraw the endpoint", || {
        let eps = w.endpoints();
        eps.len() == 1 && eps[0].state == "stale"
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", w.diag()));
    let key = w.endpoints()[0].key.clone();
    w.sh(&format!("{} --socket {SOCKET} endpoints rm {key}", w.ctl));
    assert!(w.endpoints().is_empty(), "{}", w.diag());
}
