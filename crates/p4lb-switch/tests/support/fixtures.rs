//! Data-plane fixtures and the one runner that executes them on every target.
//!
//! A [`Fixture`] is one row: the table entries installed, the frames sent (each with its
//! ingress port and what must come out: a frame on a port, a drop with its reason, or a
//! frame kept at the hold port), the
//! counter deltas and the `conn_learn` digests expected. [`run`] executes every row on a fresh
//! switch of one target:
//!
//! - [`On::InProcess`]: p4lb-switch's P4Runtime server in this process, frames handed to
//!   `pipeline::process` directly (no root needed);
//! - [`On::Wire`]: p4lb-switch or BMv2's simple_switch_grpc in a network namespace, frames
//!   injected and captured on veth host ends (root).
//!
//! Expected frames are built with etherparse (support::frames) and compared header by header,
//! checksums recomputed, then byte for byte.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use p4lb_p4::{externs, DropReason};
use p4lb_proto::p4runtime as p4;
use p4lb_proto::p4runtime::stream_message_response::Update as Resp;
use p4lb_proto::p4runtime::update::Type;
use p4lb_switch::pipeline::{self, Verdict};
use p4lb_switch::state::Dataplane;
use p4lb_switch::{serve, GrpcAddr, SwitchConfig};

use super::frames;
use super::netns::{RawSock, Topology};
use super::p4rt::{self, Session};
use super::target::{loud, Kind, Target};

/// Ports 1..=PORTS exist on every target.
pub const PORTS: u16 = 5;
/// How long a frame the switch forwards may take to show up on the wire.
const WAIT: Duration = Duration::from_secs(2);
/// How long the wire must stay silent after frames that are dropped.
const QUIET: Duration = Duration::from_millis(400);

/// One data-plane test case.
#[derive(Default)]
pub struct Fixture {
    /// What the row shows; printed with any failure.
    pub name: &'static str,
    /// Inserted (one Write) before any frame is sent.
    pub entries: Vec<p4::TableEntry>,
    /// Then each batch is applied as one Write of MODIFY updates, in order.
    pub modify: Vec<Vec<p4::TableEntry>>,
    /// Sent in order; each names what must come out.
    pub packets: Vec<Packet>,
    /// Counter deltas over the whole row, besides the `drops` deltas that the packets'
    /// [`Expect::Drop`] reasons imply (checked too).
    pub counters: Vec<Counter>,
    /// The `conn_learn` digests the row must produce, in order and no others: each its
    /// fields in P4Info order (src_addr, dst_addr, protocol, src_port, dst_port, service_id,
    /// backend_id, event). `Some` (even empty) also enables the digest (DigestEntry with
    /// max_list_size 1) before the frames are sent; `None` leaves digests off.
    pub digests: Option<Vec<[u64; 8]>>,
    /// Only on the in-process target: for frames that cannot cross a veth (shorter than an
    /// Ethernet header: the kernel pads them).
    pub in_process_only: bool,
}

pub struct Packet {
    pub port: u16,
    pub frame: Vec<u8>,
    pub expect: Expect,
}

pub enum Expect {
    /// Exactly this frame out of `port`.
    Out { port: u16, frame: Vec<u8> },
    /// Dropped; with a reason, the `drops` counter at that index counts it.
    Drop(Option<DropReason>),
    /// Sent to the hold port by a lock (`drops[LOCKED]` counts it): kept by p4lb-switch,
    /// dropped by BMv2; nothing comes out of any port either way.
    Held,
}

impl Packet {
    /// `frame` in on `port`, `want` out on `out_port`.
    pub fn forward(port: u16, frame: Vec<u8>, out_port: u16, want: Vec<u8>) -> Packet {
        Packet {
            port,
            frame,
            expect: Expect::Out {
                port: out_port,
                frame: want,
            },
        }
    }

    /// `frame` in on `port`, sent to the hold port by a lock.
    pub fn held(port: u16, frame: Vec<u8>) -> Packet {
        Packet {
            port,
            frame,
            expect: Expect::Held,
        }
    }

    /// `frame` in on `port`, dropped (and counted under `reason`, if given).
    pub fn drop(port: u16, frame: Vec<u8>, reason: Option<DropReason>) -> Packet {
        Packet {
            port,
            frame,
            expect: Expect::Drop(reason),
        }
    }
}

/// `packets` more at `index` of counter `counter_id` after the row than before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub counter_id: u32,
    pub index: i64,
    pub packets: i64,
}

pub fn counter(counter_id: u32, index: i64, packets: i64) -> Counter {
    Counter {
        counter_id,
        index,
        packets,
    }
}

impl Fixture {
    /// Every counter delta to check: the explicit ones, then one per drop reason used.
    fn expected_counters(&self) -> Vec<Counter> {
        let mut drops: BTreeMap<i64, i64> = BTreeMap::new();
        for p in &self.packets {
            match p.expect {
                Expect::Drop(Some(r)) => *drops.entry(i64::from(r.index())).or_default() += 1,
                Expect::Held => {
                    *drops
                        .entry(i64::from(DropReason::Locked.index()))
                        .or_default() += 1
                }
                _ => {}
            }
        }
        let mut v = self.counters.clone();
        v.extend(
            drops
                .into_iter()
                .map(|(index, n)| counter(externs::drops::ID, index, n)),
        );
        v
    }
}

