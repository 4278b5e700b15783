//! Decoding bytestrings from requests with the status codes the P4Runtime specification
//! gives (section "Bytestrings"): an empty bytestring is INVALID_ARGUMENT, a value wider
//! than its P4Info bit width is OUT_OF_RANGE.

use tonic::Code;

use super::status::{rt, RtError};
use crate::bytes::{self, BytesError};

/// Decodes `b` for a field of `bits` bits; `what` names the field in the error.
pub fn decode(b: &[u8], bits: u32, what: impl std::fmt::Display) -> Result<u64, RtError> {
    bytes::decode(b, bits).map_err(|e| {
        let code = match e {
            BytesError::Empty => Code::InvalidArgument,
            BytesError::TooWide(_) => Code::OutOfRange,
        };
        rt(code, format!("{what}: {e}"))
    })
}
