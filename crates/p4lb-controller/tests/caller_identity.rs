//! A caller speaks only for its own network namespace: the kernel says which (the
//! connecting process's pid, SO_PEERCRED), not the identity the message claims.

mod common;

use std::time::Duration;

use common::*;
use p4lb_proto::api;

fn persisted(dir: &std::path::Path) -> serde_json::Value {
    persisted_json(dir)
}

/// Environment of the `api_caller_process` helper: the API socket, and the
/// identity (netns path) it claims.
const CALLER_SOCK_ENV: &str = "P4LB_TEST_CALLER_SOCK";
const CALLER_CLAIM_ENV: &str = "P4LB_TEST_CALLER_CLAIM";

/// Helper run by `a_caller_speaks_only_for_its_own_network_namespace` inside another
/// network namespace: makes the calls and prints one line per answer.
#[tokio::test]
#[ignore]
async fn api_caller_process() {
    let (Some(sock), Some(claim)) = (
        std::env::var_os(CALLER_SOCK_ENV),
        std::env::var(CALLER_CLAIM_ENV).ok(),
    ) else {
        println!("SKIPPED: api_caller_process is a helper run by other tests");
        return;
    };
    let mut c = api_client(std::path::Path::new(&sock)).await.unwrap();
    let identity = || {
        Some(match claim.parse::<u32>() {
            Ok(pid) => api::Identity {
                pid,
                netns_path: String::new(),
            },
            Err(_) => api::Identity {
                pid: 0,
                netns_path: claim.clone(),
            },
        })
    };
    let key = std::env::var("P4LB_TEST_CALLER_KEY").unwrap();
    let answers = [
        c.update_endpoint_metadata(api::UpdateEndpointMetadataRequest {
            identity: identity(),
            key,
            labels: [("app".to_string(), "stolen".to_string())].into(),
        })
        .await
        .map(|_| ()),
        c.migration_event(api::MigrationEventRequest {
            phase: api::MigrationPhase::Lock as i32,
            identity: identity(),
            ..Default::default()
        })
        .await
        .map(|_| ()),
    ];
    for a in answers {
        match a {
            Ok(()) => println!("ANSWER OK"),
            Err(s) => println!("ANSWER {:?} {}", s.code(), s.message()),
        }
    }
}

/// Runs `api_caller_process` in `ns`, claiming `claim` for endpoint `key`; its answers.
fn call_from(ns: &Netns, sock: &std::path::Path, claim: &str, key: &str) -> Vec<String> {
    let out =
        ns.0.command(std::env::current_exe().unwrap())
            .args(["--exact", "api_caller_process", "--ignored", "--nocapture"])
            .env(CALLER_SOCK_ENV, sock)
            .env(CALLER_CLAIM_ENV, claim)
            .env("P4LB_TEST_CALLER_KEY", key)
            .output()
            .expect("running the caller process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "caller failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ANSWER "))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_speaks_only_for_its_own_network_namespace() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let victim_ns = Netns::new("p4id-vic", &["10.88.10.21"]);
    let evil_ns = Netns::new("p4id-evil", &["10.88.10.66"]);
    let mut c = Ctl::start(config(&dir, &ssock)).await;
    let sock = dir.join("api.sock");
    for (cid, ip, mac, ns) in [
        ("victim", "10.88.10.21", "02:00:00:00:10:21", &victim_ns),
        ("evil", "10.88.10.66", "02:00:00:00:10:66", &evil_ns),
    ] {
        let mut r = register_req(cid, ip, mac, "");
        r.netns_path = ns.path();
        c.client.register_endpoint(r).await.unwrap();
    }
    let victim_pid = victim_ns
        .0
        .command("sleep")
        .arg("30")
        .spawn()
        .expect("sleep in the victim's netns");
    let pid_ns = format!("/proc/{}/ns/net", victim_pid.id());
    assert!(
        eventually(Duration::from_secs(2), || {
            let (p, want) = (pid_ns.clone(), victim_ns.path());
            async move {
                let a = std::fs::metadata(&p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
                let b = std::fs::metadata(&want).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
                matches!((a, b), (Ok(a), Ok(b)) if a == b)
            }
        })
        .await,
        "the sleep did not enter the victim's namespace"
    );
    let tables = read_all(&ssock).await;
    let state = persisted(&dir);

    // Claiming the victim's namespace by path, then by a pid living in it.
    for claim in [victim_ns.path(), victim_pid.id().to_string()] {
        let answers = call_from(&evil_ns, &sock, &claim, "victim/eth0");
        assert_eq!(answers.len(), 2, "{answers:?}");
        for a in &answers {
            assert!(
                a.starts_with("PermissionDenied caller pid "),
                "{claim}: {a}"
            );
            assert!(
                a.contains("may speak only for its own network namespace"),
                "{claim}: {a}"
            );
        }
        assert_eq!(read_all(&ssock).await, tables, "{claim}: switch changed");
        assert_eq!(persisted(&dir), state, "{claim}: state changed");
    }
    let victim = c
        .client
        .get_endpoint(api::GetEndpointRequest {
            key: "victim/eth0".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(victim.labels.get("app").map(String::as_str), Some("web"));
    assert!(!victim.locked);

    // Speaking for itself still works.
    let answers = call_from(&evil_ns, &sock, &evil_ns.path(), "evil/eth0");
    assert_eq!(answers, vec!["OK".to_string(), "OK".to_string()]);

    let mut p = victim_pid;
    let _ = p.kill();
    let _ = p.wait();
    c.stop().await;
    sw.shutdown().await;
}
