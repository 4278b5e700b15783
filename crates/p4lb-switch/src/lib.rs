//! p4lb's software P4Runtime target: executes the p4lb.p4 pipeline between Linux interfaces.
//!
//! - [`program`]: binding a P4Info by name to the pipeline contract of `p4lb_p4` (the one
//!   definition of tables, actions, widths and the digest layout), and which of its tables
//!   and actions the data path executes ([`program::spec`]).
//! - [`pipeline`]: the packet processing, one file per table/stage (hashes: `p4lb_p4::hash`);
//!   `pipeline::transit`: the transit slots of pending VIP connections (exact tuple, reply
//!   seen, the backend's ISN + 1), which decide reverse translation and learning.
//! - [`hold`]: the hold port's buffer (frames of a locked backend or route, run through the
//!   pipeline again when `backends` or `ipv4_routes` changes) and its bounds.
//! - [`bytes`]: P4Runtime bytestrings (p4lb-p4's, re-exported).
//! - [`tables`], [`state`]: table storage, counters, the transit registers.
//! - [`runtime`]: the P4Runtime gRPC service (arbitration, pipeline config, write, read,
//!   digests, idle timeout); what it implements of the specification and what it refuses:
//!   docs/p4runtime-conformance.md ([`runtime::unimplemented`]: entity kinds the program
//!   lacks; [`runtime::value`]: bytestring status codes; [`runtime::replay`]:
//!   VERIFY_AND_SAVE / COMMIT).
//! - [`ports`]: AF_PACKET ports and the data-plane thread (`ports::classify`: each port's
//!   handshake queue for SYNs, served after the main queue); [`server`]: [`serve`].
//! - [`access`]: who may connect (a root-only Unix socket by default, SO_PEERCRED checked
//!   on every call; TCP only with mutual TLS, see [`tls`], or without it on loopback with
//!   an explicit `insecure_loopback`); [`limits`]: the bounds on messages, pipeline
//!   configs and entries, refused instead of allocated.
//! - Tests: `tests/dataplane.rs` is the data-plane behaviour as a fixture table (entries,
//!   frames in, frames out or drops, counters, digests), run in process, over veth and on BMv2
//!   by `tests/support/fixtures.rs` (docs/switch-pipeline.md: how to add a case);
//!   `tests/p4runtime.rs` the P4Runtime service; `tests/conformance.rs` the answers the
//!   specification prescribes; `tests/finsy.rs` (+ `tests/finsy/drive.py`) a third-party
//!   client from PyPI driving the switch; `tests/packets.rs` what is not a fixture row;
//!   `tests/unlock.rs` the hold port with real TCP (a client's reply right after the unlock)
//!   and raw frames (order, DNAT to the new backend, the bound).
//! - `benches/throughput.rs`: the throughput benchmark against kernel forwarding and BMv2
//!   (`cargo bench -p p4lb-switch --bench throughput`).

pub mod access;
pub mod bytes;
pub mod hold;
pub mod limits;
pub mod pipeline;
pub mod ports;
pub mod ports_service;
pub mod program;
pub mod runtime;
pub mod server;
pub mod state;
pub mod tables;
pub mod tls;

pub use server::{serve, GrpcAddr, ServeError, SwitchConfig, SwitchHandle};
pub use tls::TlsFiles;
