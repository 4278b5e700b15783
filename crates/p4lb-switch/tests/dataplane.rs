//! The data plane as a table of fixtures: each row installs entries, sends frames and names
//! what must come out (frame and port, or drop and reason), the counter deltas and the digest.
//! The same rows run on p4lb-switch in process, on p4lb-switch over veth ports, and on BMv2's
//! simple_switch_grpc over veth ports when `P4LB_P4_PREFIX` is set. The veth runs need root.
//!
//! Adding a case is adding one row to [`fixtures`]; docs/switch-pipeline.md says how.

mod support;

use std::net::Ipv4Addr;

use p4lb_controller::addr::mac_u64;
use p4lb_p4::{entries, externs, DropReason};
use p4lb_proto::p4runtime::TableEntry;
use support::fixtures::{counter, run, Fixture, On, Packet};
use support::frames::{self, ip, mutate, Flow, ACK, SYN, TCP};
use support::netns::is_root;
use support::target::{kinds, loud};

const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0xfe];
const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const B1_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x0b, 0x01];
const B2_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x0b, 0x02];
const L2_MAC: [u8; 6] = [0x02, 9, 9, 9, 9, 9];
const VIP: u32 = 0x0a60_0001; // 10.96.0.1
const CLIENT: u32 = 0x0a00_0001; // 10.0.0.1
const B1: u32 = 0x0a01_0001; // 10.1.0.1
const B2: u32 = 0x0a01_0002; // 10.1.0.2

/// Service 1 = VIP:80/tcp -> 8080 and VIP:53/udp -> 5353, 7 Maglev slots (slot s on
/// backend `slot_backend(s)`); backend 1 = B1 on port 2, backend 2 = B2 on port 3; routes to
/// the client (port 1) and the backends; the router MAC on ports 1-3; ARP proxy for
/// 10.0.0.0/8.
fn service(slot_backend: impl Fn(u16) -> u16) -> Vec<TableEntry> {
    let vip = Ipv4Addr::from(VIP);
    let mut es = vec![
        entries::arp_proxy(Ipv4Addr::new(10, 0, 0, 0), 8, mac_u64(&ROUTER_MAC)),
        entries::vip_service(vip, TCP, 80, 1, 7, 8080),
        entries::vip_service(vip, frames::UDP, 53, 1, 7, 5353),
        entries::backend_forward(1, B1.into(), mac_u64(&B1_MAC), 2),
        entries::backend_forward(2, B2.into(), mac_u64(&B2_MAC), 3),
        entries::service_vip(1, vip, 80),
        route(CLIENT, 1, CLIENT_MAC),
        route(B1, 2, B1_MAC),
        route(B2, 3, B2_MAC),
    ];
    es.extend((1..=3).map(|port| entries::port_smac(port, mac_u64(&ROUTER_MAC))));
    es.extend(slots(slot_backend));
    es
}

/// Service 1's 7 Maglev slots.
fn slots(slot_backend: impl Fn(u16) -> u16) -> Vec<TableEntry> {
    (0..7)
        .map(|slot| entries::maglev_slot(1, slot, slot_backend(slot)))
        .collect()
}

/// The host route to `host` out of `port` towards `mac`.
fn route(host: u32, port: u32, mac: [u8; 6]) -> TableEntry {
    entries::route_to_port(host.into(), 32, port, mac_u64(&mac))
}

/// `f` as the switch forwards it: TTL - 1, the next hop's MAC, the router MAC as source.
fn routed(f: Flow, dmac: [u8; 6]) -> Flow {
    f.with(|x| {
        x.ttl -= 1;
        x.dmac = dmac;
        x.smac = ROUTER_MAC;
    })
}

/// `f` sent to the VIP, DNATed to a backend.
fn dnat(f: Flow, backend: u32, port: u16, dmac: [u8; 6]) -> Flow {
    routed(f, dmac).with(|x| {
        x.dst = backend;
        x.dport = port;
    })
}

