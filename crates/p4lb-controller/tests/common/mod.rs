//! Test harness: p4lb's software switch (started by the test, in-process, on a Unix
//! socket) and a controller (in-process or the real binary) programming it.

#![allow(dead_code)]

pub mod bmv2;
pub mod fake_thrift;
pub mod packet;
pub mod pki;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use p4lb_controller::config::Config;
use p4lb_controller::entries::{format_action, format_match};
use p4lb_controller::southbound::session::{self, connect_channel};
use p4lb_controller::Controller;
use p4lb_p4::entries::{self, canonicalize};
use p4lb_proto::api::{self, controller_client::ControllerClient};
use p4lb_proto::p4runtime::{entity, Entity, TableEntry};
use tonic::transport::Channel;

/// Starts the software switch on `sock`.
pub async fn start_switch(sock: &Path) -> p4lb_switch::SwitchHandle {
    p4lb_switch::serve(p4lb_switch::SwitchConfig {
        grpc_addr: p4lb_switch::GrpcAddr::Unix(sock.to_path_buf()),
        ..Default::default()
    })
    .await
    .expect("starting the software switch")
}

pub fn config(dir: &Path, switch_sock: &Path) -> Config {
    let mut c = Config {
        state_dir: dir.join("state"),
        ..Default::default()
    };
    c.api.socket = dir.join("api.sock");
    c.switch.address = format!("unix:{}", switch_sock.display());
    c.conn.idle_timeout_ms = 0;
    c
}

