//! What a client sees when its backend is locked and unlocked: real kernel TCP sockets in
//! two namespaces, the switch between them, the backend row locked for longer than a second
//! while the client sends, then unlocked. The client's first reply after the unlock must come
//! at once, not at its next backed-off retransmission (docs/migration.md, "At unlock").
//! Needs root (netns, veth). p4lb-switch only: BMv2 has no hold port (docs/switch-pipeline.md).

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use p4lb_controller::addr::mac_u64;
use p4lb_p4::entries;
use p4lb_p4::{externs, DropReason};
use p4lb_proto::p4runtime::update::Type;
use support::frames::{self, ip, Flow, ACK, TCP};
use support::netns::{root_or_skip, Topology};
use support::p4rt;
use support::target::{loud, Kind, Target};

const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0xfe];
const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x0b, 0x01];
const NEW_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x0b, 0x02];
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// How long the backend stays locked while the client waits for its reply: past the
/// client's third retransmission (about 0.2 + 0.4 + 0.8 s after the request), and before its
/// fourth (about 3 s after it), so the next retransmission lies well after the unlock.
const LOCK: Duration = Duration::from_millis(1800);
/// The bound on the wait after unlock.
const RESUME_BOUND: Duration = Duration::from_millis(50);

/// The client's side of one round: request, reply.
fn round(c: &mut TcpStream, n: u8) -> Instant {
    c.write_all(&[n; 16]).expect("request");
    let mut reply = [0u8; 16];
    c.read_exact(&mut reply).expect("reply");
    assert_eq!(reply, [n; 16], "reply to request {n}");
    Instant::now()
}

