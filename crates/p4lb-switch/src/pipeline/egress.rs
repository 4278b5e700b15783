//! [`port_smac`](p4lb_p4::tables::port_smac): routed (IPv4) packets leave with their port's router
//! MAC.

use super::Meta;
use crate::program::{Act, TableKind};
use crate::state::Dataplane;

pub fn apply(dp: &Dataplane, f: &mut [u8], egress_port: u16, meta: &Meta) {
    let (_, act) = dp
        .table(TableKind::PortSmac)
        .lookup_exact(u128::from(egress_port), meta.now);
    if let Act::SetSmac { mac } = act {
        f[6..12].copy_from_slice(&mac);
    }
}
