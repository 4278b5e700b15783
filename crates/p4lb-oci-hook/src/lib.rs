//! p4lb's OCI hook: tells the controller what only the container runtime knows
//! (the container's names and annotations) as labels of its endpoint.
//!
//! Migration never depends on this hook (crun runs no hooks on restore, runc
//! re-runs only createRuntime/prestart): it carries metadata, e.g. the
//! `p4lb.io/checkpoint` annotation that makes a leave-running checkpoint a
//! migration. See docs/migration.md.

pub mod hook;
pub mod labels;
pub mod state;
