//! The p4lb controller: owns endpoint, service and migration state, persists it
//! atomically, and keeps a P4Runtime switch programmed to match it.
//!
//! Where to look:
//! - [`endpoints`], [`services`], [`migration`]: what each API call does to the state
//!   (restore and repointing of a migrated backend live in [`migration`], with the
//!   migration states' transition table; the persisted model is [`state`]).
//!   Whether a registration is a restore is decided in [`endpoints`]
//!   (`restore_migration`); a metadata update never changes an identity label
//!   (`merge_labels` in [`endpoints`]); [`lock_watch`] unlocks endpoints no live migration holds.
//! - [`desired`]: the table entries a state implies (pure function), built with
//!   `p4lb_p4::entries` (the pipeline contract lives in p4lb-p4), and `DesiredIndex`, the
//!   same kept part by part so that a commit compares only the keys it touched (used by
//!   `southbound::programmer`); [`entries`]: which tables
//!   the controller derives from its state, and entries rendered as text.
//! - [`liveness`]: endpoints whose host interface or network namespace is gone are
//!   withdrawn from services and kept `stale` (checked at start and periodically).
//! - [`identity`]: which network namespace a caller's claimed pid or path names, and
//!   whether the connecting process (SO_PEERCRED) may claim it.
//! - [`maglev`]: the slot tables of services.
//! - [`southbound`]: the controller's side of the switch: P4Runtime session
//!   ([`southbound::session::SwitchSession`], whose steps are p4lb's P4Runtime client), the
//!   pipeline config pushed ([`southbound::forwarding`]), table programming with diffs, port
//!   attachment (software switch over gRPC, BMv2 over Thrift). The reconciliation after
//!   each new session, and the pipeline pushed again when it keeps failing, are in
//!   [`controller`]; digest settings made valid for the switch kind in [`config`].
//! - [`conn`]: connection learning from digests, idle timeouts and close events (RST,
//!   FIN from both sides, then a linger); the capacity policy (`conn.max_entries`), the
//!   bounded digest queue and the close task are in [`controller`]
//!   (`Controller::on_digest`, `Controller::on_close`); [`conn_store`]: their snapshot
//!   on disk, for a switch that restarts with the controller.
//! - [`commit`]: how a change reaches the switch and the disk (group commit; the
//!   deferred save of a change answered before its save).
//! - [`store`]: crash-safe persistence (each save a record of the state journal, one
//!   `fdatasync`; `state.json` written with `p4lb_api::write_atomic` at start, stop and
//!   when the journal is full; loads go through `p4lb_api::read_bounded`); [`lock`]: one controller per state
//!   directory (the daemon takes it before anything else).
//! - [`limits`]: every limit on API inputs, list replies and state files; `fuzzing`
//!   (hidden): the entry point of the `api_messages` fuzz target (`fuzz/`), which runs
//!   decoded requests through these limits and the calls' own checks and planning.
//! - [`embedded`]: the software switch inside the controller process (cargo feature
//!   `embedded-switch`, on by default), for a demo or a single process; the packaged
//!   install runs `p4lb-switch` as its own service instead, so that traffic outlives the
//!   controller (`tests/outage.rs`).
//! - [`api`]: the gRPC API served on the Unix socket (its clients, `p4lbctl` included, use
//!   `p4lb_api::Client`; the default socket is `p4lb_api::DEFAULT_SOCKET`); [`server`]: its
//!   listeners and the `GET /metrics` HTTP listener; [`metrics`]: the Prometheus metrics;
//!   [`readiness`]: systemd notification (`READY=1` once serving and in sync).
//! - [`caller`]: who calls (local on the Unix socket, admin or node over TCP with mutual
//!   TLS, in-process) and what a node may change; [`nodes`]: the node registry
//!   (RegisterNode, ListNodes). The checks by node are in the calls themselves
//!   ([`endpoints`], [`migration`]: `cross_node_restore`).
//! - [`cert`]: `p4lbctl cert`, a CA and the certificates of nodes and admins for the
//!   TCP surfaces' mutual TLS (which is `p4lb_api::tls`; the switch client's use of it is
//!   [`southbound::tls`]).
//! - `src/bin/p4lbctl/migrate.rs`: `p4lbctl migrate`, a client of the node agents
//!   (`p4lb_agent`), not of this library.

pub mod addr;
pub mod api;
pub mod caller;
pub mod cert;
pub mod commit;
pub mod config;
pub mod conn;
pub mod conn_store;
pub mod controller;
pub mod desired;
pub mod embedded;
pub mod endpoints;
pub mod entries;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod limits;
pub mod liveness;
pub mod lock;
pub mod lock_watch;
pub mod maglev;
pub mod metrics;
pub mod migration;
pub mod nodes;
pub mod readiness;
pub mod server;
pub mod services;
pub mod southbound;
pub mod state;
pub mod store;

pub use config::Config;
pub use controller::Controller;
pub use error::{Error, Result};
