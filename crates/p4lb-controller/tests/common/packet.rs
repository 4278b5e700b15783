//! Building and sending raw Ethernet frames on a test interface. Frames are built with
//! etherparse (checksums included), not by hand.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

/// An Ethernet/IPv4/TCP SYN frame (seq 1000, window 64240, TTL 64, DF, no options or payload).
pub fn tcp_syn(
    dmac: [u8; 6],
    smac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac, dmac)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 64240)
        .syn();
    let mut f = Vec::with_capacity(b.size(0));
    b.write(&mut f, &[]).expect("a SYN frame fits");
    f
}

/// An Ethernet/IPv4/TCP segment with ACK set (and SYN with `syn`): seq `seq`, ack `ack`.
#[allow(clippy::too_many_arguments)]
pub fn tcp_ack(
    dmac: [u8; 6],
    smac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    (seq, ack): (u32, u32),
    syn: bool,
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac, dmac)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, seq, 64240);
    let b = if syn { b.syn().ack(ack) } else { b.ack(ack) };
    let mut f = Vec::with_capacity(b.size(0));
    b.write(&mut f, &[]).expect("a TCP frame fits");
    f
}

/// Completes one TCP handshake through the VIP per client port, all frames sent out of
/// `iface` (towards the switch): the client's SYN to `vip:vport`, a SYN-ACK (ISN
/// [`SERVER_ISN`]) from each of `backends` (only the one Maglev chose holds the transit slot
/// and is translated), then the client's ACK of the ISN + 1, which the switch learns.
pub fn handshakes(
    iface: &str,
    (router, client_mac): ([u8; 6], [u8; 6]),
    (client, vip, vport): (Ipv4Addr, Ipv4Addr, u16),
    backends: &[Ipv4Addr],
    sports: std::ops::Range<u16>,
) {
    for sport in sports.clone() {
        send_frame(
            iface,
            &tcp_syn(router, client_mac, client, vip, sport, vport),
        );
    }
    for backend in backends {
        for sport in sports.clone() {
            let f = tcp_ack(
                router,
                client_mac,
                *backend,
                client,
                vport,
                sport,
                (SERVER_ISN, 1001),
                true,
            );
            send_frame(iface, &f);
        }
    }
    for sport in sports {
        let f = tcp_ack(
            router,
            client_mac,
            client,
            vip,
            sport,
            vport,
            (1001, SERVER_ISN + 1),
            false,
        );
        send_frame(iface, &f);
    }
}

/// The backends' initial sequence number in [`handshakes`].
pub const SERVER_ISN: u32 = 90_000;

/// Sends one frame out of `iface` through an AF_PACKET socket.
pub fn send_frame(iface: &str, frame: &[u8]) {
    let name = std::ffi::CString::new(iface).unwrap();
    // SAFETY: plain libc calls with valid, owned arguments; the fd is closed below.
    unsafe {
        let idx = libc::if_nametoindex(name.as_ptr());
        assert!(idx != 0, "no interface {iface}");
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
        );
        assert!(fd >= 0, "AF_PACKET socket (needs root)");
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = idx as i32;
        sll.sll_halen = 6;
        let n = libc::sendto(
            fd,
            frame.as_ptr() as *const libc::c_void,
            frame.len(),
            0,
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        libc::close(fd);
        assert_eq!(n as usize, frame.len(), "sendto on {iface}");
    }
}
