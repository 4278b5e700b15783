//! A restore hint counts only for a checkpointed migration the controller knows,
//! and no endpoint stays locked without a live migration.

mod common;

use std::time::Duration;

use common::*;
use p4lb_proto::api;

/// A named namespace with `lo` up and `addrs` as /32 on it.
struct Netns(p4lb_testutil::NamedNetns);

impl Netns {
    fn new(prefix: &str, addrs: &[&str]) -> Netns {
        let ns = p4lb_testutil::NamedNetns::unique(prefix);
        ns.link_up("lo").expect("lo up");
        for a in addrs {
            ns.add_addr("lo", &format!("{a}/32"))
                .expect("adding an address");
        }
        Netns(ns)
    }
    fn path(&self) -> String {
        self.0.path().display().to_string()
    }
    fn id(&self) -> Option<api::Identity> {
        Some(api::Identity {
            pid: 0,
            netns_path: self.path(),
        })
    }
}

fn event(phase: api::MigrationPhase, ns: &Netns, id: &str) -> api::MigrationEventRequest {
    api::MigrationEventRequest {
        phase: phase as i32,
        identity: ns.id(),
        migration_id: id.to_string(),
        ..Default::default()
    }
}

/// Whether a line holds `prefix` followed by a number of seconds and " s)".
fn waits_with_age(prefix: &'static str) -> impl Fn(&str) -> bool {
    move |text: &str| {
        text.lines().any(|l| {
            l.split_once(prefix).is_some_and(|(_, rest)| {
                rest.split_once(" s)")
                    .is_some_and(|(n, _)| n.parse::<u64>().is_ok())
            })
        })
    }
}

