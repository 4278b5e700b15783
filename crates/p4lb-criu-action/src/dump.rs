//! What happens at checkpoint: lock the endpoint at the switch (LOCK's answer names
//! it; a container that is none is left alone), record the migration in the images,
//! report CHECKPOINTED; for a checkpoint that
//! leaves the task running, either unlock (snapshot) or keep it locked (migration).

use std::net::Ipv4Addr;

use p4lb_api::api::{Endpoint, MigrationPhase};

use crate::decision::mode_from_label;
use crate::error::ActionError;
use crate::record::{MigrationRecord, RecordState, SourceEndpoint, RECORD_VERSION};
use crate::run_state::{RunSide, RunState};
use crate::runner::Run;
use p4lb_api::CheckpointMode;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn source_of(ep: &Endpoint) -> Result<(SourceEndpoint, Vec<Ipv4Addr>), ActionError> {
    let bad = |what: &str, v: &str| {
        ActionError::Input(format!(
            "controller returned endpoint {} with an invalid {what} {v:?}",
            ep.key
        ))
    };
    let ip: Ipv4Addr = ep.ip.parse().map_err(|_| bad("ip", &ep.ip))?;
    let mut addresses = vec![ip];
    for m in &ep.migrated_ips {
        let a: Ipv4Addr = m.parse().map_err(|_| bad("migrated ip", m))?;
        if !addresses.contains(&a) {
            addresses.push(a);
        }
    }
    Ok((
        SourceEndpoint {
            key: ep.key.clone(),
            container_id: ep.container_id.clone(),
            ifname: ep.ifname.clone(),
            ip,
            prefix_len: ep.prefix_len,
            mac: ep.mac.clone(),
            netns_inode: ep.netns_inode,
            network: ep.network.clone(),
        },
        addresses,
    ))
}

/// The dump side's run state for `ep`, the endpoint LOCK's answer named.
fn dump_state(run: &Run<'_>, ep: &Endpoint) -> Result<RunState, ActionError> {
    let (source, addresses) = source_of(ep)?;
    let mut st = RunState::unmanaged(RunSide::Dump);
    st.managed = true;
    st.endpoint_key = ep.key.clone();
    // Used only if the task keeps running after the dump.
    st.mode = mode_from_label(&ep.labels).unwrap_or(run.cfg.leave_running_default);
    st.source = Some(source);
    st.addresses = addresses;
    Ok(st)
}

fn record_of(
    st: &RunState,
    state: RecordState,
    controller_state: &str,
) -> Result<MigrationRecord, ActionError> {
    let source = st
        .source
        .clone()
        .ok_or_else(|| ActionError::Input("run state has no source endpoint".into()))?;
    Ok(MigrationRecord {
        version: RECORD_VERSION,
        migration_id: st.migration_id.clone(),
        // A dump that stops the task is always a migration; see leave_running().
        mode: CheckpointMode::Migrate,
        state,
        source,
        addresses: st.addresses.clone(),
        leave_running: false,
        controller_state: controller_state.to_owned(),
        created_unix_ms: now_ms(),
    })
}

/// network-lock (or post-dump, when no network-lock ran): LOCK, then the record into
/// the image directory. The controller finds the endpoint from the task's network
/// namespace and names it in its answer; NOT_FOUND means the container is no p4lb
/// endpoint, which is left alone.
pub async fn lock(run: &mut Run<'_>) -> Result<String, ActionError> {
    let m = match run.event(MigrationPhase::Lock, "", "", false).await {
        Ok(m) => m,
        Err(ActionError::Controller(e)) if e.is_not_found() => {
            run.save(&RunState::unmanaged(RunSide::Dump))?;
            return Ok(format!("not a p4lb endpoint ({e})"));
        }
        Err(e) => return Err(e),
    };
    if m.id.is_empty() {
        return Err(ActionError::Input(
            "controller answered LOCK without a migration id".into(),
        ));
    }
    let ep = m.endpoint.as_ref().ok_or_else(|| {
        ActionError::Input(format!(
            "controller answered LOCK of migration {} without the locked endpoint",
            m.id
        ))
    })?;
    let mut st = dump_state(run, ep)?;
    st.migration_id = m.id.clone();
    st.locked = true;
    if !run.cfg.lock {
        tracing::warn!(
            migration = %m.id,
            "p4lb's lock is off (lock = false): the source keeps receiving traffic during \
             the checkpoint; clients may see resets"
        );
    }
    // Save first: if writing the record fails, network-unlock still knows to ABORT.
    run.save(&st)?;
    let dir = run.image_dir()?;
    let rec = record_of(&st, RecordState::Locked, &m.state)?;
    let path = rec.write_to(&dir)?;
    Ok(format!(
        "locked endpoint {} (migration {}, mode {:?}), record {}",
        st.endpoint_key,
        m.id,
        st.mode,
        path.display()
    ))
}

