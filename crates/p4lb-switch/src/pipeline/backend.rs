//! [`backends`](p4lb_p4::tables::backends): DNAT of a VIP packet to its backend
//! (`backend_forward`), or hold while the backend is locked for migration (`backend_locked`:
//! to the hold port, crate::hold). Also
//! the per-backend and per-service counters, the transit slot of a pending connection, the
//! `conn_learn` digest once that connection proves its client real, and the close events of
//! pinned connections (client side).

use std::net::Ipv4Addr;

use p4lb_p4::ConnEvent;

use super::conn::Choice;
use super::packet::Packet;
use super::parse::{Ipv4, L4};
use super::transit::{self, Tuple};
use super::vip::Service;
use super::Meta;
use crate::program::spec::{drop_reason, CounterKind};
use crate::program::{Act, TableKind};
use crate::state::{Dataplane, LearnMsg};

pub const TCP_FLAG_FIN: u8 = 0x01;
pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_RST: u8 = 0x04;
pub const TCP_FLAG_ACK: u8 = 0x10;

/// A TCP segment opening a connection: SYN without ACK.
pub fn is_syn(ip: &Ipv4) -> bool {
    matches!(ip.l4, L4::Tcp(_)) && ip.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN
}

/// The close event a TCP segment carries (RST wins over FIN), if any.
pub fn close_event(ip: &Ipv4) -> Option<ConnEvent> {
    if !matches!(ip.l4, L4::Tcp(_)) {
        return None;
    }
    if ip.tcp_flags & TCP_FLAG_RST != 0 {
        Some(ConnEvent::Rst)
    } else if ip.tcp_flags & TCP_FLAG_FIN != 0 {
        Some(ConnEvent::Fin)
    } else {
        None
    }
}

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
    // meta.learn: the client's tuple as it arrived (dst = VIP), before DNAT.
    let learn = LearnMsg {
        src_addr: Ipv4Addr::from(pkt.ip.src),
        dst_addr: Ipv4Addr::from(pkt.ip.dst),
        protocol: pkt.ip.protocol,
        src_port: pkt.ip.l4_sport,
        dst_port: pkt.ip.l4_dport,
        service_id: service.service_id,
        backend_id: choice.backend_id,
        event: ConnEvent::Learn,
    };
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
                pending(dp, &pkt.ip, service, learn);
            } else if let Some(event) = close_event(&pkt.ip) {
                // A pinned connection closes (client side).
                dp.digests.send(LearnMsg { event, ..learn });
            }
        }
        Act::BackendLocked => meta.hold_counted(dp, drop_reason::LOCKED),
        _ => meta.drop_counted(dp, drop_reason::NO_BACKEND),
    }
}

/// A packet of a connection `conn_table` does not pin, after DNAT: a SYN (or a UDP datagram
/// of another flow than the slot's) takes the transit slot; a packet of the slot's own
/// connection is learned once it proves its client real: UDP after the backend replied, TCP
/// on the ACK that completes the handshake (`ack_no` = the backend's ISN + 1). From then on
/// (the slot is established) every packet asks again until the connection is pinned, so a
/// digest lost while no controller listened is not final.
fn pending(dp: &Dataplane, ip: &Ipv4, service: &Service, learn: LearnMsg) {
    let t = Tuple {
        client: ip.src,
        backend: ip.dst,
        protocol: ip.protocol,
        client_port: ip.l4_sport,
        backend_port: ip.l4_dport,
    };
    let idx = t.index(dp);
    let slot = transit::read(dp, idx);
    let holds = slot.holds(&t);
    let udp = matches!(ip.l4, L4::Udp(_));
    if is_syn(ip) || (udp && !holds) {
        transit::start(dp, idx, &t, service.service_id.wrapping_add(1));
    } else if holds && slot.state == transit::State::Established {
        dp.digests.send(learn);
    } else if holds && slot.state == transit::State::ReplySeen {
        let proven = match ip.l4 {
            L4::Udp(_) => true,
            L4::Tcp(_) => {
                ip.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST) == TCP_FLAG_ACK
                    && ip.tcp_ack == slot.server_ack
            }
            L4::None => false,
        };
        if proven {
            transit::established(dp, idx);
            dp.digests.send(learn);
        }
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
