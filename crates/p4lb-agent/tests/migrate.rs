//! Two agents on 127.0.0.1 with the fake runtime and real mutual TLS (rcgen
//! certificates of one CA): a migration, and every way it can fail after the
//! checkpoint (the source is restored in place, or the error says how to do it by
//! hand), archives the target must refuse, and callers the agents must refuse.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use p4lb_agent::runtime::fake::{Failures, FakeRuntime};
use p4lb_agent::{AgentService, Faults, Settings};
use p4lb_proto::api::{
    archive_part, ArchiveHeader, ArchivePart, InspectRequest, MigrateRequest, NodeInfoRequest,
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;

/// One certificate authority and the PEM files it issued, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// cert, key paths of one identity.
#[derive(Clone)]
struct Id {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, cert.pem()).unwrap();
        Pki {
            dir,
            ca_pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate whose DNS name is `name`, with its key file 0600.
    fn issue(&self, name: &str) -> Id {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let write = |file: &str, text: String| -> PathBuf {
            let p = self.dir.path().join(file);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        };
        Id {
            ca: self.ca_pem.clone(),
            cert: write(&format!("{name}.pem"), cert.pem()),
            key: write(&format!("{name}.key"), key.serialize_pem()),
        }
    }
}

fn client_tls(id: &Id) -> tonic::transport::ClientTlsConfig {
    p4lb_api::tls::client_config(&id.ca, &id.cert, &id.key).unwrap()
}

/// One node: its agent serving on 127.0.0.1 with a fake runtime.
struct Node {
    name: String,
    address: String,
    runtime: Arc<FakeRuntime>,
    work: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

struct Opts {
    max_archive_bytes: u64,
    transfer_timeout: std::time::Duration,
    faults: Faults,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            max_archive_bytes: 1 << 30,
            transfer_timeout: std::time::Duration::from_secs(60),
            faults: Faults::default(),
        }
    }
}

