//! Frames for packet tests, built and checked with `etherparse`: an implementation of
//! Ethernet/ARP/IPv4/TCP/UDP and of the Internet checksum that shares no code with the switch,
//! so a frame the switch rewrote is compared against one built independently.

use etherparse::{
    ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header, IpNumber, Ipv4Header, NetHeaders,
    PacketHeaders, TcpHeader, TransportHeader, UdpHeader,
};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

pub fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

/// An Ethernet/IPv4/TCP-or-UDP frame, described by the fields the switch reads or rewrites.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub src: u32,
    pub dst: u32,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
    pub tcp_flags: u8,
    /// TCP sequence number (1000 unless set).
    pub seq: u32,
    /// TCP acknowledgment number, sent when ACK is set (2000 unless set).
    pub ack_no: u32,
    /// UDP only: send without a checksum (0), which the switch must keep at 0.
    pub udp_no_checksum: bool,
}

impl Flow {
    pub fn tcp(src: u32, sport: u16, dst: u32, dport: u16) -> Flow {
        Flow {
            smac: [0x02, 0, 0, 0, 0, 0x01],
            dmac: [0x02, 0, 0, 0, 0, 0xfe],
            src,
            dst,
            proto: TCP,
            sport,
            dport,
            ttl: 64,
            tcp_flags: SYN,
            seq: 1000,
            ack_no: 2000,
            udp_no_checksum: false,
        }
    }

    pub fn udp(src: u32, sport: u16, dst: u32, dport: u16) -> Flow {
        Flow {
            proto: UDP,
            tcp_flags: 0,
            ..Flow::tcp(src, sport, dst, dport)
        }
    }

    /// The frame with correct IPv4 and L4 checksums (computed by etherparse).
    pub fn frame(&self, payload: &[u8]) -> Vec<u8> {
        let l4_len = if self.proto == TCP {
            TcpHeader::MIN_LEN
        } else {
            UdpHeader::LEN
        } + payload.len();
        let mut iph = Ipv4Header::new(
            u16::try_from(l4_len).expect("payload fits an IPv4 packet"),
            self.ttl,
            IpNumber(self.proto),
            self.src.to_be_bytes(),
            self.dst.to_be_bytes(),
        )
        .expect("payload fits an IPv4 packet");
        iph.identification = 0x1234;
        iph.dont_fragment = true;
        iph.header_checksum = iph.calc_header_checksum();
        let mut f = Vec::with_capacity(14 + 20 + l4_len);
        Ethernet2Header {
            source: self.smac,
            destination: self.dmac,
            ether_type: EtherType::IPV4,
        }
        .write(&mut f)
        .expect("write to a Vec");
        iph.write_raw(&mut f).expect("write to a Vec");
        if self.proto == TCP {
            let mut tcp = TcpHeader::new(self.sport, self.dport, self.seq, 64240);
            tcp.syn = self.tcp_flags & SYN != 0;
            tcp.ack = self.tcp_flags & ACK != 0;
            tcp.fin = self.tcp_flags & FIN != 0;
            tcp.rst = self.tcp_flags & RST != 0;
            if tcp.ack {
                tcp.acknowledgment_number = self.ack_no;
            }
            tcp.checksum = tcp.calc_checksum_ipv4(&iph, payload).expect("payload fits");
            tcp.write(&mut f).expect("write to a Vec");
        } else {
            let mut udp = UdpHeader::with_ipv4_checksum(self.sport, self.dport, &iph, payload)
                .expect("payload fits");
            if self.udp_no_checksum {
                udp.checksum = 0;
            }
            udp.write(&mut f).expect("write to a Vec");
        }
        f.extend_from_slice(payload);
        f
    }

    /// The flow's 5-tuple, as the connection tables (`conn_table`, `conn_reverse`) key it.
    pub fn tuple(&self) -> p4lb_p4::FiveTuple {
        p4lb_p4::FiveTuple {
            src: self.src.into(),
            dst: self.dst.into(),
            protocol: self.proto,
            sport: self.sport,
            dport: self.dport,
        }
    }

    /// The same flow seen after the switch changed addresses/ports/MACs/TTL.
    pub fn with(&self, f: impl FnOnce(&mut Flow)) -> Flow {
        let mut c = *self;
        f(&mut c);
        c
    }
}

fn arp(dmac: [u8; 6], smac: [u8; 6], body: ArpEthIpv4Packet) -> Vec<u8> {
    let mut f = Vec::new();
    Ethernet2Header {
        source: smac,
        destination: dmac,
        ether_type: EtherType::ARP,
    }
    .write(&mut f)
    .expect("write to a Vec");
    f.extend_from_slice(&body.to_bytes());
    f
}

