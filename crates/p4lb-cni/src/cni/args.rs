//! `CNI_ARGS`: `K=V;K2=V2`, with the `IgnoreUnknown` convention.
//!
//! Runtimes pass keys meant for other plugins of a chain; a plugin refuses keys it does
//! not know unless `IgnoreUnknown` is true (`1`/`true`, any case).

use std::collections::BTreeMap;

use super::error::{CniError, Code};

/// Parsed `CNI_ARGS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    values: BTreeMap<String, String>,
}

impl CniArgs {
    /// Parses `text`, accepting the keys in `known` (compared exactly, as the
    /// specification's reference library does). `IgnoreUnknown` is always known.
    pub fn parse(text: &str, known: &[&str]) -> Result<Self, CniError> {
        let mut values = BTreeMap::new();
        for pair in text.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                CniError::new(Code::InvalidEnvironment, "invalid CNI_ARGS")
                    .details(format!("pair {pair:?} is not KEY=VALUE"))
            })?;
            if k.is_empty() {
                return Err(CniError::new(Code::InvalidEnvironment, "invalid CNI_ARGS")
                    .details(format!("pair {pair:?} has an empty key")));
            }
            values.insert(k.to_string(), v.to_string());
        }
        let ignore_unknown = match values.get("IgnoreUnknown").map(|v| v.to_ascii_lowercase()) {
            None => false,
            Some(v) if v == "1" || v == "true" => true,
            Some(v) if v == "0" || v == "false" => false,
            Some(v) => {
                return Err(CniError::new(Code::InvalidEnvironment, "invalid CNI_ARGS")
                    .details(format!("IgnoreUnknown={v:?} is not a boolean")))
            }
        };
        if !ignore_unknown {
            let unknown: Vec<&str> = values
                .keys()
                .map(String::as_str)
                .filter(|k| *k != "IgnoreUnknown" && !known.contains(k))
                .collect();
            if !unknown.is_empty() {
                return Err(
                    CniError::new(Code::InvalidEnvironment, "unknown keys in CNI_ARGS").details(
                        format!(
                            "CNI_ARGS keys [{}] (set IgnoreUnknown=1 to ignore them)",
                            unknown.join(", ")
                        ),
                    ),
                );
            }
        }
        Ok(CniArgs { values })
    }

    /// A value, `None` when absent or empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Renders `text` again without the keys in `drop` (used to keep a restore's old
    /// address away from the IPAM plugin).
    pub fn without(text: &str, drop: &[&str]) -> String {
        text.split(';')
            .filter(|p| !p.is_empty())
            .filter(|p| {
                let key = p.split_once('=').map(|(k, _)| k).unwrap_or(p);
                !drop.contains(&key)
            })
            .collect::<Vec<_>>()
            .join(";")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown() {
        let a = CniArgs::parse("IP=10.0.0.5;MAC=02:00:00:00:00:01", &["IP", "MAC"]).unwrap();
        assert_eq!(a.get("IP"), Some("10.0.0.5"));
        assert_eq!(a.get("MAC"), Some("02:00:00:00:00:01"));
        let e = CniArgs::parse("FOO=1", &["IP"]).unwrap_err();
        assert_eq!(e.code, Code::InvalidEnvironment as u32);
        assert!(e.details.contains("FOO"));
        let a =
            CniArgs::parse("IgnoreUnknown=1;FOO=1;K8S_POD_NAME=web", &["K8S_POD_NAME"]).unwrap();
        assert_eq!(a.get("K8S_POD_NAME"), Some("web"));
        assert!(CniArgs::parse("IgnoreUnknown=true;X=1", &[]).is_ok());
        assert!(CniArgs::parse("IgnoreUnknown=maybe", &[]).is_err());
        assert!(CniArgs::parse("novalue", &[]).is_err());
        assert!(CniArgs::parse("", &[]).unwrap().get("x").is_none());
    }

    #[test]
    fn strips_keys() {
        assert_eq!(
            CniArgs::without("IgnoreUnknown=1;IP=10.0.0.5;MAC=aa;K=v", &["IP", "MAC"]),
            "IgnoreUnknown=1;K=v"
        );
    }
}
