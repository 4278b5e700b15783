//! Who may use the switch and how much one client may ask of it: the root-only Unix socket
//! (SO_PEERCRED checked on every call), loopback-only TCP, and the limits on pipeline
//! configs, entries and messages (refused, never an abort).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use p4lb_controller::southbound::session::set_pipeline_request;
use p4lb_p4::{entries, externs};
use p4lb_proto::api::switch_ports_client::SwitchPortsClient;
use p4lb_proto::p4runtime as p4;
use p4lb_proto::p4runtime::set_forwarding_pipeline_config_request::Action;
use p4lb_proto::p4runtime::update::Type;
use p4lb_switch::{serve, GrpcAddr, SwitchConfig, SwitchHandle};
use support::p4rt::{self, Session};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Code;

/// The nobody user.
const NOBODY: u32 = 65534;

async fn start_unix(sock: &Path) -> SwitchHandle {
    serve(SwitchConfig {
        grpc_addr: GrpcAddr::Unix(sock.to_path_buf()),
        device_id: 3,
        ..Default::default()
    })
    .await
    .expect("switch on a Unix socket")
}

/// Connects to `path` with effective uid `uid`: a thread of its own switches its euid with
/// the raw system call (glibc's setresuid would switch every thread of the test process),
/// connects, and switches back. The kernel records the connecting euid for SO_PEERCRED.
fn connect_as(uid: u32, path: &Path) -> std::io::Result<std::os::unix::net::UnixStream> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        const KEEP: libc::uid_t = libc::uid_t::MAX;
        // SAFETY: setresuid takes three integers and changes this thread's credentials only.
        if unsafe { libc::syscall(libc::SYS_setresuid, KEEP, uid, KEEP) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let r = std::os::unix::net::UnixStream::connect(&path);
        // SAFETY: as above; the saved uid is still root, so this succeeds.
        let back = unsafe { libc::syscall(libc::SYS_setresuid, KEEP, 0 as libc::uid_t, KEEP) };
        assert_eq!(back, 0, "restoring euid 0");
        r
    })
    .join()
    .expect("connecting thread")
}

/// A gRPC channel over an already connected stream.
async fn channel_over(stream: std::os::unix::net::UnixStream) -> Channel {
    stream.set_nonblocking(true).expect("nonblocking");
    let slot = Arc::new(Mutex::new(Some(stream)));
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let s = slot.lock().expect("slot").take();
            async move {
                let s = s.ok_or_else(|| std::io::Error::other("the one stream is used"))?;
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::from_std(s)?))
            }
        }))
        .await
        .expect("channel over the stream")
}