async fn start(pki: &Pki, name: &str, peers: &[&str], o: Opts) -> Node {
    let id = pki.issue(name);
    let work = tempfile::tempdir().unwrap();
    let runtime = Arc::new(FakeRuntime::new(name));
    let settings = Settings {
        node: name.into(),
        work_dir: work.path().to_path_buf(),
        max_archive_bytes: o.max_archive_bytes,
        transfer_timeout: o.transfer_timeout,
        admins: vec!["admin".into()],
        peers: peers.iter().map(|s| s.to_string()).collect(),
        client_tls: client_tls(&id),
        faults: o.faults,
    };
    let server = p4lb_api::tls::server_config(&id.ca, &id.cert, &id.key).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("https://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let svc = AgentService::new(settings, runtime.clone());
    tokio::spawn(async move {
        p4lb_agent::serve(listener, server, svc, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Node {
        name: name.into(),
        address,
        runtime,
        work,
        _stop: tx,
    }
}

/// Nodes A and B, each accepting archives from the other, "web" running on A.
async fn two_nodes(pki: &Pki, a: Opts, b: Opts) -> (Node, Node) {
    let a = start(pki, "node-a", &["node-b"], a).await;
    let b = start(pki, "node-b", &["node-a"], b).await;
    a.runtime.run("web");
    (a, b)
}

fn to(b: &Node) -> MigrateRequest {
    MigrateRequest {
        container: "web".into(),
        target_node: b.name.clone(),
        target_address: b.address.clone(),
    }
}

async fn migrate(
    pki: &Pki,
    from: &Node,
    req: MigrateRequest,
) -> Result<p4lb_proto::api::MigrateResponse, tonic::Status> {
    let admin = pki.issue("admin");
    let mut c = p4lb_agent::client::connect(&from.address, &from.name, client_tls(&admin))
        .await
        .unwrap();
    c.migrate(req).await.map(|r| r.into_inner())
}

fn files_in(d: &Path) -> Vec<String> {
    std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The failure left "web" running on A again, nothing on B, no archive anywhere.
fn restored_on_a(a: &Node, b: &Node, e: &tonic::Status, why: &str) {
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    let m = e.message();
    assert!(m.contains(why), "{m:?} lacks {why:?}");
    assert!(m.contains("web was restored on node-a"), "{m}");
    assert_eq!(a.runtime.state_of("web").as_deref(), Some("running"));
    assert_eq!(
        a.runtime.calls(),
        ["checkpoint web", "restore-in-place web"],
        "{m}"
    );
    if !m.contains("already has a container") {
        assert_eq!(b.runtime.state_of("web"), None, "{m}");
    }
    assert!(
        files_in(a.work.path()).is_empty(),
        "{:?}",
        files_in(a.work.path())
    );
}

/// B's work directory ends up empty (a target that saw its sender go away notices it on
/// its own schedule).
async fn nothing_left_on(b: &Node) {
    for _ in 0..100 {
        if files_in(b.work.path()).is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("left on {}: {:?}", b.name, files_in(b.work.path()));
}

#[tokio::test]
async fn a_container_moves_and_back_with_every_phase_timed() {
    let pki = Pki::new("nodes");
    let (a, b) = two_nodes(&pki, Opts::default(), Opts::default()).await;
    let r = migrate(&pki, &a, to(&b)).await.unwrap();
    assert_eq!(
        (r.source_node.as_str(), r.target_node.as_str()),
        ("node-a", "node-b")
    );
    assert_eq!(r.container, "web");
    assert_eq!(r.source_address, "10.89.0.2");
    assert_eq!(
        r.target_address, "10.89.0.2",
        "B's fake gives its first address"
    );
    let t = r.times.unwrap();
    assert!(t.checkpoint_us >= 0 && t.transfer_us >= 0 && t.restore_us >= 0);
    assert!(t.total_us >= t.checkpoint_us + t.restore_us);
    assert_eq!(r.archive_sha256.len(), 64);
    assert_eq!(a.runtime.state_of("web"), None, "the source is removed");
    assert_eq!(a.runtime.calls(), ["checkpoint web", "remove web"]);
    assert_eq!(b.runtime.state_of("web").as_deref(), Some("running"));
    assert!(files_in(a.work.path()).is_empty() && files_in(b.work.path()).is_empty());

    let back = MigrateRequest {
        target_node: a.name.clone(),
        target_address: a.address.clone(),
        ..to(&b)
    };
    let r = migrate(&pki, &b, back).await.unwrap();
    assert_eq!(r.target_node, "node-a");
    assert_eq!(a.runtime.state_of("web").as_deref(), Some("running"));
    assert_eq!(b.runtime.state_of("web"), None);
}

#[tokio::test]
async fn a_tampered_archive_is_refused_and_the_source_restored() {
    let pki = Pki::new("nodes");
    let a_opts = Opts {
        faults: Faults {
            corrupt_archive: true,
            ..Faults::default()
        },
        ..Opts::default()
    };
    let (a, b) = two_nodes(&pki, a_opts, Opts::default()).await;
    let e = migrate(&pki, &a, to(&b)).await.unwrap_err();
    restored_on_a(&a, &b, &e, "tampered or corrupted");
    nothing_left_on(&b).await;
    assert!(
        e.message()
            .contains("node node-b refused the archive from node-a (nothing restored)"),
        "{e:?}"
    );
    assert!(b.runtime.calls().is_empty(), "B restored nothing");
}

#[tokio::test]
async fn the_targets_restore_fails_and_the_source_is_restored() {
    let pki = Pki::new("nodes");
    let (a, b) = two_nodes(&pki, Opts::default(), Opts::default()).await;
    b.runtime.fail(Failures {
        restore_archive: true,
        ..Default::default()
    });
    let e = migrate(&pki, &a, to(&b)).await.unwrap_err();
    restored_on_a(&a, &b, &e, "restore of web on node node-b failed");
    nothing_left_on(&b).await;
}

#[tokio::test]
async fn an_unreachable_target_or_one_without_the_named_certificate_and_the_source_is_restored() {
    let pki = Pki::new("nodes");
    let (a, b) = two_nodes(&pki, Opts::default(), Opts::default()).await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let req = MigrateRequest {
        target_address: format!("https://127.0.0.1:{port}"),
        ..to(&b)
    };
    let e = migrate(&pki, &a, req).await.unwrap_err();
    restored_on_a(&a, &b, &e, "node-b at https://127.0.0.1");
    assert!(e.message().contains("unreachable"), "{e:?}");

    // B's agent, asked for as node-c: its certificate does not name node-c.
    let a = start(&pki, "node-a", &["node-b"], Opts::default()).await;
    a.runtime.run("web");
    let req = MigrateRequest {
        target_node: "node-c".into(),
        ..to(&b)
    };
    let e = migrate(&pki, &a, req).await.unwrap_err();
    restored_on_a(&a, &b, &e, "node node-c at");
}

#[tokio::test]
async fn an_archive_over_the_targets_limit_is_refused_and_the_source_restored() {
    let pki = Pki::new("nodes");
    let small = Opts {
        max_archive_bytes: 1000,
        ..Opts::default()
    };
    let (a, b) = two_nodes(&pki, Opts::default(), small).await;
    a.runtime.pad_archives(10_000);
    let e = migrate(&pki, &a, to(&b)).await.unwrap_err();
    restored_on_a(&a, &b, &e, "over this node's limit of 1000");
    nothing_left_on(&b).await;
}

/// A TCP relay to `target` that carries at most `limit` bytes from the client, then
/// closes both sides (a link that drops mid-transfer).
async fn cutting_relay(target: String, limit: usize) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut down, _)) = l.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                let mut up = TcpStream::connect(target.trim_start_matches("https://"))
                    .await
                    .unwrap();
                let (mut dr, mut dw) = down.split();
                let (mut ur, mut uw) = up.split();
                let upward = async {
                    let mut left = limit;
                    let mut buf = vec![0u8; 16 << 10];
                    while left > 0 {
                        let n = match dr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n.min(left),
                        };
                        if uw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        left -= n;
                    }
                };
                tokio::select! {
                    _ = upward => {}
                    _ = tokio::io::copy(&mut ur, &mut dw) => {}
                }
            });
        }
    });
    format!("https://{addr}")
}