fn p4lbctl(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_p4lbctl"))
        .arg("--socket")
        .arg(dir.join("api.sock"))
        .args(args)
        .output()
        .expect("running p4lbctl");
    assert!(
        out.status.success(),
        "p4lbctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The route rows of `ip` in the switch.
async fn routes_of(ssock: &std::path::Path, ip: &str) -> Vec<String> {
    let prefix = format!("dst_addr={ip}/32 -> ");
    rows(&read_all(ssock).await["ipv4_routes"])
        .into_iter()
        .filter(|r| r.starts_with(&prefix))
        .collect()
}

async fn endpoint(c: &mut Ctl, key: &str) -> api::Endpoint {
    c.client
        .get_endpoint(api::GetEndpointRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// A source endpoint in its own namespace, locked and checkpointed; returns the
/// migration id.
async fn checkpointed_source(c: &mut Ctl, ns: &Netns, ip: &str) -> String {
    let mut src = register_req("src", ip, "02:00:00:00:07:21", "");
    src.netns_path = ns.path();
    c.client.register_endpoint(src).await.unwrap();
    let m = c
        .client
        .migration_event(event(api::MigrationPhase::Lock, ns, ""))
        .await
        .unwrap()
        .into_inner();
    c.client
        .migration_event(event(api::MigrationPhase::Checkpointed, ns, &m.id))
        .await
        .unwrap();
    m.id
}

/// What the CNI plugin sends for a container whose runtime passed a restore hint.
fn restore_req(cid: &str, ip: &str, old_ip: &str, ns: &Netns) -> api::RegisterEndpointRequest {
    let mut r = register_req(cid, ip, "02:00:00:00:07:22", "");
    r.netns_path = ns.path();
    r.labels.clear();
    r.locked = true;
    r.restore_of_ip = old_ip.into();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_hint_without_a_checkpointed_migration_starts_fresh() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let ns = Netns::new("p4rl-fresh", &["10.88.7.30"]);
    let mut c = Ctl::start(config(&dir, &ssock)).await;

    // `podman run --ip X --mac-address Y`: IP=/MAC= hints, no migration at all.
    let ep = c
        .client
        .register_endpoint(restore_req("fresh", "10.88.7.30", "10.88.7.31", &ns))
        .await
        .unwrap()
        .into_inner();
    assert!(!ep.locked, "{ep:?}");
    assert_eq!(ep.state, "ready");
    assert_eq!(
        ep.restore_of_ip, "",
        "the reply says the hint was not taken"
    );
    let routes = routes_of(&ssock, "10.88.7.30").await;
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert!(!routes[0].contains("route_locked"), "{routes:?}");

    // A migration of that address that is only locked (not checkpointed) is no
    // restore to wait for either.
    let src_ns = Netns::new("p4rl-src", &["10.88.7.41"]);
    let mut src = register_req("src", "10.88.7.41", "02:00:00:00:07:41", "");
    src.netns_path = src_ns.path();
    c.client.register_endpoint(src).await.unwrap();
    c.client
        .migration_event(event(api::MigrationPhase::Lock, &src_ns, ""))
        .await
        .unwrap();
    let ns2 = Netns::new("p4rl-fresh2", &["10.88.7.42"]);
    let ep = c
        .client
        .register_endpoint(restore_req("fresh2", "10.88.7.42", "10.88.7.41", &ns2))
        .await
        .unwrap()
        .into_inner();
    assert!(!ep.locked && ep.state == "ready", "{ep:?}");
    c.stop().await;
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_target_whose_migration_is_aborted_is_unlocked() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let src_ns = Netns::new("p4rl-asrc", &["10.88.7.21"]);
    let tgt_ns = Netns::new("p4rl-atgt", &["10.88.7.22"]);
    let mut c = Ctl::start(config(&dir, &ssock)).await;
    let id = checkpointed_source(&mut c, &src_ns, "10.88.7.21").await;

    let tgt = c
        .client
        .register_endpoint(restore_req("tgt", "10.88.7.22", "10.88.7.21", &tgt_ns))
        .await
        .unwrap()
        .into_inner();
    assert!(tgt.locked && tgt.state == "restoring", "{tgt:?}");
    assert_eq!(tgt.restore_of_ip, "10.88.7.21");
    // What waits, for what and since when, is visible in p4lbctl.
    let waiting = waits_with_age("restoring (restore of 10.88.7.21, ");
    let ls = p4lbctl(&dir, &["endpoints", "ls"]);
    assert!(waiting(&ls), "{ls}");
    let show = p4lbctl(&dir, &["endpoints", "show", "tgt/eth0"]);
    assert!(waiting(&show), "{show}");

    c.client
        .migration_event(event(api::MigrationPhase::Abort, &src_ns, &id))
        .await
        .unwrap();
    let mut unlocked = false;
    for _ in 0..300 {
        let e = endpoint(&mut c, "tgt/eth0").await;
        if !e.locked {
            assert_eq!(e.state, "ready");
            assert_eq!(e.restore_of_ip, "", "no longer the target of anything");
            unlocked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(unlocked, "the target of an aborted migration stays locked");
    let routes = routes_of(&ssock, "10.88.7.22").await;
    assert!(
        routes.len() == 1 && !routes[0].contains("route_locked"),
        "{routes:?}"
    );
    c.stop().await;
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_lock_older_than_the_timeout_is_released() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let src_ns = Netns::new("p4rl-tsrc", &["10.88.7.51"]);
    let tgt_ns = Netns::new("p4rl-ttgt", &["10.88.7.52"]);
    let mut cfg = config(&dir, &ssock);
    cfg.migration.restore_lock_timeout_ms = 1500;
    let mut c = Ctl::start(cfg).await;
    checkpointed_source(&mut c, &src_ns, "10.88.7.51").await;

    let tgt = c
        .client
        .register_endpoint(restore_req("tgt", "10.88.7.52", "10.88.7.51", &tgt_ns))
        .await
        .unwrap()
        .into_inner();
    assert!(tgt.locked, "{tgt:?}");
    // Still within the bound: the restore may take its time.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(endpoint(&mut c, "tgt/eth0").await.locked);
    let mut released = false;
    for _ in 0..300 {
        if !endpoint(&mut c, "tgt/eth0").await.locked {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(released, "a restore lock outlived restore_lock_timeout_ms");
    let e = endpoint(&mut c, "tgt/eth0").await;
    assert_eq!(e.state, "ready");
    let routes = routes_of(&ssock, "10.88.7.52").await;
    assert!(
        routes.len() == 1 && !routes[0].contains("route_locked"),
        "{routes:?}"
    );
    c.stop().await;
    sw.shutdown().await;
}

/// The migration's state as the persisted state in `dir` holds it.
fn saved_migration_state(dir: &std::path::Path, id: &str) -> Option<String> {
    let v = persisted_json(dir);
    v["migrations"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == id)
        .and_then(|m| m["state"].as_str())
        .map(str::to_string)
}

/// RESTORE_STARTED of a target registered locked changes nothing at the switch and
/// is answered before it is saved. Its save follows; and if a crash loses it (the
/// state file put back to what it held before), the restarted controller still has
/// the target locked and the restore finishes from `checkpointed`. RESTORED_AT and
/// UNLOCK are in the file when they are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_started_lost_in_a_crash_is_recovered_from_checkpointed() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let src_ns = Netns::new("p4rl-lsrc", &["10.88.7.61"]);
    let tgt_ns = Netns::new("p4rl-ltgt", &["10.88.7.62", "10.88.7.61"]);
    let mut c = Ctl::start(config(&dir, &ssock)).await;
    let id = checkpointed_source(&mut c, &src_ns, "10.88.7.61").await;
    let tgt = c
        .client
        .register_endpoint(restore_req("tgt", "10.88.7.62", "10.88.7.61", &tgt_ns))
        .await
        .unwrap()
        .into_inner();
    assert!(tgt.locked, "{tgt:?}");
    assert_eq!(
        saved_migration_state(&dir, &id).as_deref(),
        Some("checkpointed")
    );
    let before_restore = serde_json::to_vec(&persisted_json(&dir)).unwrap();

    let m = c
        .client
        .migration_event(event(api::MigrationPhase::RestoreStarted, &tgt_ns, &id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.state, "restoring");
    // The save follows the answer.
    let d = dir.clone();
    let i = id.clone();
    assert!(
        eventually(Duration::from_secs(5), || {
            let s = saved_migration_state(&d, &i);
            async move { s.as_deref() == Some("restoring") }
        })
        .await,
        "RESTORE_STARTED was never saved"
    );

    // A clean stop leaves the whole state in state.json (the journal holds only its
    // begin marker).
    c.stop().await;
    let on_stop: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state").join("state.json")).unwrap())
            .unwrap();
    assert_eq!(on_stop, persisted_json(&dir));
    assert_eq!(
        saved_migration_state(&dir, &id).as_deref(),
        Some("restoring")
    );
    // A crash between the answer and the save: the file holds the state before.
    std::fs::write(dir.join("state").join("state.json"), &before_restore).unwrap();
    let mut c = Ctl::start(config(&dir, &ssock)).await;
    let ms = c.migrations().await;
    let m = ms.iter().find(|m| m.id == id).expect("the migration");
    assert_eq!(m.state, "checkpointed", "{m:?}");
    assert!(endpoint(&mut c, "tgt/eth0").await.locked);
    let routes = routes_of(&ssock, "10.88.7.62").await;
    assert!(
        routes.len() == 1 && routes[0].contains("route_locked"),
        "the target must stay locked across the restart: {routes:?}"
    );

    // The restore goes on: RESTORED_AT and UNLOCK from the target.
    let m = c
        .client
        .migration_event(event(api::MigrationPhase::RestoredAt, &tgt_ns, &id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.state, "restored");
    assert_eq!(m.target_key, "tgt/eth0");
    // RESTORED_AT and UNLOCK change the switch: saved before the answer (the save
    // runs while the switch takes the entries).
    assert_eq!(
        saved_migration_state(&dir, &id).as_deref(),
        Some("restored")
    );
    let m = c
        .client
        .migration_event(event(api::MigrationPhase::Unlock, &tgt_ns, &id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.state, "done");
    assert_eq!(saved_migration_state(&dir, &id).as_deref(), Some("done"));
    // The switchover time, recorded after the switch acknowledged RESTORED_AT, is
    // in the file with UNLOCK's save.
    let v = persisted_json(&dir);
    let saved = v["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id.as_str())
        .unwrap();
    assert!(saved["switchover_us"].as_i64().unwrap_or(0) > 0, "{saved}");
    let e = endpoint(&mut c, "tgt/eth0").await;
    assert!(!e.locked && e.state == "ready", "{e:?}");
    assert!(e.migrated_ips.contains(&"10.88.7.61".to_string()), "{e:?}");
    c.stop().await;
    sw.shutdown().await;
}
