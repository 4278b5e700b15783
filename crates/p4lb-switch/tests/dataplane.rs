//! The data plane as a table of fixtures: each row installs entries, sends frames and names
//! what must come out (frame and port, or drop and reason), the counter deltas and the digests.
//! The same rows run on p4lb-switch in process, on p4lb-switch over veth ports, and on BMv2's
//! simple_switch_grpc over veth ports when `P4LB_P4_PREFIX` is set. The veth runs need root.
//!
//! Adding a case is adding one row to [`fixtures`]; docs/switch-pipeline.md says how.

mod support;

use std::net::Ipv4Addr;

use p4lb_controller::addr::mac_u64;
use p4lb_p4::{entries, externs, ConnEvent, DropReason};
use p4lb_proto::p4runtime::TableEntry;
use support::fixtures::{counter, run, Fixture, On, Packet};
use support::frames::{self, ip, mutate, Flow, ACK, FIN, RST, SYN, TCP};
use support::netns::root_or_skip;
use support::target::kinds;

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
            name: "a VIP connection is learnt (one conn_learn digest naming it and its \
                   backend) on the ACK that completes its handshake, not on its SYN",
            entries: service(|_| 1),
            packets: handshake(syn, reply, true),
            counters: vec![backend_packets(1, 2)],
            digests: Some(vec![learn(syn, 1)]),
            ..Default::default()
        },
        Fixture {
            name: "no digest for a SYN, for the SYN-ACK, nor for ACKs whose ack_no is not \
                   the backend's ISN + 1",
            entries: service(|_| 1),
            packets: {
                let mut v = handshake(syn, reply, false);
                for ack_no in [
                    0,
                    2000,
                    SERVER_ISN,
                    SERVER_ISN + 2,
                    SERVER_ISN.wrapping_neg(),
                ] {
                    let a = client_ack(syn, ack_no);
                    v.push(Packet::forward(
                        1,
                        a.frame(b""),
                        2,
                        dnat(a, B1, 8080, B1_MAC).frame(b""),
                    ));
                }
                // The right ack_no on a RST or a SYN is no proof either.
                for flags in [ACK | RST, ACK | SYN] {
                    let a = client_ack(syn, SERVER_ISN + 1).with(|f| f.tcp_flags = flags);
                    v.push(Packet::forward(
                        1,
                        a.frame(b""),
                        2,
                        dnat(a, B1, 8080, B1_MAC).frame(b""),
                    ));
                }
                v
            },
            digests: Some(vec![]),
            ..Default::default()
        },
        spoofed_syn_flood_learns_nothing(),
        spoofed_acks_learn_nothing(),
        a_chosen_syn_cannot_rewrite_unrelated_traffic(),
        a_direct_start_frees_only_its_own_slot(),
        one_clients_pending_connections_to_two_backends_keep_their_slots(),
        close_events_of_pinned_connections(),
        udp_is_learnt_after_the_reply(),
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
            name: "a locked backend and a locked route hold and count as locked",
            entries: service(|_| 1),
            modify: vec![vec![
                entries::backend_locked(1),
                entries::route_locked(B2.into(), 32),
            ]],
            packets: vec![
                Packet::held(1, Flow::tcp(CLIENT, 1, VIP, 80).frame(b"")),
                Packet::held(1, Flow::tcp(CLIENT, 1, B2, 80).frame(b"")),
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
                Packet::held(1, Flow::tcp(CLIENT, 1, VIP, 80).frame(b"")),
                Packet::held(1, Flow::udp(CLIENT, 1, B1, 9).frame(b"")),
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

/// The backend's initial sequence number in the handshakes of these rows.
const SERVER_ISN: u32 = 0x7fff_fff0;

/// The `conn_learn` digest of `client` (a flow to the VIP) on service 1 and `backend`.
fn learn(client: Flow, backend: u64) -> [u64; 8] {
    event(client, backend, ConnEvent::Learn)
}

/// A `conn_learn` digest with `event` for `client` (a flow to the VIP) on service 1.
fn event(client: Flow, backend: u64, event: ConnEvent) -> [u64; 8] {
    [
        u64::from(client.src),
        u64::from(client.dst),
        u64::from(client.proto),
        u64::from(client.sport),
        u64::from(client.dport),
        1,
        backend,
        u64::from(event.code()),
    ]
}

/// The client's ACK of `syn`'s connection, acknowledging `ack_no`.
fn client_ack(syn: Flow, ack_no: u32) -> Flow {
    syn.with(|f| {
        f.tcp_flags = ACK;
        f.seq = syn.seq + 1;
        f.ack_no = ack_no;
    })
}

/// `syn` to the VIP (DNATed to B1), the backend's SYN-ACK `reply` (ISN [`SERVER_ISN`],
/// SNATed back), and with `complete` the client's ACK of it.
fn handshake(syn: Flow, reply: Flow, complete: bool) -> Vec<Packet> {
    let synack = reply.with(|f| {
        f.tcp_flags = SYN | ACK;
        f.seq = SERVER_ISN;
        f.ack_no = syn.seq + 1;
    });
    let mut v = vec![
        Packet::forward(
            1,
            syn.frame(b"syn"),
            2,
            dnat(syn, B1, 8080, B1_MAC).frame(b"syn"),
        ),
        Packet::forward(2, synack.frame(b""), 1, snat(synack, 80).frame(b"")),
    ];
    if complete {
        let ack = client_ack(syn, SERVER_ISN + 1);
        v.push(Packet::forward(
            1,
            ack.frame(b"ack"),
            2,
            dnat(ack, B1, 8080, B1_MAC).frame(b"ack"),
        ));
    }
    v
}

/// A small deterministic generator (64-bit LCG) for spoofed addresses, ports and numbers.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 32) as u32
    }

    /// A flow from a random source in 11.0.0.0/8 to the VIP.
    fn spoofed(&mut self, flags: u8) -> Flow {
        let src = 0x0b00_0000 | (self.next() & 0x00ff_ffff);
        let sport = (self.next() % 64_000) as u16 + 1024;
        let (seq, ack_no) = (self.next(), self.next());
        Flow::tcp(src, sport, VIP, 80).with(|f| {
            f.tcp_flags = flags;
            f.seq = seq;
            f.ack_no = ack_no;
        })
    }
}