/// Whether `test` may go on (root, see [`root_or_skip`]); it runs on p4lb-switch only,
/// which a loud line says for BMv2, the other target (no hold port there).
fn p4lb_switch_only(test: &str) -> bool {
    if !root_or_skip(test) {
        return false;
    }
    loud(&format!(
        "SKIPPED (BMv2): {test} runs on p4lb-switch only (BMv2 has no hold port)"
    ));
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_requests_met_the_lock_has_its_reply_right_after_the_unlock() {
    let test = "a_client_whose_requests_met_the_lock_has_its_reply_right_after_the_unlock";
    if !p4lb_switch_only(test) {
        return;
    }
    let topo = Topology::create_isolated(2);
    let t = Target::start(&Kind::P4lb, &topo);
    let mut s = t.primary().await;
    let client_ip = ip(10, 0, 0, 1);
    let server_ip = ip(10, 1, 0, 1);
    topo.host_addr(1, "10.0.0.1/24", "10.0.0.254", CLIENT_MAC);
    topo.host_addr(2, "10.1.0.1/24", "10.1.0.254", SERVER_MAC);
    let forward = entries::backend_forward(1, Ipv4Addr::from(server_ip), mac_u64(&SERVER_MAC), 2);
    let mut es = vec![
        entries::arp_proxy(Ipv4Addr::new(10, 0, 0, 0), 8, mac_u64(&ROUTER_MAC)),
        entries::vip_service(VIP, TCP, 80, 1, 7, 8080),
        forward.clone(),
        entries::service_vip(1, VIP, 80),
        entries::route_to_port(Ipv4Addr::from(client_ip), 32, 1, mac_u64(&CLIENT_MAC)),
        entries::route_to_port(Ipv4Addr::from(server_ip), 32, 2, mac_u64(&SERVER_MAC)),
        entries::port_smac(1, mac_u64(&ROUTER_MAC)),
        entries::port_smac(2, mac_u64(&ROUTER_MAC)),
    ];
    es.extend((0..7).map(|slot| entries::maglev_slot(1, slot, 1)));
    s.insert(es).await;

    // An echo server: every 16-byte request comes back.
    let server = topo.in_host_ns(2, move || {
        let l = std::net::TcpListener::bind("10.1.0.1:8080").expect("bind");
        let (mut c, _) = l.accept().expect("accept");
        let mut buf = [0u8; 16];
        while c.read_exact(&mut buf).is_ok() {
            if c.write_all(&buf).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (sent_tx, sent_rx) = mpsc::channel::<()>();
    let client = topo.in_host_ns(1, move || {
        let mut c = TcpStream::connect_timeout(&(VIP, 80).into(), Duration::from_secs(5))
            .expect("connect VIP");
        c.set_nodelay(true).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        // Warm up: a few rounds give the client an RTT estimate (its RTO is then the
        // 200 ms minimum, doubled per retransmission).
        for n in 0..5 {
            round(&mut c, n);
        }
        ready_tx.send(()).expect("ready signal");
        go_rx.recv().expect("lock signal");
        sent_tx.send(()).expect("sent signal");
        round(&mut c, 42)
    });

    ready_rx.recv().expect("client gone before the lock");
    let locked = entries::backend_locked(1);
    s.write(vec![p4rt::update(Type::Modify, p4rt::table_entity(locked))])
        .await
        .expect("lock the backend");
    go_tx.send(()).expect("client gone");
    sent_rx.recv().expect("client gone");
    tokio::time::sleep(LOCK).await;
    let ss = topo.in_host_ns(1, || {
        std::process::Command::new("ss")
            .args(["-tin", "dst", "10.96.0.1"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("ss not run: {e}"))
    });
    let ss = ss.join().expect("ss thread");
    s.write(vec![p4rt::update(
        Type::Modify,
        p4rt::table_entity(forward),
    )])
    .await
    .expect("unlock the backend");
    let unlocked = Instant::now();
    let replied = client.join().expect("client thread");
    let wait = replied.saturating_duration_since(unlocked);
    loud(&format!(
        "{test}: client before the unlock: {}",
        ss.split_whitespace().collect::<Vec<_>>().join(" ")
    ));
    loud(&format!(
        "{test}: lock {} ms, first reply {:.1} ms after the unlock was acknowledged",
        LOCK.as_millis(),
        wait.as_secs_f64() * 1000.0
    ));
    assert!(
        wait < RESUME_BOUND,
        "the client's first reply came {wait:?} after the unlock (bound {RESUME_BOUND:?})"
    );
    drop(s);
    drop(t);
    let _ = server.join();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_held_by_a_lock_leave_in_order_for_the_new_backend_and_retransmissions_once() {
    let test = "frames_held_by_a_lock_leave_in_order_for_the_new_backend_and_retransmissions_once";
    if !p4lb_switch_only(test) {
        return;
    }
    let topo = Topology::create(3);
    let t = Target::start(&Kind::P4lb, &topo);
    let mut s = t.primary().await;
    let (client, old, new) = (ip(10, 0, 0, 1), ip(10, 1, 0, 1), ip(10, 1, 0, 2));
    let mut es = vec![
        entries::vip_service(VIP, TCP, 80, 1, 7, 8080),
        entries::backend_forward(1, Ipv4Addr::from(old), mac_u64(&SERVER_MAC), 2),
        entries::port_smac(3, mac_u64(&ROUTER_MAC)),
    ];
    es.extend((0..7).map(|slot| entries::maglev_slot(1, slot, 1)));
    s.insert(es).await;
    let (h1, h2, h3) = (topo.host(1), topo.host(2), topo.host(3));
    // The release is one burst of a port's worth of frames.
    h3.grow_rcvbuf(16 << 20);
    s.write(vec![p4rt::update(
        Type::Modify,
        p4rt::table_entity(entries::backend_locked(1)),
    )])
    .await
    .expect("lock");
    let drops = |r: DropReason| i64::from(r.index());
    let locked_before = s
        .counter(externs::drops::ID, drops(DropReason::Locked))
        .await
        .0;
    let full_before = s
        .counter(externs::drops::ID, drops(DropReason::HoldFull))
        .await
        .0;

    // Many connections (client port 1000 + i), each segment sent three times (the
    // original and two retransmissions), as clients backing off through a lock do.
    const CONNS: usize = 512;
    const SENDS: usize = 3;
    let flow = |i: usize| {
        Flow::tcp(client, 1000 + i as u16, u32::from(VIP), 80).with(|f| f.tcp_flags = ACK)
    };
    let mut sent = 0;
    for round in 0..SENDS {
        for i in 0..CONNS {
            h1.send(&flow(i).frame(b"held"));
            sent += 1;
            if i % 64 == 63 {
                // Paced, so the switch's socket buffer never overflows.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if round + 1 < SENDS {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let quiet = h2.collect(Duration::from_millis(300));
    assert!(
        quiet.is_empty(),
        "{} frames reached the locked backend",
        quiet.len()
    );
    let locked = s
        .counter(externs::drops::ID, drops(DropReason::Locked))
        .await
        .0
        - locked_before;
    let full = s
        .counter(externs::drops::ID, drops(DropReason::HoldFull))
        .await
        .0
        - full_before;
    assert_eq!(locked, sent as i64, "every frame met the lock");
    assert_eq!(full, 0, "no bound was reached");

    // Unlocked onto a new backend: the held frames leave for it, DNATed, in order.
    s.write(vec![p4rt::update(
        Type::Modify,
        p4rt::table_entity(entries::backend_forward(
            1,
            Ipv4Addr::from(new),
            mac_u64(&NEW_MAC),
            3,
        )),
    )])
    .await
    .expect("unlock");
    let out: Vec<Vec<u8>> = h3
        .collect(Duration::from_millis(1500))
        .into_iter()
        .filter(|f| frames::ipv4_dst(f) == Some(new.to_be_bytes()))
        .collect();
    assert_eq!(
        out.len(),
        CONNS,
        "one frame per connection out on the new backend's port, retransmissions not repeated"
    );
    for (i, f) in out.iter().enumerate() {
        let want = flow(i).with(|w| {
            w.dst = new;
            w.dport = 8080;
            w.dmac = NEW_MAC;
            w.smac = ROUTER_MAC;
            w.ttl = 63;
        });
        frames::check_frame(f, &want.frame(b"held")).unwrap_or_else(|e| panic!("frame {i}: {e}"));
    }
    assert!(
        h2.collect(Duration::from_millis(100)).is_empty(),
        "nothing for the old backend"
    );
}
