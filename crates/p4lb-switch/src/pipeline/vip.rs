//! [`vip_services`](p4lb_p4::tables::vip_services): is this packet addressed to a VIP? (action
//! `set_service`).

use super::packet::Packet;
use super::Meta;
use crate::program::{Act, TableKind};
use crate::state::Dataplane;

/// What `set_service` put in `meta`.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    pub service_id: u16,
    pub slot_count: u16,
    pub target_port: u16,
}

#[inline]
pub fn key(dst: u32, proto: u8, dport: u16) -> u128 {
    (u128::from(dst) << 24) | (u128::from(proto) << 16) | u128::from(dport)
}

pub fn apply(dp: &Dataplane, pkt: &Packet<'_>, meta: &Meta) -> Option<Service> {
    let (hit, act) = dp
        .table(TableKind::VipServices)
        .lookup_exact(key(pkt.ip.dst, pkt.ip.protocol, pkt.ip.l4_dport), meta.now);
    if !hit {
        return None;
    }
    match act {
        Act::SetService {
            service_id,
            slot_count,
            target_port,
        } => Some(Service {
            service_id,
            slot_count,
            target_port,
        }),
        // A hit always runs `set_service` (nop is default-only); a hit with any other
        // action would leave meta at its zero values.
        _ => Some(Service {
            service_id: 0,
            slot_count: 0,
            target_port: 0,
        }),
    }
}
