//! Errors of P4Runtime requests and how they travel: a gRPC status for whole-request
//! failures, and `p4.v1.Error` per update inside a failed Write's `google.rpc.Status`.

use p4lb_proto::google::rpc;
use p4lb_proto::p4runtime as p4;
use prost::Message;
use std::collections::BTreeMap;

use tonic::{Code, Status};

use crate::limits::{MAX_WRITE_ERROR_DETAILS_BYTES, MAX_WRITE_ERROR_MESSAGE_BYTES};

/// A failure with its canonical code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RtError {
    pub code: Code,
    pub message: String,
}

pub type RtResult<T> = Result<T, RtError>;

pub fn rt(code: Code, message: impl Into<String>) -> RtError {
    RtError {
        code,
        message: message.into(),
    }
}

pub fn invalid(message: impl Into<String>) -> RtError {
    rt(Code::InvalidArgument, message)
}

impl From<RtError> for Status {
    fn from(e: RtError) -> Status {
        Status::new(e.code, e.message)
    }
}

/// Error space reported in `p4.v1.Error.space`.
pub const SPACE: &str = "p4lb-switch";

const ERROR_TYPE_URL: &str = "type.googleapis.com/p4.v1.Error";

fn any_of(e: &p4::Error) -> prost_types::Any {
    prost_types::Any {
        type_url: ERROR_TYPE_URL.to_string(),
        value: e.encode_to_vec(),
    }
}

/// `message` cut to at most `max` bytes at a character boundary.
fn cut(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_string();
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

/// Room kept for the summary error that ends a truncated list.
const SUMMARY_RESERVE: usize = 400;

/// The status of a Write whose updates did not all succeed (P4Runtime spec, "Error
/// reporting"): code UNKNOWN, details = one `p4.v1.Error` per update, in order.
///
/// The details travel in a response header, so they are bounded
/// ([`MAX_WRITE_ERROR_DETAILS_BYTES`], each message at most
/// [`MAX_WRITE_ERROR_MESSAGE_BYTES`]): when one error per update does not fit, the first
/// updates are reported one by one while they fit and one last error summarizes the rest
/// (its code is that of the first failure among them, its message counts them by code).
/// A client tells the two forms apart by the number of details: fewer than its updates
/// means the last one is the summary.
pub fn batch_status(results: &[RtResult<()>]) -> Status {
    let failed = results.iter().filter(|r| r.is_err()).count();
    let message = format!("{failed} of {} updates failed", results.len());
    let one = |r: &RtResult<()>| match r {
        Ok(()) => p4::Error::default(),
        Err(e) => p4::Error {
            canonical_code: e.code as i32,
            message: cut(&e.message, MAX_WRITE_ERROR_MESSAGE_BYTES),
            space: SPACE.to_string(),
            code: 0,
            details: None,
        },
    };
    let mut details: Vec<prost_types::Any> = Vec::new();
    let mut size = 0;
    let budget = MAX_WRITE_ERROR_DETAILS_BYTES - message.len() - 16;
    let all_fit = {
        let mut total = 0;
        results.iter().all(|r| {
            let a = any_of(&one(r));
            // Field tag and length prefix of the Any inside the Status.
            total += a.encoded_len() + 4;
            total <= budget
        })
    };
    if all_fit {
        details = results.iter().map(|r| any_of(&one(r))).collect();
    } else {
        let mut shown = 0;
        for r in results {
            let a = any_of(&one(r));
            if size + a.encoded_len() + 4 > budget - SUMMARY_RESERVE {
                break;
            }
            size += a.encoded_len() + 4;
            details.push(a);
            shown += 1;
        }
        let rest = &results[shown..];
        let mut by_code: BTreeMap<i32, usize> = BTreeMap::new();
        let mut first: Option<&RtError> = None;
        for e in rest.iter().filter_map(|r| r.as_ref().err()) {
            *by_code.entry(e.code as i32).or_default() += 1;
            first.get_or_insert(e);
        }
        let counts: Vec<String> = by_code
            .iter()
            .map(|(c, n)| format!("{n} x {:?}", Code::from_i32(*c)))
            .collect();
        let summary = p4::Error {
            canonical_code: first.map(|e| e.code as i32).unwrap_or(0),
            message: cut(
                &format!(
                    "updates {}..{} not reported one by one: {} failed ({}){}",
                    shown + 1,
                    results.len(),
                    rest.len() - rest.iter().filter(|r| r.is_ok()).count(),
                    if counts.is_empty() {
                        String::from("none")
                    } else {
                        counts.join(", ")
                    },
                    first
                        .map(|e| format!("; first: {}", e.message))
                        .unwrap_or_default()
                ),
                SUMMARY_RESERVE - 80,
            ),
            space: SPACE.to_string(),
            code: 0,
            details: None,
        };
        details.push(any_of(&summary));
    }
    let st = rpc::Status {
        code: Code::Unknown as i32,
        message: message.clone(),
        details,
    };
    Status::with_details(Code::Unknown, message, st.encode_to_vec().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_stay_within_the_budget_for_any_batch() {
        for n in [1usize, 10, 80, 200, 5000] {
            let results: Vec<RtResult<()>> = (0..n)
                .map(|i| {
                    if i % 3 == 0 {
                        Ok(())
                    } else {
                        Err(rt(Code::ResourceExhausted, "x".repeat(10_000)))
                    }
                })
                .collect();
            let st = batch_status(&results);
            assert!(
                st.details().len() <= MAX_WRITE_ERROR_DETAILS_BYTES,
                "{n}: {} bytes",
                st.details().len()
            );
            let decoded = rpc::Status::decode(st.details()).unwrap();
            assert!(!decoded.details.is_empty());
            assert!(decoded.details.len() <= n);
        }
        // A small batch keeps the spec's one error per update.
        let small = batch_status(&[Ok(()), Err(invalid("bad"))]);
        assert_eq!(
            rpc::Status::decode(small.details()).unwrap().details.len(),
            2
        );
    }
}
