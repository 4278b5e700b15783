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
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A step of the scenario did not give what it must.
    #[error("scenario: {0}")]
    Scenario(String),
    /// A CRI call failed.
    #[error("CRI {call}: {message}")]
    Cri { call: String, message: String },
}

/// Result of the scenarios.
pub type Result<T> = std::result::Result<T, Error>;

/// Adds a description to I/O errors.
pub trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            what: what(),
            source,
        })
    }
}
