//! Reverse path of VIP connections: [`conn_reverse`](p4lb_p4::tables::conn_reverse) (exact,
//! installed from the digest) and, for connections not yet installed, the transit mark +
//! [`service_vip`](p4lb_p4::tables::service_vip).
//! Both run `rewrite_src`: the backend's reply gets the VIP as its source again (SNAT).
//! Direct connections clear a stale mark at their own index.

use super::packet::Packet;
use super::parse::L4;
use super::Meta;
use crate::program::spec::CounterKind;
use crate::program::{Act, TableKind};
use crate::state::Dataplane;
use p4lb_p4::hash::crc16_5tuple;

use super::conn::key5;

const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

pub fn apply(dp: &Dataplane, pkt: &mut Packet<'_>, meta: &mut Meta) {
    let ip = pkt.ip;
    let mut rewritten: Option<Option<u16>> = None;
    let (hit, act) = dp.table(TableKind::ConnReverse).lookup_exact(
        key5(ip.src, ip.dst, ip.protocol, ip.l4_sport, ip.l4_dport),
        meta.now,
    );
    if hit {
        rewritten = rewrite_src(pkt, act);
    } else {
        let size = dp.transit.size().max(1);
        let idx = crc16_5tuple(ip.dst, ip.src, ip.protocol, ip.l4_dport, ip.l4_sport);
        let mark = dp.transit.read(usize::from(idx) % size);
        if mark != 0 {
            let (_, act) = dp
                .table(TableKind::ServiceVip)
                .lookup_exact(u128::from(mark), meta.now);
            rewritten = rewrite_src(pkt, act);
        }
    }
    match rewritten {
        Some(service_id) => {
            if let Some(sid) = service_id {
                dp.counter(CounterKind::ServicePackets)
                    .count(usize::from(sid), meta.len);
            }
        }
        None => {
            let starts = match ip.l4 {
                L4::Tcp(_) => ip.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN,
                L4::Udp(_) => true,
                L4::None => false,
            };
            if starts {
                // A direct connection starts: make sure no stale VIP mark claims it.
                let size = dp.transit.size().max(1);
                let idx = crc16_5tuple(ip.src, ip.dst, ip.protocol, ip.l4_sport, ip.l4_dport);
                dp.transit.write(usize::from(idx) % size, 0);
            }
        }
    }
}

/// `action rewrite_src(bit<32> vip, bit<16> vport, bit<16> service_id)`; returns
/// `Some(service_id)` when it ran (`meta.rewritten`).
fn rewrite_src(pkt: &mut Packet<'_>, act: Act) -> Option<Option<u16>> {
    match act {
        Act::RewriteSrc {
            vip,
            vport,
            service_id,
        } => {
            pkt.set_src_addr(vip);
            pkt.set_src_port(vport);
            Some(service_id)
        }
        _ => None,
    }
}