/// In-process controller with its API served on a Unix socket.
pub struct Ctl {
    pub ctl: Arc<Controller>,
    pub client: ControllerClient<Channel>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Ctl {
    pub async fn start(cfg: Config) -> Ctl {
        let sock = cfg.api.socket.clone();
        let ctl = Controller::start(cfg).await.expect("controller start");
        let (stop, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(p4lb_controller::server::serve(ctl.clone(), rx));
        let deadline = Instant::now() + Duration::from_secs(5);
        // The socket file appears at bind(), a moment before listen(): wait until a
        // connection is accepted, not only for the file.
        while std::os::unix::net::UnixStream::connect(&sock).is_err() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let client = api_client(&sock).await.expect("connect API");
        assert!(
            ctl.wait_synced(Duration::from_secs(5)).await,
            "controller did not program the switch"
        );
        Ctl {
            ctl,
            client,
            stop,
            task,
        }
    }

    /// Every migration the controller lists.
    pub async fn migrations(&mut self) -> Vec<api::Migration> {
        self.client
            .list_migrations(api::ListMigrationsRequest {})
            .await
            .expect("ListMigrations")
            .into_inner()
            .migrations
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.ctl.shutdown().await;
    }
}

/// Spawns the real `p4lb-controller` binary with its state and API socket in `dir`,
/// against the switch on `ssock`.
pub fn spawn_controller(dir: &std::path::Path, ssock: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_p4lb-controller"))
        .args([
            "--config",
            "/dev/null",
            "--state-dir",
            dir.join("state").to_str().unwrap(),
            "--socket",
            dir.join("api.sock").to_str().unwrap(),
            "--switch-address",
            &format!("unix:{}", ssock.display()),
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawning p4lb-controller")
}

/// Waits until the controller in `dir` answers and is ready; returns a client.
pub async fn client_ready(
    dir: &std::path::Path,
) -> p4lb_proto::api::controller_client::ControllerClient<tonic::transport::Channel> {
    let sock = dir.join("api.sock");
    let ok = eventually(Duration::from_secs(10), || {
        let s = sock.clone();
        async move {
            match api_client(&s).await {
                Ok(mut c) => c
                    .status(api::StatusRequest {})
                    .await
                    .map(|r| r.into_inner().ready)
                    .unwrap_or(false),
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(ok, "controller did not become ready");
    api_client(&sock).await.unwrap()
}

/// A client of the controller API on `sock` (the generated client, for calls the
/// tests make with their own requests).
pub async fn api_client(
    sock: &Path,
) -> Result<
    p4lb_proto::api::controller_client::ControllerClient<tonic::transport::Channel>,
    p4lb_api::ConnectError,
> {
    let ch = p4lb_api::connect_unix(sock, Duration::from_secs(5)).await?;
    Ok(p4lb_proto::api::controller_client::ControllerClient::new(
        ch,
    ))
}

/// Reads every table of the switch directly over P4Runtime (as a second client).
pub async fn read_all(switch_sock: &Path) -> BTreeMap<&'static str, Vec<TableEntry>> {
    try_read_all(switch_sock)
        .await
        .expect("reading the switch tables")
}

/// Like [`read_all`], but an error (switch not up, no pipeline yet) is returned.
pub async fn try_read_all(
    switch_sock: &Path,
) -> Result<BTreeMap<&'static str, Vec<TableEntry>>, String> {
    let ch = connect_channel(
        &format!("unix:{}", switch_sock.display()),
        Duration::from_secs(2),
    )
    .await?;
    let mut c = session::client(ch);
    let mut out = BTreeMap::new();
    for table in p4lb_p4::tables::ALL {
        let read = session::read_entities(
            &mut c,
            0,
            vec![table_entity(entries::entry(table.id, Vec::new(), None))],
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut v = Vec::new();
        for e in read {
            if let Some(entity::Entity::TableEntry(mut t)) = e.entity {
                canonicalize(&mut t);
                t.counter_data = None;
                t.time_since_last_hit = None;
                v.push(t);
            }
        }
        v.sort_by_key(|e| format!("{} {}", format_match(e), format_action(e)));
        out.insert(p4lb_p4::short_name(table.name), v);
    }
    Ok(out)
}

fn table_entity(e: TableEntry) -> Entity {
    Entity {
        entity: Some(entity::Entity::TableEntry(e)),
    }
}

/// Human-readable rows of one table.
pub fn rows(t: &[TableEntry]) -> Vec<String> {
    t.iter()
        .map(|e| format!("{} -> {}", format_match(e), format_action(e)))
        .collect()
}

/// A veth pair for a test: `host` and `<host>p`, both up, removed on drop. Needs root.
pub struct Veth {
    pub host: String,
    pub peer: String,
    _pair: p4lb_testutil::Veth,
}

impl Veth {
    pub fn new(host: &str) -> Veth {
        let peer = format!("{host}p");
        let pair = p4lb_testutil::Veth::new(host, &peer)
            .unwrap_or_else(|e| panic!("creating veth {host} failed (these tests need root): {e}"));
        Veth {
            host: host.to_string(),
            peer,
            _pair: pair,
        }
    }
}

/// A migration event naming its endpoint by key (as a node's calls over TCP do).
pub fn event_for_key(
    phase: api::MigrationPhase,
    key: &str,
    id: &str,
) -> api::MigrationEventRequest {
    api::MigrationEventRequest {
        phase: phase as i32,
        endpoint_key: key.to_string(),
        migration_id: id.to_string(),
        ..Default::default()
    }
}

pub fn register_req(cid: &str, ip: &str, mac: &str, host_if: &str) -> api::RegisterEndpointRequest {
    api::RegisterEndpointRequest {
        container_id: cid.to_string(),
        ifname: "eth0".to_string(),
        netns_path: String::new(),
        ip: ip.to_string(),
        prefix_len: 24,
        mac: mac.to_string(),
        gateway: "10.88.0.1".to_string(),
        host_ifname: host_if.to_string(),
        labels: [("app".to_string(), "web".to_string())]
            .into_iter()
            .collect(),
        network: "p4lb".to_string(),
        ..Default::default()
    }
}

pub fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::Builder::new()
        .prefix("p4lbc")
        .tempdir_in("/tmp")
        .unwrap();
    let p = d.path().to_path_buf();
    (d, p)
}

/// Waits until `f` holds (polling), up to `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Environment variable that turns a test binary into a switch process (see
/// [`spawn_switch_process`]).
pub const SWITCH_CHILD_ENV: &str = "P4LB_TEST_SWITCH_SOCK";

/// Runs the software switch in a child process (this test binary, re-executed to
/// run only its `switch_process` helper), so a test can SIGKILL it like a crashed
/// switch. Returns when the switch is listening.
pub async fn spawn_switch_process(sock: &Path) -> std::process::Child {
    let _ = std::fs::remove_file(sock);
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "switch_process", "--ignored", "--nocapture"])
        .env(SWITCH_CHILD_ENV, sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawning the switch process");
    let s = sock.to_path_buf();
    assert!(
        eventually(Duration::from_secs(10), || {
            let s = s.clone();
            async move { s.exists() }
        })
        .await,
        "switch process did not start"
    );
    child
}

/// Body of the `switch_process` helper: serve until killed.
pub async fn switch_process_main() {
    let Some(sock) = std::env::var_os(SWITCH_CHILD_ENV) else {
        println!("SKIPPED: switch_process is a helper run by other tests");
        return;
    };
    let _h = start_switch(Path::new(&sock)).await;
    futures::future::pending::<()>().await;
}

/// A uniquely named network namespace with `lo` up and `addrs` as /32 on it, removed
/// on drop.
pub struct Netns(pub p4lb_testutil::NamedNetns);

impl Netns {
    pub fn new(prefix: &str, addrs: &[&str]) -> Netns {
        let ns = p4lb_testutil::NamedNetns::unique(prefix);
        ns.link_up("lo").expect("lo up");
        for a in addrs {
            ns.add_addr("lo", &format!("{a}/32"))
                .expect("adding an address");
        }
        Netns(ns)
    }

    pub fn path(&self) -> String {
        self.0.path().display().to_string()
    }

    /// The identity a caller inside this namespace claims.
    pub fn id(&self) -> Option<api::Identity> {
        Some(api::Identity {
            pid: 0,
            netns_path: self.path(),
        })
    }
}

/// A migration event sent from `ns`, naming migration `id` and the source address
/// `source_ip` (either may be empty).
pub fn event(
    phase: api::MigrationPhase,
    ns: &Netns,
    id: &str,
    source_ip: &str,
) -> api::MigrationEventRequest {
    api::MigrationEventRequest {
        phase: phase as i32,
        identity: ns.id(),
        migration_id: id.to_string(),
        source_ip: source_ip.to_string(),
        ..Default::default()
    }
}

/// Waits up to 20 s for `child` to exit and returns its status and stderr; `what`
/// names the failure when it keeps running (it is then killed).
pub fn exit_of(mut child: std::process::Child, what: &str) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut err).unwrap();
    }
    (status, err)
}

/// The state persisted in `dir/state` (`state.json` and the journal's last record),
/// as a new controller would load it, in the JSON form of `state.json`.
pub fn persisted_json(dir: &Path) -> serde_json::Value {
    let state = p4lb_controller::store::Store::open(&dir.join("state"))
        .expect("state dir")
        .load()
        .expect("the persisted state loads");
    serde_json::to_value(&state).expect("the state encodes")
}
