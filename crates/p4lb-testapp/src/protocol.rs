//! Wire format of the test protocol.
//!
//! A client sends numbered requests; the server answers each with a reply that
//! carries the request's number, how many requests the server has seen on the
//! connection, a checksum of the payload, an optional piece of server state and
//! the payload itself (echo). All integers are little endian.
//!
//! ```text
//! request: "P4LQ" seq:u64 len:u32 payload[len]
//! reply:   "P4LR" seq:u64 server_count:u64 checksum:u64 state:u64 len:u32 payload[len]
//! ```

use thiserror::Error;

/// Magic of a request frame.
pub const REQUEST_MAGIC: [u8; 4] = *b"P4LQ";
/// Magic of a reply frame.
pub const REPLY_MAGIC: [u8; 4] = *b"P4LR";
/// Bytes of a request header.
pub const REQUEST_HEADER_LEN: usize = 4 + 8 + 4;
/// Bytes of a reply header.
pub const REPLY_HEADER_LEN: usize = 4 + 8 + 8 + 8 + 8 + 4;
/// Largest payload either side accepts.
pub const MAX_PAYLOAD: u32 = 1 << 20;

/// A frame could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("bad magic {0:02x?} (stream out of sync)")]
    BadMagic([u8; 4]),
    #[error("payload length {0} exceeds the limit of {MAX_PAYLOAD} bytes")]
    TooLong(u32),
}

/// Header of a request frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub seq: u64,
    pub len: u32,
}

/// Header of a reply frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyHeader {
    pub seq: u64,
    pub server_count: u64,
    pub checksum: u64,
    pub state: u64,
    pub len: u32,
}

/// FNV-1a, 64 bit: cheap and good enough to notice corrupted payloads.
pub fn checksum(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The deterministic payload of request `seq` on a connection salted `salt`.
pub fn payload(salt: u32, seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq.wrapping_mul(31) ^ (i as u64).wrapping_mul(7) ^ u64::from(salt)) as u8)
        .collect()
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn magic_at(b: &[u8]) -> [u8; 4] {
    let mut m = [0u8; 4];
    m.copy_from_slice(&b[..4]);
    m
}

/// Encodes a whole request frame.
pub fn encode_request(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(REQUEST_HEADER_LEN + payload.len());
    out.extend_from_slice(&REQUEST_MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Decodes a request header.
pub fn decode_request_header(b: &[u8; REQUEST_HEADER_LEN]) -> Result<RequestHeader, FrameError> {
    let magic = magic_at(b);
    if magic != REQUEST_MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let len = u32_at(b, 12);
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLong(len));
    }
    Ok(RequestHeader {
        seq: u64_at(b, 4),
        len,
    })
}

/// Encodes a whole reply frame.
pub fn encode_reply(h: &ReplyHeader, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(REPLY_HEADER_LEN + payload.len());
    out.extend_from_slice(&REPLY_MAGIC);
    out.extend_from_slice(&h.seq.to_le_bytes());
    out.extend_from_slice(&h.server_count.to_le_bytes());
    out.extend_from_slice(&h.checksum.to_le_bytes());
    out.extend_from_slice(&h.state.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Decodes a reply header.
pub fn decode_reply_header(b: &[u8; REPLY_HEADER_LEN]) -> Result<ReplyHeader, FrameError> {
    let magic = magic_at(b);
    if magic != REPLY_MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let len = u32_at(b, 36);
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLong(len));
    }
    Ok(ReplyHeader {
        seq: u64_at(b, 4),
        server_count: u64_at(b, 12),
        checksum: u64_at(b, 20),
        state: u64_at(b, 28),
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_roundtrip() {
        let p = payload(7, 42, 100);
        let frame = encode_request(42, &p);
        assert_eq!(frame.len(), REQUEST_HEADER_LEN + 100);
        let mut h = [0u8; REQUEST_HEADER_LEN];
        h.copy_from_slice(&frame[..REQUEST_HEADER_LEN]);
        let got = decode_request_header(&h).unwrap();
        assert_eq!(got, RequestHeader { seq: 42, len: 100 });
        assert_eq!(&frame[REQUEST_HEADER_LEN..], &p[..]);
    }

    #[test]
    fn reply_roundtrip() {
        let h = ReplyHeader {
            seq: u64::MAX - 1,
            server_count: 9,
            checksum: checksum(b"abc"),
            state: 77,
            len: 3,
        };
        let frame = encode_reply(&h, b"abc");
        let mut hb = [0u8; REPLY_HEADER_LEN];
        hb.copy_from_slice(&frame[..REPLY_HEADER_LEN]);
        assert_eq!(decode_reply_header(&hb).unwrap(), h);
        assert_eq!(&frame[REPLY_HEADER_LEN..], b"abc");
    }

    #[test]
    fn bad_magic_and_length_are_rejected() {
        let mut h = [0u8; REQUEST_HEADER_LEN];
        h[..4].copy_from_slice(b"HTTP");
        assert_eq!(
            decode_request_header(&h),
            Err(FrameError::BadMagic(*b"HTTP"))
        );
        let mut frame = encode_request(1, &[]);
        frame[12..16].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        h.copy_from_slice(&frame[..REQUEST_HEADER_LEN]);
        assert_eq!(
            decode_request_header(&h),
            Err(FrameError::TooLong(MAX_PAYLOAD + 1))
        );
        let mut r = [0u8; REPLY_HEADER_LEN];
        r[..4].copy_from_slice(&REQUEST_MAGIC);
        assert!(matches!(
            decode_reply_header(&r),
            Err(FrameError::BadMagic(_))
        ));
    }

    #[test]
    fn checksum_is_fnv1a() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(checksum(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(checksum(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(checksum(&payload(1, 1, 64)), checksum(&payload(1, 2, 64)));
    }

    #[test]
    fn payload_depends_on_salt_and_seq() {
        assert_eq!(payload(3, 5, 32), payload(3, 5, 32));
        assert_ne!(payload(3, 5, 32), payload(4, 5, 32));
        assert_ne!(payload(3, 5, 32), payload(3, 6, 32));
        assert!(payload(3, 5, 0).is_empty());
    }
}
