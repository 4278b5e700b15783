//! Internet checksums. Rewrites update them incrementally (RFC 1624, eqn. 3:
//! `HC' = ~(~HC + ~m + m')`); the pipeline never computes one from scratch (the unit test
//! below checks the updates against a full computation).
//!
//! Partial checksums: a frame handed over with `VIRTIO_NET_HDR_F_NEEDS_CSUM` carries, in
//! its TCP/UDP checksum field, the folded (not complemented) sum of the pseudo-header only;
//! the sender's NIC or kernel completes it. For such frames a pseudo-header change is applied
//! with the complement arithmetic (`field' = field + ~m + m'`), and header-only changes
//! (ports) need nothing: the final computation covers them.

#[inline]
fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// RFC 1624 update of a complete checksum for a 16-bit word changing from `old` to `new`.
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!hc) + u32::from(!old) + u32::from(new);
    !fold(s)
}

#[inline]
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    let hc = update16(hc, (old >> 16) as u16, (new >> 16) as u16);
    update16(hc, old as u16, new as u16)
}

/// Update of a partial (pseudo-header-only, uncomplemented) checksum field.
#[inline]
pub fn update32_partial(field: u16, old: u32, new: u32) -> u16 {
    !update32(!field, old, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Full checksum (complemented) over `data` (odd length padded with zero).
    fn checksum(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            s = s.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
            if s > 0xffff_0000 {
                s = u32::from(fold(s));
            }
        }
        if let [last] = chunks.remainder() {
            s = s.wrapping_add(u32::from(*last) << 8);
        }
        !fold(s)
    }

    #[test]
    fn incremental_equals_full() {
        let mut x: u32 = 7;
        let mut rnd = || {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            x >> 8
        };
        for _ in 0..2000 {
            let mut data: Vec<u8> = (0..40).map(|_| rnd() as u8).collect();
            data[10] = 0;
            data[11] = 0;
            let c = checksum(&data);
            data[10..12].copy_from_slice(&c.to_be_bytes());
            assert_eq!(checksum(&data), 0);
            // change a 32-bit word at offset 12
            let old = u32::from_be_bytes([data[12], data[13], data[14], data[15]]);
            let new = rnd();
            data[12..16].copy_from_slice(&new.to_be_bytes());
            let inc = update32(c, old, new);
            data[10] = 0;
            data[11] = 0;
            let full = checksum(&data);
            // 0x0000 and 0xffff are the same one's-complement number.
            assert!(inc == full || (inc ^ full) == 0xffff && (inc == 0 || full == 0));
        }
    }
}
