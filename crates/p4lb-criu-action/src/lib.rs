//! p4lb's CRIU action script.
//!
//! CRIU runs it at every hook point (`action-script` in /etc/criu/*.conf). On the
//! dump side it locks the container's endpoint at the switch and writes
//! `p4lb-migration.json` into the images; on the restore side it moves the
//! container's addresses into the target network namespace before CRIU binds the
//! sockets, and has the controller repoint and unlock the endpoint.
//! See docs/migration.md.
//!
//! - [`env`]: CRIU's environment; [`action`]: the hook points.
//! - [`config`]: configuration file and failure policy.
//! - [`decision`]: what each action does given the run's state (pure).
//! - [`dump`]: what happens at checkpoint; [`restore`]: what happens at restore.
//! - [`record`]: the record that travels with the images (`MigrationRecord::parse`:
//!   its bytes checked without file access); [`run_state`]: state
//!   between the actions of one CRIU run.
//! - [`netns`]: adding addresses inside the target namespace.
//!
//! The controller API client, the socket path, the checkpoint label and
//! [`p4lb_api::CheckpointMode`] come from `p4lb-api`.

pub mod action;
pub mod config;
pub mod decision;
pub mod dump;
pub mod env;
pub mod error;
pub mod netns;
pub mod record;
pub mod restore;
pub mod run_state;
pub mod runner;
