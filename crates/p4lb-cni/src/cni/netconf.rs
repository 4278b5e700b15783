//! The request configuration on stdin: the fields the specification defines. The
//! plugin's own keys are read from [`NetConf::value`] by [`crate::config`].

use serde::Deserialize;
use serde_json::{Map, Value};

use super::env::validate_network_name;
use super::error::{CniError, Code};
use super::result::{CniResult, Dns};
use super::version::Version;

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// A parsed request configuration. `raw` is kept byte for byte: delegated plugins
/// receive exactly what we received.
#[derive(Clone, Debug)]
pub struct NetConf {
    pub raw: Vec<u8>,
    pub value: Map<String, Value>,
    pub version: Version,
    pub name: String,
    pub plugin_type: String,
    pub ipam_type: Option<String>,
    pub dns: Option<Dns>,
    pub prev_result: Option<CniResult>,
    pub runtime_config: Map<String, Value>,
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// The `cniVersion` of a document that may not parse otherwise, for error output.
pub fn sniff_version(raw: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(raw).ok()?;
    let text = v.get("cniVersion")?.as_str()?.to_string();
    Version::negotiate(&text).ok().map(|_| text)
}

fn string_field<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    ctx: &str,
) -> Result<Option<&'a str>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(CniError::new(
            Code::DecodingFailure,
            format!("{ctx}{key} must be a string"),
        )
        .details(format!("got {other}"))),
    }
}

fn plugin_name_ok(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && !name.contains('\\') && name != "." && name != ".."
}

impl NetConf {
    /// Decodes and validates stdin. Errors: 6 (not JSON / wrong types), 1 (version),
    /// 7 (missing or invalid required keys).
    pub fn parse(raw: Vec<u8>) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(&raw).map_err(|e| {
            CniError::new(Code::DecodingFailure, "cannot decode network configuration")
                .details(e.to_string())
        })?;
        let Value::Object(obj) = value else {
            return Err(CniError::new(
                Code::DecodingFailure,
                "network configuration is not a JSON object",
            ));
        };
        let version_text = string_field(&obj, "cniVersion", "")?.unwrap_or("");
        let version = Version::negotiate(version_text)?;
        let name = string_field(&obj, "name", "")?.unwrap_or("").to_string();
        validate_network_name(&name)?;
        let plugin_type = string_field(&obj, "type", "")?.unwrap_or("").to_string();
        if !plugin_name_ok(&plugin_type) {
            return Err(CniError::new(
                Code::InvalidNetworkConfig,
                "missing or invalid plugin type",
            )
            .details(format!("type={plugin_type:?}")));
        }
        let ipam_type = match obj.get("ipam") {
            None | Some(Value::Null) => None,
            Some(Value::Object(ipam)) => {
                let t = string_field(ipam, "type", "ipam.")?.unwrap_or("");
                if !plugin_name_ok(t) {
                    return Err(CniError::new(
                        Code::InvalidNetworkConfig,
                        "missing or invalid ipam.type",
                    )
                    .details(format!("ipam.type={t:?}")));
                }
                Some(t.to_string())
            }
            Some(other) => {
                return Err(
                    CniError::new(Code::DecodingFailure, "ipam must be an object")
                        .details(format!("got {other}")),
                )
            }
        };
        let dns = match obj.get("dns") {
            None | Some(Value::Null) => None,
            Some(v) => Some(serde_json::from_value::<Dns>(v.clone()).map_err(|e| {
                CniError::new(Code::DecodingFailure, "cannot decode dns").details(e.to_string())
            })?),
        };
        let prev_result = match obj.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v) => Some(CniResult::from_value(v, "prevResult")?),
        };
        let runtime_config = match obj.get("runtimeConfig") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                return Err(
                    CniError::new(Code::DecodingFailure, "runtimeConfig must be an object")
                        .details(format!("got {other}")),
                )
            }
        };
        let valid_attachments = match obj.get("cni.dev/valid-attachments") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value::<Vec<Attachment>>(v.clone()).map_err(|e| {
                    CniError::new(
                        Code::DecodingFailure,
                        "cannot decode cni.dev/valid-attachments",
                    )
                    .details(e.to_string())
                })?,
            ),
        };
        Ok(NetConf {
            raw,
            value: obj,
            version,
            name,
            plugin_type,
            ipam_type,
            dns,
            prev_result,
            runtime_config,
            valid_attachments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConf, CniError> {
        NetConf::parse(s.as_bytes().to_vec())
    }

    #[test]
    fn minimal_and_errors() {
        let c = parse(
            r#"{"cniVersion":"1.1.0","name":"n","type":"p4lb","ipam":{"type":"host-local"}}"#,
        )
        .unwrap();
        assert_eq!(c.ipam_type.as_deref(), Some("host-local"));
        assert_eq!(parse("{").unwrap_err().code, 6);
        assert_eq!(parse("[]").unwrap_err().code, 6);
        assert_eq!(
            parse(r#"{"cniVersion":"9.9.9","name":"n","type":"p4lb"}"#)
                .unwrap_err()
                .code,
            1
        );
        assert_eq!(
            parse(r#"{"cniVersion":"1.0.0","type":"p4lb"}"#)
                .unwrap_err()
                .code,
            7
        );
        assert_eq!(
            parse(r#"{"cniVersion":"1.0.0","name":"n"}"#)
                .unwrap_err()
                .code,
            7
        );
        assert_eq!(
            parse(r#"{"cniVersion":"1.0.0","name":"n","type":"p4lb","ipam":{"type":"../x"}}"#)
                .unwrap_err()
                .code,
            7
        );
        assert_eq!(
            parse(r#"{"cniVersion":1,"name":"n","type":"p4lb"}"#)
                .unwrap_err()
                .code,
            6
        );
    }

    #[test]
    fn gc_attachments() {
        let c = parse(
            r#"{"cniVersion":"1.1.0","name":"n","type":"p4lb",
               "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(c.valid_attachments.unwrap()[0].container_id, "a");
    }

    #[test]
    fn sniffs_version() {
        assert_eq!(
            sniff_version(br#"{"cniVersion":"0.4.0"}"#).as_deref(),
            Some("0.4.0")
        );
        assert_eq!(sniff_version(br#"{"cniVersion":"7.0.0"}"#), None);
        assert_eq!(sniff_version(b"nope"), None);
    }
}
