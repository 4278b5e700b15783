//! What to do at each CRIU action, given what earlier actions of the same CRIU
//! run recorded. Pure logic: the handlers in `dump.rs` and `restore.rs` carry
//! the steps out.

use crate::action::CriuAction;
use crate::run_state::{RunSide, RunState};
use p4lb_api::labels::{CheckpointMode, CHECKPOINT_LABEL, CHECKPOINT_LABEL_SHORT};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do (with the reason, for the log).
    Nothing(&'static str),
    // Dump side.
    /// network-lock: LOCK at the controller, whose answer names the caller's
    /// endpoint (a container that is none is left alone); write the record.
    Lock,
    /// post-dump: CHECKPOINTED (LOCK first when no network-lock ran: a task that
    /// shares CRIU's network namespace).
    Checkpointed { lock_first: bool },
    /// network-unlock after a successful dump of a task that keeps running.
    LeaveRunning { mode: CheckpointMode },
    /// network-unlock after a failed dump: unlock the source.
    Abort,
    // Restore side.
    /// pre-restore: read the record from the images.
    ReadRecord,
    /// setup-namespaces: RESTORE_STARTED (its answer names the target endpoint),
    /// then the addresses into the target netns.
    RestoreStarted,
    /// pre-resume on the restore side: UNLOCK, with which the controller also
    /// repoints the backend to the target (`start_first`: RESTORE_STARTED first,
    /// when no setup-namespaces ran because no namespaces were restored). Not
    /// earlier: CRIU lifts its own lock at network-unlock but still restores the
    /// tasks (their sockets leave repair mode) for tens of milliseconds; a client's
    /// packet released then only waits in the socket. At pre-resume the tasks are
    /// restored and about to run, so one call does the switchover and the release.
    Unlock { start_first: bool },
    /// post-resume: forget the run state; UNLOCK first when pre-resume did not
    /// (its script failed: CRIU only logs a pre-resume failure and resumes).
    Finish { unlock_first: bool },
}

/// The checkpoint mode an endpoint label asks for (None when absent or invalid):
/// `p4lb.io/checkpoint` (OCI hook, operator), else `checkpoint` (what the CNI
/// plugin makes of the CRI pod annotation `labels.p4lb.io/checkpoint`).
pub fn mode_from_label(
    labels: &std::collections::HashMap<String, String>,
) -> Option<CheckpointMode> {
    [CHECKPOINT_LABEL, CHECKPOINT_LABEL_SHORT]
        .iter()
        .find_map(|k| labels.get(*k))
        .and_then(|v| v.parse().ok())
}

