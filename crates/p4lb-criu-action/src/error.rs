//! Errors of one action, and whether the failure policy may excuse them.

use crate::netns::NetnsError;
use crate::record::RecordError;
use crate::run_state::StateError;
use p4lb_api::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Controller(#[from] ApiError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("moving addresses into the restore target: {0}")]
    Netns(#[from] NetnsError),
    #[error("{0}")]
    Input(String),
}

impl ActionError {
    /// Only controller failures can be excused by `policy = "ignore-controller"`;
    /// a corrupt record or an address that cannot be configured always fails.
    pub fn is_controller(&self) -> bool {
        matches!(self, Self::Controller(_))
    }
}