/// Where the fixtures run.
pub enum On {
    InProcess,
    Wire(Kind),
}

impl On {
    pub fn name(&self) -> String {
        match self {
            On::InProcess => "p4lb-switch (in process)".into(),
            On::Wire(k) => format!("{} (veth)", k.name()),
        }
    }
}

/// Runs every fixture that applies on a fresh switch of `on`; panics listing every failure.
pub async fn run(on: &On, fixtures: &[Fixture]) {
    let mut failures = Vec::new();
    let mut ran = 0;
    let wire = match on {
        On::InProcess => None,
        On::Wire(_) => {
            let topo = Topology::create(usize::from(PORTS));
            let socks: Vec<(u16, RawSock)> = (1..=PORTS).map(|p| (p, topo.host(p))).collect();
            Some((topo, socks))
        }
    };
    for fx in fixtures {
        let r = match (on, &wire) {
            (On::InProcess, _) => run_in_process(fx).await,
            (On::Wire(_), _) if fx.in_process_only => continue,
            (On::Wire(kind), Some((topo, socks))) => run_on_wire(kind, topo, socks, fx).await,
            (On::Wire(_), None) => unreachable!("wire targets have a topology"),
        };
        ran += 1;
        if let Err(e) = r {
            failures.push(format!("[{}] {}: {e}", on.name(), fx.name));
        }
    }
    loud(&format!(
        "data-plane fixtures on {}: {ran} run, {} failed",
        on.name(),
        failures.len()
    ));
    assert!(ran > 0, "no fixture ran on {}", on.name());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

async fn run_in_process(fx: &Fixture) -> Result<(), String> {
    let handle = serve(SwitchConfig {
        grpc_addr: GrpcAddr::Tcp("127.0.0.1:0".parse().expect("address")),
        insecure_loopback: true,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("serve: {e}"))?;
    let ch = p4rt::channel(&handle.endpoint()).await;
    let (mut s, code) = Session::open(ch, 0, 1).await;
    if code != 0 {
        return Err(format!("arbitration answered {code}"));
    }
    s.set_pipeline(Vec::new())
        .await
        .map_err(|e| format!("set pipeline: {e}"))?;
    let dp = handle
        .device
        .installed()
        .ok_or("no pipeline installed")?
        .dp
        .clone();
    let r = run_fixture(&mut s, &Ports::InProcess(dp), fx).await;
    handle.shutdown().await;
    r
}

async fn run_on_wire(
    kind: &Kind,
    topo: &Topology,
    socks: &[(u16, RawSock)],
    fx: &Fixture,
) -> Result<(), String> {
    let t = Target::start(kind, topo);
    let mut s = t.primary().await;
    run_fixture(&mut s, &Ports::Wire(socks), fx).await
}

/// How frames reach the switch and come back.
enum Ports<'a> {
    InProcess(Arc<Dataplane>),
    Wire(&'a [(u16, RawSock)]),
}

async fn run_fixture(s: &mut Session, ports: &Ports<'_>, fx: &Fixture) -> Result<(), String> {
    if !fx.entries.is_empty() {
        let ups = fx
            .entries
            .iter()
            .map(|e| p4rt::update(Type::Insert, p4rt::table_entity(e.clone())))
            .collect();
        s.write(ups)
            .await
            .map_err(|e| format!("insert entries: {e}"))?;
    }
    for batch in &fx.modify {
        let ups = batch
            .iter()
            .map(|e| p4rt::update(Type::Modify, p4rt::table_entity(e.clone())))
            .collect();
        s.write(ups)
            .await
            .map_err(|e| format!("modify entries: {e}"))?;
    }
    if fx.digests.is_some() {
        enable_digest(s).await?;
    }
    let counters = fx.expected_counters();
    let mut before = Vec::new();
    for c in &counters {
        before.push(s.counter(c.counter_id, c.index).await.0);
    }
    match ports {
        Ports::InProcess(dp) => exchange_in_process(dp, &fx.packets)?,
        Ports::Wire(socks) => exchange_on_wire(socks, &fx.packets).await?,
    }
    for (c, b) in counters.iter().zip(before) {
        let after = s.counter(c.counter_id, c.index).await.0;
        if after - b != c.packets {
            return Err(format!(
                "counter {:#x}[{}]: +{} packets, want +{}",
                c.counter_id,
                c.index,
                after - b,
                c.packets
            ));
        }
    }
    if let Some(want) = &fx.digests {
        for (i, w) in want.iter().enumerate() {
            check_digest(s, *w)
                .await
                .map_err(|e| format!("digest {i} of {}: {e}", want.len()))?;
        }
        check_no_digest(s, want.len()).await?;
    }
    Ok(())
}

fn exchange_in_process(dp: &Dataplane, packets: &[Packet]) -> Result<(), String> {
    for (i, p) in packets.iter().enumerate() {
        let mut f = p.frame.clone();
        let v = pipeline::process(dp, &mut f, p.port, false);
        match (&p.expect, v) {
            (Expect::Drop(_), Verdict::Drop) | (Expect::Held, Verdict::Hold) => {}
            (Expect::Out { port, frame }, Verdict::Forward(got)) if got == *port => {
                frames::check_frame(&f, frame).map_err(|e| format!("packet {i}: {e}"))?
            }
            (Expect::Out { port, .. }, v) => {
                return Err(format!("packet {i}: {v:?}, want Forward({port})"))
            }
            (Expect::Drop(_), v) => return Err(format!("packet {i}: {v:?}, want Drop")),
            (Expect::Held, v) => return Err(format!("packet {i}: {v:?}, want Hold")),
        }
    }
    Ok(())
}

async fn exchange_on_wire(socks: &[(u16, RawSock)], packets: &[Packet]) -> Result<(), String> {
    let sock = |port: u16| -> Result<&RawSock, String> {
        socks
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, s)| s)
            .ok_or(format!("no port {port} on the wire targets"))
    };
    drain(socks);
    let mut dropped = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        match &p.expect {
            Expect::Drop(_) | Expect::Held => {
                sock(p.port)?.send(&p.frame);
                dropped.push(i);
            }
            Expect::Out { port, frame } => {
                check_quiet(socks, &mut dropped).await?;
                sock(p.port)?.send(&p.frame);
                let (et, dst) = (frames::ether_type(frame), frames::ipv4_dst(frame));
                let got = sock(*port)?
                    .expect(WAIT, |f| {
                        frames::ether_type(f) == et && frames::ipv4_dst(f) == dst
                    })
                    .ok_or(format!("packet {i}: nothing out of port {port}"))?;
                frames::check_frame(&got, frame).map_err(|e| format!("packet {i}: {e}"))?;
            }
        }
    }
    check_quiet(socks, &mut dropped).await
}

