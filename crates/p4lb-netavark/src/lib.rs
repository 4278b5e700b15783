//! The p4lb netavark plugin: Podman 5 networks whose containers are wired to p4lb's
//! switch and registered with its controller, so that `podman network create -d
//! p4lb`, `podman run --network NAME`, `podman container checkpoint` and `podman
//! container restore` are all a user types.
//!
//! The binary is `p4lb-netavark`, installed as `/usr/libexec/netavark/p4lb` (a
//! netavark plugin directory; the file name is the driver name). netavark runs it
//! with one subcommand and JSON on stdin (`plugin-API.md` in netavark's sources):
//! `info`, `create` (a new network), `setup <netns>` and `teardown <netns>` (a
//! container joins or leaves it). Errors go to stdout as `{"error": "..."}`; podman
//! shows them to the user.
//!
//! # Where to look
//!
//! - [`types`]: the JSON p4lb reads and writes (a subset, written from the API
//!   description; netavark's own crate is not a dependency: it would bring its whole
//!   network stack to a plugin that needs four structs).
//! - [`options`]: the network's options (`-o socket=… -o labels=app=web …`).
//! - [`plugin`]: the verbs. Wiring, rollback and registration are
//!   [`p4lb_cni::attach`], shared with the CNI plugin.
//! - [`plugin::parse_setup`], [`plugin::parse_teardown`], [`plugin::create`]: the
//!   input parsed and validated without side effects (the verbs start with them;
//!   the `netavark_input` fuzz target in `fuzz/` runs them).
//! - [`plugin::restore_of`], [`plugin::restore_hint`]: how a restore is told from a
//!   fresh start without any hint from the user.
//! - [`plugin::endpoint_id`]: the container ID the controller knows the endpoint by.
//! - `main.rs`: arguments, bounded stdin, the JSON on stdout.
//! - `tests/binary.rs`: the binary against real namespaces; end to end with Podman:
//!   `crates/p4lb-e2e/tests/migration_podman_native.rs`.

pub mod options;
pub mod plugin;
pub mod types;

use p4lb_cni::cni::error::CniError;

/// Most bytes read from stdin (a network and a container's options are a few KiB).
pub const MAX_INPUT: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("usage: {0}")]
    Usage(String),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("invalid p4lb network option: {0}")]
    Option(String),
    #[error("{0}")]
    Network(String),
    #[error("{}{}", .0.msg, if .0.details.is_empty() { String::new() } else { format!(": {}", .0.details) })]
    Attach(#[from] CniError),
    #[error("{0}")]
    Teardown(String),
}

impl Error {
    /// The document netavark expects on stdout for a failure.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "error": format!("p4lb: {self}") }).to_string()
    }
}
