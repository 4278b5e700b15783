//! Errors of the testbed library.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong while building, entering or using the testbed.
#[derive(Debug, Error)]
pub enum Error {
    /// Something the testbed needs is not there; the message says how to get it.
    #[error("missing prerequisite: {0}")]
    Missing(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("building the rootfs in {dir} failed: {reason}")]
    Build { dir: PathBuf, reason: String },
    #[error("testbed: {0}")]
    Testbed(String),
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout { what: String, secs: u64 },
}

/// Result of the testbed library.
pub type Result<T> = std::result::Result<T, Error>;

/// Adds a description to I/O and system errors.
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

impl<T> Context<T> for nix::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Sys {
            what: what(),
            source,
        })
    }
}
