//! The p4lb program as the switch knows it: the contract ([`spec`]), binding a P4Info to it
//! ([`bind`]) and the typed actions the data path executes ([`action`]).

pub mod action;
pub mod bind;
pub mod spec;

pub use action::Act;
pub use bind::{BindError, Program};
pub use spec::{ActionKind, CounterKind, MatchKind, RegisterKind, TableKind};
