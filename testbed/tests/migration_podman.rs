//! End to end: live migration to a new address with every TCP connection kept.
//!
//! Podman 5 checkpoint/restore (crun, CRIU 4.2) of a `p4lb-testapp` server that
//! backs a VIP on p4lb's software switch (embedded in the controller). Each
//! migration restores the container into a *new* network namespace at the same
//! path (Podman rejoins `--network ns:PATH`) whose CNI-assigned address is new;
//! the CRIU action script locks the backend at checkpoint, moves the container's
//! addresses into the target before CRIU binds the sockets, and has the
//! controller repoint and unlock it. A client outside holds connections to the
//! VIP all along and must see no reset.

mod migration_common;

use std::time::{Duration, Instant};

use migration_common::*;
use p4lb_testapp::report::Report;
use p4lb_testbed::migration::judge;
use serde_json::Value;

fn reports(stdout: &str) -> Vec<Report> {
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<Report>(l).unwrap_or_else(|e| panic!("report {l}: {e}")))
        .collect()
}

/// Checkpoints `name` to an uncompressed archive; returns (ok, stdout+stderr).
fn checkpoint(w: &World, name: &str, archive: &str) -> (bool, String) {
    let (ok, o, e) = w.try_sh(&format!(
        "podman container checkpoint --tcp-established --compress none --export {archive} {name}"
    ));
    (ok, format!("{o}{e}"))
}

/// The record the action script wrote into the images, read back from the archive.
fn record_in(w: &World, archive: &str) -> Value {
    let j = w.sh(&format!(
        "tar -xOf {archive} checkpoint/p4lb-migration.json"
    ));
    serde_json::from_str(&j).unwrap_or_else(|e| panic!("record {j:?}: {e}"))
}

struct Moved {
    old_ip: String,
    new_ip: String,
    checkpoint_ms: u128,
    restore_ms: u128,
}

/// One migration: checkpoint, remove, new netns at the same path with a new
/// address (registered locked, as a restore), restore.
fn migrate(w: &World, name: &str, cur_id: &str, new_id: &str, i: usize) -> Moved {
    let archive = format!("/tmp/ck-{i}.tar");
    let t = Instant::now();
    let (ok, out) = checkpoint(w, name, &archive);
    assert!(ok, "checkpoint {i} failed: {out}\n{}", w.diag());
    let checkpoint_ms = t.elapsed().as_millis();
    let rec = record_in(w, &archive);
    let old_ip = rec["source"]["ip"].as_str().unwrap().to_string();
    assert_eq!(rec["state"], "checkpointed", "record {rec}");
    assert_eq!(rec["mode"], "migrate", "record {rec}");
    w.sh(&format!("podman rm -f {name} >/dev/null"));
    w.cni("DEL", cur_id, POD_NETNS, "pods", "");
    w.sh("ip netns del srv");
    let t = Instant::now();
    let new_ip = w.pod_netns(
        "srv",
        new_id,
        "pods",
        &format!("IgnoreUnknown=1;P4LB_RESTORE_FROM={old_ip}"),
    );
    let (ok, o, e) = w.try_sh(&format!(
        "podman container restore --import {archive} --tcp-established"
    ));
    assert!(ok, "restore {i} failed: {o}{e}\n{}", w.diag());
    let restore_ms = t.elapsed().as_millis();
    w.sh(&format!("rm -f {archive}"));
    Moved {
        old_ip,
        new_ip,
        checkpoint_ms,
        restore_ms,
    }
}

