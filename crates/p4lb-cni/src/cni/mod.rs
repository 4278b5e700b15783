//! The small part of the CNI specification (1.1.0) a plugin needs: what the runtime hands
//! us (environment, `CNI_ARGS`, network configuration), what we hand back (results and
//! errors, in the version the runtime asked for), and how we call a delegated plugin.
//!
//! Nothing here knows about p4lb; the plugin's own logic lives in [`crate::cmd`].

pub mod args;
pub mod delegate;
pub mod env;
pub mod error;
pub mod netconf;
pub mod result;
pub mod version;

pub use error::CniError;
