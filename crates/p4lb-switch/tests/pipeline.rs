//! The pipeline in-process: tables programmed over P4Runtime, frames run through
//! `pipeline::process` directly (no interfaces needed), outputs checked byte by byte.

mod support;

use std::sync::Arc;

use p4lb_p4::externs;
use p4lb_switch::pipeline::{self, Verdict};
use p4lb_switch::state::Dataplane;
use p4lb_switch::{serve, GrpcAddr, SwitchConfig, SwitchHandle};
use support::frames::{self, ip, Flow, ACK, SYN, TCP, UDP};
use support::p4rt::{self, Session};

const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0xfe];
const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const B1_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x0b, 0x01];
const B2_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x0b, 0x02];

struct Fixture {
    handle: SwitchHandle,
    s: Session,
    dp: Arc<Dataplane>,
}

async fn fixture() -> Fixture {
    let handle = serve(SwitchConfig {
        grpc_addr: GrpcAddr::Tcp("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    })
    .await
    .unwrap();
    let ch = p4rt::channel(&handle.endpoint()).await;
    let (mut s, code) = Session::open(ch, 0, 1).await;
    assert_eq!(code, 0);
    s.set_pipeline(Vec::new()).await.unwrap();
    let dp = handle.device.installed().unwrap().dp.clone();
    Fixture { handle, s, dp }
}

fn run(dp: &Dataplane, frame: &[u8], port: u16) -> (Verdict, Vec<u8>) {
    let mut f = frame.to_vec();
    let v = pipeline::process(dp, &mut f, port, false);
    (v, f)
}

const VIP: u32 = 0x0a60_0001; // 10.96.0.1
const CLIENT: u32 = 0x0a00_0001; // 10.0.0.1
const B1: u32 = 0x0a01_0001; // 10.1.0.1
const B2: u32 = 0x0a01_0002; // 10.1.0.2

/// Service 1 = VIP:80/tcp -> target port 8080, slot_count 7 with every slot on `backend`,
/// backends 1 (port 2) and 2 (port 3), routes for client/backends, router MACs.
async fn program_service(s: &mut Session, slot_backend: impl Fn(u16) -> u16) {
    let mut es = vec![
        p4rt::vip_service(VIP, TCP, 80, 1, 7, 8080),
        p4rt::vip_service(VIP, UDP, 53, 1, 7, 5353),
        p4rt::backend_forward(1, B1, B1_MAC, 2),
        p4rt::backend_forward(2, B2, B2_MAC, 3),
        p4rt::service_vip(1, VIP, 80),
        p4rt::route(CLIENT, 32, 1, CLIENT_MAC),
        p4rt::route(B1, 32, 2, B1_MAC),
        p4rt::route(B2, 32, 3, B2_MAC),
    ];
    for port in 1..=3 {
        es.push(p4rt::port_smac(port, ROUTER_MAC));
    }
    for slot in 0..7 {
        es.push(p4rt::maglev_slot(1, slot, slot_backend(slot)));
    }
    s.insert(es).await;
}

#[tokio::test]
async fn vip_is_rewritten_to_backend_and_reply_back_to_vip() {
    let mut fx = fixture().await;
    program_service(&mut fx.s, |_| 1).await;
    let c = Flow::tcp(CLIENT, 40000, VIP, 80);
    let (v, out) = run(&fx.dp, &c.frame(b"hello"), 1);
    assert_eq!(v, Verdict::Forward(2));
    let want = c
        .with(|f| {
            f.dst = B1;
            f.dport = 8080;
            f.dmac = B1_MAC;
            f.smac = ROUTER_MAC;
            f.ttl = 63;
        })
        .frame(b"hello");
    assert_eq!(out, want, "DNAT frame differs");
    assert!(frames::checksums_ok(&out));

    // Reply before the controller installed conn_reverse: the transit mark rewrites it.
    let r = Flow::tcp(B1, 8080, CLIENT, 40000).with(|f| {
        f.tcp_flags = SYN | ACK;
        f.smac = B1_MAC;
    });
    let (v, out) = run(&fx.dp, &r.frame(b"world"), 2);
    assert_eq!(v, Verdict::Forward(1));
    let want = r
        .with(|f| {
            f.src = VIP;
            f.sport = 80;
            f.dmac = CLIENT_MAC;
            f.smac = ROUTER_MAC;
            f.ttl = 63;
        })
        .frame(b"world");
    assert_eq!(out, want, "SNAT (transit) frame differs");

    // With conn_reverse installed the exact entry is used (different vport proves it).
    fx.s.insert(vec![p4rt::conn_reverse(
        B1, CLIENT, TCP, 8080, 40000, VIP, 81, 1,
    )])
    .await;
    let (_, out) = run(&fx.dp, &r.frame(b"world"), 2);
    assert_eq!(
        out,
        r.with(|f| {
            f.src = VIP;
            f.sport = 81;
            f.dmac = CLIENT_MAC;
            f.smac = ROUTER_MAC;
            f.ttl = 63;
        })
        .frame(b"world")
    );

    // Counters: backend 1 and service 1 saw the packets.
    let (bp, _) = fx.s.counter(externs::backend_packets::ID, 1).await;
    assert_eq!(bp, 1);
    let (sp, _) = fx.s.counter(externs::service_packets::ID, 1).await;
    assert_eq!(sp, 3);
    fx.handle.shutdown().await;
}

#[tokio::test]
async fn udp_vip_and_zero_checksum() {
    let mut fx = fixture().await;
    program_service(&mut fx.s, |_| 2).await;
    let c = Flow::udp(CLIENT, 5000, VIP, 53);
    let (v, out) = run(&fx.dp, &c.frame(b"q"), 1);
    assert_eq!(v, Verdict::Forward(3));
    let want = c.with(|f| {
        f.dst = B2;
        f.dport = 5353;
        f.dmac = B2_MAC;
        f.smac = ROUTER_MAC;
        f.ttl = 63;
    });
    assert_eq!(out, want.frame(b"q"));
    // A UDP checksum of 0 stays 0.
    let mut f0 = c.frame(b"q");
    f0[40] = 0;
    f0[41] = 0;
    let (_, out) = run(&fx.dp, &f0, 1);
    assert_eq!(&out[40..42], &[0, 0]);
    assert!(frames::checksums_ok(&out));
    fx.handle.shutdown().await;
}

#[tokio::test]
async fn pinned_connections_survive_pool_changes() {
    let mut fx = fixture().await;
    program_service(&mut fx.s, |_| 1).await;
    // Pin 50 connections to backend 1 (as the controller does from the digest).
    let flows: Vec<Flow> = (0..50)
        .map(|i| Flow::tcp(CLIENT + i, 30000 + i as u16, VIP, 80))
        .collect();
    let pins = flows
        .iter()
        .map(|f| p4rt::conn_pin(f.src, VIP, TCP, f.sport, 80, 1))
        .collect();
    fx.s.insert(pins).await;
    for f in flows.iter().skip(1) {
        fx.s.insert(vec![p4rt::route(f.src, 32, 1, CLIENT_MAC)])
            .await;
    }
    // The pool changes: every slot now points at backend 2.
    let mods = (0..7)
        .map(|slot| {
            p4rt::update(
                p4lb_proto::p4runtime::update::Type::Modify,
                p4rt::table_entity(p4rt::maglev_slot(1, slot, 2)),
            )
        })
        .collect();
    fx.s.write(mods).await.unwrap();
    for f in &flows {
        let (v, _) = run(&fx.dp, &f.with(|x| x.tcp_flags = ACK).frame(b"x"), 1);
        assert_eq!(v, Verdict::Forward(2), "an established flow moved");
    }
    // A new connection goes to the new pool.
    let (v, _) = run(
        &fx.dp,
        &Flow::tcp(CLIENT + 999, 1234, VIP, 80).frame(b""),
        1,
    );
    assert_eq!(v, Verdict::Forward(3));
    fx.handle.shutdown().await;
}

#[tokio::test]
async fn maglev_slot_is_bmv2_crc16_and_spreads() {
    let mut fx = fixture().await;
    // slot s -> backend 1 for even, 2 for odd slots
    program_service(&mut fx.s, |slot| 1 + (slot % 2)).await;
    let mut counts = [0usize; 2];
    for i in 0..2000u32 {
        let f = Flow::tcp(CLIENT + (i % 200), 1024 + i as u16, VIP, 80);
        let (v, _) = run(&fx.dp, &f.frame(b""), 1);
        let slot = p4lb_p4::hash::maglev_slot(
            &p4lb_p4::hash::FlowKey {
                src_addr: f.src.into(),
                dst_addr: f.dst.into(),
                protocol: TCP,
                src_port: f.sport,
                dst_port: f.dport,
            },
            7,
        )
        .unwrap();
        let want = if slot.is_multiple_of(2) { 2 } else { 3 };
        assert_eq!(
            v,
            Verdict::Forward(want),
            "slot choice differs from p4lb_p4::hash"
        );
        counts[(want - 2) as usize] += 1;
    }
    // 4 even vs 3 odd slots: expect roughly 4/7 vs 3/7.
    assert!(counts[0] > 900 && counts[0] < 1400, "{counts:?}");
    fx.handle.shutdown().await;
}

#[tokio::test]
async fn locked_backend_and_locked_route_drop_and_count() {
    let mut fx = fixture().await;
    program_service(&mut fx.s, |_| 1).await;
    fx.s.write(vec![p4rt::update(
        p4lb_proto::p4runtime::update::Type::Modify,
        p4rt::table_entity(p4rt::backend_locked(1)),
    )])
    .await
    .unwrap();
    let (v, _) = run(&fx.dp, &Flow::tcp(CLIENT, 1, VIP, 80).frame(b""), 1);
    assert_eq!(v, Verdict::Drop);
    fx.s.write(vec![p4rt::update(
        p4lb_proto::p4runtime::update::Type::Modify,
        p4rt::table_entity(p4rt::route_locked(B2, 32)),
    )])
    .await
    .unwrap();
    let (v, _) = run(&fx.dp, &Flow::tcp(CLIENT, 1, B2, 80).frame(b""), 1);
    assert_eq!(v, Verdict::Drop);
    let (locked, _) = fx.s.counter(externs::drops::ID, 1).await;
    assert_eq!(locked, 2);
    // no route
    let (v, _) = run(
        &fx.dp,
        &Flow::tcp(CLIENT, 1, ip(192, 168, 9, 9), 80).frame(b""),
        1,
    );
    assert_eq!(v, Verdict::Drop);
    assert_eq!(fx.s.counter(externs::drops::ID, 2).await.0, 1);
    fx.handle.shutdown().await;
}

#[tokio::test]
async fn ttl_is_decremented_and_expired_packets_dropped() {
    let mut fx = fixture().await;
    program_service(&mut fx.s, |_| 1).await;
    let f = Flow::udp(B2, 9, CLIENT, 9).with(|f| f.ttl = 2);
    let (v, out) = run(&fx.dp, &f.frame(b"abc"), 3);
    assert_eq!(v, Verdict::Forward(1));
    assert_eq!(
        out,
        f.with(|x| {
            x.ttl = 1;
            x.dmac = CLIENT_MAC;
            x.smac = ROUTER_MAC;
        })
        .frame(b"abc")
    );
    for ttl in [0, 1] {
        let (v, _) = run(&fx.dp, &f.with(|x| x.ttl = ttl).frame(b"abc"), 3);
        assert_eq!(v, Verdict::Drop);
        let (v, _) = run(
            &fx.dp,
            &Flow::tcp(CLIENT, 5, VIP, 80)
                .with(|x| x.ttl = ttl)
                .frame(b""),
            1,
        );
        assert_eq!(v, Verdict::Drop);
    }
    assert_eq!(fx.s.counter(externs::drops::ID, 4).await.0, 4);
    fx.handle.shutdown().await;
}

#[tokio::test]
async fn malformed_and_truncated_frames_are_dropped_and_counted() {
    let mut fx = fixture().await;
    program_service(&mut fx.s, |_| 1).await;
    let good = Flow::tcp(CLIENT, 40000, VIP, 80).frame(b"payload");
    let mut expected_errors = 0;
    // Every truncation of a good frame: parser errors below the TCP header end.
    for len in 0..good.len() {
        let (v, _) = run(&fx.dp, &good[..len], 1);
        if len < 14 + 20 + 20 {
            assert_eq!(v, Verdict::Drop, "truncated to {len}");
            expected_errors += 1;
        }
    }
    // Bad version, bad IHL, total_len < header length.
    for (off, val) in [(14usize, 0x65u8), (14, 0x44), (16, 0), (17, 4)] {
        let mut f = good.clone();
        f[off] = val;
        if off == 16 {
            f[17] = 10;
        }
        let (v, _) = run(&fx.dp, &f, 1);
        assert_eq!(v, Verdict::Drop);
        expected_errors += 1;
    }
    // Random garbage never panics.
    let mut x: u32 = 99;
    for _ in 0..20000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let len = (x >> 16) as usize % 128;
        let mut f: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        if len > 14 && x.is_multiple_of(3) {
            f[12] = 0x08;
            f[13] = if x.is_multiple_of(2) { 0x00 } else { 0x06 };
        }
        let _ = run(&fx.dp, &f, 1);
    }
    let (errs, _) = fx.s.counter(externs::drops::ID, 3).await;
    assert!(errs >= expected_errors, "{errs} < {expected_errors}");
    fx.handle.shutdown().await;
}

#[tokio::test]
async fn arp_proxy_answers_requests_only() {
    let mut fx = fixture().await;
    fx.s.insert(vec![p4rt::arp_proxy(ip(10, 0, 0, 0), 8, ROUTER_MAC)])
        .await;
    let req = frames::arp_request(CLIENT_MAC, CLIENT, ip(10, 1, 0, 1));
    let (v, out) = run(&fx.dp, &req, 4);
    assert_eq!(v, Verdict::Forward(4));
    assert_eq!(
        out,
        frames::arp_reply(CLIENT_MAC, CLIENT, ip(10, 1, 0, 1), ROUTER_MAC)
    );
    // Gratuitous ARP, replies and unknown targets are dropped.
    let (v, _) = run(&fx.dp, &frames::arp_request(CLIENT_MAC, CLIENT, CLIENT), 4);
    assert_eq!(v, Verdict::Drop);
    let (v, _) = run(
        &fx.dp,
        &frames::arp_reply(CLIENT_MAC, CLIENT, ip(10, 1, 0, 1), ROUTER_MAC),
        4,
    );
    assert_eq!(v, Verdict::Drop);
    let (v, _) = run(
        &fx.dp,
        &frames::arp_request(CLIENT_MAC, CLIENT, ip(192, 168, 0, 1)),
        4,
    );
    assert_eq!(v, Verdict::Drop);
    fx.handle.shutdown().await;
}

#[tokio::test]
async fn l2_frames_follow_l2_forward() {
    let mut fx = fixture().await;
    fx.s.insert(vec![p4rt::l2([0x02, 9, 9, 9, 9, 9], 5)]).await;
    let mut f = vec![0x02, 9, 9, 9, 9, 9, 0x02, 1, 1, 1, 1, 1, 0x88, 0xb5];
    f.extend_from_slice(b"some payload");
    let (v, out) = run(&fx.dp, &f, 1);
    assert_eq!(v, Verdict::Forward(5));
    assert_eq!(out, f, "L2 frames are not modified");
    f[0] = 0x04;
    assert_eq!(run(&fx.dp, &f, 1).0, Verdict::Drop);
    fx.handle.shutdown().await;
}
