//! Every verb in every supported version, run as a runtime runs the plugin.

mod common;

use common::*;
use serde_json::{json, Value};

const VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[test]
fn version_reports_supported_versions() {
    for v in VERSIONS.iter().chain(["0.2.0"].iter()) {
        let out = run_plugin(
            std::path::Path::new(PLUGIN),
            &[("CNI_COMMAND", "VERSION".into())],
            json!({"cniVersion": v}).to_string().as_bytes(),
        );
        out.ok();
        let j = out.json();
        assert_eq!(j["cniVersion"], json!(v));
        assert_eq!(j["supportedVersions"], json!(VERSIONS));
    }
}

fn add_check_del(version: &str) {
    let w = World::new();
    let ns = Netns::new();
    let cid = format!("c{}", version.replace('.', ""));
    let conf = w.conf(version);

    let out = w.p4lb("ADD", &cid, &ns.path, "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=abc", &conf);
    out.ok();
    let result = out.json();
    assert_eq!(result["cniVersion"], json!(version));
    // interfaces: host end, then the pod end with its sandbox
    let ifs = result["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 2);
    assert!(ifs[0]["name"].as_str().unwrap().starts_with("p4lb"));
    assert!(ifs[0].get("sandbox").is_none());
    assert_eq!(ifs[1]["name"], "eth0");
    assert_eq!(ifs[1]["sandbox"], json!(ns.path));
    let ip = &result["ips"][0];
    assert_eq!(ip["interface"], 1);
    assert_eq!(ip["gateway"], json!(w.gateway()));
    if version < "1.0.0" {
        assert_eq!(ip["version"], "4", "{result}");
    } else {
        assert!(ip.get("version").is_none(), "{result}");
    }
    let addr = ip["address"].as_str().unwrap().to_string();
    assert!(addr.ends_with("/24"));
    assert_eq!(result["routes"][0]["dst"], "0.0.0.0/0");

    // the kernel agrees
    assert_eq!(pod_addrs(&ns, "eth0"), vec![addr.clone()]);
    let routes = ns.exec(&["ip", "-4", "route", "show", "default"]);
    assert!(
        routes.contains(&format!("via {}", w.gateway())),
        "routes: {routes}"
    );
    let neigh = ns.exec(&["ip", "neigh", "show", &w.gateway()]);
    assert!(
        neigh.contains(ROUTER_MAC) && neigh.contains("PERMANENT"),
        "neigh: {neigh}"
    );
    let features = ns.exec(&["cat", "/proc/self/net/dev"]);
    assert!(features.contains("eth0"));
    let host = ifs[0]["name"].as_str().unwrap();
    assert_eq!(w.host_links(), vec![host.to_string()]);
    let flags = std::fs::read_to_string(format!("/sys/class/net/{host}/flags")).unwrap();
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "host end is up");

    // the controller got the endpoint
    let eps = w.endpoints();
    assert_eq!(eps.len(), 1);
    let ep = &eps[0];
    assert_eq!(ep.key, format!("{cid}/eth0"));
    assert_eq!(format!("{}/{}", ep.ip, ep.prefix_len), addr);
    assert_eq!(ep.netns_path, ns.path);
    assert_eq!(ep.host_ifname, host);
    assert_eq!(ep.gateway, w.gateway());
    assert_eq!(ep.mac, ifs[1]["mac"].as_str().unwrap());
    assert_eq!(ep.labels.get("k8s.pod").map(String::as_str), Some("web-1"));
    assert_eq!(
        ep.labels.get("k8s.namespace").map(String::as_str),
        Some("default")
    );
    assert_eq!(
        ep.labels.get("p4lb.switch").map(String::as_str),
        Some("sw0")
    );
    assert!(!ep.locked);

    // CHECK (0.4.0 and later) with the ADD result as prevResult
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = result.clone();
    if version >= "0.4.0" {
        w.p4lb("CHECK", &cid, &ns.path, "", &with_prev).ok();
    } else {
        w.p4lb("CHECK", &cid, &ns.path, "", &with_prev).err(1);
    }

    // DEL, twice
    w.p4lb("DEL", &cid, &ns.path, "", &with_prev).ok();
    w.p4lb("DEL", &cid, &ns.path, "", &with_prev).ok();
    assert_eq!(pod_links(&ns), vec!["lo".to_string()]);
    w.assert_clean();
}

