//! VERIFY_AND_SAVE / COMMIT (P4Runtime spec, "SetForwardingPipelineConfig"): VERIFY_AND_SAVE
//! keeps a verified config aside while the running pipeline goes on forwarding and taking
//! Writes; COMMIT realizes the saved config and replays, on its fresh state, the Write
//! updates that succeeded since the save, in order.
//!
//! The log of updates to replay is bounded ([`MAX_REPLAY_BYTES`] of encoded updates): past
//! it the log is dropped and COMMIT is refused with RESOURCE_EXHAUSTED (save again). A
//! COMMIT whose replay fails for an update is refused as a whole (FAILED_PRECONDITION,
//! naming the update) and the running pipeline stays as it was.

use std::sync::Arc;

use p4lb_proto::p4runtime as p4;
use prost::Message;
use tonic::Status;

use super::device::Device;
use super::status::RtResult;
use super::write::apply_update;
use crate::program::Program;

/// Most bytes of encoded Write updates kept for replay between VERIFY_AND_SAVE and COMMIT
/// (64 MiB, one gRPC message's worth).
pub const MAX_REPLAY_BYTES: usize = crate::limits::MAX_GRPC_MESSAGE_BYTES;

/// A config saved by VERIFY_AND_SAVE and the updates written since.
#[derive(Debug)]
pub struct Saved {
    pub config: p4::ForwardingPipelineConfig,
    pub program: Arc<Program>,
    /// `None` once the log outgrew [`MAX_REPLAY_BYTES`].
    log: Option<Vec<p4::Update>>,
    log_bytes: usize,
}

impl Saved {
    pub fn new(config: p4::ForwardingPipelineConfig, program: Arc<Program>) -> Saved {
        Saved {
            config,
            program,
            log: Some(Vec::new()),
            log_bytes: 0,
        }
    }

    /// Records the updates of one Write that succeeded.
    pub fn record(&mut self, updates: &[p4::Update], results: &[RtResult<()>]) {
        for (u, r) in updates.iter().zip(results) {
            if r.is_err() {
                continue;
            }
            let Some(log) = self.log.as_mut() else { return };
            self.log_bytes += u.encoded_len();
            if self.log_bytes > MAX_REPLAY_BYTES {
                tracing::warn!(
                    "more than {MAX_REPLAY_BYTES} bytes written since VERIFY_AND_SAVE: \
                     a COMMIT of the saved config will be refused"
                );
                self.log = None;
                return;
            }
            log.push(u.clone());
        }
    }
}

/// COMMIT: realizes the saved config with the updates written since the save.
pub fn commit_saved(dev: &Device, saved: Saved) -> Result<(), Status> {
    let Some(log) = saved.log else {
        return Err(Status::resource_exhausted(format!(
            "more than {MAX_REPLAY_BYTES} bytes were written since VERIFY_AND_SAVE, too many \
             to replay: save the config again"
        )));
    };
    let inst = dev.build(saved.config, saved.program);
    for (i, u) in log.iter().enumerate() {
        if let Err(e) = apply_update(&inst, u) {
            return Err(Status::failed_precondition(format!(
                "COMMIT refused: update {i} written since VERIFY_AND_SAVE does not apply to \
                 the saved config ({e}); the running pipeline is unchanged"
            )));
        }
    }
    dev.install(inst);
    tracing::info!(replayed = log.len(), "pipeline committed (COMMIT)");
    Ok(())
}