#[tokio::test]
async fn a_non_root_caller_is_refused_even_on_an_open_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p4rt.sock");
    let h = start_unix(&sock).await;
    // Someone loosens the permissions by hand: the credential check still holds.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let ch = channel_over(connect_as(NOBODY, &sock).expect("connect as nobody")).await;

    let mut ports = SwitchPortsClient::new(ch.clone());
    let e = ports
        .list_ports(p4lb_proto::api::ListPortsRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("uid 65534"), "{}", e.message());
    let e = ports
        .add_port(p4lb_proto::api::AddPortRequest {
            port: 1,
            iface: "lo".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    let mut client = p4lb_controller::southbound::session::client(ch);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(p4rt::arbitration(3, 1 << 60)).await.unwrap();
    let e = match client
        .stream_channel(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Err(e) => e,
        Ok(s) => s
            .into_inner()
            .message()
            .await
            .expect_err("no arbitration for nobody"),
    };
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = client
        .set_forwarding_pipeline_config(set_pipeline_request(
            3,
            1 << 60,
            Action::VerifyAndCommit,
            Some(p4::ForwardingPipelineConfig {
                p4info: Some(p4rt::p4info()),
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Root still gets in.
    let (mut s, code) = Session::open(p4rt::channel(&h.endpoint()).await, 3, 1).await;
    assert_eq!(code, Code::Ok as i32);
    s.set_pipeline(Vec::new())
        .await
        .expect("root programs the switch");
    h.shutdown().await;
}

#[tokio::test]
async fn the_socket_is_root_only_in_a_directory_created_0700() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sub = dir.path().join("run").join("p4lb-switch");
    let sock = sub.join("switch.sock");
    let h = start_unix(&sock).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sub), 0o700);
    assert_eq!(mode(&sock), 0o600);
    std::fs::set_permissions(
        dir.path().join("run"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    // Even with the directory opened up, the socket itself refuses nobody.
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = connect_as(NOBODY, &sock).expect_err("nobody cannot connect");
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e:?}");
    h.shutdown().await;
}

#[tokio::test]
async fn a_socket_directory_others_can_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let e = serve(SwitchConfig {
        grpc_addr: GrpcAddr::Unix(dir.path().join("switch.sock")),
        ..Default::default()
    })
    .await
    .expect_err("world-writable socket directory");
    let msg = e.to_string();
    assert!(msg.contains("writable by other users"), "{msg}");
}

#[tokio::test]
async fn tcp_needs_tls_unless_asked_for_insecure_loopback_and_unix_is_the_default() {
    // TCP without TLS is refused, on loopback too, unless asked for explicitly.
    for addr in ["0.0.0.0:0", "127.0.0.1:0"] {
        let e = serve(SwitchConfig {
            grpc_addr: GrpcAddr::Tcp(addr.parse().unwrap()),
            ..Default::default()
        })
        .await
        .expect_err("TCP without TLS");
        assert!(e.to_string().contains("without TLS"), "{addr}: {e}");
    }
    let e = serve(SwitchConfig {
        grpc_addr: GrpcAddr::Tcp("0.0.0.0:0".parse().unwrap()),
        insecure_loopback: true,
        ..Default::default()
    })
    .await
    .expect_err("non-loopback TCP");
    assert!(e.to_string().contains("not a loopback address"), "{e}");
    assert!(
        matches!(&SwitchConfig::default().grpc_addr, GrpcAddr::Unix(p) if p.starts_with("/run")),
        "{:?}",
        SwitchConfig::default().grpc_addr
    );
    // Loopback, when asked for, still works (the tests use it).
    let h = serve(SwitchConfig {
        grpc_addr: GrpcAddr::Tcp("127.0.0.1:0".parse().unwrap()),
        insecure_loopback: true,
        ..Default::default()
    })
    .await
    .expect("loopback TCP");
    h.shutdown().await;
}

async fn primary(h: &SwitchHandle) -> Session {
    let (s, code) = Session::open(p4rt::channel(&h.endpoint()).await, 3, 1).await;
    assert_eq!(code, Code::Ok as i32);
    s
}

async fn push(s: &mut Session, info: p4lb_proto::p4info::P4Info) -> Result<(), tonic::Status> {
    s.client
        .set_forwarding_pipeline_config(set_pipeline_request(
            3,
            1,
            Action::VerifyAndCommit,
            Some(p4::ForwardingPipelineConfig {
                p4info: Some(info),
                ..Default::default()
            }),
        ))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn oversized_pipeline_configs_are_refused_and_the_switch_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_unix(&dir.path().join("p4rt.sock")).await;
    let mut s = primary(&h).await;

    // A counter of 2^44 cells (it used to abort the process).
    let mut info = p4rt::p4info();
    info.counters[0].size = 1 << 44;
    let e = push(&mut s, info).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("cells"), "{}", e.message());

    // The transit register, huge.
    let mut info = p4rt::p4info();
    let reg = info
        .registers
        .iter_mut()
        .find(|r| {
            r.preamble.as_ref().map(|p| p.name.as_str()) == Some(externs::transit_marks::NAME)
        })
        .expect("transit register");
    reg.size = i32::MAX;
    let e = push(&mut s, info).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");

    // A table declared with 2^40 entries.
    let mut info = p4rt::p4info();
    info.tables[0].size = 1 << 40;
    let e = push(&mut s, info).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("entries"), "{}", e.message());

    // Thousands of tables (and a P4Info of several MiB).
    let mut info = p4rt::p4info();
    let t = info.tables[0].clone();
    for i in 0..20_000u32 {
        let mut t = t.clone();
        if let Some(p) = t.preamble.as_mut() {
            p.id = 0x0200_0000 + i;
            p.name = format!("extra_{i}");
        }
        t.size = 1;
        info.tables.push(t);
    }
    let e = push(&mut s, info).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");

    // Still serving: the real pipeline goes in and takes entries.
    s.set_pipeline(Vec::new()).await.expect("p4lb's pipeline");
    s.insert(vec![entries::backend_locked(1)]).await;
    h.shutdown().await;
}

#[tokio::test]
async fn oversized_entry_metadata_and_messages_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_unix(&dir.path().join("p4rt.sock")).await;
    let mut s = primary(&h).await;
    s.set_pipeline(Vec::new()).await.unwrap();
    let with_metadata = |id: u16, n: usize| {
        let mut e = entries::backend_locked(id);
        e.metadata = vec![0xab; n];
        p4rt::update(Type::Insert, p4rt::table_entity(e))
    };
    // 1 KiB is stored.
    s.write(vec![with_metadata(1, 1024)]).await.expect("1 KiB");
    // 64 KiB is refused for that update only.
    let e = s
        .write(vec![with_metadata(2, 64 << 10), with_metadata(3, 16)])
        .await
        .unwrap_err();
    assert_eq!(
        p4rt::batch_codes(&e),
        vec![Code::InvalidArgument as i32, Code::Ok as i32]
    );
    let (_, msgs) = p4lb_controller::southbound::session::per_update_errors(&e);
    assert!(msgs[0].contains("metadata"), "{msgs:?}");
    // A 96 MiB Write is refused by the transport, and the switch keeps serving.
    let e = tokio::time::timeout(
        Duration::from_secs(30),
        s.write(vec![with_metadata(4, 96 << 20)]),
    )
    .await
    .expect("answered")
    .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(e.message().contains("too large"), "{}", e.message());
    s.insert(vec![entries::backend_locked(5)]).await;
    h.shutdown().await;
}
