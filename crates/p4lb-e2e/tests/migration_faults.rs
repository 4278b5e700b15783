//! End to end: restores that must be refused, and the same checkpoint restored
//! afterwards with every client connection kept.
//!
//! - The controller is down when the restore runs: the CRIU action script
//!   (strict policy) fails, CRIU aborts the restore and podman reports it. With
//!   the controller back, the very same archive restores and the clients'
//!   connections survive.
//! - The archive's `checkpoint/p4lb-migration.json` is corrupt (not JSON), or
//!   well-formed but foreign (a migration id the controller does not know,
//!   naming another backend as its source): each restore is refused with a
//!   clear error (at `pre-restore`, resp. by the controller at
//!   `setup-namespaces`), the target stays locked without addresses and the
//!   other backend of the service is left alone; the untouched archive then
//!   restores.
//! - The target network namespace at the pod's path exists but was not wired
//!   by the p4lb CNI plugin (a plain `ip netns add` with a veth p4lb does not
//!   know): the restore is refused at `setup-namespaces` (the target is not a
//!   p4lb endpoint: a local error, never excused), no container runs, no
//!   address moves, the migration stays `checkpointed`, the other backend
//!   keeps serving its clients and neither it nor the client's endpoint
//!   changes; the namespace is then recreated and wired by the plugin and the
//!   very same archive restores.
//!
//! The reason is in CRIU's `restore.log`; podman itself prints only CRIU's
//! last error line.

mod migration_common;

use std::time::Duration;

use migration_common::*;
use p4lb_api::api;
use p4lb_api::labels::CheckpointMode;
use p4lb_criu_action::record::RecordState;
use p4lb_e2e::judge::judge;
use p4lb_testbed::images::{TESTAPP_IN_IMAGE, TEST_IMAGE};

const CONNS: usize = 20;

/// Checkpoints `web`, removes it and its pod, and wires a new pod namespace at
/// the same path (registered locked as the restore of the old address).
/// Returns (old address, new address).
fn checkpoint_and_rewire(w: &World, archive: &str, cur_id: &str, new_id: &str) -> (String, String) {
    let (ok, out) = w.checkpoint("web", archive);
    assert!(ok, "checkpoint failed: {out}\n{}", w.diag());
    let rec = w.record_in(archive).unwrap();
    assert_eq!(rec.state, RecordState::Checkpointed, "{rec:?}");
    assert_eq!(rec.mode, CheckpointMode::Migrate, "{rec:?}");
    let old_ip = rec.source.ip.to_string();
    w.sh("podman rm -f web >/dev/null");
    w.cni("DEL", cur_id, POD_NETNS, "pods", "");
    w.sh("ip netns del srv");
    let new_ip = w.pod_netns(
        "srv",
        new_id,
        "pods",
        &format!("IgnoreUnknown=1;P4LB_RESTORE_FROM={old_ip}"),
    );
    assert_ne!(new_ip, old_ip);
    let ep = w.endpoint(&format!("{new_id}/eth0"));
    assert!(ep.locked, "target not registered locked: {ep:?}");
    (old_ip, new_ip)
}

/// `podman container restore --import`; returns (ok, podman's output, the p4lb
/// lines of any CRIU restore log left behind).
fn restore(w: &World, archive: &str) -> (bool, String, String) {
    let (ok, o, e) = w.try_sh(&format!(
        "podman container restore --import {archive} --tcp-established"
    ));
    let (_, log, _) = w.try_sh(
        "for f in $(find /var/lib/containers /run/containers -name restore.log -mmin -3 \
         2>/dev/null); do grep -i 'p4lb' \"$f\"; done | tail -n 10",
    );
    if ok {
        // As after every restore in the testbed: drop CRIU's empty cgroup copies.
        let id = w.sh("podman inspect -f '{{.Id}}' web");
        p4lb_testbed::cgroups::prune_restore_copies(id.trim());
    }
    (ok, format!("{o}{e}"), log)
}