#[test]
fn add_check_del_v0_3_0() {
    add_check_del("0.3.0");
}
#[test]
fn add_check_del_v0_3_1() {
    add_check_del("0.3.1");
}
#[test]
fn add_check_del_v0_4_0() {
    add_check_del("0.4.0");
}
#[test]
fn add_check_del_v1_0_0() {
    add_check_del("1.0.0");
}
#[test]
fn add_check_del_v1_1_0() {
    add_check_del("1.1.0");
}

#[test]
fn tx_checksum_offload_is_off_on_both_ends() {
    let w = World::new();
    let ns = Netns::new();
    let r = w.p4lb("ADD", "csum", &ns.path, "", &w.conf("1.0.0"));
    r.ok();
    let host = r.json()["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let read = |args: &[&str]| -> String {
        let o = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // ethtool is optional on the host; the plugin's own CHECK reads the flag too.
    if std::path::Path::new("/usr/sbin/ethtool").exists()
        || std::path::Path::new("/sbin/ethtool").exists()
    {
        let h = read(&["ethtool", "-k", &host]);
        assert!(h.contains("tx-checksumming: off"), "{h}");
        // The switch's end: no segmentation or receive offload, so libpcap (BMv2) sizes
        // its receive ring for MTU-sized frames.
        for f in [
            "tx-tcp-segmentation: off",
            "tx-tcp6-segmentation: off",
            "generic-segmentation-offload: off",
            "generic-receive-offload: off",
        ] {
            assert!(h.contains(f), "{f} on {host}:\n{h}");
        }
        let p = ns.exec(&["ethtool", "-k", "eth0"]);
        assert!(p.contains("tx-checksumming: off"), "{p}");
    } else {
        println!("note: ethtool not installed; relying on CHECK's SIOCETHTOOL read");
    }
    let mut prev = w.conf("1.0.0");
    prev["prevResult"] = r.json();
    w.p4lb("CHECK", "csum", &ns.path, "", &prev).ok();
    w.p4lb("DEL", "csum", &ns.path, "", &prev).ok();
    w.assert_clean();
}

#[test]
fn check_detects_drift() {
    let w = World::new();
    let ns = Netns::new();
    let conf = w.conf("1.0.0");
    let r = w.p4lb("ADD", "drift", &ns.path, "", &conf);
    r.ok();
    let mut prev = conf.clone();
    prev["prevResult"] = r.json();
    w.p4lb("CHECK", "drift", &ns.path, "", &prev).ok();

    // CHECK without prevResult is a configuration error
    w.p4lb("CHECK", "drift", &ns.path, "", &conf).err(7);

    // the controller forgot the endpoint
    w.deregister("drift");
    let e = w.p4lb("CHECK", "drift", &ns.path, "", &prev).err(103);
    assert!(e["msg"].as_str().unwrap().contains("controller"), "{e}");

    // the address went away
    let addr = r.json()["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(ns.with(|n| n.del_addr("eth0", &addr)).unwrap());
    let e = w.p4lb("CHECK", "drift", &ns.path, "", &prev).err(103);
    assert!(e["msg"].as_str().unwrap().contains("address"), "{e}");

    w.p4lb("DEL", "drift", &ns.path, "", &prev).ok();
    w.assert_clean();
}

#[test]
fn del_succeeds_when_everything_is_gone() {
    let w = World::new();
    let ns = Netns::new();
    let conf = w.conf("1.0.0");
    // never added
    w.p4lb("DEL", "never", &ns.path, "", &conf).ok();
    // netns deleted under us
    let r = w.p4lb("ADD", "gone", &ns.path, "", &conf);
    r.ok();
    ns.delete();
    w.p4lb("DEL", "gone", &ns.path, "", &conf).ok();
    // no netns given at all
    let env: Vec<_> = w
        .env("DEL", "gone", "", "eth0", "")
        .into_iter()
        .filter(|(k, _)| *k != "CNI_NETNS")
        .collect();
    run_plugin(
        std::path::Path::new(PLUGIN),
        &env,
        conf.to_string().as_bytes(),
    )
    .ok();
    w.assert_clean();
}

#[test]
fn status_reflects_controller_and_switch() {
    let mut w = World::new();
    let conf = w.conf("1.1.0");
    let env = vec![
        ("CNI_COMMAND", "STATUS".to_string()),
        ("CNI_PATH", w.cni_path.display().to_string()),
    ];
    let run = |c: &Value| run_plugin(std::path::Path::new(PLUGIN), &env, c.to_string().as_bytes());
    run(&conf).ok();
    // STATUS needs a 1.1.0 configuration
    run(&w.conf("1.0.0")).err(1);
    // controller gone
    w.stop_controller();
    let e = run(&conf).err(50);
    assert!(e["details"].as_str().unwrap().contains("controller"), "{e}");
    // controller up, switch unreachable
    w.start_controller_without_switch();
    let e = run(&conf).err(50);
    assert!(e["details"].as_str().unwrap().contains("switch"), "{e}");
}

#[test]
fn gc_removes_attachments_not_listed() {
    let w = World::new();
    let conf = w.conf("1.1.0");
    let nss: Vec<Netns> = (0..3).map(|_| Netns::new()).collect();
    let mut results = Vec::new();
    for (i, ns) in nss.iter().enumerate() {
        let r = w.p4lb("ADD", &format!("gc{i}"), &ns.path, "", &conf);
        r.ok();
        results.push(r.json());
    }
    // a lease without veth or endpoint (a crash between IPAM and the rest)
    let stray = w.system(
        "host-local",
        "ADD",
        "stray",
        "/proc/self/ns/net",
        &w.conf("1.0.0"),
    );
    stray.ok();
    assert_eq!(w.leases().len(), 4);
    assert_eq!(w.host_links().len(), 3);
    assert_eq!(w.endpoints().len(), 3);

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "gc1", "ifname": "eth0"}]);
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

    assert_eq!(w.host_links().len(), 1);
    let eps = w.endpoints();
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].key, "gc1/eth0");
    let kept = results[1]["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(w.leases(), vec![kept]);
    // the survivor still checks out
    let mut prev = conf.clone();
    prev["prevResult"] = results[1].clone();
    w.p4lb("CHECK", "gc1", &nss[1].path, "", &prev).ok();
    w.p4lb("DEL", "gc1", &nss[1].path, "", &prev).ok();
    w.assert_clean();
}

