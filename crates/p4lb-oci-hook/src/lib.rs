//! p4lb's OCI hook: tells the controller what only the container runtime knows
//! (the container's names and annotations) as labels of its endpoint.
//!
//! Migration never depends on this hook (crun runs no hooks on restore, runc
//! re-runs only createRuntime/prestart): it carries metadata, e.g. the
//! `p4lb.io/checkpoint` annotation that makes a leave-running checkpoint a
//! migration. See docs/migration.md.
//!
//! - [`state`]: the container state on stdin and the container's annotations.
//! - [`labels`]: annotations → endpoint labels.
//! - [`hook`]: one invocation (the controller client is `p4lb_api::Client`).

pub mod hook;
pub mod labels;
pub mod state;
