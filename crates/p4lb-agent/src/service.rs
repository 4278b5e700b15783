//! The `Agent` gRPC service: `Migrate` on the source node, `Receive` on the target,
//! `NodeInfo` and `Inspect` (where is a container).
//!
//! Callers are known by their certificate's DNS name ([`p4lb_api::tls::peer_name`]); the
//! TLS handshake has already refused anyone without a certificate of the nodes' CA.
//! `Migrate` and `Inspect` are for the configured admins, `Receive` for the configured
//! peer nodes.
//!
//! A migration: inspect → checkpoint (`--keep`: the images stay on the source) →
//! digest → stream to the target (the header carries the source's runtime and its
//! restore spec), which checks size and digest and restores → remove the checkpointed
//! source. A failure after the checkpoint restores the container on
//! the source in place; the error says that it did, or, if that failed too, which
//! command restores it by hand (and keeps the archive). The target marks every error
//! it answers with [`NOTHING_RESTORED`] (a failed restore's leftovers are removed, and
//! a container of the same name already there is refused before anything is
//! restored); a call that breaks after the whole archive was sent, without that
//! answer, may have left the container running on the target, so the source does not
//! restore it too (two copies would answer the same connections): the error says how to
//! decide. The migration runs on a task of its own, so an interrupted caller does not
//! leave it half done.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use p4lb_proto::api::agent_server::Agent;
use p4lb_proto::api::{
    ArchiveHeader, ArchivePart, InspectRequest, InspectResponse, MigrateRequest, MigrateResponse,
    NodeInfoRequest, NodeInfoResponse, PhaseTimes, ReceiveResponse,
};
use tonic::transport::ClientTlsConfig;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::archive::{self, ArchiveError};
use crate::client::ConnectError;
use crate::config::valid_name;
use crate::relay::Outgoing;
use crate::runtime::{Runtime, RuntimeError, MAX_RESTORE_SPEC};

/// Largest gRPC message the agent decodes (a chunk plus framing).
pub const MAX_MESSAGE: usize = archive::CHUNK + (64 << 10);
/// Archives received at the same time (each is up to the size limit on disk).
pub const MAX_CONCURRENT_RECEIVES: usize = 2;

/// Faults a test injects into a source agent.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Flip one byte of the archive after its digest was taken (a tampered archive on
    /// the source's disk): the target must refuse it.
    pub corrupt_archive: bool,
    /// Stop this agent (SIGSTOP to itself) as soon as an incoming archive's header
    /// arrives, the rest of the stream unread: a test then kills it (the link to the
    /// target dropping mid-transfer) or continues it (SIGCONT) after other faults.
    pub pause_receive: bool,
}

/// What the service needs besides its runtime.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    pub work_dir: PathBuf,
    pub max_archive_bytes: u64,
    /// How long sending an archive and the target's restore may take; past it the call
    /// is dropped (and treated as broken).
    pub transfer_timeout: Duration,
    pub admins: Vec<String>,
    pub peers: Vec<String>,
    /// Client side of mutual TLS to other agents (the server name is set per target).
    pub client_tls: ClientTlsConfig,
    pub faults: Faults,
}

/// The agent service over runtime `R`. A migration runs in a task of its own: a caller
/// that goes away (an interrupted `p4lbctl`) does not stop it half-way.
pub struct AgentService<R: Runtime> {
    inner: Arc<Inner<R>>,
}

struct Inner<R: Runtime> {
    s: Arc<Settings>,
    runtime: Arc<R>,
    /// Containers being migrated from this node, with their target node (shared with
    /// the node's relay, which names the target to the controller).
    busy: Outgoing,
    receives: Arc<tokio::sync::Semaphore>,
}

impl<R: Runtime> AgentService<R> {
    pub fn new(settings: Settings, runtime: Arc<R>) -> Self {
        AgentService {
            inner: Arc::new(Inner {
                s: Arc::new(settings),
                runtime,
                busy: Outgoing::default(),
                receives: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_RECEIVES)),
            }),
        }
    }

    /// The containers this agent is migrating away, for the node's relay
    /// ([`crate::relay::Relay`]).
    pub fn outgoing(&self) -> Outgoing {
        self.inner.busy.clone()
    }

    /// A server for this service with the message size bounded.
    pub fn into_server(self) -> p4lb_proto::api::agent_server::AgentServer<Self> {
        p4lb_proto::api::agent_server::AgentServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}