/// `f` from a backend, SNATed back to the VIP.
fn snat(f: Flow, vport: u16) -> Flow {
    routed(f, CLIENT_MAC).with(|x| {
        x.src = VIP;
        x.sport = vport;
    })
}

fn backend_packets(backend: i64, n: i64) -> support::fixtures::Counter {
    counter(externs::backend_packets::ID, backend, n)
}

const PARSER: Option<DropReason> = Some(DropReason::ParserError);
const LOCKED: Option<DropReason> = Some(DropReason::Locked);
const TTL: Option<DropReason> = Some(DropReason::Ttl);

fn fixtures() -> Vec<Fixture> {
    let syn = Flow::tcp(CLIENT, 40000, VIP, 80);
    let reply = Flow::tcp(B1, 8080, CLIENT, 40000).with(|f| {
        f.tcp_flags = SYN | ACK;
        f.smac = B1_MAC;
    });
    vec![
        Fixture {
            name: "a VIP SYN is DNATed to its Maglev backend; the reply, before conn_reverse \
                   exists, is SNATed back to the VIP by the transit mark",
            entries: service(|_| 1),
            packets: vec![
                Packet::forward(
                    1,
                    syn.frame(b"hello"),
                    2,
                    dnat(syn, B1, 8080, B1_MAC).frame(b"hello"),
                ),
                Packet::forward(2, reply.frame(b"world"), 1, snat(reply, 80).frame(b"world")),
            ],
            counters: vec![
                backend_packets(1, 1),
                counter(externs::service_packets::ID, 1, 2),
            ],
            ..Default::default()
        },
        Fixture {
            name: "a conn_reverse entry wins over the transit mark (its vport 81 shows it)",
            entries: [
                service(|_| 1),
                vec![entries::conn_reverse(&reply.tuple(), VIP.into(), 81, 1)],
            ]
            .concat(),
            packets: vec![
                Packet::forward(
                    1,
                    syn.frame(b"hello"),
                    2,
                    dnat(syn, B1, 8080, B1_MAC).frame(b"hello"),
                ),
                Packet::forward(2, reply.frame(b"world"), 1, snat(reply, 81).frame(b"world")),
            ],
            counters: vec![counter(externs::service_packets::ID, 1, 2)],
            ..Default::default()
        },
        Fixture {
            name: "a VIP SYN is learnt with a conn_learn digest naming the connection and \
                   its backend, and its reply is SNATed",
            entries: service(|_| 1),
            packets: vec![
                Packet::forward(
                    1,
                    syn.frame(b"syn"),
                    2,
                    dnat(syn, B1, 8080, B1_MAC).frame(b"syn"),
                ),
                Packet::forward(
                    2,
                    reply.frame(b"synack"),
                    1,
                    snat(reply, 80).frame(b"synack"),
                ),
            ],
            counters: vec![backend_packets(1, 1)],
            digest: Some([
                u64::from(CLIENT),
                u64::from(VIP),
                u64::from(TCP),
                40000,
                80,
                1,
                1,
            ]),
            ..Default::default()
        },
        Fixture {
            name: "a pinned connection stays on backend 1 when every slot moves to backend \
                   2; a new connection lands on backend 2",
            entries: [
                service(|_| 1),
                vec![
                    entries::conn_pin(&syn.tuple(), 1, 0),
                    entries::conn_reverse(&reply.tuple(), VIP.into(), 80, 1),
                ],
            ]
            .concat(),
            modify: vec![slots(|_| 2)],
            packets: {
                let data = syn.with(|f| f.tcp_flags = ACK);
                let new = Flow::tcp(CLIENT, 40001, VIP, 80);
                vec![
                    Packet::forward(
                        1,
                        data.frame(b"data"),
                        2,
                        dnat(data, B1, 8080, B1_MAC).frame(b"data"),
                    ),
                    Packet::forward(1, new.frame(b""), 3, dnat(new, B2, 8080, B2_MAC).frame(b"")),
                ]
            },
            counters: vec![backend_packets(1, 1), backend_packets(2, 1)],
            ..Default::default()
        },
        pinned_connections_survive_pool_changes(),
        maglev_slot_is_bmv2_crc16_and_spreads(),
        Fixture {
            name: "a UDP VIP is DNATed; a UDP checksum of 0 stays 0",
            entries: service(|_| 2),
            packets: {
                let q = Flow::udp(CLIENT, 5000, VIP, 53);
                let q0 = q.with(|f| f.udp_no_checksum = true);
                vec![
                    Packet::forward(1, q.frame(b"q"), 3, dnat(q, B2, 5353, B2_MAC).frame(b"q")),
                    Packet::forward(1, q0.frame(b"q"), 3, dnat(q0, B2, 5353, B2_MAC).frame(b"q")),
                ]
            },
            ..Default::default()
        },
        Fixture {
            name: "a locked backend and a locked route drop and count as locked",
            entries: service(|_| 1),
            modify: vec![vec![
                entries::backend_locked(1),
                entries::route_locked(B2.into(), 32),
            ]],
            packets: vec![
                Packet::drop(1, Flow::tcp(CLIENT, 1, VIP, 80).frame(b""), LOCKED),
                Packet::drop(1, Flow::tcp(CLIENT, 1, B2, 80).frame(b""), LOCKED),
            ],
            ..Default::default()
        },
        Fixture {
            name: "locking backend 1 and the route to B1 stops VIP and routed traffic to B1",
            entries: service(|_| 1),
            modify: vec![vec![
                entries::backend_locked(1),
                entries::route_locked(B1.into(), 32),
            ]],
            packets: vec![
                Packet::drop(1, Flow::tcp(CLIENT, 1, VIP, 80).frame(b""), LOCKED),
                Packet::drop(1, Flow::udp(CLIENT, 1, B1, 9).frame(b""), LOCKED),
            ],
            ..Default::default()
        },
        Fixture {
            name: "a locked route modified back to route_to_port forwards again",
            entries: service(|_| 1),
            modify: vec![
                vec![entries::route_locked(B1.into(), 32)],
                vec![route(B1, 2, B1_MAC)],
            ],
            packets: {
                let f = Flow::udp(CLIENT, 1, B1, 9);
                vec![Packet::forward(
                    1,
                    f.frame(b"ok"),
                    2,
                    routed(f, B1_MAC).frame(b"ok"),
                )]
            },
            ..Default::default()
        },
        Fixture {
            name: "no route: dropped and counted",
            entries: service(|_| 1),
            packets: vec![Packet::drop(
                1,
                Flow::tcp(CLIENT, 1, ip(192, 168, 9, 9), 80).frame(b""),
                Some(DropReason::NoRoute),
            )],
            ..Default::default()
        },
        Fixture {
            name: "TTL is decremented; TTL 0 and 1 are dropped (routed and VIP) and counted",
            entries: service(|_| 1),
            packets: {
                let f = Flow::udp(B2, 9, CLIENT, 9).with(|f| f.ttl = 2);
                let mut v = vec![Packet::forward(
                    3,
                    f.frame(b"abc"),
                    1,
                    routed(f, CLIENT_MAC).frame(b"abc"),
                )];
                for ttl in [0, 1] {
                    v.push(Packet::drop(3, f.with(|x| x.ttl = ttl).frame(b"abc"), TTL));
                    v.push(Packet::drop(
                        1,
                        Flow::tcp(CLIENT, 5, VIP, 80)
                            .with(|x| x.ttl = ttl)
                            .frame(b""),
                        TTL,
                    ));
                }
                v
            },
            ..Default::default()
        },
        Fixture {
            name: "ARP proxy answers a request; routed UDP gets the route's MAC, the router \
                   MAC and TTL - 1; TTL 1 is dropped and counted",
            entries: service(|_| 1),
            packets: {
                let f = Flow::udp(CLIENT, 5000, B1, 6000).with(|f| f.ttl = 9);
                vec![
                    Packet::forward(
                        1,
                        frames::arp_request(CLIENT_MAC, CLIENT, B1),
                        1,
                        frames::arp_reply(CLIENT_MAC, CLIENT, B1, ROUTER_MAC),
                    ),
                    Packet::forward(1, f.frame(b"routed"), 2, routed(f, B1_MAC).frame(b"routed")),
                    Packet::drop(1, f.with(|x| x.ttl = 1).frame(b"late"), TTL),
                ]
            },
            ..Default::default()
        },
        Fixture {
            name: "the ARP proxy answers requests only: gratuitous ARP, replies and unknown \
                   targets are dropped",
            entries: vec![entries::arp_proxy(
                Ipv4Addr::new(10, 0, 0, 0),
                8,
                mac_u64(&ROUTER_MAC),
            )],
            packets: {
                let target = ip(10, 1, 0, 1);
                vec![
                    Packet::forward(
                        4,
                        frames::arp_request(CLIENT_MAC, CLIENT, target),
                        4,
                        frames::arp_reply(CLIENT_MAC, CLIENT, target, ROUTER_MAC),
                    ),
                    Packet::drop(4, frames::arp_request(CLIENT_MAC, CLIENT, CLIENT), None),
                    Packet::drop(
                        4,
                        frames::arp_reply(CLIENT_MAC, CLIENT, target, ROUTER_MAC),
                        None,
                    ),
                    Packet::drop(
                        4,
                        frames::arp_request(CLIENT_MAC, CLIENT, ip(192, 168, 0, 1)),
                        None,
                    ),
                ]
            },
            ..Default::default()
        },
        Fixture {
            name: "non-IP frames follow l2_forward unmodified; unknown MACs are dropped",
            entries: vec![entries::l2_output(mac_u64(&L2_MAC), 5)],
            packets: {
                let smac = [0x02, 1, 1, 1, 1, 1];
                let f = frames::l2_frame(L2_MAC, smac, 0x88b5, b"some payload");
                let mut other = L2_MAC;
                other[0] = 0x04;
                vec![
                    Packet::forward(1, f.clone(), 5, f),
                    Packet::drop(
                        1,
                        frames::l2_frame(other, smac, 0x88b5, b"some payload"),
                        None,
                    ),
                ]
            },
            ..Default::default()
        },
        Fixture {
            name: "truncated (20, 40, 50 bytes) and bad-version frames are parser errors and \
                   do no harm: the next frame is forwarded",
            entries: service(|_| 1),
            packets: {
                let good = Flow::tcp(CLIENT, 2, B2, 80).frame(b"payload");
                let ok = Flow::udp(CLIENT, 1, B1, 9);
                vec![
                    Packet::drop(1, good[..20].to_vec(), PARSER),
                    Packet::drop(1, good[..40].to_vec(), PARSER),
                    Packet::drop(1, good[..50].to_vec(), PARSER),
                    Packet::drop(1, mutate(&good, &[(14, 0x65)]), PARSER),
                    Packet::forward(1, ok.frame(b"ok"), 2, routed(ok, B1_MAC).frame(b"ok")),
                ]
            },
            ..Default::default()
        },
        Fixture {
            name: "every truncation between the end of the Ethernet header and the end of \
                   the TCP header is a parser error",
            entries: service(|_| 1),
            packets: {
                let good = syn.frame(b"payload");
                (14..14 + 20 + 20)
                    .map(|len| Packet::drop(1, good[..len].to_vec(), PARSER))
                    .collect()
            },
            ..Default::default()
        },
        Fixture {
            name: "frames shorter than an Ethernet header are parser errors (they cannot \
                   cross a veth: the kernel pads them)",
            entries: service(|_| 1),
            packets: {
                let good = syn.frame(b"payload");
                (0..14)
                    .map(|len| Packet::drop(1, good[..len].to_vec(), PARSER))
                    .collect()
            },
            in_process_only: true,
            ..Default::default()
        },
        Fixture {
            name: "bad version, bad IHL and total_len below the header length are parser errors",
            entries: service(|_| 1),
            packets: {
                let good = syn.frame(b"payload");
                [
                    vec![(14, 0x65)],
                    vec![(14, 0x44)],
                    vec![(16, 0), (17, 10)],
                    vec![(17, 4)],
                ]
                .iter()
                .map(|edits| Packet::drop(1, mutate(&good, edits), PARSER))
                .collect()
            },
            ..Default::default()
        },
    ]
}