/// Removes what a refused restore may have left of the container: the
/// container itself and the cgroups CRIU recreated for it (crun cannot set up
/// a v1 devices group that has children: `write to devices.deny: Invalid
/// argument` on the next restore).
fn remove_leftover(w: &World) {
    let (_, left, _) =
        w.try_sh("podman ps -a --format '{{.Names}} {{.State}} {{.ID}}' | grep '^web '");
    if !left.trim().is_empty() {
        println!("left by the refused restore: {}", left.trim());
    }
    let (_, id, _) = w.try_sh("podman inspect -f '{{.Id}}' web 2>/dev/null");
    w.sh("podman rm -f web >/dev/null 2>&1 || true");
    let id = id.trim();
    if id.is_empty() {
        return;
    }
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let g = h.path().join("libpod_parent").join(format!("libpod-{id}"));
        if g.is_dir() {
            rmdir_tree(&g);
            println!("removed leftover cgroup {}: {}", g.display(), !g.exists());
        }
    }
}

fn rmdir_tree(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                rmdir_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Copies archive `good` to `bad` with `checkpoint/p4lb-migration.json`
/// replaced by `record`.
fn forge(w: &World, good: &str, bad: &str, record: &str) {
    w.sh(&format!(
        "cp {good} {bad} && tar --delete -f {bad} checkpoint/p4lb-migration.json && \
         rm -rf /tmp/forge && mkdir -p /tmp/forge/checkpoint && \
         cat > /tmp/forge/checkpoint/p4lb-migration.json <<'EOF'\n{record}EOF\n\
         tar -rf {bad} -C /tmp/forge checkpoint/p4lb-migration.json"
    ));
    let got = w.sh(&format!("tar -xOf {bad} checkpoint/p4lb-migration.json"));
    assert_eq!(
        got, record,
        "the forged archive does not carry the forged record"
    );
}

fn last_migration_done(w: &World) -> api::Migration {
    let migs = w.migrations();
    let m = migs.last().cloned().expect("a migration record");
    assert_eq!(m.state, "done", "{m:?}\n{}", w.diag());
    m
}

#[test]
fn controller_down_at_restore_fails_loudly_and_the_archive_restores_later() {
    let _s = serial();
    let w = World::start();
    w.pod_netns("cli", "cli", "clients", "");
    w.pod_netns("srv", "srv0", "pods", "");
    w.add_service();
    w.run_server("web", &[]);
    let client = w.start_client(CONNS, 5.0).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    client.mark().unwrap();

    let archive = "/tmp/ck-fault-down.tar";
    let (old_ip, new_ip) = checkpoint_and_rewire(&w, archive, "srv0", "srv1");
    w.stop_controller();
    let (ok, out, log) = restore(&w, archive);
    println!(
        "restore with the controller down: ok={ok}\npodman: {}\nCRIU log: {}",
        out.trim(),
        log.trim()
    );
    assert!(!ok, "restore succeeded with the controller down: {out}");
    let said = format!("{out}\n{log}");
    assert!(
        said.contains("p4lb controller") && said.contains("unavailable"),
        "neither podman nor CRIU's log says the p4lb controller is unavailable: {said}"
    );
    let (running, _, _) = w.try_sh("podman ps --format '{{.Names}}' | grep -qx web");
    assert!(!running, "a container runs after a refused restore");
    remove_leftover(&w);

    w.start_controller();
    let ep = w.endpoint("srv1/eth0");
    assert!(ep.locked, "target unlocked before any restore: {ep:?}");
    let (ok, out, _) = restore(&w, archive);
    assert!(
        ok,
        "restore of the same archive failed: {out}\n{}",
        w.diag()
    );
    let ep = w.endpoint("srv1/eth0");
    assert_eq!(ep.state, "ready", "{ep:?}");
    assert!(!ep.locked, "{ep:?}");
    assert!(w.addrs_in("srv").contains(&old_ip), "{old_ip} not moved");
    let m = last_migration_done(&w);

    std::thread::sleep(Duration::from_secs(2));
    let out = client.finish().unwrap();
    let before = out.interim.first().expect("interim report");
    let after = &out.last;
    let (survived, more) = judge(before, after).unwrap();
    println!(
        "{old_ip} -> {new_ip}: {CONNS} connections: {survived} survived, {} reset, {} failed, \
         {more} requests after the checkpoint, longest stall {} ms; migration {} stall {:.1} ms",
        after.totals.reset,
        after.totals.failed,
        after.totals.longest_stall_ms,
        m.id,
        m.stall_us as f64 / 1000.0
    );
    assert_eq!(after.totals.reset, 0, "resets: {}", out.stderr);
    assert_eq!(after.totals.failed, 0, "{}", out.stderr);
    assert_eq!(survived, CONNS as u64, "{}", out.stderr);
    w.sh(&format!("rm -f {archive}"));
}

#[test]
fn corrupt_record_is_refused_and_disturbs_no_other_endpoint() {
    let _s = serial();
    let w = World::start();
    w.pod_netns("cli", "cli", "clients", "");
    w.pod_netns("srv", "srv0", "pods", "");
    // A second backend of the service that never migrates.
    let other_ip = w.pod_netns("srvb", "srvb", "pods", "");
    w.add_service();
    w.run_server("web", &[]);
    w.sh(&format!(
        "podman run -d --name other --network ns:/run/netns/srvb {TEST_IMAGE} {TESTAPP_IN_IMAGE} \
         server --listen 0.0.0.0:{PORT} --stateful >/dev/null; \
         for i in $(seq 100); do podman logs other 2>&1 | grep -q listening && exit 0; \
         sleep 0.2; done; echo the second server did not listen; exit 1"
    ));
    let other_before = w.endpoint("srvb/eth0");
    let client = w.start_client(CONNS, 5.0).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    client.mark().unwrap();

    let archive = "/tmp/ck-fault-good.tar";
    let bad = "/tmp/ck-fault-bad.tar";
    let (old_ip, new_ip) = checkpoint_and_rewire(&w, archive, "srv0", "srv1");
    let good_record = w.record_in(archive).unwrap();

    // 1. The same archive with the record cut short (not JSON).
    forge(&w, archive, bad, "{\"version\": 1, \"migration_id\": \n");
    let (ok, out, log) = restore(&w, bad);
    println!(
        "restore of the corrupt copy: ok={ok}\npodman: {}\nCRIU log: {}",
        out.trim(),
        log.trim()
    );
    assert!(!ok, "a corrupt record was restored: {out}");
    let said = format!("{out}\n{log}");
    assert!(
        said.contains("is not a p4lb migration record"),
        "no clear error about the record: {said}"
    );
    remove_leftover(&w);

    // 2. A well-formed record of a migration the controller does not know,
    //    naming the other backend as its source.
    let mut foreign = good_record.clone();
    foreign.migration_id = "mig-999".into();
    foreign.source.key = "srvb/eth0".into();
    foreign.source.container_id = "srvb".into();
    foreign.source.ip = other_ip.parse().unwrap();
    foreign.source.mac = other_before.mac.clone();
    foreign.addresses = vec![foreign.source.ip];
    let foreign = serde_json::to_string(&foreign).unwrap();
    forge(&w, archive, bad, &format!("{foreign}\n"));
    let (ok, out, log) = restore(&w, bad);
    println!(
        "restore of the foreign copy: ok={ok}\npodman: {}\nCRIU log: {}",
        out.trim(),
        log.trim()
    );
    assert!(!ok, "a foreign record was restored: {out}");
    let said = format!("{out}\n{log}");
    assert!(
        said.contains("mig-999"),
        "no clear error about the unknown migration: {said}"
    );
    remove_leftover(&w);

    // Nothing of the other backend changed; the target is still locked and
    // carries no address of the old pod.
    let other_after = w.endpoint("srvb/eth0");
    assert_eq!(other_after.state, other_before.state, "{other_after:?}");
    assert!(!other_after.locked, "{other_after:?}");
    assert_eq!(other_after.ip, other_before.ip, "{other_after:?}");
    assert_eq!(w.addrs_in("srvb"), vec![other_ip.clone()]);
    let (up, _, _) = w.try_sh("podman ps --format '{{.Names}}' | grep -qx other");
    assert!(up, "the other server stopped");
    assert!(
        w.endpoint("srv1/eth0").locked,
        "target unlocked by a refused restore"
    );
    let target_addrs = w.addrs_in("srv");
    assert!(
        !target_addrs.contains(&old_ip) && !target_addrs.contains(&other_ip),
        "a refused restore moved addresses into the target: {target_addrs:?}"
    );
    let migs = w.migrations();
    assert_eq!(migs.len(), 1, "{migs:?}");
    assert_eq!(migs[0].state, "checkpointed", "{:?}", migs[0]);

    let (ok, out, _) = restore(&w, archive);
    assert!(
        ok,
        "restore of the good archive failed: {out}\n{}",
        w.diag()
    );
    let ep = w.endpoint("srv1/eth0");
    assert_eq!(ep.state, "ready", "{ep:?}");
    assert!(!ep.locked, "{ep:?}");
    let m = last_migration_done(&w);
    assert!(!w.endpoint("srvb/eth0").locked);

    std::thread::sleep(Duration::from_secs(2));
    let out = client.finish().unwrap();
    let before = out.interim.first().expect("interim report");
    let after = &out.last;
    let (survived, more) = judge(before, after).unwrap();
    println!(
        "{old_ip} -> {new_ip} (other backend {other_ip}): {CONNS} connections: {survived} \
         survived, {} reset, {} failed, {more} requests after the checkpoint, longest stall {} ms; \
         migration {} stall {:.1} ms",
        after.totals.reset,
        after.totals.failed,
        after.totals.longest_stall_ms,
        m.id,
        m.stall_us as f64 / 1000.0
    );
    assert_eq!(after.totals.reset, 0, "resets: {}", out.stderr);
    assert_eq!(after.totals.failed, 0, "{}", out.stderr);
    assert_eq!(survived, CONNS as u64, "{}", out.stderr);
    w.sh(&format!("rm -rf {archive} {bad} /tmp/forge"));
}

/// The endpoint fields a refused restore must not change.
fn endpoint_facts(w: &World, key: &str) -> api::Endpoint {
    let ep = w.endpoint(key);
    api::Endpoint {
        state: ep.state,
        locked: ep.locked,
        ip: ep.ip,
        mac: ep.mac,
        switch_port: ep.switch_port,
        backend_id: ep.backend_id,
        migrated_ips: ep.migrated_ips,
        labels: ep.labels,
        ..Default::default()
    }
}

/// Connections whose answered requests grew from report `a` to report `b`.
fn progressed(a: &p4lb_testapp::report::Report, b: &p4lb_testapp::report::Report) -> usize {
    a.connections
        .iter()
        .zip(&b.connections)
        .filter(|(x, y)| y.requests_done > x.requests_done && y.is_clean())
        .count()
}

#[test]
fn restore_into_a_namespace_p4lb_does_not_know_is_refused_and_the_archive_restores_later() {
    let _s = serial();
    let w = World::start();
    w.pod_netns("cli", "cli", "clients", "");
    w.pod_netns("srv", "srv0", "pods", "");
    // A second backend of the service that never migrates.
    let other_ip = w.pod_netns("srvb", "srvb", "pods", "");
    w.add_service();
    w.run_server("web", &[]);
    w.sh(&format!(
        "podman run -d --name other --network ns:/run/netns/srvb {TEST_IMAGE} {TESTAPP_IN_IMAGE} \
         server --listen 0.0.0.0:{PORT} --stateful >/dev/null; \
         for i in $(seq 100); do podman logs other 2>&1 | grep -q listening && exit 0; \
         sleep 0.2; done; echo the second server did not listen; exit 1"
    ));
    let client = w.start_client(CONNS, 5.0).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    client.mark().unwrap();

    let archive = "/tmp/ck-fault-unwired.tar";
    let (ok, out) = w.checkpoint("web", archive);
    assert!(ok, "checkpoint failed: {out}\n{}", w.diag());
    let rec = w.record_in(archive).unwrap();
    assert_eq!(rec.state, RecordState::Checkpointed, "{rec:?}");
    let old_ip = rec.source.ip.to_string();
    let mig_id = rec.migration_id.clone();
    w.sh("podman rm -f web >/dev/null");
    w.cni("DEL", "srv0", POD_NETNS, "pods", "");
    w.sh("ip netns del srv");

    // The target namespace at the same path, wired by hand: a veth p4lb does
    // not know (its peer stays in the testbed's own namespace, on no switch
    // port), a new address and a default route.
    w.sh(
        "ip netns add srv && ip link add stray0 type veth peer name eth0 netns srv && \
         ip link set stray0 up && ip addr add 10.55.0.1/24 dev stray0 && \
         ip -n srv link set lo up && ip -n srv link set eth0 up && \
         ip -n srv addr add 10.55.0.2/24 dev eth0 && ip -n srv route add default via 10.55.0.1",
    );
    let eps_before: Vec<api::Endpoint> = w.ctl_json("endpoints ls");
    let other_before = endpoint_facts(&w, "srvb/eth0");
    let cli_before = endpoint_facts(&w, "cli/eth0");
    let migs = w.migrations();
    assert_eq!(migs.len(), 1, "{migs:?}");
    assert_eq!(migs[0].state, "checkpointed", "{:?}", migs[0]);

    let (ok, out, log) = restore(&w, archive);
    println!(
        "restore into the unwired namespace: ok={ok}\npodman: {}\nCRIU log: {}",
        out.trim(),
        log.trim()
    );
    assert!(
        !ok,
        "a restore into a namespace p4lb does not know succeeded: {out}"
    );
    let said = format!("{out}\n{log}");
    assert!(
        said.contains("is not a p4lb endpoint") && said.contains(&mig_id),
        "neither podman nor CRIU's log says the target is not a p4lb endpoint (migration \
         {mig_id}): {said}"
    );
    let (running, _, _) = w.try_sh("podman ps --format '{{.Names}}' | grep -qx web");
    assert!(!running, "a container runs after a refused restore");
    remove_leftover(&w);

    // Nothing moved into the stray namespace; nothing changed at the
    // controller: the same endpoints, the other backend and the client's
    // endpoint as they were, the migration still `checkpointed`.
    assert_eq!(
        w.addrs_in("srv"),
        vec!["10.55.0.2".to_string()],
        "a refused restore changed the addresses of the target"
    );
    assert_eq!(
        w.ctl_json::<Vec<api::Endpoint>>("endpoints ls"),
        eps_before,
        "a refused restore changed the endpoints"
    );
    assert_eq!(endpoint_facts(&w, "srvb/eth0"), other_before);
    assert_eq!(endpoint_facts(&w, "cli/eth0"), cli_before);
    let migs = w.migrations();
    assert_eq!(migs.len(), 1, "{migs:?}");
    assert_eq!(migs[0].state, "checkpointed", "{:?}", migs[0]);
    assert_eq!(migs[0].id, mig_id, "{:?}", migs[0]);
    let (up, _, _) = w.try_sh("podman ps --format '{{.Names}}' | grep -qx other");
    assert!(up, "the other server stopped");
    // The other backend's connections are still served while the migrating
    // one's wait, locked: compare two reports 2 s apart.
    client.mark().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    client.mark().unwrap();

    // Wire the namespace properly and restore the very same archive.
    w.sh("ip netns del srv");
    let new_ip = w.pod_netns(
        "srv",
        "srv1",
        "pods",
        &format!("IgnoreUnknown=1;P4LB_RESTORE_FROM={old_ip}"),
    );
    assert_ne!(new_ip, old_ip);
    assert!(w.endpoint("srv1/eth0").locked);
    let (ok, out, _) = restore(&w, archive);
    assert!(
        ok,
        "restore of the same archive into the wired namespace failed: {out}\n{}",
        w.diag()
    );
    let ep = w.endpoint("srv1/eth0");
    assert_eq!(ep.state, "ready", "{ep:?}");
    assert!(!ep.locked, "{ep:?}");
    assert!(w.addrs_in("srv").contains(&old_ip), "{old_ip} not moved");
    let m = last_migration_done(&w);
    assert_eq!(m.id, mig_id, "{m:?}");
    assert_eq!(endpoint_facts(&w, "srvb/eth0"), other_before);

    std::thread::sleep(Duration::from_secs(2));
    let out = client.finish().unwrap();
    assert_eq!(
        out.interim.len(),
        3,
        "interim reports: {}",
        out.interim.len()
    );
    let served_during = progressed(&out.interim[1], &out.interim[2]);
    let before = &out.interim[0];
    let after = &out.last;
    let (survived, more) = judge(before, after).unwrap();
    println!(
        "{old_ip} -> {new_ip} (other backend {other_ip}): {CONNS} connections: {survived} \
         survived, {} reset, {} failed, {more} requests after the checkpoint, longest stall {} \
         ms; {served_during} connections served (by the other backend) while the refused \
         restore left the migration pending; migration {} stall {:.1} ms, switchover {:.1} ms",
        after.totals.reset,
        after.totals.failed,
        after.totals.longest_stall_ms,
        m.id,
        m.stall_us as f64 / 1000.0,
        m.switchover_us as f64 / 1000.0
    );
    assert!(
        served_during > 0 && served_during < CONNS,
        "expected the other backend's connections (and only those) to be served while the \
         migration was pending: {served_during} of {CONNS}"
    );
    assert_eq!(after.totals.reset, 0, "resets: {}", out.stderr);
    assert_eq!(after.totals.failed, 0, "{}", out.stderr);
    assert_eq!(survived, CONNS as u64, "{}", out.stderr);
    w.sh(&format!("rm -f {archive}"));
}