/// After frames that must be dropped: nothing may come out of any port.
async fn check_quiet(socks: &[(u16, RawSock)], dropped: &mut Vec<usize>) -> Result<(), String> {
    if dropped.is_empty() {
        return Ok(());
    }
    tokio::time::sleep(QUIET).await;
    let leaked = drain(socks);
    if let Some((port, f)) = leaked.first() {
        return Err(format!(
            "packets {dropped:?} must be dropped, but port {port} sent {f:02x?}"
        ));
    }
    dropped.clear();
    Ok(())
}

/// Everything waiting on the host ends (IPv6 is off there; anything else counts).
fn drain(socks: &[(u16, RawSock)]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    for (p, s) in socks {
        while let Some(f) = s.recv(Duration::ZERO) {
            if frames::ether_type(&f) != Some(0x86dd) {
                out.push((*p, f));
            }
        }
    }
    out
}

async fn enable_digest(s: &mut Session) -> Result<(), String> {
    let cfg = p4::digest_entry::Config {
        max_timeout_ns: 0,
        max_list_size: 1,
        ack_timeout_ns: 5_000_000_000,
    };
    s.write(vec![p4rt::update(
        Type::Insert,
        p4::Entity {
            entity: Some(p4::entity::Entity::DigestEntry(p4::DigestEntry {
                digest_id: externs::conn_learn::ID,
                config: Some(cfg),
            })),
        },
    )])
    .await
    .map_err(|e| format!("enable conn_learn: {e}"))
}

/// After the expected digests: no further one arrives within [`QUIET`].
async fn check_no_digest(s: &mut Session, expected: usize) -> Result<(), String> {
    let extra = s
        .next_matching(QUIET, |u| match u {
            Resp::Digest(d) => Some(d),
            _ => None,
        })
        .await;
    match extra {
        None => Ok(()),
        Some(d) => Err(format!(
            "{} digests expected, then another: {:?}",
            expected,
            d.data.first()
        )),
    }
}

async fn check_digest(s: &mut Session, want: [u64; 8]) -> Result<(), String> {
    let d = s
        .next_matching(WAIT, |u| match u {
            Resp::Digest(d) => Some(d),
            _ => None,
        })
        .await
        .ok_or("no digest")?;
    if d.digest_id != externs::conn_learn::ID || d.data.len() != 1 {
        return Err(format!(
            "digest {:#x} with {} entries, want conn_learn with 1",
            d.digest_id,
            d.data.len()
        ));
    }
    let got: Vec<u64> = match &d.data[0].data {
        Some(p4::p4_data::Data::Struct(st)) => st
            .members
            .iter()
            .map(|m| match &m.data {
                Some(p4::p4_data::Data::Bitstring(b)) => {
                    b.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x))
                }
                _ => u64::MAX,
            })
            .collect(),
        other => return Err(format!("digest data {other:?}, want a struct")),
    };
    if got != want {
        return Err(format!("digest fields {got:?}, want {want:?}"));
    }
    s.tx.send(p4::StreamMessageRequest {
        update: Some(p4::stream_message_request::Update::DigestAck(
            p4::DigestListAck {
                digest_id: d.digest_id,
                list_id: d.list_id,
            },
        )),
    })
    .await
    .map_err(|e| format!("digest ack: {e}"))
}
