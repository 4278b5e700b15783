//! What happens at restore: read the record that came with the images, tell the
//! controller the restore started in the target endpoint and, while it answers, move
//! the container's addresses into the target network namespace (CRIU binds the
//! restored sockets to them; a refused restore takes them out again), and at
//! pre-resume send UNLOCK, with which the controller repoints the backend to the
//! target and releases it (one call: no RESTORED_AT).

use p4lb_api::CheckpointMode;

use crate::config::Policy;
use crate::error::ActionError;
use crate::netns::{ensure_addresses, remove_addresses, route_to_pod};
use crate::record::{MigrationRecord, RecordState};
use crate::run_state::{RunSide, RunState};
use crate::runner::Run;
use p4lb_api::api::MigrationPhase;

fn restore_state(run: &Run<'_>) -> Result<(RunState, String), ActionError> {
    let Some(dir) = run.env.image_dir.clone() else {
        return Ok((
            RunState::unmanaged(RunSide::Restore),
            "no image directory".into(),
        ));
    };
    let Some(rec) = MigrationRecord::read_from(&dir)? else {
        return Ok((
            RunState::unmanaged(RunSide::Restore),
            "no p4lb record in the images".into(),
        ));
    };
    if rec.leave_running && rec.mode == CheckpointMode::Snapshot {
        return Ok((
            RunState::unmanaged(RunSide::Restore),
            format!(
                "images are a snapshot of {} (still running there): its addresses do not move",
                rec.source.key
            ),
        ));
    }
    if rec.state != RecordState::Checkpointed {
        return Err(ActionError::Input(format!(
            "record of migration {} says the checkpoint never completed (state {:?})",
            rec.migration_id, rec.state
        )));
    }
    let mut st = RunState::unmanaged(RunSide::Restore);
    st.managed = true;
    st.migration_id = rec.migration_id.clone();
    st.mode = rec.mode;
    let msg = format!(
        "restoring migration {} of {} ({})",
        rec.migration_id, rec.source.key, rec.source.ip
    );
    st.record = Some(rec);
    Ok((st, msg))
}

/// pre-restore: read the record.
pub async fn read_record(run: &mut Run<'_>) -> Result<String, ActionError> {
    let (st, msg) = restore_state(run)?;
    run.save(&st)?;
    Ok(msg)
}

/// setup-namespaces: RESTORE_STARTED and the addresses into the target.
pub async fn restore_started(
    run: &mut Run<'_>,
    st: Option<RunState>,
) -> Result<String, ActionError> {
    let mut st = match st {
        Some(s) => s,
        None => restore_state(run)?.0,
    };
    let Some(rec) = st.record.clone().filter(|_| st.managed) else {
        run.save(&st)?;
        return Ok("no p4lb record in the images".into());
    };
    let pid = run.init_pid()?;
    let source_ip = rec.source.ip.to_string();
    // CRIU waits for both the controller's answer and the addresses: the addresses go
    // into the target (on the source's interface name, which the target's almost
    // always shares) while the controller answers, and are taken out again if the
    // answer does not let the restore go on.
    let moving = {
        let (ifname, addrs) = (rec.source.ifname.clone(), rec.addresses.clone());
        tokio::task::spawn_blocking(move || ensure_addresses(pid, &ifname, &addrs))
    };
    let answer = run
        .event(
            MigrationPhase::RestoreStarted,
            &rec.migration_id,
            &source_ip,
            false,
        )
        .await;
    let moved = moving
        .await
        .map_err(|e| ActionError::Input(format!("moving the addresses: {e}")))?;
    let m = match answer {
        Ok(m) => m,
        // The controller's refusal of a caller without an endpoint: a failure whatever
        // the policy.
        Err(ActionError::Controller(e)) if e.is_no_endpoint() => {
            undo_addresses(pid, &rec.source.ifname, &moved);
            return Err(not_an_endpoint(pid, &rec.migration_id));
        }
        Err(e) if e.is_controller() && run.cfg.policy == Policy::IgnoreController => {
            // The sockets must still bind: keep the addresses, tell nobody.
            let change = moved?;
            run.save(&st)?;
            tracing::warn!(
                "{e}; policy ignore-controller: addresses moved, the switch is not repointed"
            );
            return Ok(format!(
                "controller unavailable: added {:?} on {}, already present {:?}",
                change.added, rec.source.ifname, change.already_present
            ));
        }
        Err(e) => {
            undo_addresses(pid, &rec.source.ifname, &moved);
            return Err(e);
        }
    };
    // The controller names the caller's endpoint in its answer: the restore target.
    let Some(target) = m.endpoint.clone() else {
        undo_addresses(pid, &rec.source.ifname, &moved);
        return Err(not_an_endpoint(pid, &rec.migration_id));
    };
    let ifname = if target.ifname.is_empty() {
        rec.source.ifname.clone()
    } else {
        target.ifname.clone()
    };
    let change = if ifname == rec.source.ifname {
        moved?
    } else {
        // The target's interface has another name: the addresses move there instead.
        undo_addresses(pid, &rec.source.ifname, &moved);
        ensure_addresses(pid, &ifname, &rec.addresses)?
    };
    if target.behind_node {
        // The switch sends the old addresses to this node: the node routes them on.
        route_to_pod(&target.host_ifname, &rec.addresses)?;
    }
    st.restore_started = true;
    st.endpoint_key = target.key.clone();
    run.save(&st)?;
    Ok(format!(
        "migration {} restoring into {} ({}): added {:?} on {ifname}, already present {:?}",
        m.id, target.key, target.ip, change.added, change.already_present
    ))
}

