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

use std::time::Duration;

use migration_common::*;
use p4lb_e2e::judge::judge;

#[test]
fn podman_migrations_to_new_addresses_keep_every_connection() {
    migrations_to_new_addresses(SwitchTarget::Embedded);
}

/// The same on BMv2 (`P4LB_P4_PREFIX`): the controller attaches the pods' ports over
/// Thrift and programs BMv2 over P4Runtime; the same assertions.
#[test]
fn podman_migrations_on_bmv2_keep_every_connection() {
    let Some(target) = bmv2_or_skip("podman_migrations_on_bmv2_keep_every_connection") else {
        return;
    };
    migrations_to_new_addresses(target);
}

fn migrations_to_new_addresses(target: SwitchTarget) {
    let _s = serial();
    let switch = target.name();
    let w = World::start_on(target);
    let conns = 200;
    let migrations = 5;
    w.pod_netns("cli", "cli", "clients", "");
    let first_ip = w.pod_netns("srv", "srv0", "pods", "");
    w.add_service();
    w.run_server("web", &["p4lb.io/tier=gold"]);
    // The OCI hook labelled the endpoint from the container's annotations.
    let ep = w.endpoint("srv0/eth0");
    assert_eq!(
        ep.labels.get("p4lb.io/tier").map(String::as_str),
        Some("gold"),
        "hook labels: {ep:?}"
    );
    assert!(ep.labels.get("container.id").is_some_and(|s| !s.is_empty()));

    let client = w.start_client(conns, 5.0).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    client.mark().unwrap();

    let mut ids = vec!["srv0".to_string()];
    let mut history = vec![first_ip.clone()];
    let mut moved = Vec::new();
    for i in 1..=migrations {
        let new_id = format!("srv{i}");
        let m = w.migrate("web", &ids[i - 1], &new_id, i);
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
        assert_eq!(ep.state, "ready", "{ep:?}\n{}", w.diag());
        assert!(!ep.locked);
        std::thread::sleep(Duration::from_secs(2));
        ids.push(new_id);
        moved.push(m);
    }
    std::thread::sleep(Duration::from_secs(2));
    let out = client.finish().unwrap();
    let before = out.interim.first().expect("interim report");
    let after = &out.last;

    let migs = w.migrations();
    let mut summary = String::new();
    for (m, v) in moved.iter().zip(migs.iter().rev().take(migrations).rev()) {
        summary.push_str(&format!(
            "  {} {} -> {} ({} -> {}): state {}, switchover {:.1} ms, stall {:.1} ms, \
             conns carried {}, podman checkpoint {} ms, restore {} ms\n",
            v.id,
            v.source_key,
            v.target_key,
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
    let (survived, more) = judge(before, after).unwrap();
    record(&format!(
        "podman on {switch}: {migrations} migrations, {conns} connections: {survived} survived, \
         {} reset, {} failed, {more} requests after the first checkpoint, longest stall {} ms\n{}",
        after.totals.reset,
        after.totals.failed,
        after.totals.longest_stall_ms,
        summary.trim_end()
    ));
    assert_eq!(migs.len(), migrations, "{migs:?}");
    for v in &migs {
        assert_eq!(v.state, "done", "{v:?}");
    }
    assert_eq!(after.totals.connections, conns as u64);
    assert_eq!(after.totals.reset, 0, "resets: {}", out.stderr);
    assert_eq!(
        after.totals.failed,
        0,
        "client: {}\n{}",
        out.stderr.chars().take(3000).collect::<String>(),
        w.diag()
    );
    assert_eq!(survived, conns as u64, "{}", out.stderr);
}

#[test]
fn controller_down_makes_checkpoint_fail_loudly_and_override_lets_it_pass() {
    let _s = serial();
    let w = World::start();
    w.pod_netns("srv", "srv0", "pods", "");
    w.add_service();
    w.run_server("web", &[]);
    w.stop_controller();

    let (ok, out) = w.checkpoint("web", "/tmp/ck-down.tar");
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
    let (ok, out) = w.checkpoint("web", "/tmp/ck-down.tar");
    assert!(ok, "checkpoint with policy ignore-controller failed: {out}");
    // Nothing was recorded: the controller never answered.
    let (has_record, _, _) = w.try_sh("tar -tf /tmp/ck-down.tar | grep -q p4lb-migration.json");
    assert!(!has_record, "a record was written without a LOCK");
}

/// The address decision of docs/migration.md, end to end: besides the clients of
/// the VIP, connections made directly to the pod's address and the container's
/// own outbound connections survive a migration to a new address (the old one
/// moves with the container and the switch routes it to the new port).
#[test]
fn migration_keeps_direct_and_outbound_connections() {
    use p4lb_e2e::scenario::{reports, POD_NETNS, PORT};
    use p4lb_testbed::images::{TESTAPP_IN_IMAGE, TEST_IMAGE};
    let _s = serial();
    let w = World::start();
    let conns = 20;
    let cli_ip = w.pod_netns("cli", "cli", "clients", "");
    let old_ip = w.pod_netns("srv", "srv0", "pods", "");
    w.add_service();
    // A server in the clients' namespace for the container to connect to.
    let peer_port = 7100;
    let mut peer =
        w.tb.spawn(&[
            "/bin/sh",
            "-c",
            &format!(
                "exec ip netns exec cli {} server --listen 0.0.0.0:{peer_port}",
                w.testapp
            ),
        ])
        .unwrap();
    // The container: the server, and an outbound client its init started (so
    // CRIU dumps it with the container), reporting into a file of its own.
    w.sh(&format!(
        "podman run -d --name web --network ns:{POD_NETNS} {TEST_IMAGE} /bin/sh -c \
         '{TESTAPP_IN_IMAGE} client --target {cli_ip}:{peer_port} --conns {conns} --rate 5 \
         >/tmp/outbound.json 2>/tmp/outbound.err & echo $! >/tmp/outbound.pid; \
         exec {TESTAPP_IN_IMAGE} server --listen 0.0.0.0:{PORT} --stateful'"
    ));
    p4lb_testbed::wait::until(20, "the container's server and outbound client", || {
        w.try_sh(
            "podman exec web sh -c 'test -s /tmp/outbound.pid' && \
             podman logs web 2>&1 | grep -q listening",
        )
        .0
    })
    .unwrap();
    let direct = w
        .start_client_to(&format!("{old_ip}:{PORT}"), "/tmp/direct.pid", conns, 5.0)
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    direct.mark().unwrap();
    w.sh("podman exec web sh -c 'kill -USR1 $(cat /tmp/outbound.pid)'");
    std::thread::sleep(Duration::from_millis(300));

    let m = w.migrate("web", "srv0", "srv1", 1);
    assert_eq!(m.old_ip, old_ip);
    assert_ne!(m.new_ip, old_ip);
    std::thread::sleep(Duration::from_secs(2));

    // Inbound, straight to the old address.
    let out = direct.finish().unwrap();
    let before = out.interim.first().expect("interim report");
    let (in_survived, in_more) = judge(before, &out.last).unwrap();
    // Outbound, from the restored container.
    w.sh("podman exec web sh -c 'kill -TERM $(cat /tmp/outbound.pid)'");
    p4lb_testbed::wait::until(10, "the outbound client's final report", || {
        w.try_sh("podman exec web grep -q '\"final\":true' /tmp/outbound.json")
            .0
    })
    .unwrap();
    let text = w.sh("podman exec web cat /tmp/outbound.json");
    let reps = reports(&text).unwrap();
    let ob_before = reps.iter().find(|r| !r.r#final).expect("outbound interim");
    let ob_after = reps.iter().find(|r| r.r#final).expect("outbound final");
    let (out_survived, out_more) = judge(ob_before, ob_after).unwrap();
    println!(
        "{old_ip} -> {}: direct to {old_ip}: {in_survived}/{conns} survived, {} reset, \
         {in_more} requests after, longest stall {} ms; outbound from the container to \
         {cli_ip}: {out_survived}/{conns} survived, {} reset, {out_more} requests after, \
         longest stall {} ms",
        m.new_ip,
        out.last.totals.reset,
        out.last.totals.longest_stall_ms,
        ob_after.totals.reset,
        ob_after.totals.longest_stall_ms
    );
    assert_eq!(out.last.totals.reset, 0, "{}", out.stderr);
    assert_eq!(in_survived, conns as u64, "{}", out.stderr);
    assert!(in_more > 0);
    let err = w.try_sh("podman exec web cat /tmp/outbound.err").1;
    assert_eq!(ob_after.totals.reset, 0, "{err}");
    assert_eq!(out_survived, conns as u64, "{err}");
    assert!(out_more > 0);
    let _ = peer.kill();
    let _ = peer.wait();
}
