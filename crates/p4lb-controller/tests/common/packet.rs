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

/// An Ethernet/IPv4/TCP ACK frame completing the handshake [`tcp_syn`] starts
/// (seq 1001, ack 1).
pub fn tcp_ack(
    dmac: [u8; 6],
    smac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac, dmac)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1001, 64240)
        .ack(1);
    let mut f = Vec::with_capacity(b.size(0));
    b.write(&mut f, &[]).expect("an ACK frame fits");
    f
}
