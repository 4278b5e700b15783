//! DEL and GC are idempotent, finish what they can when the controller is down, and
//! never touch what p4lb did not create.

mod common;

use common::*;
use serde_json::json;
use std::path::Path;

fn host_has_link(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

#[test]
fn del_with_controller_down_succeeds_and_the_next_del_deregisters() {
    let mut w = World::new();
    let ns = Netns::new();
    let c = w.conf("1.0.0");
    w.p4lb("ADD", "down", &ns.path, "", &c).ok();
    w.stop_controller();

    w.p4lb("DEL", "down", &ns.path, "", &c).ok();
    assert_eq!(pod_links(&ns), vec!["lo"]);
    assert!(w.host_links().is_empty());
    assert_eq!(
        w.leases().len(),
        1,
        "lease kept while the switch may route it"
    );
    // repeating it changes nothing and still succeeds
    w.p4lb("DEL", "down", &ns.path, "", &c).ok();
    assert_eq!(w.leases().len(), 1);

    // the controller is back and still routes the endpoint; the next DEL of the
    // network (another attachment, never added) finishes the recorded one
    w.start_controller();
    assert_eq!(w.endpoints().len(), 1);
    w.p4lb("DEL", "other", "", "", &c).ok();
    assert!(
        w.pending().is_empty() || w.pending().trim() == "[]",
        "{}",
        w.pending()
    );
    w.assert_clean();
}

#[test]
fn del_with_controller_down_is_finished_by_gc() {
    let mut w = World::new();
    let ns = Netns::new();
    let c = w.conf("1.1.0");
    w.p4lb("ADD", "gcd", &ns.path, "", &c).ok();
    w.stop_controller();
    w.p4lb("DEL", "gcd", &ns.path, "", &c).ok();
    w.start_controller();
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let env = vec![
        ("CNI_COMMAND", "GC".to_string()),
        ("CNI_PATH", w.cni_path.display().to_string()),
    ];
    run_plugin(Path::new(PLUGIN), &env, gc.to_string().as_bytes()).ok();
    w.assert_clean();
}

#[test]
fn del_without_add_leaves_foreign_interfaces_alone() {
    let w = World::new();
    let ns = Netns::new();
    let c = w.conf("1.0.0");
    // someone else's interfaces under the names p4lb would use for "foreign"/eth0
    let host_name = p4lb_cni::cmd::host_ifname("foreign", "eth0");
    let host = p4lb_testutil::Net::host().unwrap();
    let peer = format!("pf{}", std::process::id() % 1_000_000);
    host.add_veth(&host_name, &peer, None).unwrap();
    ns.with(|n| n.add_veth("eth0", "other0", None)).unwrap();

    w.p4lb("DEL", "foreign", &ns.path, "", &c).ok();
    let host_kept = host_has_link(&host_name);
    let _ = host.delete_link(&host_name);
    assert!(
        host_kept,
        "DEL deleted {host_name}, which p4lb did not create"
    );
    assert!(
        pod_links(&ns).contains(&"eth0".to_string()),
        "DEL deleted the pod's eth0, which p4lb did not create: {:?}",
        pod_links(&ns)
    );
    w.assert_clean();
}

#[test]
fn long_container_ids() {
    let w = World::new();
    let ns = Netns::new();
    let c = w.conf("1.0.0");
    let long = "a".repeat(1000);
    // DEL has nothing to do and succeeds, with or without a namespace
    w.p4lb("DEL", &long, &ns.path, "", &c).ok();
    w.p4lb("DEL", &long, "", "", &c).ok();
    // ADD refuses, clearly, and leaves nothing behind
    let e = w.p4lb("ADD", &long, &ns.path, "", &c).err(4);
    assert!(
        e["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
        "{e}"
    );
    assert!(e["details"].as_str().unwrap().contains("256"), "{e}");
    assert_eq!(pod_links(&ns), vec!["lo"]);
    // and DEL after the refused ADD still succeeds
    w.p4lb("DEL", &long, &ns.path, "", &c).ok();
    w.assert_clean();
}

#[test]
fn gc_with_controller_down_keeps_ipam_allocations() {
    let mut w = World::new();
    let c = w.conf("1.1.0");
    let nss: Vec<Netns> = (0..2).map(|_| Netns::new()).collect();
    for (i, ns) in nss.iter().enumerate() {
        w.p4lb("ADD", &format!("keep{i}"), &ns.path, "", &c).ok();
    }
    w.stop_controller();

    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let env = vec![
        ("CNI_COMMAND", "GC".to_string()),
        ("CNI_PATH", w.cni_path.display().to_string()),
    ];
    let run = || run_plugin(Path::new(PLUGIN), &env, gc.to_string().as_bytes());
    let out = run();
    assert_eq!(
        w.leases().len(),
        2,
        "GC freed addresses the switch still routes"
    );
    assert_eq!(
        w.host_links().len(),
        2,
        "GC did nothing without the controller"
    );
    let e = out.err(11);
    assert!(e["msg"].as_str().unwrap().contains("controller"), "{e}");

    w.start_controller();
    run().ok();
    w.assert_clean();
}

#[test]
fn add_after_a_recorded_del_replaces_the_old_endpoint() {
    let mut w = World::new();
    let ns = Netns::new();
    let c = w.conf("1.0.0");
    w.p4lb("ADD", "again", &ns.path, "", &c).ok();
    w.stop_controller();
    w.p4lb("DEL", "again", &ns.path, "", &c).ok();
    assert!(w.pending().contains("\"again\""), "{}", w.pending());
    // with the controller down, ADD of the recorded attachment refuses before
    // creating anything
    w.p4lb("ADD", "again", &ns.path, "", &c).err(11);
    assert_eq!(pod_links(&ns), vec!["lo"]);
    assert_eq!(w.leases().len(), 1);

    // the same attachment is added again (a restart): the old registration and
    // lease go first, and no later DEL or GC of the network removes the new one
    w.start_controller();
    w.p4lb("ADD", "again", &ns.path, "", &c).ok();
    assert!(w.pending().is_empty(), "{}", w.pending());
    assert_eq!(w.leases().len(), 1);
    let eps = w.endpoints();
    assert_eq!(eps.len(), 1);
    w.p4lb("DEL", "unrelated", "", "", &c).ok();
    assert_eq!(w.endpoints().len(), 1, "the fresh endpoint survives");
    assert_eq!(w.host_links().len(), 1);
    w.p4lb("DEL", "again", &ns.path, "", &c).ok();
    w.assert_clean();
}