/// pre-resume (or post-resume, when pre-resume failed) on the restore side: UNLOCK.
/// The controller repoints the backend to the target and releases it in one
/// commit (the switchover); `start_first` when no setup-namespaces ran (no
/// namespaces restored).
pub async fn unlock(
    run: &mut Run<'_>,
    st: Option<RunState>,
    start_first: bool,
) -> Result<String, ActionError> {
    let st = if start_first {
        tracing::info!("no setup-namespaces ran (no namespaces restored): starting now");
        restore_started(run, st).await?;
        run.load()?
    } else {
        st
    };
    let mut st = st.ok_or_else(|| ActionError::Input("unlock: no run state".into()))?;
    if !st.restore_started {
        return Ok("the restore did not start at the controller: nothing to unlock".into());
    }
    let source_ip = recorded_source_ip(&st);
    let m = run
        .event(
            MigrationPhase::Unlock,
            &st.migration_id.clone(),
            &source_ip,
            false,
        )
        .await?;
    st.unlocked = true;
    run.save(&st)?;
    Ok(format!(
        "migration {} switched over and unlocked at {} (switchover {} us, stall {} us)",
        m.id, st.endpoint_key, m.switchover_us, m.stall_us
    ))
}

/// Takes out of the target what [`ensure_addresses`] added on `ifname` (nothing it
/// found already there); a failure to do so is logged, the action fails anyway.
fn undo_addresses(
    pid: u32,
    ifname: &str,
    moved: &Result<crate::netns::AddressChange, crate::netns::NetnsError>,
) {
    let Ok(change) = moved else {
        return;
    };
    if let Err(e) = remove_addresses(pid, ifname, &change.added) {
        tracing::warn!(
            error = %e,
            added = ?change.added,
            "taking the added addresses out of the restore target"
        );
    }
}

/// The restore target is no p4lb endpoint: a failure whatever the policy (the
/// controller could be reached; nothing of the migration was changed).
fn not_an_endpoint(pid: u32, migration_id: &str) -> ActionError {
    ActionError::Input(format!(
        "the restore target (network namespace of pid {pid}) is not a p4lb endpoint: the CNI \
         plugin registers it (locked) before the restore; migration {migration_id} cannot \
         continue"
    ))
}

/// The source address the record carried ("" when the restore had no record).
fn recorded_source_ip(st: &RunState) -> String {
    st.record
        .as_ref()
        .map(|r| r.source.ip.to_string())
        .unwrap_or_default()
}
