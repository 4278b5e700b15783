//! [`ipv4_routes`](p4lb_p4::tables::ipv4_routes): longest-prefix routing of every IPv4 packet that
//! is not VIP traffic (`route_to_port` with TTL decrement, `route_locked` to the hold port,
//! `route_drop`).

use super::packet::Packet;
use super::Meta;
use crate::program::spec::drop_reason;
use crate::program::{Act, TableKind};
use crate::state::Dataplane;

pub fn apply(dp: &Dataplane, pkt: &mut Packet<'_>, meta: &mut Meta) {
    let (_, act) = dp
        .table(TableKind::Ipv4Routes)
        .lookup_lpm(pkt.ip.dst, meta.now);
    match act {
        Act::RouteToPort { port, dmac } => {
            pkt.set_dst_mac(dmac);
            pkt.decrement_ttl();
            meta.egress_spec = port;
        }
        Act::RouteLocked => meta.hold_counted(dp, drop_reason::LOCKED),
        Act::RouteDrop => meta.drop_counted(dp, drop_reason::NO_ROUTE),
        _ => {}
    }
}
