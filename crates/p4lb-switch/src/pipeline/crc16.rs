//! `hash(HashAlgorithm.crc16, ...)` exactly as BMv2's v1model computes it: CRC-16/ARC
//! (polynomial 0x8005, input and output reflected, init 0, no final xor) over the field list's
//! bytes concatenated in order, big-endian.

const fn make_table() -> [u16; 256] {
    // Reflected table for polynomial 0x8005 (reflected: 0xA001).
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u16;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xA001
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

static TABLE: [u16; 256] = make_table();

pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for b in data {
        crc = (crc >> 8) ^ TABLE[((crc ^ u16::from(*b)) & 0xff) as usize];
    }
    crc
}

/// crc16 of the 13-byte field list `{addr_a, addr_b, protocol, port_a, port_b}`.
#[inline]
pub fn crc16_5tuple(a: u32, b: u32, proto: u8, pa: u16, pb: u16) -> u16 {
    let mut buf = [0u8; 13];
    buf[0..4].copy_from_slice(&a.to_be_bytes());
    buf[4..8].copy_from_slice(&b.to_be_bytes());
    buf[8] = proto;
    buf[9..11].copy_from_slice(&pa.to_be_bytes());
    buf[11..13].copy_from_slice(&pb.to_be_bytes());
    crc16(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straight transcription of BMv2's algorithm (reflect each input byte, run the
    /// non-reflected MSB-first CRC with 0x8005, reflect the result) to cross-check the table.
    fn bmv2_style(data: &[u8]) -> u16 {
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
    fn check_value() {
        // CRC-16/ARC check value.
        assert_eq!(crc16(b"123456789"), 0xBB3D);
    }

    #[test]
    fn matches_bmv2_formulation() {
        let mut x: u32 = 12345;
        for len in 0..64 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            assert_eq!(crc16(&data), bmv2_style(&data), "len {len}");
        }
    }
}