/// 50 connections pinned to backend 1 (as the controller does from the digest) stay there
/// when every slot moves to backend 2; a new connection goes to the new pool.
fn pinned_connections_survive_pool_changes() -> Fixture {
    let flows: Vec<Flow> = (0..50)
        .map(|i| Flow::tcp(CLIENT + i, 30000 + i as u16, VIP, 80))
        .collect();
    let mut es = service(|_| 1);
    es.extend(flows.iter().map(|f| entries::conn_pin(&f.tuple(), 1, 0)));
    es.extend(flows.iter().skip(1).map(|f| route(f.src, 1, CLIENT_MAC)));
    let mut packets: Vec<Packet> = flows
        .iter()
        .map(|f| {
            let data = f.with(|x| x.tcp_flags = ACK);
            Packet::forward(
                1,
                data.frame(b"x"),
                2,
                dnat(data, B1, 8080, B1_MAC).frame(b"x"),
            )
        })
        .collect();
    let new = Flow::tcp(CLIENT + 999, 1234, VIP, 80);
    packets.push(Packet::forward(
        1,
        new.frame(b""),
        3,
        dnat(new, B2, 8080, B2_MAC).frame(b""),
    ));
    Fixture {
        name: "pinned connections survive pool changes",
        entries: es,
        modify: vec![slots(|_| 2)],
        packets,
        counters: vec![backend_packets(1, 50), backend_packets(2, 1)],
        ..Default::default()
    }
}

