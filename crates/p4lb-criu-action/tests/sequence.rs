//! The built `p4lb-criu-action` run exactly as CRIU runs it (one process per
//! action, CRTOOLS_* environment, image directory as /proc/<pid>/fd/<n>) against
//! a recording stand-in for the controller and real network namespaces: the
//! calls it makes at each step, the record in the images, the addresses moved
//! into the target namespace, exit codes and the failure policy.
//!
//! Needs root (network namespaces); without it the tests FAIL.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use p4lb_proto::api::controller_server::{Controller, ControllerServer};
use p4lb_proto::api::*;
use p4lb_testutil::NamedNetns;
use tonic::{Request, Response, Status};

const BIN: &str = env!("CARGO_BIN_EXE_p4lb-criu-action");

// ---------------------------------------------------------------- fake controller

#[derive(Default)]
struct Fake {
    /// netns inode → endpoint
    endpoints: HashMap<u64, Endpoint>,
    /// "GetEndpoint" or the phase name, in call order.
    calls: Vec<String>,
    events: Vec<MigrationEventRequest>,
    labels: Vec<UpdateEndpointMetadataRequest>,
}

#[derive(Clone)]
struct Svc(Arc<Mutex<Fake>>);

fn inode_of_pid(pid: u32) -> Result<u64, Status> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .map(|m| m.ino())
        .map_err(|e| Status::not_found(format!("pid {pid}: {e}")))
}

type R<T> = Result<Response<T>, Status>;
fn no<T>() -> R<T> {
    Err(Status::unimplemented("not used by the action script"))
}

#[tonic::async_trait]
impl Controller for Svc {
    async fn register_endpoint(&self, _: Request<RegisterEndpointRequest>) -> R<Endpoint> {
        no()
    }
    async fn deregister_endpoint(
        &self,
        _: Request<DeregisterEndpointRequest>,
    ) -> R<DeregisterEndpointResponse> {
        no()
    }
    async fn get_endpoint(&self, r: Request<GetEndpointRequest>) -> R<Endpoint> {
        let pid = r.into_inner().identity.map(|i| i.pid).unwrap_or(0);
        let ino = inode_of_pid(pid)?;
        let mut f = self.0.lock().unwrap();
        f.calls.push("GetEndpoint".into());
        f.endpoints
            .get(&ino)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no endpoint in pid {pid}")))
    }
    async fn list_endpoints(&self, _: Request<ListEndpointsRequest>) -> R<ListEndpointsResponse> {
        no()
    }
    async fn update_endpoint_metadata(
        &self,
        r: Request<UpdateEndpointMetadataRequest>,
    ) -> R<Endpoint> {
        let r = r.into_inner();
        let mut f = self.0.lock().unwrap();
        f.labels.push(r);
        no()
    }
    async fn garbage_collect(
        &self,
        _: Request<GarbageCollectRequest>,
    ) -> R<GarbageCollectResponse> {
        no()
    }
    async fn add_service(&self, _: Request<AddServiceRequest>) -> R<Service> {
        no()
    }
    async fn remove_service(&self, _: Request<RemoveServiceRequest>) -> R<RemoveServiceResponse> {
        no()
    }
    async fn list_services(&self, _: Request<ListServicesRequest>) -> R<ListServicesResponse> {
        no()
    }
    async fn migration_event(&self, r: Request<MigrationEventRequest>) -> R<Migration> {
        let r = r.into_inner();
        let phase = MigrationPhase::try_from(r.phase).unwrap_or(MigrationPhase::Unspecified);
        let pid = r.identity.as_ref().map(|i| i.pid).unwrap_or(0);
        let ino = inode_of_pid(pid)?;
        let mut f = self.0.lock().unwrap();
        f.calls.push(phase.as_str_name().to_string());
        f.events.push(r.clone());
        // Like the controller: the caller's endpoint comes with the answer, and LOCK or
        // RESTORE_STARTED from a namespace without one is NOT_FOUND.
        let endpoint = f.endpoints.get(&ino).cloned();
        if matches!(phase, MigrationPhase::Lock | MigrationPhase::RestoreStarted)
            && endpoint.is_none()
        {
            return Err(Status::not_found(format!(
                "{} pid {pid}",
                p4lb_api::NO_ENDPOINT_FOR_CALLER
            )));
        }
        if phase != MigrationPhase::Lock && r.migration_id != "mig-7" {
            return Err(Status::not_found(format!(
                "no migration {:?}",
                r.migration_id
            )));
        }
        let state = match phase {
            MigrationPhase::Lock => "locked",
            MigrationPhase::Checkpointed => "checkpointed",
            MigrationPhase::RestoreStarted => "restoring",
            MigrationPhase::RestoredAt => "restored",
            MigrationPhase::Abort => "aborted",
            _ => "done",
        };
        Ok(Response::new(Migration {
            id: "mig-7".into(),
            state: state.into(),
            endpoint,
            ..Default::default()
        }))
    }
    async fn list_migrations(
        &self,
        _: Request<ListMigrationsRequest>,
    ) -> R<ListMigrationsResponse> {
        no()
    }
    async fn get_migration(&self, _: Request<GetMigrationRequest>) -> R<Migration> {
        no()
    }
    async fn status(&self, _: Request<StatusRequest>) -> R<StatusResponse> {
        no()
    }
    async fn dump_tables(&self, _: Request<DumpTablesRequest>) -> R<DumpTablesResponse> {
        no()
    }
    async fn list_switch_ports(
        &self,
        _: Request<p4lb_proto::api::ListPortsRequest>,
    ) -> R<p4lb_proto::api::ListPortsResponse> {
        no()
    }
    async fn metrics(&self, _: Request<MetricsRequest>) -> R<MetricsResponse> {
        no()
    }
    type WatchStream = tokio_stream::Empty<Result<Event, Status>>;
    async fn watch(&self, _: Request<WatchRequest>) -> R<Self::WatchStream> {
        no()
    }
    async fn register_node(&self, _: Request<RegisterNodeRequest>) -> R<Node> {
        no()
    }
    async fn list_nodes(&self, _: Request<ListNodesRequest>) -> R<ListNodesResponse> {
        no()
    }
}

