//! Endpoints whose container went away without a deregistration are withdrawn:
//! periodically, and when the controller starts on a state that names them. An
//! operator can remove an endpoint by hand with `p4lbctl endpoints rm`.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::*;
use p4lb_p4::entries as p;
use p4lb_proto::api;

/// A named namespace with `lo` up and `addrs` as /32 on it.
struct Netns(p4lb_testutil::NamedNetns);

impl Netns {
    fn new(name: &str, addrs: &[&str]) -> Netns {
        let ns = p4lb_testutil::NamedNetns::create(name).expect("creating a network namespace");
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

/// Deletes a host interface behind the controller's back.
fn delete_link(name: &str) {
    let st = Command::new("ip")
        .args(["link", "del", name])
        .status()
        .expect("running ip link del");
    assert!(st.success(), "ip link del {name} failed");
}

/// Backend ids present in the switch's maglev_slots.
async fn slot_backends(ssock: &std::path::Path) -> BTreeSet<u64> {
    read_all(ssock).await["maglev_slots"]
        .iter()
        .map(|e| p::action_of(e).unwrap().1[0])
        .collect()
}

fn service(backends: &[&str]) -> api::AddServiceRequest {
    api::AddServiceRequest {
        service: Some(api::Service {
            name: "web".into(),
            vip: "10.96.0.10".into(),
            protocol: "tcp".into(),
            port: 80,
            backends: backends.iter().map(|b| b.to_string()).collect(),
            slot_count: 251,
            ..Default::default()
        }),
        replace: false,
    }
}

fn cfg(
    dir: &std::path::Path,
    ssock: &std::path::Path,
    interval_ms: u64,
) -> p4lb_controller::Config {
    let mut c = config(dir, ssock);
    c.endpoints.liveness_interval_ms = interval_ms;
    c
}

async fn endpoint(c: &mut Ctl, key: &str) -> Option<api::Endpoint> {
    match c
        .client
        .get_endpoint(api::GetEndpointRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
    {
        Ok(r) => Some(r.into_inner()),
        Err(s) if s.code() == tonic::Code::NotFound => None,
        Err(s) => panic!("GetEndpoint {key}: {s}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_whose_host_interface_is_deleted_is_withdrawn_within_seconds() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let mut c = Ctl::start(cfg(&dir, &ssock, 200)).await;
    let gone = Veth::new("p4lv1a");
    let kept = Veth::new("p4lv1b");
    let a = c
        .client
        .register_endpoint(register_req(
            "lva",
            "10.88.9.10",
            "02:00:00:00:09:10",
            &gone.host,
        ))
        .await
        .unwrap()
        .into_inner();
    let b = c
        .client
        .register_endpoint(register_req(
            "lvb",
            "10.88.9.11",
            "02:00:00:00:09:11",
            &kept.host,
        ))
        .await
        .unwrap()
        .into_inner();
    c.client
        .add_service(service(&["lva/eth0", "lvb/eth0"]))
        .await
        .unwrap();
    let both: BTreeSet<u64> = [a.backend_id, b.backend_id].map(u64::from).into();
    assert_eq!(slot_backends(&ssock).await, both);
    // Both interfaces exist: several checks later nothing is withdrawn.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for k in ["lva/eth0", "lvb/eth0"] {
        assert_eq!(endpoint(&mut c, k).await.unwrap().state, "ready");
    }

    delete_link(&gone.host);
    let only_b: BTreeSet<u64> = [u64::from(b.backend_id)].into();
    let s = ssock.clone();
    assert!(
        eventually(Duration::from_secs(5), || {
            let s = s.clone();
            let want = only_b.clone();
            async move { slot_backends(&s).await == want }
        })
        .await,
        "the deleted endpoint's backend stays in the service's slots"
    );
    assert_stale(&mut c, "lva/eth0").await;
    assert_eq!(endpoint(&mut c, "lvb/eth0").await.unwrap().state, "ready");
    let svc = c
        .client
        .list_services(api::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner()
        .services;
    assert_eq!(svc[0].resolved_backends, vec!["lvb/eth0".to_string()]);
    let t = read_all(&ssock).await;
    assert!(
        !rows(&t["backends"])
            .iter()
            .any(|r| r.starts_with(&format!("backend_id={} ", a.backend_id))),
        "the withdrawn backend row stays: {:?}",
        rows(&t["backends"])
    );
    assert!(!format!("{:?}", sw.ports.list()).contains(&gone.host));
    // `p4lbctl endpoints ls` shows it stale; the runtime's late DEL removes it.
    let ls = p4lbctl(&dir, &["endpoints", "ls"]);
    assert!(ls.status.success());
    let ls = String::from_utf8_lossy(&ls.stdout).to_string();
    assert!(
        ls.lines()
            .any(|l| l.starts_with("lva/eth0") && l.contains("stale")),
        "{ls}"
    );
    let r = c
        .client
        .deregister_endpoint(api::DeregisterEndpointRequest {
            container_id: "lva".into(),
            ifname: "eth0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.existed);
    assert!(endpoint(&mut c, "lva/eth0").await.is_none());
    c.stop().await;
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_started_on_a_state_whose_interface_is_gone_withdraws_it_at_start() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let gone = Veth::new("p4lv2a");
    let kept = Veth::new("p4lv2b");
    // Only checked at start: the withdrawal below is the start's.
    let mut c = Ctl::start(cfg(&dir, &ssock, 0)).await;
    let a = c
        .client
        .register_endpoint(register_req(
            "lsa",
            "10.88.9.20",
            "02:00:00:00:09:20",
            &gone.host,
        ))
        .await
        .unwrap()
        .into_inner();
    let b = c
        .client
        .register_endpoint(register_req(
            "lsb",
            "10.88.9.21",
            "02:00:00:00:09:21",
            &kept.host,
        ))
        .await
        .unwrap()
        .into_inner();
    c.client
        .add_service(service(&["lsa/eth0", "lsb/eth0"]))
        .await
        .unwrap();
    c.stop().await;
    // The container goes away while the controller is down.
    delete_link(&gone.host);
    let mut c = Ctl::start(cfg(&dir, &ssock, 0)).await;
    let only_b: BTreeSet<u64> = [u64::from(b.backend_id)].into();
    let s = ssock.clone();
    assert!(
        eventually(Duration::from_secs(5), || {
            let s = s.clone();
            let want = only_b.clone();
            async move { slot_backends(&s).await == want }
        })
        .await,
        "backend {} stays in the service's slots after a restart",
        a.backend_id
    );
    assert_stale(&mut c, "lsa/eth0").await;
    // A new registration of the same key replaces the stale record.
    let again = Veth::new("p4lv2c");
    let a2 = c
        .client
        .register_endpoint(register_req(
            "lsa",
            "10.88.9.22",
            "02:00:00:00:09:22",
            &again.host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a2.state, "ready");
    let both: BTreeSet<u64> = [a2.backend_id, b.backend_id].map(u64::from).into();
    let s = ssock.clone();
    assert!(
        eventually(Duration::from_secs(5), || {
            let s = s.clone();
            let want = both.clone();
            async move { slot_backends(&s).await == want }
        })
        .await,
        "the re-registered endpoint does not rejoin its service"
    );
    assert_eq!(endpoint(&mut c, "lsb/eth0").await.unwrap().state, "ready");
    c.stop().await;
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_whose_netns_is_gone_is_withdrawn() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let mut c = Ctl::start(cfg(&dir, &ssock, 200)).await;
    let ns = Netns::new("p4lbt-lvns", &["10.88.9.30"]);
    let mut r = register_req("lvn", "10.88.9.30", "02:00:00:00:09:30", "");
    r.netns_path = ns.path();
    c.client.register_endpoint(r).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(endpoint(&mut c, "lvn/eth0").await.unwrap().state, "ready");
    assert_eq!(
        c.ctl.gauges().await.netns_sockets,
        1,
        "a socket kept in the endpoint's namespace"
    );
    drop(ns);
    let mut gone = false;
    for _ in 0..50 {
        if endpoint(&mut c, "lvn/eth0").await.map(|e| e.state) == Some("stale".into()) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the endpoint of a deleted namespace stays ready");
    assert_stale(&mut c, "lvn/eth0").await;
    // The kept socket would hold the deleted namespace alive: it is dropped.
    assert_eq!(c.ctl.gauges().await.netns_sockets, 0);
    c.stop().await;
    sw.shutdown().await;
}

/// A controller restarted on its state keeps a socket in each live endpoint's
/// namespace again, at its first liveness check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_keeps_sockets_in_its_endpoints_namespaces_again() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let ns = Netns::new("p4lbt-lvks", &["10.88.9.31"]);
    let mut c = Ctl::start(cfg(&dir, &ssock, 200)).await;
    let mut r = register_req("lvk", "10.88.9.31", "02:00:00:00:09:31", "");
    r.netns_path = ns.path();
    c.client.register_endpoint(r).await.unwrap();
    c.stop().await;
    let c = Ctl::start(cfg(&dir, &ssock, 200)).await;
    let mut kept = 0;
    for _ in 0..50 {
        kept = c.ctl.gauges().await.netns_sockets;
        if kept == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kept, 1, "no socket kept for the endpoint after the restart");
    c.stop().await;
    sw.shutdown().await;
}

/// The endpoint is withdrawn: listed as stale, without backend or interface.
async fn assert_stale(c: &mut Ctl, key: &str) {
    let e = endpoint(c, key)
        .await
        .expect("the withdrawn endpoint stays listed");
    assert_eq!(e.state, "stale", "{e:?}");
    assert_eq!(e.backend_id, 0, "{e:?}");
    assert!(e.host_ifname.is_empty(), "{e:?}");
}

fn p4lbctl(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_p4lbctl"))
        .arg("--socket")
        .arg(dir.join("api.sock"))
        .args(args)
        .output()
        .expect("running p4lbctl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_migration_endpoints_are_never_withdrawn_and_rm_refuses_them_without_force() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let mut c = Ctl::start(cfg(&dir, &ssock, 100)).await;
    let ns = Netns::new("p4lbt-lvmig", &["10.88.9.40"]);
    let veth = Veth::new("p4lv4a");
    let mut r = register_req("lvm", "10.88.9.40", "02:00:00:00:09:40", &veth.host);
    r.netns_path = ns.path();
    c.client.register_endpoint(r).await.unwrap();
    let m = c
        .client
        .migration_event(api::MigrationEventRequest {
            phase: api::MigrationPhase::Lock as i32,
            identity: ns.id(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Its interface goes away mid-migration: the endpoint stays.
    delete_link(&veth.host);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let e = endpoint(&mut c, "lvm/eth0")
        .await
        .expect("withdrawn mid-migration");
    assert!(e.locked);
    // Not detached either (a deregistered source would have lost its interface).
    assert_eq!(e.host_ifname, veth.host);

    let out = p4lbctl(&dir, &["endpoints", "rm", "lvm/eth0"]);
    assert!(
        !out.status.success(),
        "rm of a live-migration endpoint succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("live migration") && err.contains(&m.id) && err.contains("--force"),
        "{err}"
    );
    assert!(endpoint(&mut c, "lvm/eth0").await.is_some());

    // With --force it is removed as the runtime's deregistration would: the source
    // of an active migration is kept, detached, for its restore.
    let out = p4lbctl(&dir, &["endpoints", "rm", "--force", "lvm/eth0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("endpoint lvm/eth0 removed"));
    c.stop().await;
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4lbctl_endpoints_rm_removes_an_endpoint_from_its_services() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let mut c = Ctl::start(cfg(&dir, &ssock, 0)).await;
    let a = c
        .client
        .register_endpoint(register_req("rma", "10.88.9.50", "02:00:00:00:09:50", ""))
        .await
        .unwrap()
        .into_inner();
    let b = c
        .client
        .register_endpoint(register_req("rmb", "10.88.9.51", "02:00:00:00:09:51", ""))
        .await
        .unwrap()
        .into_inner();
    c.client
        .add_service(service(&["rma/eth0", "rmb/eth0"]))
        .await
        .unwrap();
    let both: BTreeSet<u64> = [a.backend_id, b.backend_id].map(u64::from).into();
    assert_eq!(slot_backends(&ssock).await, both);

    let out = p4lbctl(&dir, &["endpoints", "rm", "rma/eth0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("endpoint rma/eth0 removed"));
    assert!(endpoint(&mut c, "rma/eth0").await.is_none());
    let only_b: BTreeSet<u64> = [u64::from(b.backend_id)].into();
    assert_eq!(slot_backends(&ssock).await, only_b);

    // An unknown or malformed key is a clear error.
    let out = p4lbctl(&dir, &["endpoints", "rm", "rma/eth0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no endpoint rma/eth0"));
    let out = p4lbctl(&dir, &["endpoints", "rm", "nokey"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not <container-id>/<ifname>"));
    c.stop().await;
    sw.shutdown().await;
}
