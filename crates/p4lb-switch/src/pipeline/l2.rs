//! [`l2_forward`](p4lb_p4::tables::l2_forward): frames that are neither ARP nor IPv4, by
//! destination MAC.

use super::Meta;
use crate::program::{Act, TableKind};
use crate::state::Dataplane;

pub fn apply(dp: &Dataplane, f: &[u8], meta: &mut Meta) {
    let mut dst = [0u8; 8];
    dst[2..].copy_from_slice(&f[0..6]);
    let key = u128::from(u64::from_be_bytes(dst));
    let (_, act) = dp.table(TableKind::L2Forward).lookup_exact(key, meta.now);
    match act {
        Act::L2Output { port } => meta.egress_spec = port,
        Act::L2Drop => meta.mark_to_drop(),
        _ => {}
    }
}
