//! Two receive queues per port: connection openings apart from everything else.
//!
//! A port is read through two AF_PACKET sockets bound to the same interface. Each carries a
//! classic BPF filter, and the two filters are the same program with their verdicts swapped,
//! so the kernel hands every frame to exactly one of them:
//!
//! - the **handshake** queue takes TCP segments with SYN set (a SYN or a SYN-ACK, IPv4 or
//!   IPv6, first fragment);
//! - the **main** queue takes everything else: the data, ACKs, FINs and RSTs of connections
//!   already open, UDP, ARP, and every frame too short or too odd to classify.
//!
//! The data-plane thread drains the main queues first and gives the handshake queues a
//! bounded share per round (see `ports/mod.rs`). A flood of spoofed SYNs then fills only its
//! own socket buffer, where the kernel drops the excess, and never delays or crowds out the
//! packets of established connections, which is what keeps them alive while the switch has
//! less CPU than the flood needs. New connections opened during such a flood compete with it
//! for the handshake share, as they would behind any SYN policer.
//!
//! No crate assembles classic BPF for AF_PACKET sockets; the program is 26 instructions,
//! written here with `libc`'s opcode constants. Every load is guarded by a length check
//! first: a load past the end would end the program with verdict 0 (drop) in *both*
//! filters and the frame would vanish instead of reaching the pipeline's parser.

use std::io;
use std::os::fd::RawFd;

use libc::sock_filter;

/// Which of a port's two receive queues a socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    /// Everything that is not a TCP segment with SYN set.
    Main,
    /// TCP segments with SYN set (connection openings).
    Handshake,
}

const ACCEPT: u32 = u32::MAX;
const REJECT: u32 = 0;

