//! The device behind the P4Runtime service: arbitration, the committed pipeline and its
//! state, and the checks every RPC starts with.

use std::sync::Arc;
use std::time::Instant;

use p4lb_proto::p4runtime as p4;
use parking_lot::{Mutex, RwLock};
use tonic::{Code, Status};

use super::arbitration::Arbitration;
use super::digest::DigestHandle;
use super::idle;
use super::replay::Saved;
use super::status::{rt, RtError};
use crate::program::Program;
use crate::state::Dataplane;

/// The pipeline the data path runs, shared with the port thread. `None` until a pipeline
/// is committed (packets are then dropped).
#[derive(Debug, Default)]
pub struct DataplaneSlot(RwLock<Option<Arc<Dataplane>>>);

impl DataplaneSlot {
    pub fn get(&self) -> Option<Arc<Dataplane>> {
        self.0.read().clone()
    }

    pub fn set(&self, dp: Option<Arc<Dataplane>>) {
        *self.0.write() = dp;
    }
}

/// A committed pipeline config and the tasks serving it.
#[derive(Debug)]
pub struct Installed {
    pub config: p4::ForwardingPipelineConfig,
    pub program: Arc<Program>,
    pub dp: Arc<Dataplane>,
    pub digest: DigestHandle,
    idle_task: tokio::task::JoinHandle<()>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        self.idle_task.abort();
    }
}

#[derive(Debug)]
pub struct Device {
    pub device_id: u64,
    pub epoch: Instant,
    pub arbitration: Arc<Mutex<Arbitration>>,
    pub installed: RwLock<Option<Arc<Installed>>>,
    /// VERIFY_AND_SAVE'd config waiting for COMMIT, with the updates written since.
    pub saved: Mutex<Option<Saved>>,
    /// Config accepted by RECONCILE_AND_COMMIT on top of the installed state.
    pub reconciled_config: Mutex<Option<p4::ForwardingPipelineConfig>>,
    /// Serializes Write and SetForwardingPipelineConfig.
    pub write_lock: tokio::sync::Mutex<()>,
    pub slot: Arc<DataplaneSlot>,
}

impl Device {
    pub fn new(device_id: u64, slot: Arc<DataplaneSlot>) -> Device {
        Device {
            device_id,
            epoch: Instant::now(),
            arbitration: Arc::new(Mutex::new(Arbitration::default())),
            installed: RwLock::new(None),
            saved: Mutex::new(None),
            reconciled_config: Mutex::new(None),
            write_lock: tokio::sync::Mutex::new(()),
            slot,
        }
    }

    pub fn installed(&self) -> Option<Arc<Installed>> {
        self.installed.read().clone()
    }

    pub fn check_device(&self, device_id: u64) -> Result<(), RtError> {
        if device_id != self.device_id {
            return Err(rt(
                Code::NotFound,
                format!(
                    "unknown device id {device_id} (this switch is device {})",
                    self.device_id
                ),
            ));
        }
        Ok(())
    }

    /// device id, role and primary checks of Write / SetForwardingPipelineConfig.
    pub fn check_writer(
        &self,
        device_id: u64,
        role: &str,
        election_id: &Option<p4::Uint128>,
    ) -> Result<(), Status> {
        self.check_device(device_id)?;
        if !role.is_empty() {
            return Err(Status::not_found(format!(
                "unknown role `{role}` (only the default role is served)"
            )));
        }
        if !self.arbitration.lock().may_write(election_id) {
            return Err(Status::permission_denied("Not primary"));
        }
        Ok(())
    }

    pub fn require_pipeline(&self) -> Result<Arc<Installed>, Status> {
        self.installed().ok_or_else(|| {
            Status::failed_precondition("No forwarding pipeline config set for this device")
        })
    }

    /// Makes `program` the running pipeline with fresh (empty) state.
    pub fn commit(&self, config: p4::ForwardingPipelineConfig, program: Arc<Program>) {
        self.install(self.build(config, program));
    }

    /// `program` with fresh (empty) state, ready to [`install`](Self::install).
    pub fn build(
        &self,
        config: p4::ForwardingPipelineConfig,
        program: Arc<Program>,
    ) -> Arc<Installed> {
        let (dp, learn_rx) = Dataplane::new(program.clone(), self.epoch);
        let dp = Arc::new(dp);
        let digest = DigestHandle::spawn(&dp, learn_rx, self.arbitration.clone());
        let idle_task = tokio::spawn(idle::sweep(Arc::downgrade(&dp), self.arbitration.clone()));
        Arc::new(Installed {
            config,
            program,
            dp,
            digest,
            idle_task,
        })
    }

    /// Makes `inst` the running pipeline.
    pub fn install(&self, inst: Arc<Installed>) {
        let dp = inst.dp.clone();
        *self.installed.write() = Some(inst);
        *self.reconciled_config.lock() = None;
        self.slot.set(Some(dp));
    }
}
