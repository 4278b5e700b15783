//! ARP proxy: [`arp_proxy`](p4lb_p4::tables::arp_proxy) and action `arp_reply`. A request for an
//! address the table knows is turned into the reply in place and sent back out of the ingress port.

use super::parse::{be16, be32, ETHERTYPE_IPV4, ETH_LEN};
use super::Meta;
use crate::program::{Act, TableKind};
use crate::state::Dataplane;

const A: usize = ETH_LEN;

pub fn apply(dp: &Dataplane, f: &mut [u8], meta: &mut Meta) {
    let htype = be16(f, A);
    let ptype = be16(f, A + 2);
    let hlen = f[A + 4];
    let plen = f[A + 5];
    let oper = be16(f, A + 6);
    let spa = be32(f, A + 14);
    let tpa = be32(f, A + 24);
    if !(htype == 1 && ptype == ETHERTYPE_IPV4 && hlen == 6 && plen == 4 && oper == 1 && spa != tpa)
    {
        meta.mark_to_drop();
        return;
    }
    let (hit, act) = dp.table(TableKind::ArpProxy).lookup_lpm(tpa, meta.now);
    if !hit {
        meta.mark_to_drop();
        return;
    }
    if let Act::ArpReply { mac } = act {
        arp_reply(f, mac, meta);
    }
}

/// `action arp_reply(bit<48> mac)`.
fn arp_reply(f: &mut [u8], mac: [u8; 6], meta: &mut Meta) {
    let mut sha = [0u8; 6];
    sha.copy_from_slice(&f[A + 8..A + 14]);
    let mut spa = [0u8; 4];
    spa.copy_from_slice(&f[A + 14..A + 18]);
    let mut requested = [0u8; 4];
    requested.copy_from_slice(&f[A + 24..A + 28]);
    f[A + 6..A + 8].copy_from_slice(&2u16.to_be_bytes()); // oper = reply
    f[A + 18..A + 24].copy_from_slice(&sha); // tha = sha
    f[A + 24..A + 28].copy_from_slice(&spa); // tpa = spa
    f[A + 8..A + 14].copy_from_slice(&mac); // sha = mac
    f[A + 14..A + 18].copy_from_slice(&requested); // spa = requested
    let mut esrc = [0u8; 6];
    esrc.copy_from_slice(&f[6..12]);
    f[0..6].copy_from_slice(&esrc); // ethernet dst = src
    f[6..12].copy_from_slice(&mac); // ethernet src = mac
    meta.egress_spec = meta.ingress_port;
}
