//! `switchNetns`: the host end of the veth lives in the switch's namespace (e.g. a
//! BMv2 run in its own namespace). The in-process real controller attaches ports in
//! its own namespace, so this test uses the in-test fake of the controller API.

mod common;

use common::*;
use serde_json::json;

#[test]
fn host_end_goes_to_the_switch_namespace() {
    let mut w = World::without_controller();
    w.start_fake_controller();
    let sw = Netns::new();
    let ns = Netns::new();
    let mut c = w.conf("1.1.0");
    c["switchNetns"] = json!(sw.path);
    let r = w.p4lb("ADD", "swns", &ns.path, "", &c);
    r.ok();
    let r = r.json();
    let host = r["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert!(
        w.host_links().is_empty(),
        "nothing in the plugin's namespace"
    );
    let links = pod_links(&sw);
    assert!(links.contains(&host), "{links:?}");
    let flags = sw.exec(&["ip", "-o", "link", "show", &host]);
    assert!(flags.contains(",UP") || flags.contains("<UP"), "{flags}");

    let mut prev = c.clone();
    prev["prevResult"] = r.clone();
    w.p4lb("CHECK", "swns", &ns.path, "", &prev).ok();

    // GC finds the stale host end in the switch namespace
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let env = vec![
        ("CNI_COMMAND", "GC".to_string()),
        ("CNI_PATH", w.cni_path.display().to_string()),
    ];
    run_plugin(
        std::path::Path::new(PLUGIN),
        &env,
        gc.to_string().as_bytes(),
    )
    .ok();
    assert!(!pod_links(&sw).contains(&host));
    assert_eq!(pod_links(&ns), vec!["lo"]);
    w.p4lb("DEL", "swns", &ns.path, "", &prev).ok();
    w.assert_clean();
}
