//! The packet under processing and the header-field writes the actions perform. Every write
//! keeps the IPv4 header checksum and the TCP/UDP checksum right (incrementally), which is
//! what `P4lbComputeChecksum` guarantees on BMv2 by recomputing them.

use super::checksum::{update16, update32, update32_partial};
use super::parse::{be16, be32, Ipv4, IP, L4};

/// A frame with its parsed IPv4 view.
pub struct Packet<'a> {
    pub frame: &'a mut [u8],
    pub ip: Ipv4,
    /// The TCP/UDP checksum field holds only a pseudo-header sum to be completed later
    /// (kernel `CHECKSUM_PARTIAL`, from the virtio-net header of the socket).
    pub partial_csum: bool,
}

impl<'a> Packet<'a> {
    fn l4_csum_off(&self) -> Option<usize> {
        match self.ip.l4 {
            L4::Tcp(o) => Some(o + 16),
            L4::Udp(o) => Some(o + 6),
            L4::None => None,
        }
    }

    fn ip_csum_update32(&mut self, old: u32, new: u32) {
        let c = be16(self.frame, IP + 10);
        let c = update32(c, old, new);
        self.frame[IP + 10..IP + 12].copy_from_slice(&c.to_be_bytes());
    }

    /// Applies a change of a pseudo-header word (an address) to the L4 checksum.
    fn l4_pseudo_update32(&mut self, old: u32, new: u32) {
        let Some(off) = self.l4_csum_off() else {
            return;
        };
        let c = be16(self.frame, off);
        let is_udp = matches!(self.ip.l4, L4::Udp(_));
        let n = if self.partial_csum {
            update32_partial(c, old, new)
        } else {
            if is_udp && c == 0 {
                return; // no UDP checksum: stays 0
            }
            // Like BMv2's recomputation, a result of 0 is written as 0 (no 0xFFFF).
            update32(c, old, new)
        };
        self.frame[off..off + 2].copy_from_slice(&n.to_be_bytes());
    }

    /// Applies a change of a transport-header word (a port) to the L4 checksum.
    fn l4_header_update16(&mut self, old: u16, new: u16) {
        if self.partial_csum {
            return;
        }
        let Some(off) = self.l4_csum_off() else {
            return;
        };
        let c = be16(self.frame, off);
        let is_udp = matches!(self.ip.l4, L4::Udp(_));
        if is_udp && c == 0 {
            return;
        }
        let n = update16(c, old, new);
        self.frame[off..off + 2].copy_from_slice(&n.to_be_bytes());
    }

    pub fn set_dst_addr(&mut self, new: u32) {
        let old = be32(self.frame, IP + 16);
        if old == new {
            return;
        }
        self.frame[IP + 16..IP + 20].copy_from_slice(&new.to_be_bytes());
        self.ip_csum_update32(old, new);
        self.l4_pseudo_update32(old, new);
        self.ip.dst = new;
    }

    pub fn set_src_addr(&mut self, new: u32) {
        let old = be32(self.frame, IP + 12);
        if old == new {
            return;
        }
        self.frame[IP + 12..IP + 16].copy_from_slice(&new.to_be_bytes());
        self.ip_csum_update32(old, new);
        self.l4_pseudo_update32(old, new);
        self.ip.src = new;
    }

    /// Sets the TCP/UDP destination port (no-op without a transport header).
    pub fn set_dst_port(&mut self, new: u16) {
        let off = match self.ip.l4 {
            L4::Tcp(o) | L4::Udp(o) => o + 2,
            L4::None => return,
        };
        let old = be16(self.frame, off);
        self.frame[off..off + 2].copy_from_slice(&new.to_be_bytes());
        self.l4_header_update16(old, new);
        self.ip.l4_dport = new;
    }

    /// Sets the TCP/UDP source port (no-op without a transport header).
    pub fn set_src_port(&mut self, new: u16) {
        let off = match self.ip.l4 {
            L4::Tcp(o) | L4::Udp(o) => o,
            L4::None => return,
        };
        let old = be16(self.frame, off);
        self.frame[off..off + 2].copy_from_slice(&new.to_be_bytes());
        self.l4_header_update16(old, new);
        self.ip.l4_sport = new;
    }

    /// `hdr.ipv4.ttl = hdr.ipv4.ttl - 1`.
    pub fn decrement_ttl(&mut self) {
        let old_word = be16(self.frame, IP + 8);
        let ttl = self.frame[IP + 8].wrapping_sub(1);
        self.frame[IP + 8] = ttl;
        let new_word = be16(self.frame, IP + 8);
        let c = update16(be16(self.frame, IP + 10), old_word, new_word);
        self.frame[IP + 10..IP + 12].copy_from_slice(&c.to_be_bytes());
        self.ip.ttl = ttl;
    }

    pub fn set_dst_mac(&mut self, mac: [u8; 6]) {
        self.frame[0..6].copy_from_slice(&mac);
    }
}
