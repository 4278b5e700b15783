//! The CRIU action names (`CRTOOLS_SCRIPT_ACTION`) and which side of a migration
//! each belongs to.

use std::fmt;

/// One CRIU action-script hook point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CriuAction {
    PreDump,
    NetworkLock,
    PostDump,
    PreRestore,
    SetupNamespaces,
    PostSetupNamespaces,
    PostRestore,
    /// Runs on both sides: after a dump that leaves the task running (or failed),
    /// and near the end of a restore.
    NetworkUnlock,
    PreResume,
    PostResume,
    /// Any other action (CRIU adds new ones over time, e.g. `orphan-pts-master`,
    /// `query-ext-files`, `status-ready`). Ignored.
    Other,
}

/// Which side of a checkpoint/restore an action belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Dump,
    Restore,
    /// `network-unlock` happens on both sides; the run state tells which.
    Either,
    None,
}

impl CriuAction {
    pub fn parse(s: &str) -> CriuAction {
        match s {
            "pre-dump" => Self::PreDump,
            "network-lock" => Self::NetworkLock,
            "post-dump" => Self::PostDump,
            "pre-restore" => Self::PreRestore,
            "setup-namespaces" => Self::SetupNamespaces,
            "post-setup-namespaces" => Self::PostSetupNamespaces,
            "post-restore" => Self::PostRestore,
            "network-unlock" => Self::NetworkUnlock,
            "pre-resume" => Self::PreResume,
            "post-resume" => Self::PostResume,
            _ => Self::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreDump => "pre-dump",
            Self::NetworkLock => "network-lock",
            Self::PostDump => "post-dump",
            Self::PreRestore => "pre-restore",
            Self::SetupNamespaces => "setup-namespaces",
            Self::PostSetupNamespaces => "post-setup-namespaces",
            Self::PostRestore => "post-restore",
            Self::NetworkUnlock => "network-unlock",
            Self::PreResume => "pre-resume",
            Self::PostResume => "post-resume",
            Self::Other => "other",
        }
    }

    /// Whether p4lb has work at this action in any run. CRIU starts the script
    /// at every action; at the others it exits before reading anything (no log
    /// set-up, configuration, run state or runtime), so that they cost CRIU only
    /// the exec.
    pub fn has_work(self) -> bool {
        !matches!(
            self,
            Self::PreDump | Self::PostSetupNamespaces | Self::PostRestore | Self::Other
        )
    }

    pub fn side(self) -> Side {
        match self {
            Self::PreDump | Self::NetworkLock | Self::PostDump => Side::Dump,
            Self::PreRestore
            | Self::SetupNamespaces
            | Self::PostSetupNamespaces
            | Self::PostRestore
            | Self::PreResume
            | Self::PostResume => Side::Restore,
            Self::NetworkUnlock => Side::Either,
            Self::Other => Side::None,
        }
    }
}

impl fmt::Display for CriuAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_actions_round_trip() {
        for a in [
            "pre-dump",
            "network-lock",
            "post-dump",
            "pre-restore",
            "setup-namespaces",
            "post-setup-namespaces",
            "post-restore",
            "network-unlock",
            "pre-resume",
            "post-resume",
        ] {
            assert_eq!(CriuAction::parse(a).as_str(), a);
        }
    }

    #[test]
    fn unknown_actions_are_other() {
        assert_eq!(CriuAction::parse("orphan-pts-master"), CriuAction::Other);
        assert_eq!(CriuAction::parse(""), CriuAction::Other);
        assert_eq!(CriuAction::parse("PRE-DUMP"), CriuAction::Other);
        assert_eq!(CriuAction::Other.side(), Side::None);
    }

    #[test]
    fn actions_without_work_decide_nothing_in_every_state() {
        use crate::decision::{decide, Step};
        use crate::run_state::{RunSide, RunState};
        let mut states = vec![None];
        for side in [RunSide::Dump, RunSide::Restore] {
            for managed in [false, true] {
                for flags in 0..16u8 {
                    let mut s = RunState::unmanaged(side);
                    s.managed = managed;
                    s.locked = flags & 1 != 0;
                    s.checkpointed = flags & 2 != 0;
                    s.restore_started = flags & 4 != 0;
                    s.unlocked = flags & 8 != 0;
                    states.push(Some(s));
                }
            }
        }
        for a in [
            CriuAction::PreDump,
            CriuAction::NetworkLock,
            CriuAction::PostDump,
            CriuAction::PreRestore,
            CriuAction::SetupNamespaces,
            CriuAction::PostSetupNamespaces,
            CriuAction::PostRestore,
            CriuAction::NetworkUnlock,
            CriuAction::PreResume,
            CriuAction::PostResume,
            CriuAction::Other,
        ] {
            if a.has_work() {
                continue;
            }
            for st in &states {
                assert!(
                    matches!(decide(a, st.as_ref()), Step::Nothing(_)),
                    "{a} skipped by main() but has work in {st:?}"
                );
            }
        }
        assert!(!CriuAction::PostSetupNamespaces.has_work());
        assert!(!CriuAction::PreDump.has_work());
        assert!(!CriuAction::PostRestore.has_work());
        assert!(CriuAction::PreResume.has_work());
        assert!(CriuAction::PostResume.has_work());
        assert!(CriuAction::NetworkUnlock.has_work());
    }

    #[test]
    fn sides() {
        assert_eq!(CriuAction::NetworkLock.side(), Side::Dump);
        assert_eq!(CriuAction::SetupNamespaces.side(), Side::Restore);
        assert_eq!(CriuAction::NetworkUnlock.side(), Side::Either);
    }
}
