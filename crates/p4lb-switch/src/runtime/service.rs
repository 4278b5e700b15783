//! The P4Runtime gRPC service (tonic).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use p4lb_proto::p4runtime as p4;
use p4lb_proto::p4runtime::p4_runtime_server::P4Runtime;
use p4lb_proto::p4runtime::set_forwarding_pipeline_config_request::Action as CfgAction;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::arbitration::election_of;
use super::device::Device;
use super::read::read_entity;
use super::replay::{commit_saved, Saved};
use super::status::batch_status;
use super::write::apply_batch;
use crate::limits::MAX_READ_RESPONSE_BYTES;
use crate::program::Program;

/// P4Runtime API version this server speaks (the one BMv2's server reports).
pub const API_VERSION: &str = "1.3.0";

/// Most entities per ReadResponse message (each is also kept under
/// [`MAX_READ_RESPONSE_BYTES`]).
const READ_CHUNK: usize = 1000;

/// Splits a Read's entities into responses of at most [`READ_CHUNK`] entities and
/// [`MAX_READ_RESPONSE_BYTES`] encoded bytes (an empty read is one empty response).
fn chunk_read(out: Vec<p4::Entity>) -> Vec<Result<p4::ReadResponse, Status>> {
    use prost::Message;
    let mut msgs = Vec::new();
    let mut cur = p4::ReadResponse::default();
    let mut size = 0;
    for e in out {
        // Field tag and length prefix of the entity inside the response.
        let len = e.encoded_len() + 6;
        if !cur.entities.is_empty()
            && (cur.entities.len() >= READ_CHUNK || size + len > MAX_READ_RESPONSE_BYTES)
        {
            msgs.push(Ok(std::mem::take(&mut cur)));
            size = 0;
        }
        size += len;
        cur.entities.push(e);
    }
    if !cur.entities.is_empty() || msgs.is_empty() {
        msgs.push(Ok(cur));
    }
    msgs
}

#[derive(Debug, Clone)]
pub struct P4RuntimeService {
    pub device: Arc<Device>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn bind_config(
    config: &Option<p4::ForwardingPipelineConfig>,
) -> Result<(p4::ForwardingPipelineConfig, Arc<Program>), Status> {
    let Some(config) = config.clone() else {
        return Err(Status::invalid_argument(
            "no ForwardingPipelineConfig given",
        ));
    };
    let Some(p4info) = config.p4info.clone() else {
        return Err(Status::invalid_argument(
            "the ForwardingPipelineConfig has no P4Info",
        ));
    };
    // Limits first: binding allocates nothing, but committing allocates what the P4Info
    // declares.
    crate::limits::check_pipeline(&config)
        .map_err(|e| Status::resource_exhausted(e.to_string()))?;
    let program = Program::bind(p4info).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok((config, Arc::new(program)))
}

/// Do two bound programs use the same IDs everywhere (so state can be kept)?
fn same_ids(a: &Program, b: &Program) -> bool {
    a.tables.iter().zip(&b.tables).all(|(x, y)| {
        x.id == y.id
            && x.fields
                .iter()
                .map(|f| f.id)
                .eq(y.fields.iter().map(|f| f.id))
            && x.actions == y.actions
    }) && a.actions.len() == b.actions.len()
        && a.actions.iter().all(|(id, x)| {
            b.actions.get(id).is_some_and(|y| {
                x.kind == y.kind
                    && x.params
                        .iter()
                        .map(|p| p.as_ref().map(|p| p.id))
                        .eq(y.params.iter().map(|p| p.as_ref().map(|p| p.id)))
            })
        })
        && a.counters
            .iter()
            .map(|c| (c.id, c.size))
            .eq(b.counters.iter().map(|c| (c.id, c.size)))
        && a.registers
            .iter()
            .map(|r| (r.id, r.size))
            .eq(b.registers.iter().map(|r| (r.id, r.size)))
        && a.digest.id == b.digest.id
}

#[tonic::async_trait]
impl P4Runtime for P4RuntimeService {
    async fn write(
        &self,
        request: Request<p4::WriteRequest>,
    ) -> Result<Response<p4::WriteResponse>, Status> {
        let req = request.into_inner();
        let dev = &self.device;
        let _guard = dev.write_lock.lock().await;
        dev.check_writer(req.device_id, &req.role, &req.election_id)?;
        let inst = dev.require_pipeline()?;
        if req.atomicity != p4::write_request::Atomicity::ContinueOnError as i32 {
            return Err(Status::unimplemented(
                "only CONTINUE_ON_ERROR atomicity is supported",
            ));
        }
        let results = apply_batch(&inst, &req.updates);
        if let Some(saved) = dev.saved.lock().as_mut() {
            saved.record(&req.updates, &results);
        }
        if results.iter().all(|r| r.is_ok()) {
            Ok(Response::new(p4::WriteResponse {}))
        } else {
            Err(batch_status(&results))
        }
    }

