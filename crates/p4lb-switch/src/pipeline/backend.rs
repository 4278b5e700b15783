//! [`backends`](p4lb_p4::tables::backends): DNAT of a VIP packet to its backend
//! (`backend_forward`), or drop while the backend is locked for migration (`backend_locked`). Also
//! the per-backend and per-service counters and the transit mark of a pending connection.

use p4lb_p4::hash::crc16_5tuple;

use super::conn::Choice;
use super::packet::Packet;
use super::vip::Service;
use super::Meta;
use crate::program::spec::{drop_reason, CounterKind};
use crate::program::{Act, TableKind};
use crate::state::Dataplane;

pub fn apply(
    dp: &Dataplane,
    pkt: &mut Packet<'_>,
    meta: &mut Meta,
    service: &Service,
    choice: Choice,
) {
    if choice.backend_id == 0 {
        meta.drop_counted(dp, drop_reason::NO_BACKEND);
        return;
    }
    let (_, act) = dp
        .table(TableKind::Backends)
        .lookup_exact(u128::from(choice.backend_id), meta.now);
    match act {
        Act::BackendForward { ip, dmac, port } => {
            backend_forward(pkt, meta, service, ip, dmac, port);
            dp.counter(CounterKind::BackendPackets)
                .count(usize::from(choice.backend_id), meta.len);
            dp.counter(CounterKind::ServicePackets)
                .count(usize::from(service.service_id), meta.len);
            if choice.conn_miss {
                // Pending connection: remember it for the reply direction, keyed by
                // (client, backend) after DNAT.
                let ip = &pkt.ip;
                let idx = crc16_5tuple(ip.src, ip.dst, ip.protocol, ip.l4_sport, ip.l4_dport);
                let size = dp.transit.size().max(1);
                dp.transit
                    .write(usize::from(idx) % size, service.service_id.wrapping_add(1));
            }
        }
        Act::BackendLocked => meta.drop_counted(dp, drop_reason::LOCKED),
        _ => meta.drop_counted(dp, drop_reason::NO_BACKEND),
    }
}

/// `action backend_forward(bit<32> ip, bit<48> dmac, bit<9> port)`.
fn backend_forward(
    pkt: &mut Packet<'_>,
    meta: &mut Meta,
    service: &Service,
    ip: u32,
    dmac: [u8; 6],
    port: u16,
) {
    pkt.set_dst_addr(ip);
    pkt.set_dst_port(service.target_port);
    pkt.set_dst_mac(dmac);
    pkt.decrement_ttl();
    meta.egress_spec = port;
}