/// An ARP request (who-has `tpa` tell `spa`), broadcast.
pub fn arp_request(sha: [u8; 6], spa: u32, tpa: u32) -> Vec<u8> {
    arp(
        [0xff; 6],
        sha,
        ArpEthIpv4Packet {
            operation: ArpOperation::REQUEST,
            sender_mac: sha,
            sender_ipv4: spa.to_be_bytes(),
            target_mac: [0; 6],
            target_ipv4: tpa.to_be_bytes(),
        },
    )
}

/// The reply the ARP proxy must produce for [`arp_request`]: `tpa` is at `mac`.
pub fn arp_reply(sha: [u8; 6], spa: u32, tpa: u32, mac: [u8; 6]) -> Vec<u8> {
    arp(
        sha,
        mac,
        ArpEthIpv4Packet {
            operation: ArpOperation::REPLY,
            sender_mac: mac,
            sender_ipv4: tpa.to_be_bytes(),
            target_mac: sha,
            target_ipv4: spa.to_be_bytes(),
        },
    )
}

/// An Ethernet II frame with a non-IP EtherType (the switch's L2 path).
pub fn l2_frame(dmac: [u8; 6], smac: [u8; 6], ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    Ethernet2Header {
        source: smac,
        destination: dmac,
        ether_type: EtherType(ether_type),
    }
    .write(&mut f)
    .expect("write to a Vec");
    f.extend_from_slice(payload);
    f
}

/// `frame` with byte `offset` set to `value` (malformed-header cases).
pub fn mutate(frame: &[u8], edits: &[(usize, u8)]) -> Vec<u8> {
    let mut f = frame.to_vec();
    for (off, v) in edits {
        f[*off] = *v;
    }
    f
}

/// The IPv4 destination of an IPv4 frame, if it is one (etherparse's reading).
pub fn ipv4_dst(f: &[u8]) -> Option<[u8; 4]> {
    match PacketHeaders::from_ethernet_slice(f).ok()?.net? {
        NetHeaders::Ipv4(h, _) => Some(h.destination),
        _ => None,
    }
}

/// Whether `f` carries `ether_type` (etherparse's reading of the Ethernet II header).
pub fn ether_type(f: &[u8]) -> Option<u16> {
    Ethernet2Header::from_slice(f)
        .ok()
        .map(|(h, _)| h.ether_type.0)
}

/// Checks the IPv4 header checksum and the TCP/UDP checksum of `f` (UDP 0 = none) by
/// recomputing them with etherparse. Frames that are not IPv4 pass.
pub fn check_checksums(f: &[u8]) -> Result<(), String> {
    let h = PacketHeaders::from_ethernet_slice(f).map_err(|e| format!("unparsable: {e}"))?;
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        return Ok(());
    };
    if ip.header_checksum != ip.calc_header_checksum() {
        return Err(format!(
            "IPv4 header checksum {:#06x}, should be {:#06x}",
            ip.header_checksum,
            ip.calc_header_checksum()
        ));
    }
    let payload = h.payload.slice();
    match &h.transport {
        Some(TransportHeader::Tcp(t)) => {
            let want = t
                .calc_checksum_ipv4(ip, payload)
                .map_err(|e| e.to_string())?;
            if t.checksum != want {
                return Err(format!(
                    "TCP checksum {:#06x}, should be {want:#06x}",
                    t.checksum
                ));
            }
        }
        Some(TransportHeader::Udp(u)) if u.checksum != 0 => {
            let want = u
                .calc_checksum_ipv4(ip, payload)
                .map_err(|e| e.to_string())?;
            if u.checksum != want {
                return Err(format!(
                    "UDP checksum {:#06x}, should be {want:#06x}",
                    u.checksum
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Compares a frame the switch sent with the expected one: header by header as etherparse
/// reads them (so a difference names the field), then the checksums, then byte for byte.
pub fn check_frame(got: &[u8], want: &[u8]) -> Result<(), String> {
    let w = PacketHeaders::from_ethernet_slice(want).map_err(|e| format!("expected frame: {e}"))?;
    let g = PacketHeaders::from_ethernet_slice(got)
        .map_err(|e| format!("unparsable frame ({e}): {got:02x?}"))?;
    if g.link != w.link {
        return Err(format!("Ethernet: got {:?}, want {:?}", g.link, w.link));
    }
    if g.net != w.net {
        return Err(format!("network: got {:?}, want {:?}", g.net, w.net));
    }
    if g.transport != w.transport {
        return Err(format!(
            "transport: got {:?}, want {:?}",
            g.transport, w.transport
        ));
    }
    if g.payload.slice() != w.payload.slice() {
        return Err(format!(
            "payload: got {:02x?}, want {:02x?}",
            g.payload.slice(),
            w.payload.slice()
        ));
    }
    check_checksums(got)?;
    if got != want {
        return Err(format!("bytes: got {got:02x?}, want {want:02x?}"));
    }
    Ok(())
}
