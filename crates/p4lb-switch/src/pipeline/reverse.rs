//! Reverse path of VIP connections: [`conn_reverse`](p4lb_p4::tables::conn_reverse) (exact,
//! installed from the digest) and, for connections not yet installed, the transit slot of
//! the reversed tuple + [`service_vip`](p4lb_p4::tables::service_vip), used only when the slot
//! holds exactly that tuple. Both run `rewrite_src`: the backend's reply gets the VIP as its
//! source again (SNAT). A reply through a slot marks it seen (a SYN-ACK also stores the
//! backend's ISN + 1); a FIN/RST through `conn_reverse` is a close event (backend side). A
//! direct connection frees a slot that holds exactly its own tuple.

use std::net::Ipv4Addr;

use super::backend::{close_event, is_syn, TCP_FLAG_ACK, TCP_FLAG_SYN};
use super::conn::key5;
use super::packet::Packet;
use super::parse::L4;
use super::transit::{self, Tuple};
use super::Meta;
use crate::program::spec::CounterKind;
use crate::program::{Act, TableKind};
use crate::state::{Dataplane, LearnMsg};

pub fn apply(dp: &Dataplane, pkt: &mut Packet<'_>, meta: &mut Meta) {
    let ip = pkt.ip;
    let mut rewritten: Option<Option<u16>> = None;
    let (hit, act) = dp.table(TableKind::ConnReverse).lookup_exact(
        key5(ip.src, ip.dst, ip.protocol, ip.l4_sport, ip.l4_dport),
        meta.now,
    );
    if hit {
        rewritten = rewrite_src(pkt, act);
        if let Some(event) = close_event(&ip) {
            // A pinned connection closes (backend side), reported as the client sees it:
            // rewrite_src already put the VIP and its port in place.
            dp.digests.send(LearnMsg {
                src_addr: Ipv4Addr::from(pkt.ip.dst),
                dst_addr: Ipv4Addr::from(pkt.ip.src),
                protocol: pkt.ip.protocol,
                src_port: pkt.ip.l4_dport,
                dst_port: pkt.ip.l4_sport,
                service_id: rewritten.flatten().unwrap_or(0),
                backend_id: 0,
                event,
            });
        }
    } else {
        let t = Tuple {
            client: ip.dst,
            backend: ip.src,
            protocol: ip.protocol,
            client_port: ip.l4_dport,
            backend_port: ip.l4_sport,
        };
        let idx = t.index(dp);
        let slot = transit::read(dp, idx);
        if slot.holds(&t) {
            let (_, act) = dp
                .table(TableKind::ServiceVip)
                .lookup_exact(u128::from(slot.mark), meta.now);
            rewritten = rewrite_src(pkt, act);
            if rewritten.is_some() {
                match ip.l4 {
                    L4::Tcp(_) => {
                        let syn_ack = TCP_FLAG_SYN | TCP_FLAG_ACK;
                        if ip.tcp_flags & syn_ack == syn_ack {
                            transit::reply_seen(dp, idx, Some(ip.tcp_seq.wrapping_add(1)));
                        }
                    }
                    L4::Udp(_) => transit::reply_seen(dp, idx, None),
                    L4::None => {}
                }
            }
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
            if is_syn(&ip) || matches!(ip.l4, L4::Udp(_)) {
                // A direct connection starts: a slot holding exactly its tuple (a VIP
                // connection that used it before) is stale.
                let t = Tuple {
                    client: ip.src,
                    backend: ip.dst,
                    protocol: ip.protocol,
                    client_port: ip.l4_sport,
                    backend_port: ip.l4_dport,
                };
                let idx = t.index(dp);
                if transit::read(dp, idx).holds(&t) {
                    transit::free(dp, idx);
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use p4lb_p4::ConnEvent;

    #[test]
    fn close_events_rst_wins_over_fin() {
        let mut ip = crate::pipeline::parse::Ipv4 {
            ttl: 64,
            protocol: 6,
            src: 1,
            dst: 2,
            l4: L4::Tcp(34),
            l4_sport: 1,
            l4_dport: 2,
            tcp_flags: 0x11,
            tcp_seq: 0,
            tcp_ack: 0,
        };
        assert_eq!(close_event(&ip), Some(ConnEvent::Fin));
        ip.tcp_flags = 0x15;
        assert_eq!(close_event(&ip), Some(ConnEvent::Rst));
        ip.tcp_flags = 0x10;
        assert_eq!(close_event(&ip), None);
        ip.l4 = L4::Udp(34);
        ip.tcp_flags = 0x05;
        assert_eq!(close_event(&ip), None);
    }
}
