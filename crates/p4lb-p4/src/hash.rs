//! The hashes p4lb.p4 computes with v1model `hash()`, bit-exact with BMv2.
//!
//! v1model `hash(result, HashAlgorithm.crc16, base, { fields }, max)` on BMv2 packs the
//! fields MSB-first into a byte string (each field in network byte order, no padding between
//! fields; every field list here is a whole number of bytes), computes BMv2's `crc16` over it
//! and stores `base + crc % max` (BMv2 treats `max == 0` as 1).
//!
//! BMv2's `crc16` is CRC-16/ARC: polynomial 0x8005, initial value 0, input and output
//! reflected, final XOR 0 (check value over "123456789" = 0xBB3D).
//!
//! The CRCs are written out here rather than taken from a CRC crate: they are a few lines,
//! must be bit-exact with BMv2 (the tests check them against two transcriptions of BMv2's
//! algorithm), and this crate, which every p4lb crate depends on, stays free of dependencies
//! beyond protobuf. The software switch's data path uses [`crc16_5tuple`] directly.

use std::net::Ipv4Addr;

/// A flow as the hash sees it: (src, dst, protocol, src port, dst port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

impl FlowKey {
    /// The 13 bytes BMv2 hashes for `{ src, dst, protocol, sport, dport }`.
    pub fn to_bytes(&self) -> [u8; 13] {
        let mut b = [0u8; 13];
        b[0..4].copy_from_slice(&self.src_addr.octets());
        b[4..8].copy_from_slice(&self.dst_addr.octets());
        b[8] = self.protocol;
        b[9..11].copy_from_slice(&self.src_port.to_be_bytes());
        b[11..13].copy_from_slice(&self.dst_port.to_be_bytes());
        b
    }
}

/// The 256-entry table of CRC-16/ARC (reflected polynomial 0xA001), built at compile time.
const fn crc16_table() -> [u16; 256] {
    const POLY_REFLECTED: u16 = 0xA001; // 0x8005 bit-reversed
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u16;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ POLY_REFLECTED
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC16_TABLE: [u16; 256] = crc16_table();

/// CRC-16/ARC, as BMv2's `crc16` hash (table-driven, one lookup per byte; the software
/// switch's data path runs it on every new connection and every transit packet).
#[inline]
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc = (crc >> 8) ^ CRC16_TABLE[usize::from((crc ^ u16::from(b)) as u8)];
    }
    crc
}

/// The transit slot of a connection between `client` and a backend (p4lb.p4's
/// `meta.transit_index`): crc16 of the 9-byte field list `{client address, protocol,
/// client port, backend port}`, each in network byte order; `TRANSIT_SIZE` is 65536, so the
/// crc is the index. Both directions compute it: the client's packets after DNAT (source,
/// source port, destination port) and the backend's replies (destination, destination port,
/// source port).
///
/// The backend's address is left out on purpose. crc16 is linear: with the backend's
/// address in the list, a connection to one backend and one to another collided whenever
/// their client ports differed by a fixed XOR (0x00F0 for backends .1 and .2), which
/// sequential ephemeral ports of one client hit within a few connections, and the later SYN
/// took over the slot of a connection not learned yet (its replies then left without the VIP).
/// Without it, the connections of one client to one backend port never collide: the map
/// from the 16-bit client port to the crc is one to one.
#[inline]
pub fn transit_crc(client: u32, protocol: u8, client_port: u16, backend_port: u16) -> u16 {
    let mut buf = [0u8; 9];
    buf[0..4].copy_from_slice(&client.to_be_bytes());
    buf[4] = protocol;
    buf[5..7].copy_from_slice(&client_port.to_be_bytes());
    buf[7..9].copy_from_slice(&backend_port.to_be_bytes());
    crc16(&buf)
}

