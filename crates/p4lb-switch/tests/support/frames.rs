//! Frame builders with correct checksums, and full checksum verification of frames the
//! switch sends out (independent of the switch's incremental updates).

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

pub fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

fn sum(data: &[u8]) -> u32 {
    let mut s = 0u32;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        s += u32::from(w);
    }
    s
}

fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

pub fn csum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

fn pseudo(src: u32, dst: u32, proto: u8, len: usize) -> u32 {
    (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + u32::from(proto) + len as u32
}

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
        }
    }

    pub fn udp(src: u32, sport: u16, dst: u32, dport: u16) -> Flow {
        Flow {
            proto: UDP,
            tcp_flags: 0,
            ..Flow::tcp(src, sport, dst, dport)
        }
    }

    pub fn frame(&self, payload: &[u8]) -> Vec<u8> {
        let l4_len = if self.proto == TCP { 20 } else { 8 } + payload.len();
        let total = 20 + l4_len;
        let mut f = Vec::with_capacity(14 + total);
        f.extend_from_slice(&self.dmac);
        f.extend_from_slice(&self.smac);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let mut iph = [0u8; 20];
        iph[0] = 0x45;
        iph[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        iph[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        iph[6] = 0x40; // DF
        iph[8] = self.ttl;
        iph[9] = self.proto;
        iph[12..16].copy_from_slice(&self.src.to_be_bytes());
        iph[16..20].copy_from_slice(&self.dst.to_be_bytes());
        let c = csum(&iph);
        iph[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&iph);
        let mut l4 = Vec::with_capacity(l4_len);
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        if self.proto == TCP {
            l4.extend_from_slice(&1000u32.to_be_bytes());
            l4.extend_from_slice(
                &(if self.tcp_flags & ACK != 0 {
                    2000u32
                } else {
                    0
                })
                .to_be_bytes(),
            );
            l4.push(0x50);
            l4.push(self.tcp_flags);
            l4.extend_from_slice(&64240u16.to_be_bytes());
            l4.extend_from_slice(&[0, 0, 0, 0]);
        } else {
            l4.extend_from_slice(&(l4_len as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        l4.extend_from_slice(payload);
        let c = !fold(sum(&l4) + pseudo(self.src, self.dst, self.proto, l4_len));
        let off = if self.proto == TCP { 16 } else { 6 };
        l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&l4);
        f
    }

    /// The same flow seen after the switch changed addresses/ports/MACs/TTL.
    pub fn with(&self, f: impl FnOnce(&mut Flow)) -> Flow {
        let mut c = *self;
        f(&mut c);
        c
    }
}

/// Checks the IPv4 header checksum and the TCP/UDP checksum of an IPv4 frame by full
/// recomputation.
pub fn checksums_ok(f: &[u8]) -> bool {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return false;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    if fold(sum(&f[14..14 + ihl])) != 0xffff {
        return false;
    }
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let proto = f[23];
    let src = u32::from_be_bytes([f[26], f[27], f[28], f[29]]);
    let dst = u32::from_be_bytes([f[30], f[31], f[32], f[33]]);
    let l4 = &f[14 + ihl..14 + total];
    if proto == UDP && l4[6..8] == [0, 0] {
        return true;
    }
    fold(sum(l4) + pseudo(src, dst, proto, l4.len())) == 0xffff
}

/// An ARP request (who-has `tpa` tell `spa`).
pub fn arp_request(sha: [u8; 6], spa: u32, tpa: u32) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes());
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.push(6);
    f.push(4);
    f.extend_from_slice(&1u16.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.to_be_bytes());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa.to_be_bytes());
    f
}

/// The reply the ARP proxy must produce for [`arp_request`].
pub fn arp_reply(sha: [u8; 6], spa: u32, tpa: u32, mac: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&sha);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes());
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.push(6);
    f.push(4);
    f.extend_from_slice(&2u16.to_be_bytes());
    f.extend_from_slice(&mac);
    f.extend_from_slice(&tpa.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.to_be_bytes());
    f
}
