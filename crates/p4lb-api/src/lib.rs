//! The p4lb controller API as every caller uses it: the CNI plugin, the CRIU action
//! script, the OCI hook, `p4lbctl` and the testbed. The controller itself takes its
//! default socket path and its atomic file write from here too.
//!
//! Where to look:
//! - [`connect`]: [`connect_unix`], the one gRPC-over-Unix-socket connector (also
//!   used for a software switch at a `unix:` address and for the testbed's CRI client).
//! - [`client`]: [`Client`], the controller API with bounded connect and call
//!   timeouts, and [`ApiError`] (unavailable vs refused).
//! - [`labels`]: endpoint label and pod annotation names, [`CheckpointMode`], the identity
//!   labels only runtimes set ([`labels::is_runtime_label`]).
//! - [`fs`]: [`write_atomic`], the one crash-safe file replacement ([`replace_atomic`]:
//!   the same without fsync, for files that need not survive a crash of the machine), and
//!   [`read_bounded`], the one size-capped, regular-file-only read (records, run
//!   state, the controller's state files).
//! - `tls` (cargo feature `tls`): mutual TLS for every TCP surface: bounded PEM reads
//!   with the key-mode check, `client_config`, `server_config`, and `peer_name` (the
//!   identity of a TCP caller, from its certificate).
//! - [`unix`]: serving the API on a Unix socket (0600 or a group's 0660, callers by
//!   their peer credentials), for the controller and the node agent's relay alike.
//! - [`log`]: the stderr logging of the helpers the runtimes start (`P4LB_LOG`).
//! - [`DEFAULT_SOCKET`]: where the controller serves the API.
//! - [`api`]: the generated API types (from p4lb-proto); they derive serde, which is
//!   their one JSON form (proto field names).

pub mod client;
pub mod connect;
pub mod fs;
pub mod labels;
pub mod log;
#[cfg(feature = "tls")]
pub mod tls;
pub mod unix;

pub use client::{endpoint_key, ApiError, Client, NO_ENDPOINT_FOR_CALLER};
pub use connect::{connect_unix, connect_unix_bounded, ConnectError};
pub use fs::{read_bounded, replace_atomic, write_atomic};
pub use labels::{CheckpointMode, ParseCheckpointModeError, CHECKPOINT_LABEL};
pub use p4lb_proto::api;

/// Response metadata on a list reply the controller cut to its size limit:
/// "<returned> of <total>".
pub const TRUNCATED_HEADER: &str = "p4lb-truncated";

/// The controller API's Unix socket when nothing else is configured.
pub const DEFAULT_SOCKET: &str = "/run/p4lb/controller.sock";

/// The longest container id the controller API accepts (bytes): the controller
/// refuses a longer one, and the CNI plugin refuses it at ADD before creating anything.
pub const MAX_CONTAINER_ID_LEN: usize = 256;
