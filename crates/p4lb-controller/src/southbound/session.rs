//! The P4Runtime session: connect (with exponential backoff), become primary on the
//! StreamChannel, make sure the pipeline is installed, then relay digests and idle
//! timeout notifications until the stream breaks, and start over.
//!
//! The steps are public functions too ([`connect_channel`], [`client`], [`arbitrate`],
//! [`set_pipeline_request`], [`write_request`], [`read_entities`], [`per_update_errors`]):
//! they are p4lb's one P4Runtime client, which the switch's own tests drive it with.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use p4lb_proto::google::rpc;
use p4lb_proto::p4runtime::{
    self as p4rt, entity, get_forwarding_pipeline_config_request::ResponseType,
    p4_runtime_client::P4RuntimeClient,
    set_forwarding_pipeline_config_request::Action as SetAction, stream_message_request,
    stream_message_response, update, DigestEntry, DigestList, DigestListAck, Entity,
    ForwardingPipelineConfig, IdleTimeoutNotification, MasterArbitrationUpdate, ReadRequest,
    SetForwardingPipelineConfigRequest, StreamMessageRequest, TableEntry, Uint128, Update,
    WriteRequest,
};

use crate::error::Error;
use crate::southbound::channel::SwitchChannel;

/// Static parameters of the switch connection.
#[derive(Debug, Clone)]
pub struct Target {
    /// "host:port", "http://host:port" or "unix:/path".
    pub address: String,
    pub device_id: u64,
    pub election_id: u64,
    pub pipeline: ForwardingPipelineConfig,
    pub digest_id: u32,
    pub digest_config: p4rt::digest_entry::Config,
    pub reconnect_max: Duration,
    /// Mutual TLS (an `https://` address).
    pub tls: Option<ClientTlsConfig>,
    /// The embedded switch's services in this process: used instead of connecting to
    /// `address` (which then only names the switch in logs and errors).
    pub in_process: Option<SwitchChannel>,
}

/// What the session reports to the controller.
#[derive(Debug)]
pub enum SwitchEvent {
    /// Primary on a switch with our pipeline. `fresh`: the pipeline was just pushed,
    /// so the switch holds no entries.
    Up {
        generation: u64,
        fresh: bool,
    },
    Down {
        generation: u64,
        reason: String,
    },
    Digest(DigestList),
    Idle(IdleTimeoutNotification),
}

#[derive(Clone)]
struct Live {
    client: P4RuntimeClient<SwitchChannel>,
    channel: SwitchChannel,
    stream: mpsc::Sender<StreamMessageRequest>,
}

/// Outcome of a failed Write: the gRPC status plus per-update canonical codes
/// (empty when the switch gave none).
///
/// A switch may report fewer errors than updates: p4lb's software switch keeps a failed
/// Write's status small enough for a response header, so past a bound it reports the
/// first updates one by one and ends with one summary error for the rest. [`Self::code`]
/// says which updates have a known outcome.
#[derive(Debug, Clone)]
pub struct WriteFailure {
    pub status: tonic::Status,
    pub codes: Vec<i32>,
    pub messages: Vec<String>,
    /// Updates in the request.
    pub updates: usize,
}

impl WriteFailure {
    /// True when every failed update failed only because of `code` (e.g. 6 =
    /// ALREADY_EXISTS on a dedup insert, 5 = NOT_FOUND on a delete).
    pub fn only(&self, code: i32) -> bool {
        !self.codes.is_empty() && self.codes.iter().all(|c| *c == 0 || *c == code)
    }

    /// The canonical code of update `i` (0 = it succeeded), or None when the switch did
    /// not report it one by one (no details, or past the point where they were
    /// summarized): its outcome is unknown.
    pub fn code(&self, i: usize) -> Option<i32> {
        let known = if self.codes.len() == self.updates {
            self.codes.len()
        } else {
            self.codes.len().saturating_sub(1)
        };
        (i < known).then(|| self.codes[i])
    }

    /// Updates that failed, as far as the switch reported them (a summary counts as one).
    pub fn failed(&self) -> usize {
        self.codes.iter().filter(|c| **c != 0).count()
    }

    /// True when the switch answered with per-update errors: the request reached it and
    /// was applied as far as it could be; the session is fine.
    pub fn per_update(&self) -> bool {
        !self.codes.is_empty()
    }

    pub fn summary(&self) -> String {
        let first = self
            .messages
            .iter()
            .zip(&self.codes)
            .find(|(_, c)| **c != 0)
            .map(|(m, c)| format!("; first failed update: code {c}: {m}"))
            .unwrap_or_default();
        format!("{}: {}{}", self.status.code(), self.status.message(), first)
    }

