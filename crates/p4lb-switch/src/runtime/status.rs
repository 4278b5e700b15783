//! Errors of P4Runtime requests and how they travel: a gRPC status for whole-request
//! failures, and `p4.v1.Error` per update inside a failed Write's `google.rpc.Status`.

use p4lb_proto::google::rpc;
use p4lb_proto::p4runtime as p4;
use prost::Message;
use tonic::{Code, Status};

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

/// The status of a Write whose updates did not all succeed (P4Runtime spec, "Error
/// reporting"): code UNKNOWN, details = one `p4.v1.Error` per update, in order.
pub fn batch_status(results: &[RtResult<()>]) -> Status {
    let details: Vec<prost_types::Any> = results
        .iter()
        .map(|r| {
            let e = match r {
                Ok(()) => p4::Error {
                    canonical_code: 0,
                    ..Default::default()
                },
                Err(e) => p4::Error {
                    canonical_code: e.code as i32,
                    message: e.message.clone(),
                    space: SPACE.to_string(),
                    code: 0,
                    details: None,
                },
            };
            prost_types::Any {
                type_url: "type.googleapis.com/p4.v1.Error".to_string(),
                value: e.encode_to_vec(),
            }
        })
        .collect();
    let failed = results.iter().filter(|r| r.is_err()).count();
    let message = format!("{failed} of {} updates failed", results.len());
    let st = rpc::Status {
        code: Code::Unknown as i32,
        message: message.clone(),
        details,
    };
    Status::with_details(Code::Unknown, message, st.encode_to_vec().into())
}
