//! The p4lb.p4 pipeline in Rust (docs/switch-pipeline.md maps each P4 construct here).
//!
//! `process` runs parser, ingress, egress and checksum update for one frame, in place (no
//! p4lb action changes a frame's length), and says which port it leaves on, or that it goes
//! to the hold port ([`Verdict::Hold`], kept by [`crate::hold`]).

pub mod arp;
pub mod backend;
pub mod checksum;
pub mod conn;
pub mod egress;
pub mod l2;
pub mod maglev;
pub mod packet;
pub mod parse;
pub mod reverse;
pub mod route;
pub mod transit;
pub mod vip;

use crate::program::spec::{drop_reason, CounterKind};
use crate::state::Dataplane;
use packet::Packet;
use parse::Parsed;

/// v1model's drop port (`mark_to_drop` sets `egress_spec` to it).
pub const DROP_PORT: u16 = 511;

/// `HOLD_PORT` of p4lb.p4 (`backend_locked`, `route_locked`).
pub use p4lb_p4::HOLD_PORT;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    Forward(u16),
    /// Left for [`HOLD_PORT`]: the frame (as it is now) waits for the lock to be lifted.
    Hold,
}

/// `standard_metadata` and the bits of `meta` shared between stages.
#[derive(Debug)]
pub struct Meta {
    pub ingress_port: u16,
    /// `egress_spec`; v1model starts it at 0.
    pub egress_spec: u16,
    pub dropped: bool,
    /// Frame length, for byte counters.
    pub len: usize,
    /// Nanoseconds since the dataplane epoch (table hit timestamps).
    pub now: u64,
}

impl Meta {
    /// `drops.count(reason); mark_to_drop(standard_metadata)`.
    pub fn drop_counted(&mut self, dp: &Dataplane, reason: usize) {
        dp.counter(CounterKind::Drops).count(reason, self.len);
        self.mark_to_drop();
    }

    /// `drops.count(reason); standard_metadata.egress_spec = HOLD_PORT`.
    pub fn hold_counted(&mut self, dp: &Dataplane, reason: usize) {
        dp.counter(CounterKind::Drops).count(reason, self.len);
        self.egress_spec = HOLD_PORT;
    }

    pub fn mark_to_drop(&mut self) {
        self.dropped = true;
        self.egress_spec = DROP_PORT;
    }
}

/// Runs the whole pipeline on `frame` received on `ingress_port`.
pub fn process(dp: &Dataplane, frame: &mut [u8], ingress_port: u16, partial_csum: bool) -> Verdict {
    let mut meta = Meta {
        ingress_port,
        egress_spec: 0,
        dropped: false,
        len: frame.len(),
        now: dp.now_ns(),
    };
    let parsed = match parse::parse(frame) {
        Ok(p) => p,
        Err(_) => {
            meta.drop_counted(dp, drop_reason::PARSER_ERROR);
            return Verdict::Drop;
        }
    };
    let is_ipv4 = match parsed {
        Parsed::Arp => {
            arp::apply(dp, frame, &mut meta);
            false
        }
        Parsed::Ipv4(ip) => {
            let mut pkt = Packet {
                frame: &mut *frame,
                ip,
                partial_csum,
            };
            ipv4_ingress(dp, &mut pkt, &mut meta);
            true
        }
        Parsed::Other => {
            l2::apply(dp, frame, &mut meta);
            false
        }
    };
    if meta.dropped || meta.egress_spec == DROP_PORT {
        return Verdict::Drop;
    }
    if is_ipv4 {
        egress::apply(dp, frame, meta.egress_spec, &meta);
    }
    if meta.egress_spec == HOLD_PORT {
        return Verdict::Hold;
    }
    Verdict::Forward(meta.egress_spec)
}

/// The IPv4 part of the ingress control's `apply`.
fn ipv4_ingress(dp: &Dataplane, pkt: &mut Packet<'_>, meta: &mut Meta) {
    if pkt.ip.ttl <= 1 {
        meta.drop_counted(dp, drop_reason::TTL);
        return;
    }
    match vip::apply(dp, pkt, meta) {
        Some(service) => {
            // 1. VIP traffic: pinned connection, or Maglev choice (learned once proven).
            let choice = conn::apply(dp, pkt, meta, &service);
            backend::apply(dp, pkt, meta, &service, choice);
        }
        None => {
            // 2. Not VIP: a backend's reply is rewritten back to its VIP.
            reverse::apply(dp, pkt, meta);
            // 3. Forwarding, lock and TTL.
            route::apply(dp, pkt, meta);
        }
    }
}