#[test]
fn runtime_config_mac_sets_the_pod_mac() {
    let w = World::new();
    let ns = Netns::new();
    let mut c = w.conf("1.1.0");
    c["runtimeConfig"] = json!({"mac": "02:42:0a:00:00:99"});
    let r = w.p4lb("ADD", "mac", &ns.path, "", &c);
    r.ok();
    let r = r.json();
    assert_eq!(r["interfaces"][1]["mac"], "02:42:0a:00:00:99");
    assert!(ns
        .exec(&["ip", "link", "show", "eth0"])
        .contains("02:42:0a:00:00:99"));
    assert_eq!(w.endpoints()[0].mac, "02:42:0a:00:00:99");
    // 1.1.0 results carry the interface MTU
    assert!(r["interfaces"][1]["mtu"].as_u64().is_some(), "{r}");
    let mut bad = w.conf("1.1.0");
    bad["runtimeConfig"] = json!({"mac": "not-a-mac"});
    let ns2 = Netns::new();
    w.p4lb("ADD", "mac2", &ns2.path, "", &bad).err(7);
    w.p4lb("DEL", "mac", &ns.path, "", &c).ok();
    w.assert_clean();
}

#[test]
fn no_command_prints_about_and_succeeds() {
    let out = run_plugin(std::path::Path::new(PLUGIN), &[], b"");
    out.ok();
    assert!(
        out.stderr
            .contains("CNI protocol versions supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
        "{}",
        out.stderr
    );
}