/// The transit index of a connection, from its tuple after DNAT (`p4lb_p4::hash::transit_crc`:
/// the backend's address `_dst` is not part of it).
fn transit_index(src: u32, _dst: u32, proto: u8, sport: u16, dport: u16) -> u16 {
    p4lb_p4::hash::transit_crc(src, proto, sport, dport)
}

/// 10 000 SYNs from random sources reach the backend, and none is learnt.
fn spoofed_syn_flood_learns_nothing() -> Fixture {
    let mut g = Lcg(1);
    let packets = (0..10_000)
        .map(|_| {
            let f = g.spoofed(SYN);
            Packet::forward(1, f.frame(b""), 2, dnat(f, B1, 8080, B1_MAC).frame(b""))
        })
        .collect();
    Fixture {
        name: "10 000 spoofed SYNs (random sources) to a VIP are forwarded and produce no \
               digest",
        entries: service(|_| 1),
        packets,
        counters: vec![backend_packets(1, 10_000)],
        digests: Some(vec![]),
        ..Default::default()
    }
}

/// ACKs with guessed numbers, after spoofed SYNs from the same sources or without any,
/// are forwarded (Maglev) and produce no digest.
fn spoofed_acks_learn_nothing() -> Fixture {
    let mut g = Lcg(2);
    let mut packets = Vec::new();
    for i in 0..1000 {
        let ack = g.spoofed(ACK);
        if i % 2 == 0 {
            let syn = ack.with(|f| f.tcp_flags = SYN);
            packets.push(Packet::forward(
                1,
                syn.frame(b""),
                2,
                dnat(syn, B1, 8080, B1_MAC).frame(b""),
            ));
        }
        packets.push(Packet::forward(
            1,
            ack.frame(b""),
            2,
            dnat(ack, B1, 8080, B1_MAC).frame(b""),
        ));
    }
    Fixture {
        name: "1000 spoofed ACKs with guessed ack_no (half after a spoofed SYN) produce no \
               digest",
        entries: service(|_| 1),
        packets,
        digests: Some(vec![]),
        ..Default::default()
    }
}

