//! Maglev slot choice for a new connection: `meta.slot = crc16(5-tuple) mod slot_count`,
//! [`maglev_slots`](p4lb_p4::tables::maglev_slots) (action `set_backend`). The choice is
//! learned later, once the connection proves its client real (pipeline::backend).

use p4lb_p4::hash::crc16_5tuple;

use super::packet::Packet;
use super::vip::Service;
use super::Meta;
use crate::program::{Act, TableKind};
use crate::state::Dataplane;

/// `hash(meta.slot, HashAlgorithm.crc16, 16w0, {src, dst, proto, sport, dport}, slot_count)`.
#[inline]
pub fn slot(src: u32, dst: u32, proto: u8, sport: u16, dport: u16, slot_count: u16) -> u16 {
    crc16_5tuple(src, dst, proto, sport, dport) % slot_count
}

#[inline]
pub fn key(service_id: u16, slot: u16) -> u128 {
    (u128::from(service_id) << 16) | u128::from(slot)
}

/// Returns the backend `set_backend` chose (`None` on a miss, which leaves backend_id 0).
pub fn choose(dp: &Dataplane, pkt: &Packet<'_>, meta: &Meta, service: &Service) -> Option<u16> {
    let ip = &pkt.ip;
    let s = slot(
        ip.src,
        ip.dst,
        ip.protocol,
        ip.l4_sport,
        ip.l4_dport,
        service.slot_count,
    );
    let (hit, act) = dp
        .table(TableKind::MaglevSlots)
        .lookup_exact(key(service.service_id, s), meta.now);
    if !hit {
        return None;
    }
    let backend_id = match act {
        Act::SetBackend { backend_id } => backend_id,
        _ => 0,
    };
    Some(backend_id)
}
