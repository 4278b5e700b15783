//! P4Runtime bytestrings (P4Runtime specification, section "Bytestrings"): big-endian, any
//! length is accepted as long as the value fits the P4Info bit width; the canonical form is
//! the shortest one (`\x00` for zero). Every p4lb crate that encodes or decodes a match
//! value, action parameter, digest member or register cell goes through here.

/// Why a bytestring was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BytesError {
    #[error("empty bytestring")]
    Empty,
    #[error("bytestring does not fit within {0} bits")]
    TooWide(u32),
}

/// Decodes an unsigned value of at most `bits` (<= 64) bits.
pub fn decode(b: &[u8], bits: u32) -> Result<u64, BytesError> {
    if b.is_empty() {
        return Err(BytesError::Empty);
    }
    let first = b.iter().position(|x| *x != 0);
    let Some(first) = first else { return Ok(0) };
    let sig = &b[first..];
    let used = (sig.len() as u32 - 1) * 8 + (8 - sig[0].leading_zeros());
    if used > bits || used > 64 {
        return Err(BytesError::TooWide(bits));
    }
    Ok(to_u64(sig))
}

/// Big-endian value of (at most the last 8 bytes of) `b`.
pub fn to_u64(b: &[u8]) -> u64 {
    let tail = if b.len() > 8 { &b[b.len() - 8..] } else { b };
    tail.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
}

/// Canonical encoding of `v`: shortest big-endian string, `\x00` for zero.
pub fn encode(v: u64) -> Vec<u8> {
    let b = v.to_be_bytes();
    let first = b.iter().position(|x| *x != 0).unwrap_or(7);
    b[first..].to_vec()
}

/// Canonical form of an arbitrary big-endian bytestring (leading zero bytes dropped,
/// `\x00` for zero or empty).
pub fn canonical(b: &[u8]) -> Vec<u8> {
    match b.iter().position(|x| *x != 0) {
        Some(first) => b[first..].to_vec(),
        None => vec![0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_accepts_padding_and_checks_width() {
        assert_eq!(decode(&[0x63], 16), Ok(0x63));
        assert_eq!(decode(&[0, 0x63], 16), Ok(0x63));
        assert_eq!(decode(&[0, 0, 0x63], 12), Ok(0x63));
        assert_eq!(decode(&[0x01, 0xff], 9), Ok(0x1ff));
        assert_eq!(decode(&[0x02, 0x00], 9), Err(BytesError::TooWide(9)));
        assert_eq!(decode(&[1, 0, 0, 0, 0], 32), Err(BytesError::TooWide(32)));
        assert_eq!(decode(&[], 8), Err(BytesError::Empty));
        assert_eq!(decode(&[0, 0], 8), Ok(0));
    }

    #[test]
    fn encode_is_canonical() {
        assert_eq!(encode(0), vec![0]);
        assert_eq!(encode(1), vec![1]);
        assert_eq!(encode(0x63), vec![0x63]);
        assert_eq!(encode(0x3064), vec![0x30, 0x64]);
        assert_eq!(encode(0x0a00_0001), vec![10, 0, 0, 1]);
    }

    #[test]
    fn canonical_drops_leading_zeros() {
        assert_eq!(canonical(&[0, 0, 5]), vec![5]);
        assert_eq!(canonical(&[0, 0]), vec![0]);
        assert_eq!(canonical(&[]), vec![0]);
        assert_eq!(canonical(&[1, 0]), vec![1, 0]);
    }
}