/// A SYN whose transit index collides with an unrelated direct flow's reverse index must
/// not make that flow's packets leave with the VIP as their source (it did when slots held
/// only a mark).
fn a_chosen_syn_cannot_rewrite_unrelated_traffic() -> Fixture {
    // Direct traffic between B2:5000 and the client's port 6000 (UDP and TCP): its reverse
    // index is crc16(CLIENT, B2, proto, 6000, 5000).
    let udp = Flow::udp(B2, 5000, CLIENT, 6000).with(|f| f.smac = B2_MAC);
    let tcp = Flow::tcp(B2, 5000, CLIENT, 6000).with(|f| {
        f.smac = B2_MAC;
        f.tcp_flags = ACK;
    });
    // The attacker's source port: its SYN (DNATed to B1:8080) lands on that index.
    let chosen = |proto: u8| -> Flow {
        let target = transit_index(CLIENT, B2, proto, 6000, 5000);
        let attacker = ip(10, 0, 0, 66);
        let sport = (1..=u16::MAX)
            .find(|p| transit_index(attacker, B1, TCP, *p, 8080) == target)
            .expect("a 16-bit hash has a colliding port");
        Flow::tcp(attacker, sport, VIP, 80)
    };
    let mut packets = Vec::new();
    for (syn, direct) in [(chosen(frames::UDP), udp), (chosen(TCP), tcp)] {
        packets.push(Packet::forward(
            1,
            syn.frame(b""),
            2,
            dnat(syn, B1, 8080, B1_MAC).frame(b""),
        ));
        packets.push(Packet::forward(
            3,
            direct.frame(b"direct"),
            1,
            routed(direct, CLIENT_MAC).frame(b"direct"),
        ));
    }
    Fixture {
        name: "a chosen SYN whose transit index collides with a direct flow does not \
               rewrite that flow (UDP and TCP keep their own source)",
        entries: service(|_| 1),
        packets,
        ..Default::default()
    }
}

/// Two pending connections of one client, to B1 and to B2, with client ports 0x00F0 apart:
/// with the backend's address in the transit hash they shared a slot (crc16 is linear), the
/// second SYN took it over, and B1's reply to the first left with B1's address. Each keeps
/// its own slot, and B1's reply is rewritten to the VIP.
fn one_clients_pending_connections_to_two_backends_keep_their_slots() -> Fixture {
    let slot = |port: u16| {
        p4lb_p4::hash::maglev_slot(
            &p4lb_p4::hash::FlowKey {
                src_addr: CLIENT.into(),
                dst_addr: VIP.into(),
                protocol: TCP,
                src_port: port,
                dst_port: 80,
            },
            7,
        )
        .expect("7 slots")
    };
    let pa = (40000..u16::MAX)
        .find(|p| slot(*p) != slot(p ^ 0x00F0))
        .expect("ports on two slots");
    let (to_b2, pb) = (slot(pa ^ 0x00F0), pa ^ 0x00F0);
    let a = Flow::tcp(CLIENT, pa, VIP, 80);
    let b = Flow::tcp(CLIENT, pb, VIP, 80);
    let synack_a = Flow::tcp(B1, 8080, CLIENT, pa).with(|f| {
        f.tcp_flags = SYN | ACK;
        f.smac = B1_MAC;
    });
    let data_a = synack_a.with(|f| f.tcp_flags = ACK);
    Fixture {
        name: "one client's pending connections to two backends, client ports 0x00F0 apart,                keep their own transit slots (B1's reply is still rewritten)",
        entries: service(|s| if s == to_b2 { 2 } else { 1 }),
        packets: vec![
            Packet::forward(1, a.frame(b""), 2, dnat(a, B1, 8080, B1_MAC).frame(b"")),
            Packet::forward(2, synack_a.frame(b""), 1, snat(synack_a, 80).frame(b"")),
            Packet::forward(1, b.frame(b""), 3, dnat(b, B2, 8080, B2_MAC).frame(b"")),
            Packet::forward(2, data_a.frame(b"a"), 1, snat(data_a, 80).frame(b"a")),
        ],
        ..Default::default()
    }
}

/// A direct SYN frees a transit slot only when the slot holds exactly its tuple.
fn a_direct_start_frees_only_its_own_slot() -> Fixture {
    let syn = Flow::tcp(CLIENT, 40000, VIP, 80);
    let synack = Flow::tcp(B1, 8080, CLIENT, 40000).with(|f| {
        f.tcp_flags = SYN | ACK;
        f.smac = B1_MAC;
    });
    // A direct SYN B2:p -> CLIENT:7000 on the same index as the pending connection.
    let target = transit_index(CLIENT, B1, TCP, 40000, 8080);
    let p = (1..=u16::MAX)
        .find(|p| transit_index(B2, CLIENT, TCP, *p, 7000) == target)
        .expect("a 16-bit hash has a colliding port");
    let colliding = Flow::tcp(B2, p, CLIENT, 7000).with(|f| f.smac = B2_MAC);
    // The client opening the same tuple directly to the backend.
    let direct = Flow::tcp(CLIENT, 40000, B1, 8080);
    Fixture {
        name: "a direct SYN on a colliding index leaves a pending slot alone; a direct SYN \
               with the slot's exact tuple frees it",
        entries: service(|_| 1),
        packets: vec![
            Packet::forward(1, syn.frame(b""), 2, dnat(syn, B1, 8080, B1_MAC).frame(b"")),
            Packet::forward(
                3,
                colliding.frame(b""),
                1,
                routed(colliding, CLIENT_MAC).frame(b""),
            ),
            Packet::forward(2, synack.frame(b"1"), 1, snat(synack, 80).frame(b"1")),
            Packet::forward(1, direct.frame(b""), 2, routed(direct, B1_MAC).frame(b"")),
            Packet::forward(
                2,
                synack.frame(b"2"),
                1,
                routed(synack, CLIENT_MAC).frame(b"2"),
            ),
        ],
        ..Default::default()
    }
}

