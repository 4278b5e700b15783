//! Errors of the end-to-end scenarios.

use thiserror::Error;

/// Everything that can go wrong while setting up or driving a scenario.
#[derive(Debug, Error)]
pub enum Error {
    /// The machine failed: starting or entering the testbed, a command inside it.
    #[error(transparent)]
    Testbed(#[from] p4lb_testbed::Error),
    /// Something the scenario needs is not there; the message says how to get it.
    #[error("missing prerequisite: {0}")]
    Missing(String),
    /// A step of the scenario did not give what it must.
    #[error("scenario: {0}")]
    Scenario(String),
    /// A CRI call failed.
    #[error("CRI {call}: {message}")]
    Cri { call: String, message: String },
}

/// Result of the scenarios.
pub type Result<T> = std::result::Result<T, Error>;

/// Adds a description to I/O errors: the testbed's, whose error converts into
/// [`Error::Testbed`].
pub use p4lb_testbed::error::Context;
