//! End to end, containerd's CRI path: `CheckpointContainer` leaves the container
//! running (CRIU runs `network-unlock` right after `post-dump`). Without a
//! `checkpoint` label it is a snapshot: the backend is locked only while CRIU
//! dumps and its clients keep their connections. With the pod annotation
//! `labels.p4lb.io/checkpoint: migrate` it is a migration: the source stays
//! locked after the checkpoint and the images carry a migrate record.

mod migration_common;

use std::time::Duration;

use migration_common::*;
use p4lb_api::labels::CheckpointMode;
use p4lb_e2e::cri::{self, Cri};
use p4lb_e2e::judge::judge;
use p4lb_e2e::scenario::parse_record;
use p4lb_testbed::images;

fn use_p4lb_cni_for_containerd(w: &World) {
    cri::use_p4lb_cni(w).unwrap();
}

fn pod(
    w: &World,
    c: &mut Cri,
    name: &str,
    annotations: &[(&str, &str)],
) -> (String, String, String) {
    pod_from(w, c, name, annotations, images::TEST_IMAGE)
}

#[test]
fn cri_checkpoint_is_a_snapshot_by_default_and_a_migration_when_annotated() {
    let _s = serial();
    let w = World::start();
    use_p4lb_cni_for_containerd(&w);
    let socket = cri::start_containerd(&w.tb).unwrap_or_else(|e| panic!("containerd: {e}"));
    images::load_into_containerd(&w.tb).unwrap();
    let mut c = Cri::connect(&socket).unwrap();
    w.pod_netns("cli", "cli", "clients", "");
    w.add_service();

    // Snapshot: clients keep their connections, the backend is unlocked again.
    let (sb, ctr, ip) = pod(&w, &mut c, "web-snap", &[]);
    let key = format!("{sb}/eth0");
    assert_eq!(w.endpoint(&key).ip, ip);
    p4lb_testbed::wait::until(20, "the pod's server to answer", || {
        w.try_sh(&format!(
            "ip netns exec cli {} client --target {VIP}:{PORT} --conns 1 --duration 0.5 --strict",
            w.testapp
        ))
        .0
    })
    .unwrap();
    let client = w.start_client(50, 10.0).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    client.mark().unwrap();
    c.checkpoint_container(&ctr, "/tmp/cri-snap.tar", 60)
        .unwrap_or_else(|e| panic!("CheckpointContainer: {e}\n{}", w.diag()));
    let st = c.container_status(&ctr).unwrap();
    assert_eq!(
        st.state,
        cri::pb::ContainerState::ContainerRunning as i32,
        "leave-running checkpoint stopped the container"
    );
    // LOCK cannot know the task keeps running; SNAPSHOT_DONE ends the migration.
    let m = migration_of(&w, &key);
    assert_eq!(m.state, "done", "{m:?}");
    assert!(m.error.is_empty(), "{m:?}");
    let ep = w.endpoint(&key);
    assert!(!ep.locked, "{ep:?}");
    std::thread::sleep(Duration::from_secs(2));
    let out = client.finish().unwrap();
    let before = out.interim.first().expect("interim report");
    let after = &out.last;
    let (survived, more) = judge(before, after).unwrap();
    println!(
        "CRI snapshot checkpoint: {survived}/50 connections kept, {} reset, {more} requests \
         after; lock held {:.1} ms",
        after.totals.reset,
        m.stall_us as f64 / 1000.0
    );
    assert_eq!(after.totals.reset, 0);
    assert_eq!(survived, 50);
    let rec = w.sh(
        "f=$(tar -tf /tmp/cri-snap.tar | grep 'p4lb-migration.json$' | head -1); \
         tar -xOf /tmp/cri-snap.tar \"$f\"",
    );
    let rec = parse_record(&rec).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rec.mode, CheckpointMode::Snapshot, "{rec:?}");
    assert!(rec.leave_running, "{rec:?}");
    c.stop_container(&ctr, 5).unwrap();
    c.remove_container(&ctr).unwrap();
    c.stop_pod_sandbox(&sb).unwrap();
    c.remove_pod_sandbox(&sb).unwrap();

    // Migration: the source stays locked after the checkpoint.
    let (sb, ctr, _ip) = pod(
        &w,
        &mut c,
        "web-mig",
        &[("labels.p4lb.io/checkpoint", "migrate")],
    );
    let key = format!("{sb}/eth0");
    let ep = w.endpoint(&key);
    assert_eq!(
        ep.labels.get("checkpoint").map(String::as_str),
        Some("migrate"),
        "{ep:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    c.checkpoint_container(&ctr, "/tmp/cri-mig.tar", 60)
        .unwrap_or_else(|e| panic!("CheckpointContainer: {e}\n{}", w.diag()));
    let m = migration_of(&w, &key);
    assert!(!m.leave_running, "LOCK does not know yet: {m:?}");
    assert_eq!(m.state, "checkpointed", "{m:?}");
    let ep = w.endpoint(&key);
    assert!(ep.locked, "{ep:?}");
    let rec = w.sh(
        "f=$(tar -tf /tmp/cri-mig.tar | grep 'p4lb-migration.json$' | head -1); \
         tar -xOf /tmp/cri-mig.tar \"$f\"",
    );
    let rec = parse_record(&rec).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rec.mode, CheckpointMode::Migrate, "{rec:?}");
    assert!(rec.leave_running, "{rec:?}");
    println!(
        "CRI migrate checkpoint: source {key} stays locked (migration {:?})",
        m.id
    );
}