    fn transport(&self) -> bool {
        matches!(
            self.status.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
        ) && self.codes.is_empty()
    }
}

impl From<WriteFailure> for Error {
    fn from(w: WriteFailure) -> Self {
        if w.transport() {
            Error::Unavailable(w.summary())
        } else {
            Error::SwitchWrite(w.summary())
        }
    }
}

/// A handle on the switch: usable from any task; writes fail with UNAVAILABLE
/// while no session is up.
pub struct SwitchSession {
    target: Target,
    live: Mutex<Option<Live>>,
    connected: AtomicBool,
    generation: AtomicU64,
    pub writes: AtomicU64,
    pub updates: AtomicU64,
    pub reconnects: AtomicU64,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl SwitchSession {
    /// Starts the session task; events arrive on the returned receiver.
    pub fn spawn(target: Target) -> (Arc<SwitchSession>, mpsc::Receiver<SwitchEvent>) {
        let link = Arc::new(SwitchSession {
            target,
            live: Mutex::new(None),
            connected: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            task: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel(4096);
        let t = tokio::spawn(run(link.clone(), tx));
        if let Ok(mut g) = link.task.lock() {
            *g = Some(t);
        }
        (link, rx)
    }

    /// Ends the session (closes the stream, stops reconnecting).
    pub fn close(&self) {
        if let Ok(mut g) = self.task.lock() {
            if let Some(t) = g.take() {
                t.abort();
            }
        }
        if let Ok(mut g) = self.live.lock() {
            *g = None;
        }
        self.connected.store(false, Ordering::SeqCst);
    }

    pub fn address(&self) -> &str {
        &self.target.address
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    pub fn device_id(&self) -> u64 {
        self.target.device_id
    }

    fn live(&self) -> Result<Live, Error> {
        self.live
            .lock()
            .map_err(|_| Error::Internal(String::from("switch link lock poisoned")))?
            .clone()
            .ok_or_else(|| Error::Unavailable(format!("not connected to {}", self.target.address)))
    }

    /// The gRPC channel of the current session (for the PortAttacher service).
    pub fn channel(&self) -> Result<SwitchChannel, Error> {
        self.live().map(|l| l.channel)
    }

    fn election(&self) -> u128 {
        u128::from(self.target.election_id)
    }

    /// Pushes the pipeline again on the current session and configures the digest:
    /// the switch drops every table entry and its P4Runtime layer starts over from
    /// what this controller writes next. For a switch whose P4Runtime state no longer
    /// matches its tables (BMv2 tables edited through its own CLI).
    pub async fn repush_pipeline(&self) -> Result<(), Error> {
        let mut client = self.live()?.client;
        let unavailable = |e: String| Error::Unavailable(format!("{}: {e}", self.target.address));
        push_pipeline(self, &mut client)
            .await
            .map_err(unavailable)?;
        configure_digest(self, &mut client)
            .await
            .map_err(unavailable)
    }

    /// Writes `updates` in one request (CONTINUE_ON_ERROR).
    pub async fn write(&self, updates: Vec<Update>) -> Result<(), WriteFailure> {
        if updates.is_empty() {
            return Ok(());
        }
        let n = updates.len() as u64;
        let live = self.live().map_err(|e| WriteFailure {
            status: tonic::Status::unavailable(e.to_string()),
            codes: Vec::new(),
            messages: Vec::new(),
            updates: n as usize,
        })?;
        let req = write_request(self.target.device_id, self.election(), updates);
        let mut client = live.client;
        self.writes.fetch_add(1, Ordering::Relaxed);
        match client.write(req).await {
            Ok(_) => {
                self.updates.fetch_add(n, Ordering::Relaxed);
                Ok(())
            }
            Err(status) => {
                let (codes, messages) = per_update_errors(&status);
                Err(WriteFailure {
                    status,
                    codes,
                    messages,
                    updates: n as usize,
                })
            }
        }
    }

    /// Reads every entry of a table (optionally asking for idle times).
    pub async fn read_table(
        &self,
        table_id: u32,
        with_idle: bool,
    ) -> Result<Vec<TableEntry>, Error> {
        let live = self.live()?;
        let mut client = live.client;
        let query = Entity {
            entity: Some(entity::Entity::TableEntry(TableEntry {
                table_id,
                time_since_last_hit: with_idle
                    .then_some(p4rt::table_entry::IdleTimeout { elapsed_ns: 0 }),
                ..Default::default()
            })),
        };
        let entities = read_entities(&mut client, self.target.device_id, vec![query])
            .await
            .map_err(|s| Error::Unavailable(format!("read table {table_id:#x}: {s}")))?;
        Ok(entities
            .into_iter()
            .filter_map(|e| match e.entity {
                Some(entity::Entity::TableEntry(t)) => Some(t),
                _ => None,
            })
            .collect())
    }

    /// Acknowledges a digest list on the stream.
    pub async fn ack_digest(&self, digest_id: u32, list_id: u64) {
        if let Ok(live) = self.live() {
            let msg = StreamMessageRequest {
                update: Some(stream_message_request::Update::DigestAck(DigestListAck {
                    digest_id,
                    list_id,
                })),
            };
            if live.stream.send(msg).await.is_err() {
                tracing::debug!("digest ack dropped: stream closed");
            }
        }
    }
}

/// P4Runtime's form of an election ID.
pub fn election_id(v: u128) -> Uint128 {
    Uint128 {
        high: (v >> 64) as u64,
        low: v as u64,
    }
}

/// A P4Runtime client on `channel` (a connection, or the embedded switch in process), with
/// message limits large enough for full table reads.
pub fn client(channel: impl Into<SwitchChannel>) -> P4RuntimeClient<SwitchChannel> {
    P4RuntimeClient::new(channel.into())
        .max_decoding_message_size(512 * 1024 * 1024)
        .max_encoding_message_size(512 * 1024 * 1024)
}

/// The StreamChannel message asking for the primary role of `device_id`.
pub fn arbitration_request(device_id: u64, election: u128) -> StreamMessageRequest {
    StreamMessageRequest {
        update: Some(stream_message_request::Update::Arbitration(
            MasterArbitrationUpdate {
                device_id,
                role: None,
                election_id: Some(election_id(election)),
                status: None,
            },
        )),
    }
}

/// The inbound half of a StreamChannel.
pub type Inbound = tonic::Streaming<p4rt::StreamMessageResponse>;

/// Opens a StreamChannel, sends the arbitration update and waits up to `timeout` for the
/// switch's answer (whatever its status: the caller decides whether a backup role will do).
/// Returns the sender for further stream messages, the inbound stream and the answer.
pub async fn arbitrate(
    client: &mut P4RuntimeClient<SwitchChannel>,
    device_id: u64,
    election: u128,
    timeout: Duration,
) -> Result<
    (
        mpsc::Sender<StreamMessageRequest>,
        Inbound,
        MasterArbitrationUpdate,
    ),
    String,
> {
    let (tx, rx) = mpsc::channel(1024);
    tx.send(arbitration_request(device_id, election))
        .await
        .map_err(|_| String::from("stream request channel closed"))?;
    let mut inbound = client
        .stream_channel(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("StreamChannel: {s}"))?
        .into_inner();
    let answer = tokio::time::timeout(timeout, async {
        loop {
            match inbound.message().await {
                Ok(Some(m)) => {
                    if let Some(stream_message_response::Update::Arbitration(a)) = m.update {
                        return Ok(a);
                    }
                }
                Ok(None) => return Err(String::from("stream closed during arbitration")),
                Err(s) => return Err(format!("arbitration: {s}")),
            }
        }
    })
    .await
    .map_err(|_| format!("no arbitration answer within {timeout:?}"))??;
    Ok((tx, inbound, answer))
}

/// A SetForwardingPipelineConfig request.
pub fn set_pipeline_request(
    device_id: u64,
    election: u128,
    action: SetAction,
    config: Option<ForwardingPipelineConfig>,
) -> SetForwardingPipelineConfigRequest {
    SetForwardingPipelineConfigRequest {
        device_id,
        election_id: Some(election_id(election)),
        action: action as i32,
        config,
        role: String::new(),
    }
}

/// A Write of `updates` in one request (CONTINUE_ON_ERROR: every update is tried, and a
/// failure reports one status per update, see [`per_update_errors`]).
pub fn write_request(device_id: u64, election: u128, updates: Vec<Update>) -> WriteRequest {
    WriteRequest {
        device_id,
        election_id: Some(election_id(election)),
        updates,
        atomicity: p4rt::write_request::Atomicity::ContinueOnError as i32,
        role: String::new(),
    }
}

/// Reads `entities` (wildcards allowed) and collects every streamed response.
pub async fn read_entities(
    client: &mut P4RuntimeClient<SwitchChannel>,
    device_id: u64,
    entities: Vec<Entity>,
) -> Result<Vec<Entity>, tonic::Status> {
    let mut stream = client
        .read(ReadRequest {
            device_id,
            entities,
            role: String::new(),
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(resp) = stream.message().await? {
        out.extend(resp.entities);
    }
    Ok(out)
}

/// Per-update canonical codes and messages from a failed Write's status details.
pub fn per_update_errors(status: &tonic::Status) -> (Vec<i32>, Vec<String>) {
    let Ok(st) = rpc::Status::decode(status.details()) else {
        return (Vec::new(), Vec::new());
    };
    let mut codes = Vec::new();
    let mut msgs = Vec::new();
    for any in st.details {
        if let Ok(e) = p4rt::Error::decode(any.value.as_slice()) {
            codes.push(e.canonical_code);
            msgs.push(e.message);
        }
    }
    (codes, msgs)
}

/// Opens a gRPC channel to `address` (TCP or "unix:/path").
pub async fn connect_channel(address: &str, timeout: Duration) -> Result<Channel, String> {
    connect_channel_tls(address, timeout, None).await
}

/// Opens a gRPC channel to `address`; an `https://HOST:PORT` address needs `tls` (mutual
/// TLS, see [`super::tls::client_config`]).
pub async fn connect_channel_tls(
    address: &str,
    timeout: Duration,
    tls: Option<&ClientTlsConfig>,
) -> Result<Channel, String> {
    if address.starts_with("https://") {
        let Some(tls) = tls else {
            return Err(format!(
                "{address}: an https:// switch address needs a TLS configuration"
            ));
        };
        return p4lb_api::client::tls_channel(address, tls, timeout, None)
            .await
            .map_err(|e| format!("connect {address}: {e}"));
    }
    if let Some(path) = address.strip_prefix("unix:") {
        return p4lb_api::connect_unix(std::path::Path::new(path), timeout)
            .await
            .map_err(|e| format!("connect {address}: {e}"));
    }
    let uri = if address.starts_with("http://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    Endpoint::from_shared(uri)
        .map_err(|e| format!("bad switch address {address:?}: {e}"))?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connect {address}: {e}"))
}

async fn run(link: Arc<SwitchSession>, events: mpsc::Sender<SwitchEvent>) {
    let min = Duration::from_millis(10);
    let mut backoff = min;
    let mut last_err = String::new();
    loop {
        match establish(&link).await {
            Ok((live, mut inbound, fresh)) => {
                backoff = min;
                last_err.clear();
                let generation = link.generation.fetch_add(1, Ordering::SeqCst) + 1;
                if let Ok(mut g) = link.live.lock() {
                    *g = Some(live);
                }
                link.connected.store(true, Ordering::SeqCst);
                link.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(address = %link.target.address, in_process = link.target.in_process.is_some(), generation, fresh, "switch session up (primary)");
                if events
                    .send(SwitchEvent::Up { generation, fresh })
                    .await
                    .is_err()
                {
                    return;
                }
                let reason = loop {
                    match inbound.message().await {
                        Ok(Some(msg)) => {
                            let ev = match msg.update {
                                Some(stream_message_response::Update::Digest(d)) => {
                                    Some(SwitchEvent::Digest(d))
                                }
                                Some(stream_message_response::Update::IdleTimeoutNotification(
                                    n,
                                )) => Some(SwitchEvent::Idle(n)),
                                Some(stream_message_response::Update::Arbitration(a)) => {
                                    let code = a.status.as_ref().map(|s| s.code).unwrap_or(0);
                                    if code != 0 {
                                        break format!("lost primary role (status {code})");
                                    }
                                    None
                                }
                                Some(stream_message_response::Update::Error(e)) => {
                                    tracing::warn!(code = e.canonical_code, message = %e.message, "stream error from switch");
                                    None
                                }
                                _ => None,
                            };
                            if let Some(ev) = ev {
                                if events.send(ev).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Ok(None) => break String::from("stream closed by the switch"),
                        Err(s) => break format!("stream error: {s}"),
                    }
                };
                link.connected.store(false, Ordering::SeqCst);
                if let Ok(mut g) = link.live.lock() {
                    *g = None;
                }
                tracing::warn!(address = %link.target.address, %reason, "switch session down");
                if events
                    .send(SwitchEvent::Down { generation, reason })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                if e != last_err {
                    tracing::warn!(address = %link.target.address, error = %e, "switch not reachable; retrying with backoff");
                    last_err = e;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(link.target.reconnect_max.max(min));
            }
        }
    }
}

async fn establish(link: &SwitchSession) -> Result<(Live, Inbound, bool), String> {
    let t = &link.target;
    let channel = match &t.in_process {
        Some(ch) => ch.clone(),
        None => connect_channel_tls(&t.address, Duration::from_secs(1), t.tls.as_ref())
            .await?
            .into(),
    };
    let mut client = client(channel.clone());
    let (tx, inbound, answer) = arbitrate(
        &mut client,
        t.device_id,
        link.election(),
        Duration::from_secs(2),
    )
    .await?;
    let code = answer.status.as_ref().map(|s| s.code).unwrap_or(0);
    if code != 0 {
        return Err(format!(
            "not primary (status {code}: {})",
            answer.status.map(|s| s.message).unwrap_or_default()
        ));
    }
    // Is our pipeline already there (controller restart) or must it be pushed?
    let want = t.pipeline.cookie.as_ref().map(|c| c.cookie).unwrap_or(0);
    let have = client
        .get_forwarding_pipeline_config(p4rt::GetForwardingPipelineConfigRequest {
            device_id: t.device_id,
            response_type: ResponseType::CookieOnly as i32,
        })
        .await
        .map(|r| {
            r.into_inner()
                .config
                .and_then(|c| c.cookie)
                .map(|c| c.cookie)
        });
    let fresh = must_push_pipeline(have, want)?;
    if fresh {
        push_pipeline(link, &mut client).await?;
    }
    configure_digest(link, &mut client).await?;
    Ok((
        Live {
            client,
            channel,
            stream: tx,
        },
        inbound,
        fresh,
    ))
}

/// Whether the pipeline must be pushed, from the answer to a cookie-only
/// GetForwardingPipelineConfig: yes when the switch has no pipeline
/// (FAILED_PRECONDITION, as p4lb-switch and BMv2 answer) or another one (no cookie, or
/// another cookie); no when it runs ours. Any other failure is an error, retried with
/// the session: pushing wipes every table, so a read that failed (a timeout on a busy
/// machine) must never be taken for an empty switch.
fn must_push_pipeline(have: Result<Option<u64>, tonic::Status>, want: u64) -> Result<bool, String> {
    match have {
        Ok(cookie) => Ok(cookie != Some(want)),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => Ok(true),
        Err(s) => Err(format!(
            "reading the switch's pipeline cookie (GetForwardingPipelineConfig): {s}"
        )),
    }
}

/// Pushes the pipeline (VERIFY_AND_COMMIT): the switch starts over with empty tables.
async fn push_pipeline(
    link: &SwitchSession,
    client: &mut P4RuntimeClient<SwitchChannel>,
) -> Result<(), String> {
    let t = &link.target;
    client
        .set_forwarding_pipeline_config(set_pipeline_request(
            t.device_id,
            link.election(),
            SetAction::VerifyAndCommit,
            Some(t.pipeline.clone()),
        ))
        .await
        .map(|_| ())
        .map_err(|s| format!("SetForwardingPipelineConfig: {s}"))
}

/// Digest delivery for conn_learn: insert, or modify when it survived.
async fn configure_digest(
    link: &SwitchSession,
    client: &mut P4RuntimeClient<SwitchChannel>,
) -> Result<(), String> {
    let t = &link.target;
    let digest = |ty: update::Type| Update {
        r#type: ty as i32,
        entity: Some(Entity {
            entity: Some(entity::Entity::DigestEntry(DigestEntry {
                digest_id: t.digest_id,
                config: Some(t.digest_config),
            })),
        }),
    };
    let write = |u: Update| write_request(t.device_id, link.election(), vec![u]);
    if let Err(first) = client.write(write(digest(update::Type::Insert))).await {
        client
            .write(write(digest(update::Type::Modify)))
            .await
            .map_err(|s| format!("configuring digest: insert: {first}; modify: {s}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::must_push_pipeline;

    #[test]
    fn only_a_switch_without_our_pipeline_gets_it_pushed_and_a_failed_read_wipes_nothing() {
        // Ours: keep every table.
        assert_eq!(must_push_pipeline(Ok(Some(7)), 7), Ok(false));
        // Another pipeline, or one without a cookie: push.
        assert_eq!(must_push_pipeline(Ok(Some(8)), 7), Ok(true));
        assert_eq!(must_push_pipeline(Ok(None), 7), Ok(true));
        // No pipeline at all (p4lb-switch's and BMv2's answer): push.
        let none = tonic::Status::failed_precondition("No forwarding pipeline config set");
        assert_eq!(must_push_pipeline(Err(none), 7), Ok(true));
        // A read that failed says nothing about the switch: no push, the session retries.
        for s in [
            tonic::Status::deadline_exceeded("timeout"),
            tonic::Status::unavailable("connection reset"),
            tonic::Status::internal("boom"),
        ] {
            let e = must_push_pipeline(Err(s), 7).unwrap_err();
            assert!(e.contains("pipeline cookie"), "{e}");
        }
    }
}
