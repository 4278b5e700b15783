//! Group commit: registrations that arrive together share one durable save, a
//! refused or failing request leaves its neighbours alone and leaves nothing behind,
//! a failed save undoes the whole group, and a SIGKILL while registrations are in
//! flight loses none that was acknowledged.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use p4lb_controller::store::Store;
use p4lb_controller::Controller;
use p4lb_proto::api;
use tonic::Code;

type Reply = Result<api::Endpoint, tonic::Status>;

/// Sends every request at once while the controller lock is held, so they queue
/// up together; releases the lock once all are queued and returns the replies in
/// request order.
async fn as_one_group(c: &Ctl, reqs: Vec<api::RegisterEndpointRequest>) -> Vec<Reply> {
    let n = reqs.len() as u64;
    let queued_before = c.ctl.metrics.commit.queued.get();
    let guard = c.ctl.inner.lock().await;
    let tasks: Vec<_> = reqs
        .into_iter()
        .map(|r| {
            let mut client = c.client.clone();
            tokio::spawn(async move { client.register_endpoint(r).await.map(|r| r.into_inner()) })
        })
        .collect();
    let ctl = c.ctl.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let ctl = ctl.clone();
            async move { ctl.metrics.commit.queued.get() - queued_before == n }
        })
        .await,
        "the requests did not reach the commit queue"
    );
    drop(guard);
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

fn saves(ctl: &Controller) -> u64 {
    ctl.metrics.commit.saves.get()
}

fn req(i: usize, net: u8, host_if: &str) -> api::RegisterEndpointRequest {
    register_req(
        &format!("g{net}x{i}"),
        &format!("10.88.{net}.{}", i + 1),
        &format!("02:00:00:00:{net:02x}:{:02x}", i + 1),
        host_if,
    )
}

fn persisted(dir: &std::path::Path) -> p4lb_controller::state::State {
    Store::open(&dir.join("state"))
        .expect("state dir")
        .load()
        .expect("the state file parses")
}