    type ReadStream = BoxStream<p4::ReadResponse>;

    async fn read(
        &self,
        request: Request<p4::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let req = request.into_inner();
        let dev = &self.device;
        dev.check_device(req.device_id)?;
        if !req.role.is_empty() {
            return Err(Status::not_found(format!("unknown role `{}`", req.role)));
        }
        let inst = dev.require_pipeline()?;
        let mut out = Vec::new();
        for e in &req.entities {
            read_entity(&inst, e, &mut out)?;
        }
        let msgs = chunk_read(out);
        Ok(Response::new(Box::pin(tokio_stream::iter(msgs))))
    }

    async fn set_forwarding_pipeline_config(
        &self,
        request: Request<p4::SetForwardingPipelineConfigRequest>,
    ) -> Result<Response<p4::SetForwardingPipelineConfigResponse>, Status> {
        let req = request.into_inner();
        let dev = &self.device;
        let _guard = dev.write_lock.lock().await;
        dev.check_writer(req.device_id, &req.role, &req.election_id)?;
        let action = CfgAction::try_from(req.action).unwrap_or(CfgAction::Unspecified);
        match action {
            CfgAction::Unspecified => return Err(Status::invalid_argument("action not set")),
            CfgAction::Verify => {
                bind_config(&req.config)?;
            }
            CfgAction::VerifyAndSave => {
                let (cfg, prog) = bind_config(&req.config)?;
                *dev.saved.lock() = Some(Saved::new(cfg, prog));
            }
            CfgAction::VerifyAndCommit => {
                let (cfg, prog) = bind_config(&req.config)?;
                dev.commit(cfg, prog);
                tracing::info!("pipeline committed (VERIFY_AND_COMMIT)");
            }
            CfgAction::Commit => {
                if req.config.is_some() {
                    return Err(Status::invalid_argument("COMMIT takes no config"));
                }
                let Some(saved) = dev.saved.lock().take() else {
                    return Err(Status::not_found("no saved config to commit"));
                };
                commit_saved(dev, saved)?;
            }
            CfgAction::ReconcileAndCommit => {
                let (cfg, prog) = bind_config(&req.config)?;
                match dev.installed() {
                    None => dev.commit(cfg, prog),
                    Some(cur) if same_ids(&cur.program, &prog) => {
                        // Same pipeline, same IDs: keep the forwarding state, report the
                        // new config (cookie, device config) from now on.
                        *dev.reconciled_config.lock() = Some(cfg);
                    }
                    Some(_) => return Err(Status::invalid_argument(
                        "cannot preserve the forwarding state: the new P4Info uses different IDs",
                    )),
                }
            }
        }
        Ok(Response::new(p4::SetForwardingPipelineConfigResponse {}))
    }

    async fn get_forwarding_pipeline_config(
        &self,
        request: Request<p4::GetForwardingPipelineConfigRequest>,
    ) -> Result<Response<p4::GetForwardingPipelineConfigResponse>, Status> {
        use p4::get_forwarding_pipeline_config_request::ResponseType;
        let req = request.into_inner();
        let dev = &self.device;
        dev.check_device(req.device_id)?;
        let inst = dev.require_pipeline()?;
        let full = dev
            .reconciled_config
            .lock()
            .clone()
            .unwrap_or_else(|| inst.config.clone());
        let ty = ResponseType::try_from(req.response_type).unwrap_or(ResponseType::All);
        let config = match ty {
            ResponseType::All => full,
            ResponseType::CookieOnly => p4::ForwardingPipelineConfig {
                cookie: full.cookie,
                ..Default::default()
            },
            ResponseType::P4infoAndCookie => p4::ForwardingPipelineConfig {
                p4info: full.p4info,
                cookie: full.cookie,
                ..Default::default()
            },
            ResponseType::DeviceConfigAndCookie => p4::ForwardingPipelineConfig {
                p4_device_config: full.p4_device_config,
                cookie: full.cookie,
                ..Default::default()
            },
        };
        Ok(Response::new(p4::GetForwardingPipelineConfigResponse {
            config: Some(config),
        }))
    }