/// Slots alternate between backend 1 (even) and 2 (odd); 2000 new connections land where
/// `p4lb_p4::hash` (BMv2's crc16) says, and spread roughly 4/7 vs 3/7.
fn maglev_slot_is_bmv2_crc16_and_spreads() -> Fixture {
    let mut counts = [0i64; 2];
    let packets = (0..2000u32)
        .map(|i| {
            let f = Flow::tcp(CLIENT + (i % 200), 1024 + i as u16, VIP, 80);
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
            .expect("7 slots");
            let (backend, port, addr, mac) = if slot.is_multiple_of(2) {
                (1, 2, B1, B1_MAC)
            } else {
                (2, 3, B2, B2_MAC)
            };
            counts[backend - 1] += 1;
            Packet::forward(1, f.frame(b""), port, dnat(f, addr, 8080, mac).frame(b""))
        })
        .collect();
    assert!(counts[0] > 900 && counts[0] < 1400, "{counts:?}");
    Fixture {
        name: "the Maglev slot is BMv2's crc16 (p4lb_p4::hash) and spreads",
        entries: service(|slot| 1 + (slot % 2)),
        packets,
        counters: vec![backend_packets(1, counts[0]), backend_packets(2, counts[1])],
        ..Default::default()
    }
}

#[tokio::test]
async fn fixtures_on_p4lb_switch_in_process() {
    run(&On::InProcess, &fixtures()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_on_the_wire() {
    if !is_root() {
        loud("SKIPPED: fixtures_on_the_wire needs root (network namespaces, veth)");
        return;
    }
    let rows = fixtures();
    for kind in kinds("fixtures_on_the_wire") {
        run(&On::Wire(kind), &rows).await;
    }
}
