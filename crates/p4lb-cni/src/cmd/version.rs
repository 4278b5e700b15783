//! VERSION: the versions this plugin speaks.

use serde_json::{json, Value};

use crate::cni::version::{CURRENT, SUPPORTED};

/// `cniVersion` echoes the input's when there is one.
pub fn run(stdin: &[u8]) -> Value {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| CURRENT.to_string());
    json!({ "cniVersion": asked, "supportedVersions": SUPPORTED })
}
