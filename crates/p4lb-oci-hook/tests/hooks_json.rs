//! The shipped hooks.d file is valid for the containers/common hooks 1.0.0 schema.

#[test]
fn hooks_d_file_is_valid_1_0_0() {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/hooks.d/p4lb.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    assert_eq!(v["version"], "1.0.0");
    let path = v["hook"]["path"].as_str().unwrap();
    assert!(path.starts_with('/'), "hook path must be absolute");
    assert_eq!(path, "/usr/libexec/p4lb/p4lb-oci-hook");
    assert_eq!(v["hook"]["args"][0], "p4lb-oci-hook");
    let known = [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ];
    let stages = v["stages"].as_array().unwrap();
    assert!(!stages.is_empty());
    for s in stages {
        assert!(known.contains(&s.as_str().unwrap()), "unknown stage {s}");
    }
    // "when" must hold at least one condition.
    let when = v["when"].as_object().unwrap();
    assert!(!when.is_empty());
    let allowed = ["always", "annotations", "commands", "hasBindMounts"];
    for k in when.keys() {
        assert!(allowed.contains(&k.as_str()), "unknown when-condition {k}");
    }
}
