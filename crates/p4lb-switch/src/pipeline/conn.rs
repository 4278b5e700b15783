//! [`conn_table`](p4lb_p4::tables::conn_table): connections already pinned to a backend
//! (`conn_pin`); a miss (`conn_miss`) goes to Maglev (learned later through the transit slot,
//! pipeline::backend).

use super::maglev;
use super::packet::Packet;
use super::vip::Service;
use super::Meta;
use crate::program::{Act, TableKind};
use crate::state::Dataplane;

/// The 5-tuple key shared by `conn_table` and `conn_reverse`.
#[inline]
pub fn key5(src: u32, dst: u32, proto: u8, sport: u16, dport: u16) -> u128 {
    (u128::from(src) << 72)
        | (u128::from(dst) << 40)
        | (u128::from(proto) << 32)
        | (u128::from(sport) << 16)
        | u128::from(dport)
}

/// Result of the connection lookup: `meta.backend_id` and `meta.conn_miss`.
#[derive(Debug, Clone, Copy)]
pub struct Choice {
    pub backend_id: u16,
    pub conn_miss: bool,
}

pub fn apply(dp: &Dataplane, pkt: &Packet<'_>, meta: &Meta, service: &Service) -> Choice {
    let ip = &pkt.ip;
    let (_, act) = dp.table(TableKind::ConnTable).lookup_exact(
        key5(ip.src, ip.dst, ip.protocol, ip.l4_sport, ip.l4_dport),
        meta.now,
    );
    let mut choice = Choice {
        backend_id: 0,
        conn_miss: false,
    };
    match act {
        Act::ConnPin { backend_id } => choice.backend_id = backend_id,
        Act::ConnMiss => choice.conn_miss = true,
        _ => {}
    }
    if choice.conn_miss && service.slot_count != 0 {
        if let Some(b) = maglev::choose(dp, pkt, meta, service) {
            choice.backend_id = b;
        }
    }
    choice
}