    type StreamChannelStream = BoxStream<p4::StreamMessageResponse>;

    async fn stream_channel(
        &self,
        request: Request<Streaming<p4::StreamMessageRequest>>,
    ) -> Result<Response<Self::StreamChannelStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4096);
        let dev = self.device.clone();
        tokio::spawn(async move {
            let mut conn: Option<u64> = None;
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) | Err(_) => break,
                };
                use p4::stream_message_request::Update;
                match msg.update {
                    Some(Update::Arbitration(a)) => {
                        let role_name = a.role.as_ref().map(|r| r.name.as_str()).unwrap_or("");
                        let result = match conn {
                            None => {
                                if a.device_id != dev.device_id {
                                    Err(Status::not_found(format!(
                                        "unknown device id {}",
                                        a.device_id
                                    )))
                                } else if !role_name.is_empty() {
                                    Err(Status::not_found(format!("unknown role `{role_name}`")))
                                } else {
                                    dev.arbitration
                                        .lock()
                                        .add(election_of(&a.election_id), tx.clone(), dev.device_id)
                                        .map(|id| conn = Some(id))
                                }
                            }
                            Some(c) => {
                                if a.device_id != dev.device_id {
                                    Err(Status::failed_precondition("Invalid device id"))
                                } else if !role_name.is_empty() {
                                    Err(Status::failed_precondition(
                                        "role cannot change on a stream",
                                    ))
                                } else {
                                    dev.arbitration.lock().update(
                                        c,
                                        election_of(&a.election_id),
                                        dev.device_id,
                                    )
                                }
                            }
                        };
                        if let Err(st) = result {
                            let _ = tx.send(Err(st)).await;
                            break;
                        }
                    }
                    Some(Update::DigestAck(ack)) => {
                        let Some(c) = conn else { continue };
                        if !dev.arbitration.lock().is_primary_conn(c) {
                            continue;
                        }
                        if let Some(inst) = dev.installed() {
                            if ack.digest_id == inst.digest.digest_id {
                                inst.digest.ack(ack.list_id);
                            } else {
                                let _ = tx
                                    .send(Ok(stream_error(
                                        tonic::Code::InvalidArgument,
                                        format!("unknown digest id {:#x}", ack.digest_id),
                                        Some(p4::stream_error::Details::DigestListAck(
                                            p4::DigestListAckError {
                                                digest_list_ack: Some(ack),
                                            },
                                        )),
                                    )))
                                    .await;
                            }
                        }
                    }
                    Some(Update::Packet(po)) => {
                        if conn.is_some() {
                            let _ = tx
                                .send(Ok(stream_error(
                                    tonic::Code::Unimplemented,
                                    "the p4lb program has no packet-out header".into(),
                                    Some(p4::stream_error::Details::PacketOut(
                                        p4::PacketOutError {
                                            packet_out: Some(po),
                                        },
                                    )),
                                )))
                                .await;
                        }
                    }
                    Some(Update::Other(_)) | None => {}
                }
            }
            if let Some(c) = conn {
                dev.arbitration.lock().remove(c, dev.device_id);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn capabilities(
        &self,
        _request: Request<p4::CapabilitiesRequest>,
    ) -> Result<Response<p4::CapabilitiesResponse>, Status> {
        Ok(Response::new(p4::CapabilitiesResponse {
            p4runtime_api_version: API_VERSION.to_string(),
        }))
    }
}

fn stream_error(
    code: tonic::Code,
    message: String,
    details: Option<p4::stream_error::Details>,
) -> p4::StreamMessageResponse {
    p4::StreamMessageResponse {
        update: Some(p4::stream_message_response::Update::Error(
            p4::StreamError {
                canonical_code: code as i32,
                message,
                space: super::status::SPACE.to_string(),
                code: 0,
                details,
            },
        )),
    }
}