#[tokio::test]
async fn the_link_drops_mid_transfer_and_the_source_is_restored() {
    let pki = Pki::new("nodes");
    let (a, b) = two_nodes(&pki, Opts::default(), Opts::default()).await;
    a.runtime.pad_archives(8 << 20);
    let req = MigrateRequest {
        target_address: cutting_relay(b.address.clone(), 1 << 20).await,
        ..to(&b)
    };
    let e = migrate(&pki, &a, req).await.unwrap_err();
    restored_on_a(
        &a,
        &b,
        &e,
        "target node node-b: the call broke before the whole archive was sent",
    );
    // B saw a broken stream and restored nothing; its file is gone once it noticed.
    nothing_left_on(&b).await;
    assert!(b.runtime.calls().is_empty());
}

/// A TCP relay to `target` that carries everything until `cut` fires, then closes both
/// sides.
async fn relay_until(target: String, cut: Arc<tokio::sync::Notify>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut down, _)) = l.accept().await {
            let target = target.clone();
            let cut = cut.clone();
            tokio::spawn(async move {
                let mut up = TcpStream::connect(target.trim_start_matches("https://"))
                    .await
                    .unwrap();
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                    _ = cut.notified() => {}
                }
            });
        }
    });
    format!("https://{addr}")
}