/// CheckpointContainer of a pod annotated for migration → a new pod through the
/// p4lb CNI plugin (new IP) → CreateContainer from the checkpoint (see
/// [`cri_migration_in`]). With `lock` false the CRIU action script runs with p4lb's
/// lock off (`lock = false` in criu-action.toml).
fn cri_migration(lock: bool, target: SwitchTarget) -> CriMigration {
    let w = World::start_on(target);
    use_p4lb_cni_for_containerd(&w);
    if !lock {
        w.sh("echo 'lock = false' > /etc/p4lb/criu-action.toml");
    }
    cri_migration_in(&w, &[], lock)
}

#[test]
fn cri_migration_to_a_new_pod_keeps_every_connection() {
    let _s = serial();
    keeps_every_connection(SwitchTarget::Embedded);
}

/// The same on BMv2 (`P4LB_P4_PREFIX`); the same assertions.
#[test]
fn cri_migration_on_bmv2_keeps_every_connection() {
    let Some(target) = bmv2_or_skip("cri_migration_on_bmv2_keeps_every_connection") else {
        return;
    };
    let _s = serial();
    keeps_every_connection(target);
}

fn keeps_every_connection(target: SwitchTarget) {
    let r = cri_migration(true, target);
    assert_eq!(r.resets, 0, "{}", r.stderr);
    assert_eq!(r.failed, 0, "{}", r.stderr);
    assert_eq!(r.survived, r.conns as u64, "{}", r.stderr);
}

/// The same migration with p4lb's lock off: the source keeps answering after
/// the checkpoint (its clients' streams move on while the restored copy holds
/// the old TCP state), and when the orchestrator removes it, its kernel closes
/// the clients' connections (FIN, or RST for data in flight). With the lock the
/// source is cut off from the moment of the checkpoint, so none of that
/// reaches a client.
#[test]
fn cri_migration_without_p4lbs_lock_breaks_clients() {
    let _s = serial();
    let r = cri_migration(false, SwitchTarget::Embedded);
    println!(
        "without p4lb's lock: {} of {} connections survived; final states {:?} \
         ({} reset, {} closed or failed)",
        r.survived, r.conns, r.states, r.resets, r.failed
    );
    assert!(
        r.resets + r.failed > 0,
        "no client connection broke without p4lb's lock: the test does not show what the \
         lock prevents ({} survived)\n{}",
        r.survived,
        r.stderr
    );
    assert!(r.survived < r.conns as u64, "{}", r.stderr);
}