struct Server {
    state: Arc<Mutex<Fake>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(socket: &Path) -> Server {
        let state = Arc::new(Mutex::new(Fake::default()));
        let svc = Svc(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let socket = socket.to_path_buf();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::UnixListener::bind(&socket).unwrap();
                ready_tx.send(()).unwrap();
                tonic::transport::Server::builder()
                    .add_service(ControllerServer::new(svc))
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::UnixListenerStream::new(l),
                        async {
                            let _ = rx.await;
                        },
                    )
                    .await
                    .unwrap();
            });
        });
        ready_rx.recv().unwrap();
        Server {
            state,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().unwrap().calls)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------- namespaces, CRIU stand-in

/// A process alone in a new network namespace with a veth `eth0` carrying `addr`.
struct Netns {
    child: Child,
    ns: NamedNetns,
}

impl Netns {
    fn new(addr: &str) -> Netns {
        p4lb_testutil::require_root();
        let ns = NamedNetns::unique("p4ca");
        ns.add_veth("eth0", "peer0", None).expect("veth eth0/peer0");
        ns.link_up("peer0").expect("peer0 up");
        ns.link_up("eth0").expect("eth0 up");
        ns.add_addr("eth0", addr).expect("address on eth0");
        let child = ns
            .command("sleep")
            .arg("300")
            .stdin(Stdio::null())
            .spawn()
            .expect("sleep in the namespace");
        Netns { child, ns }
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn inode(&self) -> u64 {
        self.ns.netns().inode()
    }
    fn add_addr(&self, cidr: &str) {
        self.ns.add_addr("eth0", cidr).expect("address on eth0");
    }
    fn addrs(&self) -> Vec<Ipv4Addr> {
        p4lb_netns::NetNs::from_pid(self.pid())
            .and_then(|ns| ns.ipv4_addrs())
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stands in for the CRIU process: holds the image directory open, so the
/// action script sees CRTOOLS_IMAGE_DIR=/proc/<pid>/fd/3 like under CRIU.
struct Criu {
    child: Child,
}

impl Criu {
    fn new(images: &Path) -> Criu {
        let child = Command::new("sh")
            .args(["-c", "exec 3<\"$0\"; exec sleep 300"])
            .arg(images)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let c = Criu { child };
        for _ in 0..200 {
            if Path::new(&c.image_dir()).join(".").exists()
                && std::fs::read_link(c.image_dir()).is_ok()
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        c
    }
    fn image_dir(&self) -> String {
        format!("/proc/{}/fd/3", self.child.id())
    }
}

impl Drop for Criu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct World {
    dir: tempfile::TempDir,
    server: Option<Server>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("images")).unwrap();
        let server = Server::start(&dir.path().join("ctl.sock"));
        World {
            dir,
            server: Some(server),
        }
    }
    fn images(&self) -> PathBuf {
        self.dir.path().join("images")
    }
    fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }
    fn add_endpoint(
        &self,
        ns: &Netns,
        key: &str,
        ip: &str,
        migrated: &[&str],
        labels: &[(&str, &str)],
    ) {
        self.server().state.lock().unwrap().endpoints.insert(
            ns.inode(),
            Endpoint {
                key: key.into(),
                container_id: key.split('/').next().unwrap().into(),
                ifname: "eth0".into(),
                ip: ip.into(),
                prefix_len: 24,
                mac: "02:00:00:00:00:01".into(),
                netns_inode: ns.inode(),
                migrated_ips: migrated.iter().map(|s| s.to_string()).collect(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                network: "pods".into(),
                ..Default::default()
            },
        );
    }
    /// Runs one action; returns (exit code, stderr).
    fn act(
        &self,
        criu: &Criu,
        action: &str,
        init_pid: Option<u32>,
        extra: &[(&str, &str)],
    ) -> (i32, String) {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CRTOOLS_SCRIPT_ACTION", action)
            .env("CRTOOLS_IMAGE_DIR", criu.image_dir())
            .env("P4LB_CONTROLLER_SOCKET", self.dir.path().join("ctl.sock"))
            .env("P4LB_ACTION_STATE_DIR", self.dir.path().join("state"))
            .env("P4LB_ACTION_CONFIG", self.dir.path().join("none.toml"));
        if let Some(p) = init_pid {
            c.env("CRTOOLS_INIT_PID", p.to_string());
        }
        for (k, v) in extra {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
    fn ok(&self, criu: &Criu, action: &str, init_pid: Option<u32>) {
        let (code, err) = self.act(criu, action, init_pid, &[]);
        assert_eq!(code, 0, "{action} failed: {err}");
    }
    fn record(&self) -> serde_json::Value {
        let t = std::fs::read_to_string(self.images().join("p4lb-migration.json")).unwrap();
        serde_json::from_str(&t).unwrap()
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn checkpoint_then_restore_into_a_namespace_with_another_address() {
    let w = World::new();
    let src = Netns::new("10.88.0.5/24");
    // The container had already moved once: 10.88.0.9 came with it.
    src.add_addr("10.88.0.9/32");
    w.add_endpoint(&src, "a/eth0", "10.88.0.5", &["10.88.0.9"], &[]);

    let dump = Criu::new(&w.images());
    // pre-dump costs CRIU only the exec: LOCK's answer names the endpoint.
    w.ok(&dump, "pre-dump", Some(src.pid()));
    assert!(
        w.server().calls().is_empty(),
        "pre-dump needs no controller"
    );
    w.ok(&dump, "network-lock", Some(src.pid()));
    assert_eq!(w.server().calls(), ["LOCK"]);
    let rec = w.record();
    assert_eq!(rec["state"], "locked");
    assert_eq!(rec["source"]["key"], "a/eth0");
    w.ok(&dump, "post-dump", Some(src.pid()));
    assert_eq!(w.server().calls(), ["CHECKPOINTED"]);
    let rec = w.record();
    assert_eq!(rec["migration_id"], "mig-7");
    assert_eq!(rec["state"], "checkpointed");
    assert_eq!(rec["mode"], "migrate");
    assert_eq!(rec["leave_running"], false);
    assert_eq!(rec["source"]["ip"], "10.88.0.5");
    assert_eq!(
        rec["addresses"],
        serde_json::json!(["10.88.0.5", "10.88.0.9"])
    );
    {
        let s = w.server().state.lock().unwrap();
        let lock = &s.events[0];
        assert_eq!(lock.identity.as_ref().unwrap().pid, src.pid());
        assert!(
            lock.image_dir.ends_with("images"),
            "LOCK carries the real image dir: {}",
            lock.image_dir
        );
    }
    drop(dump);

    // The target: a new namespace with its own address, registered (locked) by CNI.
    let dst = Netns::new("10.88.0.6/24");
    w.add_endpoint(&dst, "b/eth0", "10.88.0.6", &[], &[]);
    let restore = Criu::new(&w.images());
    w.ok(&restore, "pre-restore", None);
    assert!(
        w.server().calls().is_empty(),
        "pre-restore needs no controller"
    );
    w.ok(&restore, "setup-namespaces", Some(dst.pid()));
    assert_eq!(w.server().calls(), ["RESTORE_STARTED"]);
    let addrs = dst.addrs();
    for a in ["10.88.0.6", "10.88.0.5", "10.88.0.9"] {
        assert!(addrs.contains(&a.parse().unwrap()), "{a} not in {addrs:?}");
    }
    w.ok(&restore, "post-setup-namespaces", Some(dst.pid()));
    // The switchover waits for pre-resume: UNLOCK repoints and releases at once.
    w.ok(&restore, "post-restore", Some(dst.pid()));
    assert!(
        w.server().calls().is_empty(),
        "post-restore needs no controller"
    );
    // CRIU lifts its own lock at network-unlock, before its tasks are restored: the
    // switch keeps holding until pre-resume.
    w.ok(&restore, "network-unlock", Some(dst.pid()));
    assert!(w.server().calls().is_empty());
    w.ok(&restore, "pre-resume", Some(dst.pid()));
    assert_eq!(w.server().calls(), ["UNLOCK"]);
    w.ok(&restore, "post-resume", Some(dst.pid()));
    assert!(w.server().calls().is_empty());
    let s = w.server().state.lock().unwrap();
    let started = &s.events[2];
    assert_eq!(started.migration_id, "mig-7");
    assert_eq!(started.source_ip, "10.88.0.5");
    assert_eq!(started.identity.as_ref().unwrap().pid, dst.pid());
    let unlock = &s.events[3];
    assert_eq!(unlock.phase, MigrationPhase::Unlock as i32);
    assert_eq!(unlock.source_ip, "10.88.0.5");
    assert_eq!(unlock.identity.as_ref().unwrap().pid, dst.pid());
    // The run state is gone after post-resume.
    let left: Vec<_> = std::fs::read_dir(w.dir.path().join("state"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// CRIU only logs a failed pre-resume script and resumes the tasks: the UNLOCK it
/// could not send is sent at post-resume, so the switch never keeps holding a
/// running container.
#[test]
fn post_resume_unlocks_when_pre_resume_could_not() {
    let mut w = World::new();
    let src = Netns::new("10.97.0.5/24");
    w.add_endpoint(&src, "a/eth0", "10.97.0.5", &[], &[]);
    let dump = Criu::new(&w.images());
    for a in ["pre-dump", "network-lock", "post-dump"] {
        w.ok(&dump, a, Some(src.pid()));
    }
    drop(dump);
    let dst = Netns::new("10.97.0.6/24");
    w.add_endpoint(&dst, "b/eth0", "10.97.0.6", &[], &[]);
    let restore = Criu::new(&w.images());
    w.ok(&restore, "pre-restore", None);
    for a in ["setup-namespaces", "post-restore", "network-unlock"] {
        w.ok(&restore, a, Some(dst.pid()));
    }
    w.server().calls();
    // The controller is away at pre-resume.
    w.server = None;
    let socket = w.dir.path().join("ctl.sock");
    let _ = std::fs::remove_file(&socket);
    let (code, err) = w.act(&restore, "pre-resume", Some(dst.pid()), &[]);
    assert_eq!(code, 1, "pre-resume without a controller must fail: {err}");
    // It is back for post-resume.
    w.server = Some(Server::start(&socket));
    w.ok(&restore, "post-resume", Some(dst.pid()));
    assert_eq!(w.server().calls(), ["UNLOCK"]);
    let left: Vec<_> = std::fs::read_dir(w.dir.path().join("state"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "the run state is gone: {left:?}");
}

/// A task that shares CRIU's network namespace: CRIU runs no network-lock at the
/// dump and no setup-namespaces at the restore. post-dump locks first, pre-resume
/// starts the restore first, and the calls are the same as in any other run.
#[test]
fn runs_without_network_lock_or_setup_namespaces_still_lock_and_switch_over() {
    let w = World::new();
    let src = Netns::new("10.98.0.5/24");
    w.add_endpoint(&src, "a/eth0", "10.98.0.5", &[], &[]);
    let dump = Criu::new(&w.images());
    w.ok(&dump, "pre-dump", Some(src.pid()));
    w.ok(&dump, "post-dump", Some(src.pid()));
    assert_eq!(w.server().calls(), ["LOCK", "CHECKPOINTED"]);
    assert_eq!(w.record()["state"], "checkpointed");
    drop(dump);
    let dst = Netns::new("10.98.0.6/24");
    w.add_endpoint(&dst, "b/eth0", "10.98.0.6", &[], &[]);
    let restore = Criu::new(&w.images());
    w.ok(&restore, "pre-restore", None);
    for a in [
        "post-restore",
        "network-unlock",
        "pre-resume",
        "post-resume",
    ] {
        w.ok(&restore, a, Some(dst.pid()));
    }
    assert_eq!(w.server().calls(), ["RESTORE_STARTED", "UNLOCK"]);
    assert!(dst.addrs().contains(&"10.98.0.5".parse().unwrap()));

    // A container that is no endpoint, dumped the same way: one refused LOCK.
    let other = Netns::new("10.98.1.5/24");
    let w = World::new();
    let dump = Criu::new(&w.images());
    for a in ["pre-dump", "post-dump", "network-unlock"] {
        w.ok(&dump, a, Some(other.pid()));
    }
    assert_eq!(w.server().calls(), ["LOCK"]);
    assert!(!w.images().join("p4lb-migration.json").exists());
}

#[test]
fn restore_into_a_namespace_that_already_has_the_address_adds_nothing() {
    let w = World::new();
    let src = Netns::new("10.89.0.5/24");
    w.add_endpoint(&src, "a/eth0", "10.89.0.5", &[], &[]);
    let dump = Criu::new(&w.images());
    for a in ["pre-dump", "network-lock", "post-dump"] {
        w.ok(&dump, a, Some(src.pid()));
    }
    let dst = Netns::new("10.89.0.7/24");
    dst.add_addr("10.89.0.5/32");
    w.add_endpoint(&dst, "b/eth0", "10.89.0.7", &[], &[]);
    let before = dst.addrs();
    let restore = Criu::new(&w.images());
    w.ok(&restore, "pre-restore", None);
    let (code, err) = w.act(&restore, "setup-namespaces", Some(dst.pid()), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("already present [10.89.0.5]"), "{err}");
    assert_eq!(dst.addrs(), before);
}

#[test]
fn leave_running_checkpoints_follow_the_checkpoint_label() {
    for (labels, want_mode, want_calls) in [
        (vec![], "snapshot", vec!["SNAPSHOT_DONE"]),
        (vec![("p4lb.io/checkpoint", "migrate")], "migrate", vec![]),
        (vec![("checkpoint", "migrate")], "migrate", vec![]),
        (
            vec![("p4lb.io/checkpoint", "snapshot")],
            "snapshot",
            vec!["SNAPSHOT_DONE"],
        ),
    ] {
        let w = World::new();
        let src = Netns::new("10.90.0.5/24");
        w.add_endpoint(&src, "a/eth0", "10.90.0.5", &[], &labels);
        let dump = Criu::new(&w.images());
        for a in ["pre-dump", "network-lock", "post-dump"] {
            w.ok(&dump, a, Some(src.pid()));
        }
        w.server().calls();
        // CRIU with --leave-running: network-unlock right after post-dump.
        w.ok(&dump, "network-unlock", Some(src.pid()));
        assert_eq!(w.server().calls(), want_calls, "{labels:?}");
        let rec = w.record();
        assert_eq!(rec["mode"], want_mode, "{labels:?}");
        assert_eq!(rec["leave_running"], true);
        // A migrated source stops answering and sending: its interface is down.
        let up = src
            .ns
            .exec(&["ip", "-o", "link", "show", "eth0", "up"])
            .unwrap();
        let is_up = !String::from_utf8_lossy(&up.stdout).trim().is_empty();
        assert_eq!(is_up, want_mode == "snapshot", "{labels:?}");
        // A snapshot's restore moves nothing and tells the controller nothing.
        if want_mode == "snapshot" {
            let dst = Netns::new("10.90.0.6/24");
            w.add_endpoint(&dst, "b/eth0", "10.90.0.6", &[], &[]);
            let restore = Criu::new(&w.images());
            for a in [
                "pre-restore",
                "setup-namespaces",
                "post-restore",
                "network-unlock",
            ] {
                w.ok(&restore, a, Some(dst.pid()).filter(|_| a != "pre-restore"));
            }
            assert!(w.server().calls().is_empty());
            assert!(!dst.addrs().contains(&"10.90.0.5".parse().unwrap()));
        }
    }
}

#[test]
fn failed_dump_aborts_the_migration() {
    let w = World::new();
    let src = Netns::new("10.91.0.5/24");
    w.add_endpoint(&src, "a/eth0", "10.91.0.5", &[], &[]);
    let dump = Criu::new(&w.images());
    w.ok(&dump, "pre-dump", Some(src.pid()));
    w.ok(&dump, "network-lock", Some(src.pid()));
    w.server().calls();
    // CRIU failed before post-dump: it runs network-unlock.
    w.ok(&dump, "network-unlock", Some(src.pid()));
    assert_eq!(w.server().calls(), ["ABORT"]);
}

#[test]
fn containers_that_are_not_endpoints_are_left_alone() {
    let w = World::new();
    let ns = Netns::new("10.92.0.5/24");
    let dump = Criu::new(&w.images());
    for a in ["pre-dump", "network-lock", "post-dump", "network-unlock"] {
        w.ok(&dump, a, Some(ns.pid()));
    }
    // One LOCK, refused with NOT_FOUND: the container is left alone after it.
    assert_eq!(w.server().calls(), ["LOCK"]);
    assert!(!w.images().join("p4lb-migration.json").exists());
    // Images without a record restore without the controller.
    let restore = Criu::new(&w.images());
    for a in [
        "pre-restore",
        "setup-namespaces",
        "post-restore",
        "network-unlock",
        "post-resume",
    ] {
        w.ok(&restore, a, Some(ns.pid()).filter(|_| a != "pre-restore"));
    }
    assert!(w.server().calls().is_empty());
}

#[test]
fn controller_down_fails_loudly_unless_ignored() {
    let mut w = World::new();
    let ns = Netns::new("10.93.0.5/24");
    w.server = None; // stop the controller
    let dump = Criu::new(&w.images());
    // pre-dump has no work: it needs no controller.
    let (code, err) = w.act(&dump, "pre-dump", Some(ns.pid()), &[]);
    assert_eq!(code, 0, "{err}");
    let t = std::time::Instant::now();
    let (code, err) = w.act(&dump, "network-lock", Some(ns.pid()), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unavailable"), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    let (code, err) = w.act(
        &dump,
        "network-lock",
        Some(ns.pid()),
        &[("P4LB_ACTION_POLICY", "ignore-controller")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("ignore-controller"), "{err}");
    // The configuration file says the same.
    std::fs::write(
        w.dir.path().join("none.toml"),
        "policy = \"ignore-controller\"\n",
    )
    .unwrap();
    let (code, err) = w.act(&dump, "network-lock", Some(ns.pid()), &[]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(w.dir.path().join("none.toml"), "policy = 3\n").unwrap();
    let (code, err) = w.act(&dump, "network-lock", Some(ns.pid()), &[]);
    assert_eq!(code, 1, "a broken configuration must fail: {err}");
}

#[test]
fn corrupt_records_are_refused_and_kept() {
    let w = World::new();
    let body = b"{\"version\": 1, \"migration_id\": 5}";
    std::fs::write(w.images().join("p4lb-migration.json"), body).unwrap();
    let restore = Criu::new(&w.images());
    let (code, err) = w.act(&restore, "pre-restore", None, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a p4lb migration record"), "{err}");
    assert_eq!(
        std::fs::read(w.images().join("p4lb-migration.json")).unwrap(),
        body
    );
    assert!(w.server().calls().is_empty());
}

#[test]
fn target_without_an_endpoint_fails_the_restore() {
    let w = World::new();
    let src = Netns::new("10.94.0.5/24");
    w.add_endpoint(&src, "a/eth0", "10.94.0.5", &[], &[]);
    let dump = Criu::new(&w.images());
    for a in ["pre-dump", "network-lock", "post-dump"] {
        w.ok(&dump, a, Some(src.pid()));
    }
    let dst = Netns::new("10.94.0.6/24");
    let restore = Criu::new(&w.images());
    w.ok(&restore, "pre-restore", None);
    let (code, err) = w.act(&restore, "setup-namespaces", Some(dst.pid()), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not a p4lb endpoint"), "{err}");
    assert!(err.contains("mig-7"), "{err}");
    // Not excused by the policy: the controller answered.
    let ignore = [("P4LB_ACTION_POLICY", "ignore-controller")];
    let (code, err) = w.act(&restore, "setup-namespaces", Some(dst.pid()), &ignore);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not a p4lb endpoint"), "{err}");
    assert!(!dst.addrs().contains(&"10.94.0.5".parse().unwrap()));
}

/// The addresses go into the target while the controller answers, on the source's
/// interface name; a target whose interface is named otherwise gets them there, and
/// none stay on the other interface.
#[test]
fn a_target_interface_named_otherwise_gets_the_addresses_and_the_guess_is_undone() {
    let w = World::new();
    let src = Netns::new("10.93.0.5/24");
    w.add_endpoint(&src, "a/eth0", "10.93.0.5", &[], &[]);
    let dump = Criu::new(&w.images());
    for a in ["pre-dump", "network-lock", "post-dump"] {
        w.ok(&dump, a, Some(src.pid()));
    }
    let dst = Netns::new("10.93.0.6/24");
    dst.ns
        .add_veth("net1", "peer1", None)
        .expect("veth net1/peer1");
    dst.ns.link_up("net1").expect("net1 up");
    w.add_endpoint(&dst, "b/net1", "10.93.0.6", &[], &[]);
    w.server()
        .state
        .lock()
        .unwrap()
        .endpoints
        .get_mut(&dst.inode())
        .unwrap()
        .ifname = "net1".into();
    let restore = Criu::new(&w.images());
    w.ok(&restore, "pre-restore", None);
    w.ok(&restore, "setup-namespaces", Some(dst.pid()));
    assert_eq!(dst.ns.ipv4_addrs("net1").unwrap(), vec!["10.93.0.5/32"]);
    assert_eq!(dst.ns.ipv4_addrs("eth0").unwrap(), vec!["10.93.0.6/24"]);
}

#[test]
fn odd_invocations() {
    let w = World::new();
    let c = Criu::new(&w.images());
    let (code, err) = w.act(&c, "orphan-pts-master", None, &[]);
    assert_eq!(code, 0, "unknown actions are ignored: {err}");
    let out = Command::new(BIN).env_clear().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CRTOOLS_SCRIPT_ACTION"));
    let (code, err) = w.act(&c, "network-lock", None, &[("CRTOOLS_INIT_PID", "x")]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn restore_with_controller_down_and_ignore_policy_still_moves_the_addresses() {
    let mut w = World::new();
    let src = Netns::new("10.95.0.5/24");
    w.add_endpoint(&src, "a/eth0", "10.95.0.5", &[], &[]);
    let dump = Criu::new(&w.images());
    for a in ["pre-dump", "network-lock", "post-dump"] {
        w.ok(&dump, a, Some(src.pid()));
    }
    w.server = None;
    let dst = Netns::new("10.95.0.6/24");
    let restore = Criu::new(&w.images());
    w.ok(&restore, "pre-restore", None);
    // strict: the restore stops here
    let (code, err) = w.act(&restore, "setup-namespaces", Some(dst.pid()), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(!dst.addrs().contains(&"10.95.0.5".parse().unwrap()));
    // ignore-controller: the sockets can still bind
    let ignore = [("P4LB_ACTION_POLICY", "ignore-controller")];
    for a in [
        "setup-namespaces",
        "post-restore",
        "network-unlock",
        "post-resume",
    ] {
        let (code, err) = w.act(&restore, a, Some(dst.pid()), &ignore);
        assert_eq!(code, 0, "{a}: {err}");
    }
    assert!(dst.addrs().contains(&"10.95.0.5".parse().unwrap()));
}

/// CRIU reads /etc/criu/default.conf and then the runtime's file (runc.conf,
/// crun.conf) and adds up their action scripts. Packaging names the script in
/// default.conf only, but a host that also names it in the runtime's file runs
/// it twice per action: two runs must have the effect of one.
#[test]
fn every_action_twice_has_the_effect_of_once() {
    let w = World::new();
    let src = Netns::new("10.96.0.5/24");
    w.add_endpoint(&src, "a/eth0", "10.96.0.5", &[], &[]);
    let dump = Criu::new(&w.images());
    for a in ["pre-dump", "network-lock", "post-dump"] {
        w.ok(&dump, a, Some(src.pid()));
        w.ok(&dump, a, Some(src.pid()));
    }
    assert_eq!(w.server().calls(), ["LOCK", "CHECKPOINTED"]);
    drop(dump);
    let dst = Netns::new("10.96.0.6/24");
    w.add_endpoint(&dst, "b/eth0", "10.96.0.6", &[], &[]);
    let restore = Criu::new(&w.images());
    for a in [
        "pre-restore",
        "setup-namespaces",
        "post-setup-namespaces",
        "post-restore",
        "network-unlock",
        "pre-resume",
        "post-resume",
    ] {
        let pid = Some(dst.pid()).filter(|_| a != "pre-restore");
        w.ok(&restore, a, pid);
        w.ok(&restore, a, pid);
    }
    assert_eq!(w.server().calls(), ["RESTORE_STARTED", "UNLOCK"]);
    assert!(dst.addrs().contains(&"10.96.0.5".parse().unwrap()));
}