/// crc16 of the 13-byte field list `{addr_a, addr_b, protocol, port_a, port_b}` (each in
/// network byte order), on the stack: what the data path hashes for a 5-tuple.
#[inline]
pub fn crc16_5tuple(addr_a: u32, addr_b: u32, protocol: u8, port_a: u16, port_b: u16) -> u16 {
    let mut buf = [0u8; 13];
    buf[0..4].copy_from_slice(&addr_a.to_be_bytes());
    buf[4..8].copy_from_slice(&addr_b.to_be_bytes());
    buf[8] = protocol;
    buf[9..11].copy_from_slice(&port_a.to_be_bytes());
    buf[11..13].copy_from_slice(&port_b.to_be_bytes());
    crc16(&buf)
}

/// `meta.slot` for a VIP packet: `crc16(client 5-tuple, dst = VIP) % slot_count`.
/// `None` when `slot_count` is 0 (the pipeline then drops with `no_backend`).
pub fn maglev_slot(flow: &FlowKey, slot_count: u16) -> Option<u16> {
    if slot_count == 0 {
        return None;
    }
    Some(crc16(&flow.to_bytes()) % slot_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same flow seen from the other side (addresses and ports swapped).
    fn reversed(f: &FlowKey) -> FlowKey {
        FlowKey {
            src_addr: f.dst_addr,
            dst_addr: f.src_addr,
            protocol: f.protocol,
            src_port: f.dst_port,
            dst_port: f.src_port,
        }
    }

    /// Index into `transit_marks` for the connection between a client and a backend, given as
    /// the client → backend flow after DNAT. The data path computes it with [`transit_crc`].
    fn transit_index(client_to_backend: &FlowKey) -> u32 {
        // hash(..., 32w0, {client, protocol, client port, backend port}, 65536): crc16.
        let b = client_to_backend.to_bytes();
        let mut list = Vec::from(&b[0..4]);
        list.extend_from_slice(&b[8..13]);
        u32::from(crc16(&list))
    }

    /// CRC-32/ISO-HDLC, as BMv2's `crc32` hash (the zlib/Ethernet CRC); p4lb.p4 does not use it.
    fn crc32(data: &[u8]) -> u32 {
        const POLY_REFLECTED: u32 = 0xEDB8_8320; // 0x04C11DB7 bit-reversed
        let mut crc: u32 = 0xFFFF_FFFF;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ POLY_REFLECTED
                } else {
                    crc >> 1
                };
            }
        }
        crc ^ 0xFFFF_FFFF
    }

    #[test]
    fn crc16_matches_the_arc_check_value() {
        assert_eq!(crc16(b"123456789"), 0xBB3D);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn crc32_matches_the_iso_hdlc_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    /// BMv2's table-driven form, transcribed as an independent check of the bitwise one.
    fn crc16_bmv2_table_form(data: &[u8]) -> u16 {
        fn reflect(mut v: u32, bits: u32) -> u32 {
            let mut r = 0;
            for b in 0..bits {
                if v & 1 != 0 {
                    r |= 1 << (bits - 1 - b);
                }
                v >>= 1;
            }
            r
        }
        let table: Vec<u16> = (0u32..256)
            .map(|i| {
                let mut rem = (i << 8) as u16;
                for _ in 0..8 {
                    rem = if rem & 0x8000 != 0 {
                        (rem << 1) ^ 0x8005
                    } else {
                        rem << 1
                    };
                }
                rem
            })
            .collect();
        let mut remainder: u16 = 0;
        for &byte in data {
            let idx = (reflect(u32::from(byte), 8) as u16 ^ (remainder >> 8)) as usize;
            remainder = table[idx] ^ (remainder << 8);
        }
        reflect(u32::from(remainder), 16) as u16
    }

    #[test]
    fn crc16_equals_bmv2_table_form() {
        let mut data = Vec::new();
        for i in 0u32..300 {
            data.push((i.wrapping_mul(37) ^ 0x5a) as u8);
            assert_eq!(
                crc16(&data),
                crc16_bmv2_table_form(&data),
                "len {}",
                data.len()
            );
        }
    }

    /// BMv2's algorithm written MSB-first (reflect each input byte, run the non-reflected CRC
    /// with 0x8005, reflect the result): a second independent check of the table.
    fn crc16_bmv2_msb_first(data: &[u8]) -> u16 {
        fn reflect(mut v: u16, bits: u32) -> u16 {
            let mut r = 0u16;
            for i in 0..bits {
                if v & 1 != 0 {
                    r |= 1 << (bits - 1 - i);
                }
                v >>= 1;
            }
            r
        }
        let mut rem: u16 = 0;
        for b in data {
            rem ^= reflect(u16::from(*b), 8) << 8;
            for _ in 0..8 {
                rem = if rem & 0x8000 != 0 {
                    (rem << 1) ^ 0x8005
                } else {
                    rem << 1
                };
            }
        }
        reflect(rem, 16)
    }

    #[test]
    fn crc16_equals_bmv2_msb_first_formulation() {
        let mut x: u32 = 12345;
        for len in 0..64 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            assert_eq!(crc16(&data), crc16_bmv2_msb_first(&data), "len {len}");
        }
    }

    #[test]
    fn five_tuple_crc_hashes_the_flow_bytes() {
        let f = FlowKey {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 96, 0, 10),
            protocol: 6,
            src_port: 0x1234,
            dst_port: 80,
        };
        assert_eq!(
            crc16_5tuple(
                u32::from(f.src_addr),
                u32::from(f.dst_addr),
                f.protocol,
                f.src_port,
                f.dst_port
            ),
            crc16(&f.to_bytes())
        );
    }

    #[test]
    fn flow_bytes_are_network_order_concatenation() {
        let f = FlowKey {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 96, 0, 10),
            protocol: 6,
            src_port: 0x1234,
            dst_port: 80,
        };
        assert_eq!(
            f.to_bytes(),
            [10, 0, 0, 1, 10, 96, 0, 10, 6, 0x12, 0x34, 0x00, 0x50]
        );
        assert_eq!(reversed(&reversed(&f)), f);
    }

    #[test]
    fn slot_is_crc_mod_count_and_zero_count_is_none() {
        let f = FlowKey {
            src_addr: Ipv4Addr::new(192, 168, 1, 2),
            dst_addr: Ipv4Addr::new(10, 96, 0, 1),
            protocol: 17,
            src_port: 40000,
            dst_port: 53,
        };
        let crc = crc16(&f.to_bytes());
        assert_eq!(maglev_slot(&f, 1021), Some(crc % 1021));
        assert_eq!(maglev_slot(&f, 0), None);
        assert_eq!(
            transit_index(&f),
            u32::from(transit_crc(
                u32::from(f.src_addr),
                f.protocol,
                f.src_port,
                f.dst_port
            ))
        );
    }

    /// One client's connections to one backend port never share a transit slot, whatever
    /// backend each went to; the old list (with the backend's address) made two connections
    /// to backends .1 and .2 collide when their ports differed by 0x00F0.
    #[test]
    fn one_clients_connections_never_share_a_transit_slot() {
        let client = u32::from(Ipv4Addr::new(10, 88, 12, 100));
        let mut seen = std::collections::HashSet::new();
        for port in 0..=u16::MAX {
            assert!(
                seen.insert(transit_crc(client, 6, port, 8080)),
                "port {port}"
            );
        }
        let (b1, b2) = (
            u32::from(Ipv4Addr::new(10, 88, 12, 1)),
            u32::from(Ipv4Addr::new(10, 88, 12, 2)),
        );
        assert_eq!(
            crc16_5tuple(client, b1, 6, 55928, 8080),
            crc16_5tuple(client, b2, 6, 55928 ^ 0x00F0, 8080),
            "the collision the old field list had"
        );
    }
}
