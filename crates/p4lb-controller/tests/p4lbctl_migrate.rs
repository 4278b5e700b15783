//! `p4lbctl migrate` against two node agents on 127.0.0.1 (in-memory runtime, real
//! mutual TLS with certificates made by `p4lbctl cert`): each phase printed, `--json`
//! the agent's answer, and a failed migration's error (the container restored on its
//! node) on stderr with a failing exit status; with a controller whose node registry the
//! agents joined over TCP, `p4lbctl migrate NAME --to NODE` finds both agents itself.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use p4lb_agent::runtime::fake::{Failures, FakeRuntime};
use p4lb_agent::{AgentService, Faults, Settings};

fn p4lbctl(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_p4lbctl"))
        .args(args)
        .output()
        .expect("running p4lbctl")
}

/// `p4lbctl cert ca` and `cert issue` for the nodes and the admin, in `dir`.
fn pki(dir: &Path) {
    let d = dir.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = p4lbctl(args);
        assert!(out.status.success(), "p4lbctl {args:?}: {out:?}");
    };
    run(&["cert", "ca", "--out", d, "--cn", "nodes"]);
    for n in ["node-a", "node-b", "admin"] {
        run(&["cert", "issue", "--ca", d, "--name", n, "--out", d]);
    }
}

fn files(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("ca.pem"),
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    )
}