/// Whether `row` contains the address `ip` (not merely a longer one).
fn mentions(row: &str, ip: &str) -> bool {
    row.match_indices(ip).any(|(i, _)| {
        !row[i + ip.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

async fn attached_ports(ctl: &Controller) -> BTreeSet<String> {
    ctl.ports
        .list()
        .await
        .expect("listing switch ports")
        .into_values()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_share_a_save_and_survive_a_restart() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let c = Ctl::start(config(&dir, &ssock)).await;
    let veths: Vec<Veth> = (0..4).map(|i| Veth::new(&format!("p4gc{i}"))).collect();
    const N: usize = 30;
    let reqs = (0..N)
        .map(|i| req(i, 7, veths.get(i).map(|v| v.host.as_str()).unwrap_or("")))
        .collect();
    let saves_before = saves(&c.ctl);
    let commits_before = c.ctl.metrics.commit.commits.get();
    let replies = as_one_group(&c, reqs).await;
    let eps: Vec<api::Endpoint> = replies
        .into_iter()
        .map(|r| r.expect("registration"))
        .collect();
    // The loop may take the first request(s) before the rest arrive: at most two groups.
    let saved = saves(&c.ctl) - saves_before;
    assert!(
        (1..=2).contains(&saved),
        "{N} queued registrations took {saved} saves"
    );
    assert_eq!(
        c.ctl.metrics.commit.commits.get() - commits_before,
        N as u64
    );
    let ports: HashSet<u32> = eps.iter().map(|e| e.switch_port).collect();
    let backends: HashSet<u32> = eps.iter().map(|e| e.backend_id).collect();
    assert_eq!(ports.len(), N, "switch ports are unique");
    assert_eq!(backends.len(), N, "backend ids are unique");
    let t = read_all(&ssock).await;
    assert_eq!(t["backends"].len(), N);
    let want_ifs: BTreeSet<String> = veths.iter().map(|v| v.host.clone()).collect();
    assert_eq!(attached_ports(&c.ctl).await, want_ifs);

    // Durable: the state file holds every acknowledged endpoint, as replied.
    c.stop().await;
    let st = persisted(&dir);
    assert_eq!(st.endpoints.len(), N);
    for e in &eps {
        let rec = &st.endpoints[&e.key];
        assert_eq!(rec.ip.to_string(), e.ip);
        assert_eq!(rec.switch_port, e.switch_port);
        assert_eq!(u32::from(rec.backend_id), e.backend_id);
        assert_eq!(rec.host_ifname, e.host_ifname);
    }

    // A restarted controller finds them all and leaves the switch as it was.
    let mut c = Ctl::start(config(&dir, &ssock)).await;
    let listed = c
        .client
        .list_endpoints(api::ListEndpointsRequest {})
        .await
        .unwrap()
        .into_inner()
        .endpoints;
    assert_eq!(listed.len(), N);
    assert_eq!(read_all(&ssock).await, t);
    assert_eq!(attached_ports(&c.ctl).await, want_ifs);
    c.stop().await;
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_failing_request_leaves_its_group_neighbours() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let mut c = Ctl::start(config(&dir, &ssock)).await;
    let (va, vd, vc) = (Veth::new("p4gna"), Veth::new("p4gnd"), Veth::new("p4gnc"));
    c.client
        .register_endpoint(req(0, 8, ""))
        .await
        .expect("first endpoint");
    let mut dup = req(1, 8, "");
    dup.ip = "10.88.8.1".into(); // the first endpoint's address
    let replies = as_one_group(
        &c,
        vec![
            req(2, 8, &va.host),
            dup,
            req(3, 8, "p4gnosuch"), // no such interface: its port cannot be attached
            req(4, 8, &vd.host),
        ],
    )
    .await;
    assert!(replies[0].is_ok(), "{:?}", replies[0]);
    assert_eq!(
        replies[1].as_ref().unwrap_err().code(),
        Code::AlreadyExists,
        "{:?}",
        replies[1]
    );
    let failed = replies[2].as_ref().unwrap_err();
    assert!(failed.message().contains("p4gnosuch"), "{failed:?}");
    assert!(replies[3].is_ok(), "{:?}", replies[3]);

    // Nothing of the failing registration is left: not in the state (memory or
    // disk), not on the switch, no port.
    let keys =
        |eps: Vec<api::Endpoint>| -> BTreeSet<String> { eps.into_iter().map(|e| e.key).collect() };
    let want: BTreeSet<String> = ["g8x0/eth0", "g8x2/eth0", "g8x4/eth0"]
        .into_iter()
        .map(String::from)
        .collect();
    let listed = c
        .client
        .list_endpoints(api::ListEndpointsRequest {})
        .await
        .unwrap()
        .into_inner()
        .endpoints;
    assert_eq!(keys(listed), want);
    assert_eq!(
        persisted(&dir)
            .endpoints
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>(),
        want
    );
    let t = read_all(&ssock).await;
    assert_eq!(t["backends"].len(), 3);
    for table in ["ipv4_routes", "arp_proxy", "backends"] {
        assert!(
            !rows(&t[table]).iter().any(|r| mentions(r, "10.88.8.4")),
            "{table} still routes the failed registration's address: {:?}",
            rows(&t[table])
        );
    }
    assert_eq!(
        attached_ports(&c.ctl).await,
        [va.host.clone(), vd.host.clone()].into_iter().collect()
    );

    // The failed registration's address and a port are free for a retry.
    let retry = c
        .client
        .register_endpoint(req(3, 8, &vc.host))
        .await
        .expect("retry of the failed registration")
        .into_inner();
    assert_eq!(retry.ip, "10.88.8.4");
    assert_eq!(read_all(&ssock).await["backends"].len(), 4);
    c.stop().await;
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_save_undoes_the_whole_group() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let mut c = Ctl::start(config(&dir, &ssock)).await;
    let va = Veth::new("p4gsa");
    c.client
        .register_endpoint(req(0, 9, ""))
        .await
        .expect("first endpoint");
    let before = read_all(&ssock).await;
    // Every save fails.
    c.ctl.store.fail_saves(true);
    let replies = as_one_group(&c, vec![req(1, 9, &va.host), req(2, 9, "")]).await;
    for r in &replies {
        let e = r.as_ref().unwrap_err();
        assert_eq!(e.code(), Code::Internal, "{e:?}");
        assert!(e.message().contains("state store"), "{e:?}");
    }
    // One change outside the queue fails the same way.
    let svc = c
        .client
        .add_service(api::AddServiceRequest {
            service: Some(api::Service {
                name: "s".into(),
                vip: "10.96.9.1".into(),
                port: 80,
                selector: "app=web".into(),
                ..Default::default()
            }),
            replace: false,
        })
        .await;
    assert_eq!(svc.unwrap_err().code(), Code::Internal);

    // Everything is as before the group: memory, switch, ports, disk.
    let listed = c
        .client
        .list_endpoints(api::ListEndpointsRequest {})
        .await
        .unwrap()
        .into_inner()
        .endpoints;
    assert_eq!(listed.len(), 1);
    assert_eq!(read_all(&ssock).await, before);
    assert!(attached_ports(&c.ctl).await.is_empty());
    assert_eq!(persisted(&dir).endpoints.len(), 1);

    // Once saves work again, the same registrations succeed.
    c.ctl.store.fail_saves(false);
    let replies = as_one_group(&c, vec![req(1, 9, &va.host), req(2, 9, "")]).await;
    for r in &replies {
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(persisted(&dir).endpoints.len(), 3);
    assert_eq!(
        attached_ports(&c.ctl).await,
        [va.host.clone()].into_iter().collect()
    );
    c.stop().await;
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_concurrent_registrations_loses_no_acknowledged_one() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let mut child = spawn_controller(&dir, &ssock);
    let c = client_ready(&dir).await;
    const N: usize = 200;
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut tasks = Vec::new();
    for i in 0..N {
        let mut client = c.clone();
        let acked = acked.clone();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            if let Ok(r) = client.register_endpoint(req(i, 10, "")).await {
                let key = r.into_inner().key;
                acked.lock().unwrap().push(key);
                let _ = tx.send(());
            }
        }));
    }
    // SIGKILL once some are acknowledged, while the others are in flight.
    for _ in 0..N / 10 {
        rx.recv().await.expect("acknowledgements");
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    for t in tasks {
        let _ = t.await;
    }
    let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(acked.len() >= N / 10);

    let st = persisted(&dir);
    let on_disk: BTreeSet<String> = st.endpoints.keys().cloned().collect();
    eprintln!(
        "{} of {N} registrations acknowledged before the SIGKILL, {} persisted",
        acked.len(),
        on_disk.len()
    );
    let lost: Vec<_> = acked.difference(&on_disk).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");

    // The restarted controller programs exactly what it persisted (entries of
    // registrations that were applied but not yet durable are removed).
    let mut child = spawn_controller(&dir, &ssock);
    let mut c = client_ready(&dir).await;
    let listed = c
        .list_endpoints(api::ListEndpointsRequest {})
        .await
        .unwrap()
        .into_inner()
        .endpoints;
    assert_eq!(
        listed.into_iter().map(|e| e.key).collect::<BTreeSet<_>>(),
        on_disk
    );
    assert!(
        eventually(Duration::from_secs(5), || {
            let s = ssock.clone();
            let n = on_disk.len();
            async move { read_all(&s).await["backends"].len() == n }
        })
        .await,
        "the switch does not match the persisted state after the restart"
    );
    child.kill().unwrap();
    let _ = child.wait();
    sw.shutdown().await;
}
