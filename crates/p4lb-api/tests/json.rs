//! The JSON form of API messages (serde derived in p4lb-proto): the field names
//! `p4lbctl --json` has always printed, and a lossless round trip.

use std::collections::BTreeSet;

use p4lb_api::api;
use serde_json::{json, Value};

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .expect("a JSON object")
        .keys()
        .cloned()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn an_endpoint_round_trips() {
    let e = api::Endpoint {
        key: "abc/eth0".into(),
        container_id: "abc".into(),
        ifname: "eth0".into(),
        netns_path: "/run/netns/x".into(),
        netns_inode: 4026532000,
        ip: "10.88.0.5".into(),
        prefix_len: 24,
        mac: "02:42:ac:11:00:02".into(),
        gateway: "10.88.0.1".into(),
        host_ifname: "p4lb1234".into(),
        switch_port: 3,
        backend_id: 7,
        locked: true,
        labels: [("app".to_string(), "web".to_string())].into(),
        network: "pods".into(),
        migrated_ips: vec!["10.88.0.9".into()],
        state: "locked".into(),
        created_unix_ms: -1,
        router_mac: "02:00:00:00:00:01".into(),
        restore_of_ip: "10.88.0.4".into(),
        node: "node-a".into(),
        behind_node: true,
    };
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["ip"], "10.88.0.5");
    assert_eq!(v["labels"], json!({"app": "web"}));
    assert_eq!(v["migrated_ips"], json!(["10.88.0.9"]));
    assert_eq!(v["locked"], true);
    assert_eq!(v["behind_node"], true);
    assert_eq!(v["netns_inode"], 4026532000u64);
    let back: api::Endpoint = serde_json::from_value(v).unwrap();
    assert_eq!(back, e);
}

#[test]
fn field_names_are_the_proto_names() {
    let v = serde_json::to_value(api::Endpoint::default()).unwrap();
    assert_eq!(
        keys(&v),
        set(&[
            "key",
            "container_id",
            "ifname",
            "netns_path",
            "netns_inode",
            "ip",
            "prefix_len",
            "mac",
            "gateway",
            "host_ifname",
            "switch_port",
            "backend_id",
            "locked",
            "labels",
            "network",
            "migrated_ips",
            "state",
            "created_unix_ms",
            "router_mac",
            "restore_of_ip",
            "node",
            "behind_node",
        ])
    );
    let v = serde_json::to_value(api::Service::default()).unwrap();
    assert_eq!(
        keys(&v),
        set(&[
            "name",
            "vip",
            "protocol",
            "port",
            "target_port",
            "backends",
            "selector",
            "name_pattern",
            "service_id",
            "resolved_backends",
            "slot_count",
        ])
    );
    let v = serde_json::to_value(api::Migration::default()).unwrap();
    assert_eq!(
        keys(&v),
        set(&[
            "id",
            "source_key",
            "target_key",
            "source_ip",
            "target_ip",
            "state",
            "locked_unix_us",
            "checkpointed_unix_us",
            "restore_started_unix_us",
            "restored_unix_us",
            "unlocked_unix_us",
            "switchover_us",
            "stall_us",
            "connections_carried",
            "leave_running",
            "error",
            "image_dir",
            "no_lock",
            "source_node",
            "target_node",
            "endpoint",
        ])
    );
    let v = serde_json::to_value(api::StatusResponse::default()).unwrap();
    assert_eq!(
        keys(&v),
        set(&[
            "ready",
            "switch_connected",
            "switch_address",
            "switch_kind",
            "endpoints",
            "services",
            "active_migrations",
            "version",
            "table_entries",
            "message",
        ])
    );
    let v = serde_json::to_value(api::TableRow::default()).unwrap();
    assert_eq!(keys(&v), set(&["table", "match", "action"]));
    let v = serde_json::to_value(api::Port::default()).unwrap();
    assert_eq!(
        keys(&v),
        set(&[
            "port",
            "iface",
            "rx_packets",
            "tx_packets",
            "rx_bytes",
            "tx_bytes",
            "drops"
        ])
    );
}

#[test]
fn absent_fields_take_their_defaults() {
    let m: api::Migration = serde_json::from_value(json!({"id": "m-1", "stall_us": 1500})).unwrap();
    assert_eq!(m.id, "m-1");
    assert_eq!(m.stall_us, 1500);
    assert_eq!(m.state, "");
    let rows: Vec<api::TableRow> =
        serde_json::from_value(json!([{"table": "t", "match": "m", "action": "a"}])).unwrap();
    assert_eq!(rows[0].r#match, "m");
}