impl<R: Runtime> Inner<R> {
    /// The caller's name if it is one of `allowed`; PERMISSION_DENIED otherwise.
    fn authorize<T>(
        &self,
        req: &Request<T>,
        allowed: &[String],
        call: &str,
    ) -> Result<String, Status> {
        let who = p4lb_api::tls::peer_name(req);
        match who {
            Some(n) if allowed.contains(&n) => Ok(n),
            Some(n) => Err(Status::permission_denied(format!(
                "{call}: {n:?} is not allowed to call {call} on node {}",
                self.s.node
            ))),
            None => Err(Status::permission_denied(format!(
                "{call}: the caller presented no certificate with a DNS name"
            ))),
        }
    }

    /// Runs a runtime call on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&R) -> Result<T, RuntimeError> + Send + 'static,
    ) -> Result<T, RuntimeError> {
        let rt = self.runtime.clone();
        match tokio::task::spawn_blocking(move || f(&rt)).await {
            Ok(r) => r,
            Err(e) => Err(RuntimeError::Output {
                command: "runtime call".into(),
                detail: format!("panicked: {e}"),
            }),
        }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn runtime_status(e: RuntimeError) -> Status {
    match e {
        RuntimeError::NotFound(_) => Status::not_found(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}

fn archive_status(e: &ArchiveError) -> Code {
    match e {
        ArchiveError::TooLarge { .. } => Code::ResourceExhausted,
        ArchiveError::Truncated { .. }
        | ArchiveError::Overlong { .. }
        | ArchiveError::Digest { .. } => Code::DataLoss,
        ArchiveError::Broken { .. } => Code::Unavailable,
        ArchiveError::Io { .. } => Code::Internal,
        _ => Code::InvalidArgument,
    }
}

/// Removes a container from the busy set when dropped.
struct BusyGuard {
    set: Outgoing,
    name: String,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.set.remove(&self.name);
    }
}

impl<R: Runtime> Inner<R> {
    /// The archive path for an outgoing migration of `container`.
    fn outgoing(&self, container: &str) -> PathBuf {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        self.s
            .work_dir
            .join(format!("outgoing-{container}-{ms}.tar"))
    }

    /// Sends the archive at `path` to the target agent and waits for its restore.
    async fn send(
        &self,
        req: &MigrateRequest,
        path: &std::path::Path,
        header: ArchiveHeader,
    ) -> Result<ReceiveResponse, Failed> {
        let mut client = crate::client::connect(
            &req.target_address,
            &req.target_node,
            self.s.client_tls.clone(),
        )
        .await
        .map_err(|e| {
            Failed::NothingRestored(match e {
                ConnectError::Address { .. } => Status::invalid_argument(e.to_string()),
                ConnectError::Unreachable { .. } => Status::unavailable(e.to_string()),
            })
        })?;
        let (parts, all_sent) = archive::send_stream(path.to_path_buf(), header);
        let e = match tokio::time::timeout(self.s.transfer_timeout, client.receive(parts)).await {
            Ok(Ok(r)) => return Ok(r.into_inner()),
            Ok(Err(e)) => e,
            Err(_) => Status::deadline_exceeded(format!(
                "no answer within {} s (transfer_timeout_secs)",
                self.s.transfer_timeout.as_secs_f64()
            )),
        };
        // The target restores only a whole archive, and says so when it restored
        // nothing; a broken call after the whole archive left leaves it unknown.
        let (nothing, all) = (target_restored_nothing(&e), all_sent.load(Ordering::SeqCst));
        let status = Status::new(
            e.code(),
            match (nothing, all) {
                (false, false) => format!(
                    "target node {}: the call broke before the whole archive was sent: {}",
                    req.target_node,
                    e.message()
                ),
                _ => format!("target node {}: {}", req.target_node, e.message()),
            },
        );
        if nothing || !all {
            Err(Failed::NothingRestored(status))
        } else {
            Err(Failed::Unknown(status))
        }
    }

    /// Everything after a successful checkpoint: digest, transfer, restore on the target.
    async fn move_archive(
        &self,
        req: &MigrateRequest,
        path: &std::path::Path,
        spec: &[u8],
    ) -> Result<(ReceiveResponse, u64, [u8; 32], Duration), Failed> {
        let t = Instant::now();
        let p = path.to_path_buf();
        let local = |e: String| Failed::NothingRestored(Status::internal(e));
        let (size, sha) = tokio::task::spawn_blocking(move || archive::digest_file(&p))
            .await
            .map_err(|e| local(format!("digest: {e}")))?
            .map_err(|e| local(e.to_string()))?;
        if size > self.s.max_archive_bytes {
            return Err(Failed::NothingRestored(Status::resource_exhausted(
                format!(
                    "the archive has {size} bytes, over this node's limit of {}",
                    self.s.max_archive_bytes
                ),
            )));
        }
        if self.s.faults.corrupt_archive {
            corrupt_one_byte(path).map_err(|e| local(format!("fault injection: {e}")))?;
        }
        if spec.len() > MAX_RESTORE_SPEC {
            return Err(local(format!(
                "the restore spec has {} bytes, over the limit of {MAX_RESTORE_SPEC}",
                spec.len()
            )));
        }
        let header = ArchiveHeader {
            container: req.container.clone(),
            size,
            sha256: sha.to_vec(),
            runtime: self.runtime.name().to_string(),
            restore_spec: spec.to_vec(),
        };
        let r = self.send(req, path, header).await?;
        Ok((r, size, sha, t.elapsed()))
    }
}

/// How a migration failed after the checkpoint.
#[derive(Debug)]
enum Failed {
    /// The target restored nothing: the source may restore in place.
    NothingRestored(Status),
    /// The call broke after the whole archive was sent: the target may have restored
    /// it, so the source must not (two copies would answer the same connections).
    Unknown(Status),
}

/// Metadata key of a target's error that guarantees nothing was restored.
pub const NOTHING_RESTORED: &str = "x-p4lb-nothing-restored";

fn target_restored_nothing(s: &Status) -> bool {
    s.metadata()
        .get(NOTHING_RESTORED)
        .is_some_and(|v| v.as_bytes() == b"1")
}

/// `s` marked as an error after which nothing is restored on this node.
fn nothing_restored(s: Status) -> Status {
    let mut md = tonic::metadata::MetadataMap::new();
    md.insert(
        NOTHING_RESTORED,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    Status::with_metadata(s.code(), s.message(), md)
}

/// Flips the middle byte of a file (fault injection).
fn corrupt_one_byte(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mid = f.metadata()?.len() / 2;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(mid))?;
    f.read_exact(&mut b)?;
    f.seek(SeekFrom::Start(mid))?;
    f.write_all(&[b[0] ^ 0xff])
}

#[tonic::async_trait]
impl<R: Runtime> Agent for AgentService<R> {
    async fn migrate(
        &self,
        request: Request<MigrateRequest>,
    ) -> Result<Response<MigrateResponse>, Status> {
        let s = &self.inner.s;
        let who = self.inner.authorize(&request, &s.admins, "Migrate")?;
        let req = request.into_inner();
        if !valid_name(&req.container) {
            return Err(Status::invalid_argument(format!(
                "invalid container name {:?}",
                req.container
            )));
        }
        if !valid_name(&req.target_node) {
            return Err(Status::invalid_argument(format!(
                "invalid target node name {:?}",
                req.target_node
            )));
        }
        if req.target_node == s.node {
            return Err(Status::invalid_argument(format!(
                "{} is already on node {}",
                req.container, s.node
            )));
        }
        if !req.target_address.starts_with("https://") {
            return Err(Status::invalid_argument(format!(
                "target address {:?}: agents are reached over https:// only",
                req.target_address
            )));
        }
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.migrate(who, req).await })
            .await
            .map_err(|e| Status::internal(format!("the migration task failed: {e}")))?
            .map(Response::new)
    }

    async fn receive(
        &self,
        request: Request<Streaming<ArchivePart>>,
    ) -> Result<Response<ReceiveResponse>, Status> {
        self.inner
            .receive(request)
            .await
            .map(Response::new)
            .map_err(nothing_restored)
    }

    async fn inspect(
        &self,
        request: Request<InspectRequest>,
    ) -> Result<Response<InspectResponse>, Status> {
        self.inner.inspect(request).await.map(Response::new)
    }

    async fn node_info(
        &self,
        request: Request<NodeInfoRequest>,
    ) -> Result<Response<NodeInfoResponse>, Status> {
        let s = &self.inner.s;
        let allowed: Vec<String> = s.admins.iter().chain(&s.peers).cloned().collect();
        self.inner.authorize(&request, &allowed, "NodeInfo")?;
        Ok(Response::new(NodeInfoResponse {
            node: s.node.clone(),
            runtime: self.inner.runtime.name().to_string(),
            max_archive_bytes: s.max_archive_bytes,
        }))
    }
}