#[tokio::test]
async fn a_link_that_drops_during_the_targets_restore_leaves_the_source_alone_and_says_how_to_decide(
) {
    let pki = Pki::new("nodes");
    let (a, b) = two_nodes(&pki, Opts::default(), Opts::default()).await;
    b.runtime.fail(Failures {
        restore_delay: std::time::Duration::from_millis(500),
        ..Default::default()
    });
    let cut = Arc::new(tokio::sync::Notify::new());
    let req = MigrateRequest {
        target_address: relay_until(b.address.clone(), cut.clone()).await,
        ..to(&b)
    };
    let call = tokio::spawn({
        let a_addr = a.address.clone();
        let admin = pki.issue("admin");
        async move {
            p4lb_agent::client::connect(&a_addr, "node-a", client_tls(&admin))
                .await
                .unwrap()
                .migrate(req)
                .await
        }
    });
    // B has the whole archive and restores: the link drops now.
    for _ in 0..200 {
        if !b.runtime.calls().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(b.runtime.calls(), ["restore-archive (spec web)"]);
    cut.notify_waiters();
    let e = call.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::Unknown, "{e:?}");
    let m = e.message();
    assert!(
        m.contains("node-b may have restored it, so it was not restored on node-a"),
        "{m}"
    );
    assert!(m.contains("`fake container restore web`"), "{m}");
    // Not restored on A (B runs it once its restore is done), the archive kept.
    assert_eq!(a.runtime.state_of("web").as_deref(), Some("exited"));
    assert_eq!(a.runtime.calls(), ["checkpoint web"]);
    assert_eq!(files_in(a.work.path()).len(), 1);
    for _ in 0..200 {
        if b.runtime.state_of("web").is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(b.runtime.state_of("web").as_deref(), Some("running"));
}

#[tokio::test]
async fn a_target_that_already_has_the_container_refuses_it_and_the_source_is_restored() {
    let pki = Pki::new("nodes");
    let (a, b) = two_nodes(&pki, Opts::default(), Opts::default()).await;
    b.runtime.run("web");
    let e = migrate(&pki, &a, to(&b)).await.unwrap_err();
    restored_on_a(
        &a,
        &b,
        &e,
        "node node-b already has a container web (nothing restored)",
    );
}

#[tokio::test]
async fn a_target_whose_runtime_does_not_answer_restores_nothing_and_the_source_is_restored() {
    let pki = Pki::new("nodes");
    let (a, b) = two_nodes(&pki, Opts::default(), Opts::default()).await;
    b.runtime.fail(Failures {
        inspect: true,
        ..Default::default()
    });
    let e = migrate(&pki, &a, to(&b)).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    let m = e.message();
    assert!(
        m.contains(
            "node node-b could not tell whether it already has a container web (nothing restored)"
        ),
        "{m}"
    );
    assert!(m.contains("web was restored on node-a"), "{m}");
    assert_eq!(a.runtime.state_of("web").as_deref(), Some("running"));
    assert!(b.runtime.calls().is_empty(), "nothing restored on B");
}

#[tokio::test]
async fn when_even_the_source_restore_fails_the_error_says_how_to_do_it_by_hand() {
    let pki = Pki::new("nodes");
    let (a, b) = two_nodes(&pki, Opts::default(), Opts::default()).await;
    b.runtime.fail(Failures {
        restore_archive: true,
        ..Default::default()
    });
    a.runtime.fail(Failures {
        restore_in_place: true,
        ..Default::default()
    });
    let e = migrate(&pki, &a, to(&b)).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    let m = e.message();
    assert!(m.contains("restoring it on node-a failed too"), "{m}");
    assert!(
        m.contains("restore it by hand on node-a: `fake container restore web`"),
        "{m}"
    );
    let kept = files_in(a.work.path());
    assert_eq!(kept.len(), 1, "the archive is kept: {kept:?}");
    assert!(m.contains(&kept[0]), "{m}");
}

/// A Receive stream sent by `id` to `b`.
async fn send_parts(
    id: &Id,
    b: &Node,
    parts: Vec<ArchivePart>,
) -> Result<p4lb_proto::api::ReceiveResponse, tonic::Status> {
    let mut c = p4lb_agent::client::connect(&b.address, &b.name, client_tls(id))
        .await
        .unwrap();
    c.receive(tokio_stream::iter(parts))
        .await
        .map(|r| r.into_inner())
}

fn header_and(data: &[u8], sent: &[u8]) -> Vec<ArchivePart> {
    header_and_with(data, sent, "fake", b"")
}

/// [`header_and`] with the header's runtime and restore spec.
fn header_and_with(data: &[u8], sent: &[u8], runtime: &str, spec: &[u8]) -> Vec<ArchivePart> {
    let h = ArchiveHeader {
        container: "web".into(),
        size: data.len() as u64,
        sha256: sha2::Sha256::digest(data).to_vec(),
        runtime: runtime.into(),
        restore_spec: spec.to_vec(),
    };
    vec![
        ArchivePart {
            part: Some(archive_part::Part::Header(h)),
        },
        ArchivePart {
            part: Some(archive_part::Part::Chunk(sent.to_vec())),
        },
    ]
}

#[tokio::test]
async fn a_truncated_or_tampered_archive_from_a_peer_is_refused_and_nothing_restored() {
    let pki = Pki::new("nodes");
    let (_a, b) = two_nodes(&pki, Opts::default(), Opts::default()).await;
    let peer = pki.issue("node-a");
    let data = b"fake-archive web\nsome state".to_vec();
    let e = send_parts(&peer, &b, header_and(&data, &data[..10]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(e.message().contains("truncated: 10 of 27 bytes"), "{e:?}");
    let mut bad = data.clone();
    bad[20] ^= 1;
    let e = send_parts(&peer, &b, header_and(&data, &bad))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(b.runtime.calls().is_empty());
    assert!(files_in(b.work.path()).is_empty());
    // The whole archive is restored.
    let r = send_parts(&peer, &b, header_and(&data, &data))
        .await
        .unwrap();
    assert_eq!((r.node.as_str(), r.container.as_str()), ("node-b", "web"));
    assert_eq!(b.runtime.calls(), ["restore-archive ()"]);
}

#[tokio::test]
async fn an_archive_of_another_runtime_or_with_an_oversized_spec_is_refused() {
    let pki = Pki::new("nodes");
    let (_a, b) = two_nodes(&pki, Opts::default(), Opts::default()).await;
    let peer = pki.issue("node-a");
    let data = b"fake-archive web\nsome state".to_vec();
    for runtime in ["cri", ""] {
        let e = send_parts(&peer, &b, header_and_with(&data, &data, runtime, b""))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("node node-b runs fake"), "{e:?}");
        assert!(e.message().contains("nothing restored"), "{e:?}");
    }
    let big = vec![b'x'; p4lb_agent::runtime::MAX_RESTORE_SPEC + 1];
    let e = send_parts(&peer, &b, header_and_with(&data, &data, "fake", &big))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(b.runtime.calls().is_empty());
    assert!(files_in(b.work.path()).is_empty());
    // The spec reaches the target's runtime.
    send_parts(&peer, &b, header_and_with(&data, &data, "fake", b"pod web"))
        .await
        .unwrap();
    assert_eq!(b.runtime.calls(), ["restore-archive (pod web)"]);
}

#[tokio::test]
async fn callers_are_known_by_their_certificate() {
    let pki = Pki::new("nodes");
    let (a, b) = two_nodes(&pki, Opts::default(), Opts::default()).await;
    // A node may not ask another to migrate, an admin may not send archives.
    let e = p4lb_agent::client::connect(&a.address, "node-a", client_tls(&pki.issue("node-b")))
        .await
        .unwrap()
        .migrate(to(&b))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message()
            .contains("\"node-b\" is not allowed to call Migrate"),
        "{e:?}"
    );
    let data = b"fake-archive web\n".to_vec();
    let e = send_parts(&pki.issue("admin"), &b, header_and(&data, &data))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // A certificate of another CA never reaches a handler.
    let rogue_ca = Pki::new("rogue");
    let rogue = rogue_ca.issue("admin");
    let rogue = Id {
        ca: pki.ca_pem.clone(),
        ..rogue
    };
    let refused = match p4lb_agent::client::connect(&a.address, "node-a", client_tls(&rogue)).await
    {
        Err(_) => true,
        Ok(mut c) => c.node_info(NodeInfoRequest {}).await.is_err(),
    };
    assert!(refused, "a certificate of another CA was accepted");
    let e = match p4lb_agent::client::connect(&a.address, "node-a", client_tls(&rogue)).await {
        Err(e) => e.to_string(),
        Ok(mut c) => c.migrate(to(&b)).await.unwrap_err().to_string(),
    };
    assert!(!e.is_empty());
    assert!(a.runtime.calls().is_empty() && b.runtime.calls().is_empty());
    assert_eq!(a.runtime.state_of("web").as_deref(), Some("running"));
    // The admin is known.
    let info = p4lb_agent::client::connect(&a.address, "node-a", client_tls(&pki.issue("admin")))
        .await
        .unwrap()
        .node_info(NodeInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.node.as_str(), info.runtime.as_str()),
        ("node-a", "fake")
    );
}