#[test]
fn podman_migrations_to_new_addresses_keep_every_connection() {
    let _s = serial();
    let w = World::start();
    let conns = 200;
    let migrations = 5;
    w.pod_netns("cli", "cli", "clients", "");
    let first_ip = w.pod_netns("srv", "srv0", "pods", "");
    w.add_service();
    w.run_server("web", &["p4lb.io/tier=gold"]);
    // The OCI hook labelled the endpoint from the container's annotations.
    let ep = w.endpoint("srv0/eth0");
    assert_eq!(ep["labels"]["p4lb.io/tier"], "gold", "hook labels: {ep}");
    assert!(ep["labels"]["container.id"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));

    let client =
        w.tb.spawn(&[
            "/bin/sh",
            "-c",
            &format!(
                "echo $$ > /tmp/client.pid; exec ip netns exec cli {} client --target {VIP}:{PORT} \
                 --conns {conns} --rate 5",
                w.testapp
            ),
        ])
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    w.sh("kill -USR1 $(cat /tmp/client.pid)");
    std::thread::sleep(Duration::from_millis(300));

    let mut ids = vec!["srv0".to_string()];
    let mut history = vec![first_ip.clone()];
    let mut moved = Vec::new();
    for i in 1..=migrations {
        let new_id = format!("srv{i}");
        let m = migrate(&w, "web", &ids[i - 1], &new_id, i);
        assert_eq!(&m.old_ip, history.last().unwrap());
        assert_ne!(
            m.new_ip, m.old_ip,
            "migration {i} did not get a new address"
        );
        history.push(m.new_ip.clone());
        // Every address the container ever had is configured in the target.
        let addrs = w.addrs_in("srv");
        for a in &history {
            assert!(addrs.contains(a), "migration {i}: {a} missing in {addrs:?}");
        }
        let ep = w.endpoint(&format!("{new_id}/eth0"));
        assert_eq!(ep["state"], "ready", "{ep}\n{}", w.diag());
        assert_eq!(ep["locked"], false);
        std::thread::sleep(Duration::from_secs(2));
        ids.push(new_id);
        moved.push(m);
    }
    std::thread::sleep(Duration::from_secs(2));
    w.sh("kill -TERM $(cat /tmp/client.pid)");
    let out = client.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reps = reports(&stdout);
    let before = reps.iter().find(|r| !r.r#final).expect("interim report");
    let after = reps.iter().find(|r| r.r#final).expect("final report");

    let migs = w.migrations();
    let mut summary = String::new();
    for (m, v) in moved.iter().zip(migs.iter().rev().take(migrations).rev()) {
        summary.push_str(&format!(
            "  {} {} -> {} ({} -> {}): state {}, switchover {:.1} ms, stall {:.1} ms, \
             conns carried {}, podman checkpoint {} ms, restore {} ms\n",
            v["id"].as_str().unwrap_or("?"),
            v["source_key"].as_str().unwrap_or("?"),
            v["target_key"].as_str().unwrap_or("?"),
            m.old_ip,
            m.new_ip,
            v["state"].as_str().unwrap_or("?"),
            v["switchover_us"].as_f64().unwrap_or(0.0) / 1000.0,
            v["stall_us"].as_f64().unwrap_or(0.0) / 1000.0,
            v["connections_carried"],
            m.checkpoint_ms,
            m.restore_ms
        ));
    }
    let (survived, more) = judge(before, after).unwrap();
    println!(
        "{migrations} migrations, {conns} connections: {survived} survived, {} reset, {} failed, \
         {more} requests after the first checkpoint, longest stall {} ms\n{summary}",
        after.totals.reset, after.totals.failed, after.totals.longest_stall_ms
    );
    assert_eq!(migs.len(), migrations, "{migs:?}");
    for v in &migs {
        assert_eq!(v["state"], "done", "{v}");
    }
    assert_eq!(after.totals.connections, conns as u64);
    assert_eq!(
        after.totals.reset,
        0,
        "resets: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(after.totals.failed, 0);
    assert_eq!(
        survived,
        conns as u64,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn controller_down_makes_checkpoint_fail_loudly_and_override_lets_it_pass() {
    let _s = serial();
    let w = World::start();
    w.pod_netns("srv", "srv0", "pods", "");
    w.add_service();
    w.run_server("web", &[]);
    w.stop_controller();

    let (ok, out) = checkpoint(&w, "web", "/tmp/ck-down.tar");
    assert!(!ok, "checkpoint succeeded with the controller down: {out}");
    let state = w.sh("podman inspect -f '{{.State.Status}}' web");
    assert_eq!(state.trim(), "running", "the container must keep running");
    // The reason is in CRIU's log (the action script's stderr).
    let (_, log, _) = w.try_sh(
        "cat $(podman inspect -f '{{.StaticDir}}' web)/dump.log 2>/dev/null | \
         grep -i 'p4lb' | tail -n 5",
    );
    println!("checkpoint refused: {}\nCRIU log: {log}", out.trim());
    assert!(
        log.contains("p4lb controller") && log.contains("unavailable"),
        "CRIU log does not say why: {log:?}\npodman said: {out}"
    );

    // The documented override: go on without the controller.
    w.sh("printf 'policy = \"ignore-controller\"\\n' > /etc/p4lb/criu-action.toml");
    let (ok, out) = checkpoint(&w, "web", "/tmp/ck-down.tar");
    assert!(ok, "checkpoint with policy ignore-controller failed: {out}");
    // Nothing was recorded: the controller never answered.
    let (has_record, _, _) = w.try_sh("tar -tf /tmp/ck-down.tar | grep -q p4lb-migration.json");
    assert!(!has_record, "a record was written without a LOCK");
}
