//! Errors of the controller and how they map to gRPC status codes.

use tonic::{Code, Status};

/// Result alias used across the controller library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way a controller operation can fail. The variant decides the status code a
/// client sees; the message says what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("switch unavailable: {0}")]
    Unavailable(String),
    #[error("switch rejected the write: {0}")]
    SwitchWrite(String),
    #[error("state store {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Error::NotFound(msg.into())
    }
    pub fn exists(msg: impl Into<String>) -> Self {
        Error::AlreadyExists(msg.into())
    }
    pub fn denied(msg: impl Into<String>) -> Self {
        Error::PermissionDenied(msg.into())
    }
    pub fn precondition(msg: impl Into<String>) -> Self {
        Error::FailedPrecondition(msg.into())
    }
    pub fn store(path: impl Into<String>, source: std::io::Error) -> Self {
        Error::Store {
            path: path.into(),
            source,
        }
    }

    /// The same error for another caller (every request of a failed group commit
    /// gets the group's error).
    pub fn replicate(&self) -> Self {
        match self {
            Error::InvalidArgument(m) => Error::InvalidArgument(m.clone()),
            Error::NotFound(m) => Error::NotFound(m.clone()),
            Error::AlreadyExists(m) => Error::AlreadyExists(m.clone()),
            Error::PermissionDenied(m) => Error::PermissionDenied(m.clone()),
            Error::FailedPrecondition(m) => Error::FailedPrecondition(m.clone()),
            Error::Unavailable(m) => Error::Unavailable(m.clone()),
            Error::SwitchWrite(m) => Error::SwitchWrite(m.clone()),
            Error::Store { path, source } => Error::Store {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::Internal(m) => Error::Internal(m.clone()),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Unavailable(_) => Code::Unavailable,
            Error::SwitchWrite(_) => Code::Internal,
            Error::Store { .. } => Code::Internal,
            Error::Internal(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}
