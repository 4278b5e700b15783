//! Failures: the right CNI error code, the spec's error shape, and nothing left behind.

mod common;

use common::*;
use serde_json::json;
use std::path::Path;

fn raw(w: &World, env: Vec<(&'static str, String)>, stdin: &str) -> Out {
    let _ = w;
    run_plugin(Path::new(PLUGIN), &env, stdin.as_bytes())
}

#[test]
fn bad_json_is_decode_error() {
    let w = World::new();
    let ns = Netns::new();
    let e = raw(&w, w.env("ADD", "bad", &ns.path, "eth0", ""), "{not json").err(6);
    assert_eq!(e["cniVersion"], "1.1.0");
    raw(&w, w.env("ADD", "bad", &ns.path, "eth0", ""), "[1,2]").err(6);
    // wrong type for a spec field
    let mut c = w.conf("1.0.0");
    c["ipam"] = json!("host-local");
    raw(
        &w,
        w.env("ADD", "bad", &ns.path, "eth0", ""),
        &c.to_string(),
    )
    .err(6);
    assert_eq!(pod_links(&ns), vec!["lo"]);
    w.assert_clean();
}

#[test]
fn missing_fields() {
    let w = World::new();
    let ns = Netns::new();
    let mut c = w.conf("1.0.0");
    c.as_object_mut().unwrap().remove("name");
    let e = w.p4lb("ADD", "mf", &ns.path, "", &c).err(7);
    assert_eq!(e["cniVersion"], "1.0.0");
    let mut c = w.conf("1.0.0");
    c.as_object_mut().unwrap().remove("ipam");
    w.p4lb("ADD", "mf", &ns.path, "", &c).err(7);
    // environment
    let env: Vec<_> = w
        .env("ADD", "mf", &ns.path, "eth0", "")
        .into_iter()
        .filter(|(k, _)| *k != "CNI_CONTAINERID")
        .collect();
    let e = raw(&w, env, &w.conf("1.0.0").to_string()).err(4);
    assert!(
        e["details"].as_str().unwrap().contains("CNI_CONTAINERID"),
        "{e}"
    );
    let env: Vec<_> = w.env("ADD", "mf", "", "eth0", "").into_iter().collect();
    raw(&w, env, &w.conf("1.0.0").to_string()).err(4);
    raw(
        &w,
        w.env("ADD", "mf", &ns.path, "bad/name", ""),
        &w.conf("1.0.0").to_string(),
    )
    .err(4);
    raw(
        &w,
        w.env("EXPLODE", "mf", &ns.path, "eth0", ""),
        &w.conf("1.0.0").to_string(),
    )
    .err(4);
    // CNI_ARGS
    w.p4lb("ADD", "mf", &ns.path, "UNKNOWN=1", &w.conf("1.0.0"))
        .err(4);
    w.p4lb("ADD", "mf", &ns.path, "garbage", &w.conf("1.0.0"))
        .err(4);
    // plugin options
    let mut c = w.conf("1.0.0");
    c["mtu"] = json!(20);
    w.p4lb("ADD", "mf", &ns.path, "", &c).err(7);
    let mut c = w.conf("1.0.0");
    c["ipMasq"] = json!(true);
    let e = w.p4lb("ADD", "mf", &ns.path, "", &c).err(2);
    assert!(e["details"].as_str().unwrap().contains("ipMasq"), "{e}");
    assert_eq!(pod_links(&ns), vec!["lo"]);
    w.assert_clean();
}

#[test]
fn unknown_version() {
    let w = World::new();
    let ns = Netns::new();
    for v in ["0.1.0", "0.2.0", "2.0.0", "1.9.0"] {
        let e = w.p4lb("ADD", "uv", &ns.path, "", &w.conf(v)).err(1);
        assert_eq!(
            e["cniVersion"], "1.1.0",
            "error for an unsupported version is written in ours"
        );
    }
    w.p4lb("ADD", "uv", &ns.path, "", &w.conf("x.y")).err(6);
    // GC needs 1.1.0
    let env = vec![
        ("CNI_COMMAND", "GC".to_string()),
        ("CNI_PATH", w.cni_path.display().to_string()),
    ];
    raw(&w, env.clone(), &w.conf("1.0.0").to_string()).err(1);
    // GC without the list of valid attachments is refused, not taken as "none valid"
    raw(&w, env, &w.conf("1.1.0").to_string()).err(7);
    w.assert_clean();
}

#[test]
fn missing_netns() {
    let w = World::new();
    let e = w
        .p4lb(
            "ADD",
            "mn",
            "/run/netns/does-not-exist-p4lb",
            "",
            &w.conf("1.0.0"),
        )
        .err(3);
    assert!(
        e["details"].as_str().unwrap().contains("does-not-exist"),
        "{e}"
    );
    // a regular file is not a namespace
    let f = w.dir.path().join("plain");
    std::fs::write(&f, "").unwrap();
    w.p4lb("ADD", "mn", f.to_str().unwrap(), "", &w.conf("1.0.0"))
        .err(4);
    // a FIFO is refused at once (opened non-blocking), not waited on
    let fifo = w.dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    w.p4lb("ADD", "mn", fifo.to_str().unwrap(), "", &w.conf("1.0.0"))
        .err(4);
    // another kind of namespace is not a network namespace
    w.p4lb("ADD", "mn", "/proc/self/ns/uts", "", &w.conf("1.0.0"))
        .err(4);
    // our own namespace is refused
    w.p4lb("ADD", "mn", "/proc/self/ns/net", "", &w.conf("1.0.0"))
        .err(4);
    w.assert_clean();
}

#[test]
fn interface_already_exists() {
    let w = World::new();
    let ns = Netns::new();
    ns.with(|n| n.add_veth("eth0", "other0", None)).unwrap();
    assert_eq!(pod_links(&ns).len(), 3);
    w.p4lb("ADD", "ie", &ns.path, "", &w.conf("1.0.0")).err(104);
    assert_eq!(pod_links(&ns).len(), 3, "the existing eth0 is untouched");
    w.assert_clean();
}

#[test]
fn ipam_failure_is_passed_on_and_rolled_back() {
    let w = World::new();
    let ns = Netns::new();
    let mut c = w.conf("1.0.0");
    c["ipam"] = json!({"type": "fail-ipam"});
    let e = w.p4lb("ADD", "if", &ns.path, "", &c).err(11);
    assert!(e["msg"].as_str().unwrap().contains("pool busy"), "{e}");
    // A failed IPAM ADD is followed by an IPAM DEL, as the specification asks.
    let calls = std::fs::read_to_string(w.cni_path.join("fail-ipam.calls")).unwrap();
    assert_eq!(calls, "ADD\nDEL\n");
    let mut c = w.conf("1.0.0");
    c["ipam"]["type"] = json!("no-such-ipam");
    let e = w.p4lb("ADD", "if", &ns.path, "", &c).err(101);
    assert!(e["msg"].as_str().unwrap().contains("not found"), "{e}");
    // an exhausted range: host-local's own error
    let mut c = w.conf("1.0.0");
    c["ipam"]["rangeStart"] = json!(w.subnet.replace(".0/24", ".10"));
    c["ipam"]["rangeEnd"] = json!(w.subnet.replace(".0/24", ".10"));
    w.p4lb("ADD", "if1", &ns.path, "", &c).ok();
    let ns2 = Netns::new();
    let e = w.p4lb("ADD", "if2", &ns2.path, "", &c);
    assert_ne!(e.code, 0);
    e.json();
    assert_eq!(pod_links(&ns2), vec!["lo"]);
    w.p4lb("DEL", "if1", &ns.path, "", &c).ok();
    assert_eq!(pod_links(&ns), vec!["lo"]);
    w.assert_clean();
}

#[test]
fn controller_down_rolls_back_everything() {
    let w = World::without_controller();
    let ns = Netns::new();
    let e = w.p4lb("ADD", "cd", &ns.path, "", &w.conf("1.0.0")).err(11);
    assert!(e["msg"].as_str().unwrap().contains("controller"), "{e}");
    assert_eq!(pod_links(&ns), vec!["lo"]);
    w.assert_clean();
}

#[test]
fn controller_refusal_rolls_back_everything() {
    let w = World::new();
    let ns = Netns::new();
    let ns2 = Netns::new();
    let c = w.conf("1.0.0");
    w.p4lb("ADD", "dup", &ns.path, "", &c).ok();
    // the controller already has dup2's address: make host-local hand out the same one
    // by releasing the first lease behind the controller's back.
    let lease = w.leases()[0].clone();
    std::fs::remove_file(w.data_dir.join(&w.network).join(&lease)).unwrap();
    let _ = std::fs::remove_file(w.data_dir.join(&w.network).join("last_reserved_ip.0"));
    let e = w.p4lb("ADD", "dup2", &ns2.path, "", &c).err(102);
    assert!(
        e["details"].as_str().unwrap().contains("AlreadyExists"),
        "{e}"
    );
    assert_eq!(pod_links(&ns2), vec!["lo"]);
    assert!(
        w.leases().is_empty(),
        "dup2's lease was released: {:?}",
        w.leases()
    );
    assert_eq!(w.host_links().len(), 1);
    w.p4lb("DEL", "dup", &ns.path, "", &c).ok();
    w.assert_clean();
}

#[test]
fn del_with_controller_down_keeps_lease_then_finishes() {
    let mut w = World::new();
    let ns = Netns::new();
    let c = w.conf("1.0.0");
    w.p4lb("ADD", "dd", &ns.path, "", &c).ok();
    // stop serving (the controller's state stays on disk)
    w.stop_controller();
    // the local part is done and DEL succeeds; the deregistration is recorded
    w.p4lb("DEL", "dd", &ns.path, "", &c).ok();
    assert!(w.pending().contains("\"dd\""), "{}", w.pending());
    assert_eq!(pod_links(&ns), vec!["lo"]);
    assert!(w.host_links().is_empty());
    assert_eq!(
        w.leases().len(),
        1,
        "lease kept while the controller may still route"
    );
    // the controller comes back remembering the endpoint; the retried DEL finishes
    w.start_controller();
    assert_eq!(w.endpoints().len(), 1);
    w.p4lb("DEL", "dd", &ns.path, "", &c).ok();
    w.assert_clean();
}

#[test]
fn check_with_controller_down_is_try_again_later() {
    let mut w = World::new();
    let ns = Netns::new();
    let c = w.conf("1.0.0");
    let r = w.p4lb("ADD", "ck", &ns.path, "", &c);
    r.ok();
    let mut prev = c.clone();
    prev["prevResult"] = r.json();
    w.stop_controller();
    w.p4lb("CHECK", "ck", &ns.path, "", &prev).err(11);
    w.start_controller();
    w.p4lb("CHECK", "ck", &ns.path, "", &prev).ok();
    w.p4lb("DEL", "ck", &ns.path, "", &prev).ok();
    w.assert_clean();
}