/// FIN and RST on a pinned connection, from either side, are close events.
fn close_events_of_pinned_connections() -> Fixture {
    let c = Flow::tcp(CLIENT, 40000, VIP, 80);
    let b = Flow::tcp(B1, 8080, CLIENT, 40000).with(|f| f.smac = B1_MAC);
    let c2 = Flow::tcp(CLIENT, 40001, VIP, 80);
    let b2 = Flow::tcp(B1, 8080, CLIENT, 40001).with(|f| f.smac = B1_MAC);
    let fin = |f: Flow| f.with(|x| x.tcp_flags = FIN | ACK);
    let rst = |f: Flow| f.with(|x| x.tcp_flags = RST);
    let data = |f: Flow| f.with(|x| x.tcp_flags = ACK);
    Fixture {
        name: "FIN and RST through conn_table (client) or conn_reverse (backend) are close \
               events naming the client's tuple; other segments are not",
        entries: [
            service(|_| 1),
            vec![
                entries::conn_pin(&c.tuple(), 1, 0),
                entries::conn_reverse(&b.tuple(), VIP.into(), 80, 1),
                entries::conn_pin(&c2.tuple(), 1, 0),
                entries::conn_reverse(&b2.tuple(), VIP.into(), 80, 1),
            ],
        ]
        .concat(),
        packets: vec![
            Packet::forward(
                1,
                data(c).frame(b"d"),
                2,
                dnat(data(c), B1, 8080, B1_MAC).frame(b"d"),
            ),
            Packet::forward(2, data(b).frame(b"d"), 1, snat(data(b), 80).frame(b"d")),
            Packet::forward(
                1,
                fin(c).frame(b""),
                2,
                dnat(fin(c), B1, 8080, B1_MAC).frame(b""),
            ),
            Packet::forward(2, rst(b).frame(b""), 1, snat(rst(b), 80).frame(b"")),
            Packet::forward(2, fin(b2).frame(b""), 1, snat(fin(b2), 80).frame(b"")),
            Packet::forward(
                1,
                rst(c2).frame(b""),
                2,
                dnat(rst(c2), B1, 8080, B1_MAC).frame(b""),
            ),
        ],
        digests: Some(vec![
            event(c, 1, ConnEvent::Fin),
            event(c, 0, ConnEvent::Rst),
            event(c2, 0, ConnEvent::Fin),
            event(c2, 1, ConnEvent::Rst),
        ]),
        ..Default::default()
    }
}

/// A UDP flow is learnt on its first datagram after the backend replied, not before.
fn udp_is_learnt_after_the_reply() -> Fixture {
    let q = Flow::udp(CLIENT, 5000, VIP, 53);
    let r = Flow::udp(B2, 5353, CLIENT, 5000).with(|f| f.smac = B2_MAC);
    let out = |payload: &[u8]| {
        Packet::forward(
            1,
            q.frame(payload),
            3,
            dnat(q, B2, 5353, B2_MAC).frame(payload),
        )
    };
    Fixture {
        name: "a UDP flow is learnt after the backend's reply went back through its slot",
        entries: service(|_| 2),
        modify: vec![vec![entries::service_vip(1, Ipv4Addr::from(VIP), 53)]],
        packets: vec![
            out(b"q1"),
            out(b"q2"),
            Packet::forward(3, r.frame(b"r"), 1, snat(r, 53).frame(b"r")),
            out(b"q3"),
        ],
        digests: Some(vec![learn(q, 2)]),
        ..Default::default()
    }
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
    if !root_or_skip("fixtures_on_the_wire") {
        return;
    }
    let rows = fixtures();
    for kind in kinds("fixtures_on_the_wire") {
        run(&On::Wire(kind), &rows).await;
    }
}
