//! CNI errors: the well-known codes of the specification and p4lb's own (≥ 100).
//!
//! An error leaves the plugin as `{"cniVersion", "code", "msg", "details"}` on stdout
//! with a non-zero exit status.

use serde::Serialize;

/// Error codes. 1–99 are the specification's; 100 and up are p4lb's own and are
/// listed in the crate's README.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    IoFailure = 5,
    DecodingFailure = 6,
    InvalidNetworkConfig = 7,
    TryAgainLater = 11,
    NotAvailable = 50,
    LimitedConnectivity = 51,
    /// A netlink, ioctl or namespace operation failed.
    Netlink = 100,
    /// The delegated IPAM plugin could not be run or answered nonsense.
    Ipam = 101,
    /// The controller refused the request (invalid, duplicate, out of order).
    ControllerRejected = 102,
    /// CHECK found the attachment differs from what ADD set up.
    CheckFailed = 103,
    /// An interface of the requested name already exists.
    InterfaceExists = 104,
    /// GC could not remove every stale resource.
    GcIncomplete = 105,
}

/// A CNI error as the specification defines it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{msg} (code {code}){}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        CniError {
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// An error with a raw code (as returned by a delegated plugin).
    pub fn with_code(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Prefixes the details with context, keeping code and message.
    pub fn context(mut self, context: impl AsRef<str>) -> Self {
        self.details = if self.details.is_empty() {
            context.as_ref().to_string()
        } else {
            format!("{}: {}", context.as_ref(), self.details)
        };
        self
    }

    /// The JSON document for stdout.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            #[serde(flatten)]
            err: &'a CniError,
        }
        serde_json::to_string(&Out {
            cni_version,
            err: self,
        })
        .unwrap_or_else(|_| {
            format!(
                "{{\"cniVersion\":\"{cni_version}\",\"code\":{},\"msg\":\"error\"}}",
                self.code
            )
        })
    }
}

/// Shorthand for a netlink/namespace failure with context.
pub fn netlink(msg: impl Into<String>, err: impl std::fmt::Display) -> CniError {
    CniError::new(Code::Netlink, msg).details(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let e = CniError::new(Code::InvalidNetworkConfig, "bad").details("why");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.1.0")).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["code"], 7);
        assert_eq!(v["msg"], "bad");
        assert_eq!(v["details"], "why");
        let e = CniError::new(Code::IoFailure, "x");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("0.4.0")).unwrap();
        assert!(v.get("details").is_none());
    }
}