/// post-dump: CHECKPOINTED.
pub async fn checkpointed(run: &mut Run<'_>, lock_first: bool) -> Result<String, ActionError> {
    if lock_first {
        tracing::info!("no network-lock ran (task shares CRIU's network namespace): locking now");
        lock(run).await?;
    }
    let mut st = run
        .load()?
        .ok_or_else(|| ActionError::Input("post-dump: run state vanished".into()))?;
    if !st.managed {
        return Ok("not a p4lb endpoint".into());
    }
    let m = run
        .event(
            MigrationPhase::Checkpointed,
            &st.migration_id.clone(),
            "",
            false,
        )
        .await?;
    st.checkpointed = true;
    run.save(&st)?;
    let dir = run.image_dir()?;
    let rec = record_of(&st, RecordState::Checkpointed, &m.state)?;
    rec.write_to(&dir)?;
    Ok(format!("checkpointed migration {}", st.migration_id))
}

/// network-unlock after a successful dump: the task keeps running.
pub async fn leave_running(
    run: &mut Run<'_>,
    st: Option<RunState>,
    mode: CheckpointMode,
) -> Result<String, ActionError> {
    let st = st.ok_or_else(|| ActionError::Input("network-unlock: no run state".into()))?;
    let dir = run.image_dir()?;
    let mut rec = match MigrationRecord::read_from(&dir)? {
        Some(r) => r,
        None => record_of(&st, RecordState::Checkpointed, "")?,
    };
    rec.leave_running = true;
    rec.mode = mode;
    rec.write_to(&dir)?;
    let msg = match mode {
        CheckpointMode::Snapshot => {
            run.event(MigrationPhase::SnapshotDone, &st.migration_id, "", true)
                .await?;
            format!(
                "snapshot of {} done: source unlocked (migration {})",
                st.endpoint_key, st.migration_id
            )
        }
        CheckpointMode::Migrate if !run.cfg.lock => format!(
            "leave-running checkpoint of {} is a migration, but p4lb's lock is off: the \
             source keeps running and answering (migration {})",
            st.endpoint_key, st.migration_id
        ),
        CheckpointMode::Migrate => {
            // The switch drops traffic to the source; its own packets (e.g. the
            // FIN/RST of its sockets when it is removed) must not leave either.
            let ifname = st
                .source
                .as_ref()
                .map(|s| s.ifname.clone())
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| "eth0".into());
            let pid = run.init_pid()?;
            crate::netns::isolate(pid, &ifname)?;
            format!(
                "leave-running checkpoint of {} is a migration: the source stays locked and its \
                 {ifname} is down until it is removed (migration {})",
                st.endpoint_key, st.migration_id
            )
        }
    };
    run.state_file.remove();
    Ok(msg)
}

/// network-unlock after a failed dump: unlock the source.
pub async fn abort(run: &mut Run<'_>, st: Option<RunState>) -> Result<String, ActionError> {
    let st = st.ok_or_else(|| ActionError::Input("network-unlock: no run state".into()))?;
    run.event(MigrationPhase::Abort, &st.migration_id, "", false)
        .await?;
    run.state_file.remove();
    Ok(format!(
        "dump failed: migration {} aborted, {} unlocked",
        st.migration_id, st.endpoint_key
    ))
}