const fn stmt(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86dd;
const IPPROTO_TCP: u32 = 6;
const TCP_SYN: u32 = 0x02;
/// Ethernet (14) + IPv4 without options (20) + TCP without options (20).
const MIN_V4_TCP: u32 = 54;
/// Ethernet (14) + IPv6 (40) + TCP's first 14 bytes (up to the flags).
const MIN_V6_TCP_FLAGS: u32 = 68;

/// The filter program for `queue`: returns "accept the whole frame" for frames of that
/// queue and 0 (not this socket) for the others.
pub fn program(queue: Queue) -> Vec<sock_filter> {
    use libc::{
        BPF_ABS, BPF_ADD, BPF_ALU, BPF_B, BPF_H, BPF_IND, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JMP,
        BPF_JSET, BPF_K, BPF_LD, BPF_LDX, BPF_LEN, BPF_MEM, BPF_MISC, BPF_MSH, BPF_RET, BPF_ST,
        BPF_TXA, BPF_W, BPF_X,
    };
    let (syn, other) = match queue {
        Queue::Handshake => (ACCEPT, REJECT),
        Queue::Main => (REJECT, ACCEPT),
    };
    // Jump offsets count instructions after the jump; the two returns are the last two
    // instructions.
    const IPV6_AT: u8 = 17;
    const SYN_AT: u8 = 24;
    const OTHER_AT: u8 = 25;
    let to = |from: u8, target: u8| target - from - 1;
    vec![
        // 0: A = frame length; M[0] = A
        stmt(BPF_LD | BPF_W | BPF_LEN, 0),
        stmt(BPF_ST, 0),
        // 2: shorter than any IPv4 TCP frame → other
        jump(BPF_JMP | BPF_JGE | BPF_K, MIN_V4_TCP, 0, to(2, OTHER_AT)),
        // 3: A = ethertype; 4: IPv4 → 5, anything else → the IPv6 test
        stmt(BPF_LD | BPF_H | BPF_ABS, 12),
        jump(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 0, to(4, IPV6_AT)),
        // 5: protocol TCP?
        stmt(BPF_LD | BPF_B | BPF_ABS, 23),
        jump(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 0, to(6, OTHER_AT)),
        // 7: fragment offset ≠ 0 → other (no TCP header in this fragment)
        stmt(BPF_LD | BPF_H | BPF_ABS, 20),
        jump(BPF_JMP | BPF_JSET | BPF_K, 0x1fff, to(8, OTHER_AT), 0),
        // 9: A = IPv4 header length + 28 (Ethernet 14 + TCP flags offset 13 + 1)
        stmt(BPF_LDX | BPF_B | BPF_MSH, 14),
        stmt(BPF_MISC | BPF_TXA, 0),
        stmt(BPF_ALU | BPF_ADD | BPF_K, 28),
        // 12: X = frame length; A > X → the flags byte is past the end → other
        stmt(BPF_LDX | BPF_W | BPF_MEM, 0),
        jump(BPF_JMP | BPF_JGT | BPF_X, 0, to(13, OTHER_AT), 0),
        // 14: X = IPv4 header length again; A = TCP flags; SYN set?
        stmt(BPF_LDX | BPF_B | BPF_MSH, 14),
        stmt(BPF_LD | BPF_B | BPF_IND, 27),
        jump(
            BPF_JMP | BPF_JSET | BPF_K,
            TCP_SYN,
            to(16, SYN_AT),
            to(16, OTHER_AT),
        ),
        // 17: A = ethertype; IPv6 with TCP as the next header and room for the flags?
        jump(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IPV6, 0, to(17, OTHER_AT)),
        stmt(BPF_LD | BPF_W | BPF_MEM, 0),
        jump(
            BPF_JMP | BPF_JGE | BPF_K,
            MIN_V6_TCP_FLAGS,
            0,
            to(19, OTHER_AT),
        ),
        stmt(BPF_LD | BPF_B | BPF_ABS, 20),
        jump(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 0, to(21, OTHER_AT)),
        stmt(BPF_LD | BPF_B | BPF_ABS, 67),
        jump(
            BPF_JMP | BPF_JSET | BPF_K,
            TCP_SYN,
            to(23, SYN_AT),
            to(23, OTHER_AT),
        ),
        // 24: SYN, 25: other
        stmt(BPF_RET | BPF_K, syn),
        stmt(BPF_RET | BPF_K, other),
    ]
}

/// Attaches the filter of `queue` to an AF_PACKET socket (before it is bound, so no frame
/// reaches it unfiltered).
pub fn attach(fd: RawFd, queue: Queue) -> io::Result<()> {
    let prog = program(queue);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut sock_filter,
    };
    // SAFETY: fprog points at `prog`, which lives until after the call; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &fprog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The filters run by the kernel itself: a Unix datagram socket runs an attached socket
    //! filter on every datagram it receives, with the datagram as the packet, so each frame
    //! below is offered to a Main and a Handshake socket and must reach exactly one.

    use super::*;
    use etherparse::PacketBuilder;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    fn pair() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two descriptors into fds.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0, "socketpair: {}", io::Error::last_os_error());
        // SAFETY: fresh descriptors we own.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    struct Filtered {
        tx: OwnedFd,
        rx: OwnedFd,
    }

    impl Filtered {
        fn new(queue: Queue) -> Filtered {
            let (tx, rx) = pair();
            attach(rx.as_raw_fd(), queue).expect("attach filter");
            Filtered { tx, rx }
        }

        /// Offers `frame`; returns the bytes received (None: the filter refused it).
        fn offer(&self, frame: &[u8]) -> Option<Vec<u8>> {
            // SAFETY: sending from a live buffer of the given length.
            let n = unsafe {
                libc::send(
                    self.tx.as_raw_fd(),
                    frame.as_ptr() as *const libc::c_void,
                    frame.len(),
                    0,
                )
            };
            assert_eq!(n, frame.len() as isize, "send");
            let mut buf = vec![0u8; 70000];
            // SAFETY: receiving into a live buffer of the given length.
            let n = unsafe {
                libc::recv(
                    self.rx.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "recv: {e}");
                return None;
            }
            buf.truncate(n as usize);
            Some(buf)
        }
    }

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn tcp4(flags: &str, payload: &[u8], ip_options: bool) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4([10, 0, 0, 1], [10, 96, 0, 1], 64);
        let mut b = b.tcp(40000, 80, 1000, 64240);
        for f in flags.chars() {
            b = match f {
                'S' => b.syn(),
                'A' => b.ack(2000),
                'F' => b.fin(),
                'R' => b.rst(),
                'P' => b.psh(),
                _ => b,
            };
        }
        let mut out = Vec::new();
        b.write(&mut out, payload).expect("build frame");
        if ip_options {
            // Grow the IPv4 header by 4 bytes of NOP options (IHL 5 → 6) so the TCP
            // flags move; lengths and checksum do not matter to the filter.
            out[14] = 0x46;
            out.splice(34..34, [1u8, 1, 1, 1]);
        }
        out
    }

    fn tcp6(flags: &str) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6([1; 16], [2; 16], 64);
        let mut b = b.tcp(40000, 80, 1000, 64240);
        for f in flags.chars() {
            b = match f {
                'S' => b.syn(),
                'A' => b.ack(2000),
                _ => b,
            };
        }
        let mut out = Vec::new();
        b.write(&mut out, &[]).expect("build frame");
        out
    }

    fn udp4() -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4([10, 0, 0, 1], [10, 96, 0, 1], 64)
            .udp(5353, 53)
            .write(&mut out, &[0x02; 40])
            .expect("build frame");
        out
    }

    #[test]
    fn every_frame_reaches_exactly_one_queue_and_syns_the_handshake_queue() {
        let main = Filtered::new(Queue::Main);
        let hs = Filtered::new(Queue::Handshake);
        let syn = tcp4("S", &[], false);
        let mut non_first_fragment = udp4();
        // Fragment offset 8 (bytes 64) and TCP as protocol; byte 47 (where the flags of an
        // unfragmented segment would be) has SYN set by the payload's 0x02 bytes.
        non_first_fragment[20] = 0x00;
        non_first_fragment[21] = 0x08;
        non_first_fragment[23] = 6;
        let mut arp = vec![0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        let cases: Vec<(&str, Vec<u8>, Queue)> = vec![
            ("IPv4 SYN (54 bytes)", syn.clone(), Queue::Handshake),
            ("IPv4 SYN-ACK", tcp4("SA", &[], false), Queue::Handshake),
            (
                "IPv4 SYN with IP options",
                tcp4("S", &[], true),
                Queue::Handshake,
            ),
            ("IPv4 ACK", tcp4("A", &[], false), Queue::Main),
            ("IPv4 data", tcp4("PA", &[0x02; 100], false), Queue::Main),
            (
                "IPv4 data with IP options",
                tcp4("PA", &[0x02; 8], true),
                Queue::Main,
            ),
            ("IPv4 FIN", tcp4("FA", &[], false), Queue::Main),
            ("IPv4 RST", tcp4("R", &[], false), Queue::Main),
            (
                "IPv4 SYN cut before its flags",
                syn[..47].to_vec(),
                Queue::Main,
            ),
            (
                "IPv4 SYN cut after its flags",
                syn[..48].to_vec(),
                Queue::Main,
            ),
            ("IPv4 non-first fragment", non_first_fragment, Queue::Main),
            ("UDP whose payload looks like SYN", udp4(), Queue::Main),
            ("IPv6 SYN", tcp6("S"), Queue::Handshake),
            ("IPv6 SYN-ACK", tcp6("SA"), Queue::Handshake),
            ("IPv6 ACK", tcp6("A"), Queue::Main),
            (
                "IPv6 SYN cut before its flags",
                tcp6("S")[..67].to_vec(),
                Queue::Main,
            ),
            ("ARP", arp, Queue::Main),
            ("one byte", vec![0x02], Queue::Main),
            ("empty", Vec::new(), Queue::Main),
        ];
        for (what, frame, want) in cases {
            let got_main = main.offer(&frame);
            let got_hs = hs.offer(&frame);
            let (winner, loser) = match want {
                Queue::Main => (&got_main, &got_hs),
                Queue::Handshake => (&got_hs, &got_main),
            };
            assert_eq!(
                winner.as_deref(),
                Some(&frame[..]),
                "{what}: the {want:?} queue must receive the whole frame"
            );
            assert!(loser.is_none(), "{what}: the other queue received it too");
        }
    }

    #[test]
    fn the_two_programs_differ_only_in_their_verdicts() {
        let m = program(Queue::Main);
        let h = program(Queue::Handshake);
        assert_eq!(m.len(), h.len());
        let n = m.len();
        for (i, (a, b)) in m.iter().zip(h.iter()).enumerate() {
            let same = (a.code, a.jt, a.jf, a.k) == (b.code, b.jt, b.jf, b.k);
            assert_eq!(same, i < n - 2, "instruction {i}");
        }
    }
}