/// An agent of node `name` on 127.0.0.1 with a fake runtime; its address.
async fn agent(pki: &Path, name: &str, peer: &str, work: &Path) -> (String, Arc<FakeRuntime>) {
    let (ca, cert, key) = files(pki, name);
    let runtime = Arc::new(FakeRuntime::new(name));
    let settings = Settings {
        node: name.into(),
        work_dir: work.to_path_buf(),
        max_archive_bytes: 1 << 20,
        transfer_timeout: std::time::Duration::from_secs(60),
        admins: vec!["admin".into()],
        peers: vec![peer.into()],
        client_tls: p4lb_api::tls::client_config(&ca, &cert, &key).unwrap(),
        faults: Faults::default(),
    };
    let tls = p4lb_api::tls::server_config(&ca, &cert, &key).unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("https://{}", l.local_addr().unwrap());
    let svc = AgentService::new(settings, runtime.clone());
    tokio::spawn(p4lb_agent::serve(l, tls, svc, std::future::pending()));
    (address, runtime)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_prints_each_phase_and_a_failure_says_where_the_container_is() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("pki");
    pki(&p);
    let (wa, wb) = (d.path().join("a"), d.path().join("b"));
    std::fs::create_dir_all(&wa).unwrap();
    std::fs::create_dir_all(&wb).unwrap();
    let (a, ra) = agent(&p, "node-a", "node-b", &wa).await;
    let (b, rb) = agent(&p, "node-b", "node-a", &wb).await;
    ra.run("web");
    let (ca, cert, key) = files(&p, "admin");
    let no_controller = d.path().join("none.sock");
    let args = move |json: bool, from: &str, fu: &str, to: &str, tu: &str| -> Vec<String> {
        let mut v: Vec<String> = vec!["--socket".into(), no_controller.display().to_string()];
        if json {
            v.push("--json".into());
        }
        v.extend(
            [
                "migrate",
                "web",
                "--from",
                from,
                "--from-agent",
                fu,
                "--to",
                to,
                "--to-agent",
                tu,
                "--ca",
            ]
            .map(String::from),
        );
        v.push(ca.display().to_string());
        v.push("--cert".into());
        v.push(cert.display().to_string());
        v.push("--key".into());
        v.push(key.display().to_string());
        v
    };
    let run = |v: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            p4lbctl(&v.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };

    let out = run(args(false, "node-a", &a, "node-b", &b)).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.starts_with("migrated web from node-a to node-b: 10.89.0.2 -> 10.89.0.2"),
        "{text}"
    );
    for phase in ["checkpoint", "transfer", "restore", "clean-up", "total"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(phase) && l.contains(" ms")),
            "no {phase} line: {text}"
        );
    }
    assert!(text.contains("switchover and stall unknown"), "{text}");
    assert_eq!(rb.state_of("web").as_deref(), Some("running"));

    // Back, as JSON: the agent's answer.
    let out = run(args(true, "node-b", &b, "node-a", &a)).await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["migration"]["target_node"], "node-a", "{v}");
    assert!(v["migration"]["times"]["checkpoint_us"].is_number(), "{v}");
    assert!(v["controller"].is_null(), "{v}");

    // A failed restore on B: the error names where the container is, the exit fails.
    rb.fail(Failures {
        restore_archive: true,
        ..Default::default()
    });
    let out = run(args(false, "node-a", &a, "node-b", &b)).await.unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("aborted"), "{err}");
    assert!(err.contains("web was restored on node-a"), "{err}");
    assert_eq!(ra.state_of("web").as_deref(), Some("running"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_finds_the_agents_through_the_controllers_node_registry() {
    let (_d, dir) = common::tempdir();
    let p = dir.join("pki");
    pki(&p);
    // The controller's certificate for 127.0.0.1, of the nodes' CA.
    let out = p4lbctl(&[
        "cert",
        "issue",
        "--ca",
        p.to_str().unwrap(),
        "--name",
        "p4lb-controller",
        "--ip",
        "127.0.0.1",
        "--out",
        p.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let ssock = dir.join("switch.sock");
    let _sw = common::start_switch(&ssock).await;
    let mut cfg = common::config(&dir, &ssock);
    let (_, cert, key) = files(&p, "p4lb-controller");
    cfg.api.tcp = "127.0.0.1:0".into();
    cfg.api.tls_cert = cert;
    cfg.api.tls_key = key;
    cfg.api.tls_client_ca = p.join("ca.pem");
    cfg.api.admins = vec!["admin".into()];
    let socket = cfg.api.socket.clone();
    let ctl = common::Ctl::start(cfg).await;
    assert!(
        common::eventually(std::time::Duration::from_secs(5), || async {
            ctl.ctl.api_tcp_addr.get().is_some()
        })
        .await
    );
    let controller = format!("https://{}", ctl.ctl.api_tcp_addr.get().unwrap());

    let (wa, wb) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&wa).unwrap();
    std::fs::create_dir_all(&wb).unwrap();
    let (a, ra) = agent(&p, "node-a", "node-b", &wa).await;
    let (b, rb) = agent(&p, "node-b", "node-a", &wb).await;
    for (name, advertise) in [("node-a", &a), ("node-b", &b)] {
        let (ca, cert, key) = files(&p, name);
        let tls = p4lb_api::tls::client_config(&ca, &cert, &key).unwrap();
        let c = p4lb_agent::config::ControllerConfig {
            address: controller.clone(),
            advertise: advertise.clone(),
        };
        tokio::spawn(p4lb_agent::register_forever(c, tls));
    }
    let local = p4lb_api::Client::connect(
        &socket,
        std::time::Duration::from_secs(5),
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(
        common::eventually(std::time::Duration::from_secs(10), || async {
            let nodes = local.list_nodes().await.unwrap_or_default();
            ["node-a", "node-b"].iter().all(|n| {
                nodes
                    .iter()
                    .any(|x| x.name == *n && !x.agent_address.is_empty())
            })
        })
        .await,
        "both agents registered: {:?}",
        local.list_nodes().await
    );
    ra.run("web");
    let (ca, cert, key) = files(&p, "admin");
    let migrate = |container: &str| {
        let v: Vec<String> = [
            "--socket",
            socket.to_str().unwrap(),
            "migrate",
            container,
            "--to",
            "node-b",
            "--ca",
            ca.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        tokio::task::spawn_blocking(move || {
            p4lbctl(&v.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let out = migrate("web").await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.starts_with("migrated web from node-a to node-b"),
        "{text}"
    );
    assert_eq!(rb.state_of("web").as_deref(), Some("running"));
    // Nobody else runs it now.
    let out = migrate("web").await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no registered node other than node-b runs web"),
        "{err}"
    );
    ctl.stop().await;
}
