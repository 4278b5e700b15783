//! `P4lbParser`: Ethernet, then ARP or IPv4 (with options), then TCP or UDP for unfragmented
//! IPv4. A frame too short for a header the parser extracts, or an IPv4 header that fails a
//! `verify`, is a parser error (the ingress drops and counts it, drops[3]).

pub const ETH_LEN: usize = 14;
pub const ARP_LEN: usize = 28;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// `error.PacketTooShort`
    PacketTooShort,
    IPv4BadVersion,
    IPv4BadHeaderLength,
    IPv4BadTotalLength,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    None,
    /// Offset of the TCP header in the frame.
    Tcp(usize),
    /// Offset of the UDP header in the frame.
    Udp(usize),
}

/// Parsed IPv4 headers and the metadata the parser fills (`meta.l4_*`).
#[derive(Debug, Clone, Copy)]
pub struct Ipv4 {
    pub ttl: u8,
    pub protocol: u8,
    pub src: u32,
    pub dst: u32,
    pub l4: L4,
    pub l4_sport: u16,
    pub l4_dport: u16,
    /// TCP flags byte (0 when not TCP).
    pub tcp_flags: u8,
    /// TCP sequence number (0 when not TCP).
    pub tcp_seq: u32,
    /// TCP acknowledgment number (0 when not TCP).
    pub tcp_ack: u32,
}

#[derive(Debug, Clone, Copy)]
pub enum Parsed {
    Arp,
    Ipv4(Ipv4),
    Other,
}

pub const IP: usize = ETH_LEN;

#[inline]
pub fn be16(f: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([f[off], f[off + 1]])
}

#[inline]
pub fn be32(f: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([f[off], f[off + 1], f[off + 2], f[off + 3]])
}

pub fn parse(f: &[u8]) -> Result<Parsed, ParseError> {
    if f.len() < ETH_LEN {
        return Err(ParseError::PacketTooShort);
    }
    match be16(f, 12) {
        ETHERTYPE_ARP => {
            if f.len() < ETH_LEN + ARP_LEN {
                return Err(ParseError::PacketTooShort);
            }
            Ok(Parsed::Arp)
        }
        ETHERTYPE_IPV4 => parse_ipv4(f).map(Parsed::Ipv4),
        _ => Ok(Parsed::Other),
    }
}

fn parse_ipv4(f: &[u8]) -> Result<Ipv4, ParseError> {
    // lookahead<ipv4_lookahead_t>
    let Some(&first) = f.get(IP) else {
        return Err(ParseError::PacketTooShort);
    };
    if first >> 4 != 4 {
        return Err(ParseError::IPv4BadVersion);
    }
    let ihl = usize::from(first & 0x0f);
    if ihl < 5 {
        return Err(ParseError::IPv4BadHeaderLength);
    }
    let hlen = ihl * 4;
    if f.len() < IP + hlen {
        return Err(ParseError::PacketTooShort);
    }
    let total_len = be16(f, IP + 2);
    if usize::from(total_len) < hlen {
        return Err(ParseError::IPv4BadTotalLength);
    }
    let flags_frag = be16(f, IP + 6);
    let more_fragments = flags_frag & 0x2000 != 0;
    let frag_offset = flags_frag & 0x1fff;
    let protocol = f[IP + 9];
    let mut ip = Ipv4 {
        ttl: f[IP + 8],
        protocol,
        src: be32(f, IP + 12),
        dst: be32(f, IP + 16),
        l4: L4::None,
        l4_sport: 0,
        l4_dport: 0,
        tcp_flags: 0,
        tcp_seq: 0,
        tcp_ack: 0,
    };
    if more_fragments || frag_offset != 0 {
        return Ok(ip);
    }
    let l4 = IP + hlen;
    match protocol {
        PROTO_TCP => {
            if f.len() < l4 + 20 {
                return Err(ParseError::PacketTooShort);
            }
            ip.l4 = L4::Tcp(l4);
            ip.l4_sport = be16(f, l4);
            ip.l4_dport = be16(f, l4 + 2);
            ip.tcp_flags = f[l4 + 13];
            ip.tcp_seq = be32(f, l4 + 4);
            ip.tcp_ack = be32(f, l4 + 8);
        }
        PROTO_UDP => {
            if f.len() < l4 + 8 {
                return Err(ParseError::PacketTooShort);
            }
            ip.l4 = L4::Udp(l4);
            ip.l4_sport = be16(f, l4);
            ip.l4_dport = be16(f, l4 + 2);
        }
        _ => {}
    }
    Ok(ip)
}