pub fn decide(action: CriuAction, st: Option<&RunState>) -> Step {
    use CriuAction as A;
    match action {
        A::NetworkLock => match st {
            None => Step::Lock,
            Some(s) if s.side != RunSide::Dump => Step::Nothing("network-lock outside a dump"),
            Some(s) if !s.managed => Step::Nothing("not a p4lb endpoint"),
            Some(s) if s.locked => Step::Nothing("already locked"),
            Some(_) => Step::Lock,
        },
        A::PostDump => match st {
            // No network-lock ran (the task shares CRIU's network namespace).
            None => Step::Checkpointed { lock_first: true },
            Some(s) if s.side == RunSide::Dump && s.managed && !s.checkpointed => {
                Step::Checkpointed {
                    lock_first: !s.locked,
                }
            }
            Some(s) if s.managed && s.checkpointed => Step::Nothing("already checkpointed"),
            _ => Step::Nothing("not a p4lb endpoint"),
        },
        A::NetworkUnlock => match st {
            None => Step::Nothing("no state for this CRIU run"),
            Some(s) if !s.managed => Step::Nothing("not a p4lb endpoint"),
            Some(s) => match s.side {
                RunSide::Dump if s.checkpointed => Step::LeaveRunning { mode: s.mode },
                RunSide::Dump if s.locked => Step::Abort,
                RunSide::Dump => Step::Nothing("dump failed before the lock"),
                RunSide::Restore => Step::Nothing("the restore side unlocks at pre-resume"),
            },
        },
        A::PreRestore => Step::ReadRecord,
        A::SetupNamespaces => match st {
            None => Step::RestoreStarted,
            Some(s) if s.side == RunSide::Restore && s.managed && !s.restore_started => {
                Step::RestoreStarted
            }
            Some(s) if s.managed && s.restore_started => Step::Nothing("already started"),
            _ => Step::Nothing("no p4lb record in the images"),
        },
        A::PreResume => match st {
            Some(s) if s.side == RunSide::Restore && s.managed && !s.unlocked => Step::Unlock {
                start_first: !s.restore_started,
            },
            Some(s) if s.managed && s.unlocked => Step::Nothing("already unlocked"),
            _ => Step::Nothing("no p4lb restore in this CRIU run"),
        },
        A::PostResume => Step::Finish {
            unlock_first: st.is_some_and(|s| {
                s.side == RunSide::Restore && s.managed && s.restore_started && !s.unlocked
            }),
        },
        A::PreDump | A::PostSetupNamespaces | A::PostRestore => {
            Step::Nothing("no p4lb work at this action")
        }
        A::Other => Step::Nothing("action not used by p4lb"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(locked: bool, checkpointed: bool, mode: CheckpointMode) -> RunState {
        let mut s = RunState::unmanaged(RunSide::Dump);
        s.managed = true;
        s.locked = locked;
        s.checkpointed = checkpointed;
        s.mode = mode;
        s
    }

    fn restore(started: bool, unlocked: bool) -> RunState {
        let mut s = RunState::unmanaged(RunSide::Restore);
        s.managed = true;
        s.restore_started = started;
        s.unlocked = unlocked;
        s
    }

    #[test]
    fn dump_sequence_stopping_the_task() {
        use CheckpointMode::Migrate as M;
        // pre-dump has nothing to do: LOCK's answer names the endpoint.
        assert!(matches!(
            decide(CriuAction::PreDump, None),
            Step::Nothing(_)
        ));
        assert_eq!(decide(CriuAction::NetworkLock, None), Step::Lock);
        assert_eq!(
            decide(CriuAction::PostDump, Some(&dump(true, false, M))),
            Step::Checkpointed { lock_first: false }
        );
    }

    #[test]
    fn dump_without_network_lock_locks_at_post_dump() {
        assert_eq!(
            decide(CriuAction::PostDump, None),
            Step::Checkpointed { lock_first: true }
        );
        let s = dump(false, false, CheckpointMode::Migrate);
        assert_eq!(
            decide(CriuAction::PostDump, Some(&s)),
            Step::Checkpointed { lock_first: true }
        );
    }

    #[test]
    fn leave_running_follows_the_mode() {
        for m in [CheckpointMode::Snapshot, CheckpointMode::Migrate] {
            assert_eq!(
                decide(CriuAction::NetworkUnlock, Some(&dump(true, true, m))),
                Step::LeaveRunning { mode: m }
            );
        }
    }

    #[test]
    fn failed_dump_aborts_only_when_locked() {
        let m = CheckpointMode::Migrate;
        assert_eq!(
            decide(CriuAction::NetworkUnlock, Some(&dump(true, false, m))),
            Step::Abort
        );
        assert!(matches!(
            decide(CriuAction::NetworkUnlock, Some(&dump(false, false, m))),
            Step::Nothing(_)
        ));
    }

    #[test]
    fn unmanaged_runs_do_nothing() {
        let d = RunState::unmanaged(RunSide::Dump);
        let r = RunState::unmanaged(RunSide::Restore);
        for a in [
            CriuAction::NetworkLock,
            CriuAction::PostDump,
            CriuAction::NetworkUnlock,
        ] {
            assert!(matches!(decide(a, Some(&d)), Step::Nothing(_)), "{a}");
        }
        for a in [
            CriuAction::SetupNamespaces,
            CriuAction::PostRestore,
            CriuAction::NetworkUnlock,
        ] {
            assert!(matches!(decide(a, Some(&r)), Step::Nothing(_)), "{a}");
        }
        assert!(matches!(
            decide(CriuAction::NetworkUnlock, None),
            Step::Nothing(_)
        ));
    }

    #[test]
    fn restore_sequence() {
        assert_eq!(decide(CriuAction::PreRestore, None), Step::ReadRecord);
        assert_eq!(
            decide(CriuAction::SetupNamespaces, Some(&restore(false, false))),
            Step::RestoreStarted
        );
        // The switchover waits for pre-resume, with the unlock.
        assert!(matches!(
            decide(CriuAction::PostRestore, Some(&restore(true, false))),
            Step::Nothing(_)
        ));
        // CRIU's network-unlock comes before its tasks are restored: nothing yet.
        assert!(matches!(
            decide(CriuAction::NetworkUnlock, Some(&restore(true, false))),
            Step::Nothing(_)
        ));
        assert_eq!(
            decide(CriuAction::PreResume, Some(&restore(true, false))),
            Step::Unlock { start_first: false }
        );
        assert!(matches!(
            decide(CriuAction::PreResume, Some(&restore(true, true))),
            Step::Nothing(_)
        ));
        assert_eq!(
            decide(CriuAction::PostResume, Some(&restore(true, true))),
            Step::Finish {
                unlock_first: false
            }
        );
        assert_eq!(
            decide(CriuAction::PostResume, None),
            Step::Finish {
                unlock_first: false
            }
        );
    }

    #[test]
    fn post_resume_unlocks_when_pre_resume_did_not() {
        assert_eq!(
            decide(CriuAction::PostResume, Some(&restore(true, false))),
            Step::Finish { unlock_first: true }
        );
        // Nothing to unlock for a restore that never started or is no p4lb endpoint's.
        assert_eq!(
            decide(CriuAction::PostResume, Some(&restore(false, false))),
            Step::Finish {
                unlock_first: false
            }
        );
        assert!(matches!(
            decide(
                CriuAction::PreResume,
                Some(&RunState::unmanaged(RunSide::Restore))
            ),
            Step::Nothing(_)
        ));
        assert!(matches!(
            decide(CriuAction::PreResume, None),
            Step::Nothing(_)
        ));
    }

    #[test]
    fn restore_without_namespaces_starts_at_pre_resume() {
        assert_eq!(
            decide(CriuAction::PreResume, Some(&restore(false, false))),
            Step::Unlock { start_first: true }
        );
    }

    #[test]
    fn labels_select_the_mode() {
        let mut l = std::collections::HashMap::new();
        assert_eq!(mode_from_label(&l), None);
        l.insert(CHECKPOINT_LABEL.to_string(), "migrate".to_string());
        assert_eq!(mode_from_label(&l), Some(CheckpointMode::Migrate));
        l.insert(CHECKPOINT_LABEL.to_string(), "snapshot".to_string());
        assert_eq!(mode_from_label(&l), Some(CheckpointMode::Snapshot));
        l.insert(CHECKPOINT_LABEL.to_string(), "bogus".to_string());
        assert_eq!(mode_from_label(&l), None);
        let mut l = std::collections::HashMap::new();
        l.insert("checkpoint".to_string(), "migrate".to_string());
        assert_eq!(mode_from_label(&l), Some(CheckpointMode::Migrate));
        l.insert(CHECKPOINT_LABEL.to_string(), "snapshot".to_string());
        assert_eq!(mode_from_label(&l), Some(CheckpointMode::Snapshot));
    }
}