#[tokio::test]
async fn an_admin_finds_which_node_runs_a_container() {
    let pki = Pki::new("nodes");
    let (a, b) = two_nodes(&pki, Opts::default(), Opts::default()).await;
    let admin = pki.issue("admin");
    let ask = |n: &Node, id: &Id| {
        let (addr, name, tls) = (n.address.clone(), n.name.clone(), client_tls(id));
        async move {
            p4lb_agent::client::connect(&addr, &name, tls)
                .await
                .unwrap()
                .inspect(InspectRequest {
                    container: "web".into(),
                })
                .await
        }
    };
    let i = ask(&a, &admin).await.unwrap().into_inner();
    assert_eq!(
        (
            i.node.as_str(),
            i.name.as_str(),
            i.state.as_str(),
            i.address.as_str()
        ),
        ("node-a", "web", "running", "10.89.0.2")
    );
    assert_eq!(ask(&b, &admin).await.unwrap_err().code(), Code::NotFound);
    let e = ask(&a, &pki.issue("node-b")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
}

#[tokio::test]
async fn a_target_that_does_not_answer_in_time_leaves_the_source_alone_and_says_how_to_decide() {
    let pki = Pki::new("nodes");
    let impatient = Opts {
        transfer_timeout: std::time::Duration::from_millis(300),
        ..Opts::default()
    };
    let (a, b) = two_nodes(&pki, impatient, Opts::default()).await;
    b.runtime.fail(Failures {
        restore_delay: std::time::Duration::from_secs(2),
        ..Default::default()
    });
    let e = migrate(&pki, &a, to(&b)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unknown, "{e:?}");
    let m = e.message();
    assert!(m.contains("no answer within 0.3 s"), "{m}");
    assert!(
        m.contains("node-b may have restored it, so it was not restored on node-a"),
        "{m}"
    );
    assert_eq!(a.runtime.state_of("web").as_deref(), Some("exited"));
    assert_eq!(a.runtime.calls(), ["checkpoint web"]);
}
