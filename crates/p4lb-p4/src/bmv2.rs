//! The BMv2 JSON of p4lb.p4. It is produced by p4c (`make p4` writes build/p4lb.json) and is
//! never checked in; a BMv2 target receives it as `p4_device_config`.

use std::path::{Path, PathBuf};

use crate::error::P4Error;

/// Environment variable naming the BMv2 JSON to load.
pub const BMV2_JSON_ENV: &str = "P4LB_BMV2_JSON";

/// Where `make p4` writes the BMv2 JSON, relative to the repository root.
pub const DEFAULT_BMV2_JSON: &str = "build/p4lb.json";

/// Keys every BMv2 JSON program has at the top level.
const REQUIRED_KEYS: [&str; 4] = ["header_types", "parsers", "pipelines", "deparsers"];

/// A BMv2 JSON program, checked to be one, kept as the exact bytes p4c wrote.
#[derive(Debug, Clone)]
pub struct Bmv2Json {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// Loads and sanity-checks a BMv2 JSON file.
pub fn load_bmv2_json(path: &Path) -> Result<Bmv2Json, P4Error> {
    let bytes = std::fs::read(path).map_err(|source| P4Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|source| P4Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
    for key in REQUIRED_KEYS {
        if value.get(key).is_none() {
            return Err(P4Error::NotBmv2 {
                path: path.to_path_buf(),
                missing: key,
            });
        }
    }
    Ok(Bmv2Json {
        path: path.to_path_buf(),
        bytes,
    })
}

/// The BMv2 JSON path from `$P4LB_BMV2_JSON`, if set.
pub fn bmv2_json_path_from_env() -> Option<PathBuf> {
    std::env::var_os(BMV2_JSON_ENV).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_missing_file_and_non_bmv2_json() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        assert!(matches!(load_bmv2_json(&missing), Err(P4Error::Io { .. })));

        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, b"{not json").unwrap();
        assert!(matches!(
            load_bmv2_json(&garbage),
            Err(P4Error::Json { .. })
        ));

        let other = dir.path().join("other.json");
        std::fs::write(&other, br#"{"header_types": [], "parsers": []}"#).unwrap();
        match load_bmv2_json(&other) {
            Err(P4Error::NotBmv2 { missing, .. }) => assert_eq!(missing, "pipelines"),
            r => panic!("unexpected {r:?}"),
        }

        let ok = dir.path().join("ok.json");
        let text = br#"{"header_types": [], "parsers": [], "pipelines": [], "deparsers": []}"#;
        std::fs::write(&ok, text).unwrap();
        let loaded = load_bmv2_json(&ok).unwrap();
        assert_eq!(loaded.bytes, text.to_vec());
    }
}
