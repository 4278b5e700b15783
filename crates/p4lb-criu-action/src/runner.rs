//! One invocation of the action script: load the run state, decide, act, save.

use std::path::PathBuf;

use p4lb_api::api::{Identity, MigrationEventRequest, MigrationPhase};
use p4lb_api::Client;

use crate::action::CriuAction;
use crate::config::Config;
use crate::decision::{decide, Step};
use crate::env::ActionEnv;
use crate::error::ActionError;
use crate::run_state::{find_criu_pid, remove_stale, RunState, StateFile};

/// Everything one action needs.
pub struct Run<'a> {
    pub env: &'a ActionEnv,
    pub cfg: &'a Config,
    pub state_file: StateFile,
    controller: Option<Client>,
    /// How long connecting to the controller took, for the log (µs).
    connect_us: u64,
}

impl<'a> Run<'a> {
    pub fn new(env: &'a ActionEnv, cfg: &'a Config) -> Self {
        let criu_pid = find_criu_pid(env.criu_pid);
        Self {
            env,
            cfg,
            state_file: StateFile::for_run(&cfg.state_dir, criu_pid),
            controller: None,
            connect_us: 0,
        }
    }

    pub async fn controller(&mut self) -> Result<&Client, ActionError> {
        if self.controller.is_none() {
            let t = std::time::Instant::now();
            let c = Client::connect(
                &self.cfg.controller_socket,
                self.cfg.connect_timeout,
                self.cfg.call_timeout,
            )
            .await?;
            self.connect_us = t.elapsed().as_micros() as u64;
            self.controller = Some(c);
        }
        match self.controller.as_ref() {
            Some(c) => Ok(c),
            None => Err(ActionError::Input("controller connection lost".into())),
        }
    }

    pub fn init_pid(&self) -> Result<u32, ActionError> {
        self.env.init_pid.ok_or_else(|| {
            ActionError::Input(format!(
                "{}: CRTOOLS_INIT_PID is not set; cannot tell which network namespace this is",
                self.env.action
            ))
        })
    }

    pub fn image_dir(&self) -> Result<PathBuf, ActionError> {
        self.env.image_dir.clone().ok_or_else(|| {
            ActionError::Input(format!("{}: CRTOOLS_IMAGE_DIR is not set", self.env.action))
        })
    }

    /// The image directory as a real path, for the controller's record.
    pub fn image_dir_display(&self) -> String {
        match &self.env.image_dir {
            Some(d) => std::fs::read_link(d)
                .unwrap_or_else(|_| d.clone())
                .display()
                .to_string(),
            None => String::new(),
        }
    }

    pub fn load(&self) -> Result<Option<RunState>, ActionError> {
        Ok(self.state_file.load()?)
    }

    pub fn save(&self, st: &RunState) -> Result<(), ActionError> {
        Ok(self.state_file.save(st)?)
    }

    pub async fn event(
        &mut self,
        phase: MigrationPhase,
        migration_id: &str,
        source_ip: &str,
        leave_running: bool,
    ) -> Result<p4lb_api::api::Migration, ActionError> {
        let req = MigrationEventRequest {
            phase: phase as i32,
            identity: Some(Identity {
                pid: self.init_pid()?,
                netns_path: String::new(),
            }),
            migration_id: migration_id.to_owned(),
            image_dir: if phase == MigrationPhase::Lock {
                self.image_dir_display()
            } else {
                String::new()
            },
            leave_running,
            source_ip: source_ip.to_owned(),
            no_lock: phase == MigrationPhase::Lock && !self.cfg.lock,
            // Local callers prove their endpoint with identity.
            endpoint_key: String::new(),
            target_node: String::new(),
        };
        let t = std::time::Instant::now();
        let m = self.controller().await?.migration_event(req).await?;
        tracing::info!(
            action = %self.env.action,
            phase = phase.as_str_name(),
            migration = %m.id,
            state = %m.state,
            call_us = t.elapsed().as_micros() as u64,
            connect_us = self.connect_us,
            "controller acknowledged"
        );
        Ok(m)
    }
}

/// Runs the action described by `env`; returns what was done, for the log.
pub async fn run(env: &ActionEnv, cfg: &Config) -> Result<String, ActionError> {
    let mut run = Run::new(env, cfg);
    let st = run.load()?;
    let step = decide(env.action, st.as_ref());
    // The first action of a run with work clears what crashed runs left.
    if st.is_none() && matches!(env.action, CriuAction::NetworkLock | CriuAction::PreRestore) {
        remove_stale(&cfg.state_dir);
    }
    tracing::debug!(action = %env.action_name, ?step, state = %run.state_file.path().display(), "decided");
    match step {
        Step::Nothing(why) => Ok(format!("nothing to do ({why})")),
        Step::Lock => crate::dump::lock(&mut run).await,
        Step::Checkpointed { lock_first } => crate::dump::checkpointed(&mut run, lock_first).await,
        Step::LeaveRunning { mode } => crate::dump::leave_running(&mut run, st, mode).await,
        Step::Abort => crate::dump::abort(&mut run, st).await,
        Step::ReadRecord => crate::restore::read_record(&mut run).await,
        Step::RestoreStarted => crate::restore::restore_started(&mut run, st).await,
        Step::Unlock { start_first } => crate::restore::unlock(&mut run, st, start_first).await,
        Step::Finish { unlock_first } => {
            let unlocked = if unlock_first {
                Some(crate::restore::unlock(&mut run, st, false).await?)
            } else {
                None
            };
            run.state_file.remove();
            Ok(match unlocked {
                Some(done) => format!("{done}; run finished"),
                None => "run finished".into(),
            })
        }
    }
}