impl<R: Runtime> Inner<R> {
    /// A container of this node, for an admin.
    async fn inspect(&self, request: Request<InspectRequest>) -> Result<InspectResponse, Status> {
        self.authorize(&request, &self.s.admins, "Inspect")?;
        let c = request.into_inner().container;
        if !valid_name(&c) {
            return Err(Status::invalid_argument(format!(
                "invalid container name {c:?}"
            )));
        }
        let i = self
            .blocking(move |r| r.inspect(&c))
            .await
            .map_err(runtime_status)?;
        Ok(InspectResponse {
            node: self.s.node.clone(),
            id: i.id,
            name: i.name,
            state: i.state,
            address: i.address,
        })
    }

    /// A migration of `req.container` asked for by `who` (checked), on its own task.
    async fn migrate(&self, who: String, req: MigrateRequest) -> Result<MigrateResponse, Status> {
        let c = req.container.clone();
        let source = self
            .blocking(move |r| r.inspect(&c))
            .await
            .map_err(runtime_status)?;
        if source.state != "running" {
            return Err(Status::failed_precondition(format!(
                "container {} on node {} is {}, not running",
                req.container, self.s.node, source.state
            )));
        }
        let _busy = {
            if !self.busy.insert(&source.name, &req.target_node) {
                return Err(Status::aborted(format!(
                    "a migration of {} is already running",
                    source.name
                )));
            }
            BusyGuard {
                set: self.busy.clone(),
                name: source.name.clone(),
            }
        };
        tracing::info!(container = %req.container, target = %req.target_node, by = %who, "migrating");
        let total = Instant::now();
        let path = self.outgoing(&source.name);
        let t = Instant::now();
        let (c, p) = (source.name.clone(), path.clone());
        let spec = match self.blocking(move |r| r.checkpoint(&c, &p)).await {
            Ok(spec) => spec,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(Status::failed_precondition(format!(
                    "checkpoint of {} on node {} failed (nothing was moved): {e}",
                    source.name, self.s.node
                )));
            }
        };
        let checkpoint = t.elapsed();
        let moved = self.move_archive(&req, &path, &spec).await;
        let (got, size, sha, transfer_and_restore) = match moved {
            Ok(x) => x,
            Err(Failed::NothingRestored(e)) => {
                return Err(self
                    .restore_on_source(&source.name, &path, spec, &req, e)
                    .await)
            }
            Err(Failed::Unknown(e)) => {
                return Err(self.unknown(&source.name, &path, &spec, &req, e))
            }
        };
        let _ = std::fs::remove_file(&path);
        let t = Instant::now();
        let c = source.name.clone();
        if let Err(e) = self.blocking(move |r| r.remove(&c)).await {
            tracing::warn!(container = %source.name, "the checkpointed source was not removed: {e}");
        }
        let cleanup = t.elapsed();
        let restore = Duration::from_micros(u64::try_from(got.restore_us).unwrap_or(0));
        Ok(MigrateResponse {
            container: source.name,
            source_node: self.s.node.clone(),
            target_node: got.node,
            source_address: source.address,
            target_address: got.address,
            archive_bytes: size,
            archive_sha256: archive::hex(&sha),
            times: Some(PhaseTimes {
                checkpoint_us: micros(checkpoint),
                transfer_us: micros(transfer_and_restore.saturating_sub(restore)),
                restore_us: got.restore_us,
                cleanup_us: micros(cleanup),
                total_us: micros(total.elapsed()),
            }),
        })
    }

    /// An archive from a peer: checked, then restored (restore and the clean-up of a
    /// failed one run on the blocking pool to their end, whatever happens to the call).
    async fn receive(
        &self,
        request: Request<Streaming<ArchivePart>>,
    ) -> Result<ReceiveResponse, Status> {
        let who = self.authorize(&request, &self.s.peers, "Receive")?;
        let _permit = self.receives.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "node {} is already receiving {MAX_CONCURRENT_RECEIVES} archives",
                self.s.node
            ))
        })?;
        let parts = request.into_inner();
        // Whether the node already has a container of that name: asked while the
        // archive arrives.
        let mut exists = None;
        let on_header = |h: &ArchiveHeader| {
            let (rt, c) = (self.runtime.clone(), h.container.clone());
            exists = Some(tokio::task::spawn_blocking(move || rt.inspect(&c)));
            if self.s.faults.pause_receive {
                tracing::warn!(container = %h.container, "fault injection: stopping this agent mid-transfer");
                if let Err(e) = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP) {
                    tracing::warn!("fault injection: SIGSTOP: {e}");
                }
            }
        };
        let got = archive::receive(parts, &self.s.work_dir, self.s.max_archive_bytes, on_header)
            .await
            .map_err(|e| {
                tracing::warn!(from = %who, "archive refused: {e}");
                Status::new(
                    archive_status(&e),
                    format!(
                        "node {} refused the archive from {who} (nothing restored): {e}",
                        self.s.node
                    ),
                )
            })?;
        let size = got.header.size;
        let container = got.header.container.clone();
        let sender = match got.header.runtime.as_str() {
            "" => "podman",
            r => r,
        };
        if sender != self.runtime.name() {
            return Err(Status::failed_precondition(format!(
                "node {} runs {}, the archive of {container} is a {sender} checkpoint                  (nothing restored)",
                self.s.node,
                self.runtime.name()
            )));
        }
        if got.header.restore_spec.len() > MAX_RESTORE_SPEC {
            return Err(Status::invalid_argument(format!(
                "the restore spec of {container} has {} bytes, over the limit of                  {MAX_RESTORE_SPEC} (nothing restored)",
                got.header.restore_spec.len()
            )));
        }
        let spec = got.header.restore_spec.clone();
        let exists = match exists {
            Some(h) => h
                .await
                .map_err(|e| Status::internal(format!("inspect: {e}")))?,
            None => return Err(Status::internal("no header seen")),
        };
        match exists {
            Err(RuntimeError::NotFound(_)) => {}
            Ok(_) => {
                return Err(Status::already_exists(format!(
                    "node {} already has a container {container} (nothing restored)",
                    self.s.node
                )))
            }
            Err(e) => {
                return Err(Status::failed_precondition(format!(
                    "node {} could not tell whether it already has a container {container} \
                     (nothing restored): {e}",
                    self.s.node
                )))
            }
        }
        tracing::info!(from = %who, %container, size, "archive received, restoring");
        let t = Instant::now();
        let c = container.clone();
        let restored = self
            .blocking(move |r| {
                let file = got.file;
                let res = r.restore_archive(&file, &spec);
                if res.is_err() {
                    // Whatever a failed restore left of the container (there was none
                    // of that name before).
                    if let Err(e) = r.remove(&c) {
                        tracing::debug!(container = %c, "after a failed restore: {e}");
                    }
                }
                res
            })
            .await;
        let restore = t.elapsed();
        let c = restored.map_err(|e| {
            Status::failed_precondition(format!(
                "restore of {container} on node {} failed: {e}",
                self.s.node
            ))
        })?;
        Ok(ReceiveResponse {
            node: self.s.node.clone(),
            container: c.name,
            address: c.address,
            received_bytes: size,
            restore_us: micros(restore),
        })
    }

    /// After a failure `why` past the checkpoint: restores `container` in place and
    /// returns the error to answer (ABORTED: restored here; INTERNAL: not, with the
    /// commands that do it by hand).
    async fn restore_on_source(
        &self,
        container: &str,
        archive: &std::path::Path,
        spec: Vec<u8>,
        req: &MigrateRequest,
        why: Status,
    ) -> Status {
        tracing::warn!(%container, target = %req.target_node, "migration failed, restoring on this node: {}", why.message());
        let (c, a, sp) = (container.to_string(), archive.to_path_buf(), spec.clone());
        let t = Instant::now();
        match self
            .blocking(move |r| r.restore_in_place(&c, &a, &sp))
            .await
        {
            Ok(()) => {
                let _ = std::fs::remove_file(archive);
                Status::aborted(format!(
                    "migration of {container} to {} failed: {}; {container} was restored on {} ({} ms)",
                    req.target_node,
                    why.message(),
                    self.s.node,
                    t.elapsed().as_millis()
                ))
            }
            Err(e) => Status::internal(format!(
                "migration of {container} to {} failed: {}; restoring it on {} failed too: {e}; \
                 restore it by hand on {}: `{}` (its archive is kept at {})",
                req.target_node,
                why.message(),
                self.s.node,
                self.s.node,
                self.runtime
                    .restore_in_place_command(container, archive, &spec),
                archive.display()
            )),
        }
    }

    /// After the call to the target broke once the whole archive was sent: the target
    /// may run the container, so it is not restored here; the error says how to decide.
    fn unknown(
        &self,
        container: &str,
        archive: &std::path::Path,
        spec: &[u8],
        req: &MigrateRequest,
        why: Status,
    ) -> Status {
        tracing::warn!(%container, target = %req.target_node, "migration outcome unknown: {}", why.message());
        Status::unknown(format!(
            "migration of {container} to {t}: {w}; the whole archive was sent and {t} may have \
             restored it, so it was not restored on {s}: look on {t} (`{ls}` there); if \
             {container} does not run there, restore it on {s}: `{cmd}` (its archive is kept \
             at {a})",
            t = req.target_node,
            w = why.message(),
            s = self.s.node,
            ls = self.runtime.list_command(),
            cmd = self
                .runtime
                .restore_in_place_command(container, archive, spec),
            a = archive.display()
        ))
    }
}
