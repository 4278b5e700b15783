//! The ForwardingPipelineConfig the controller pushes: a P4Info (parsed and checked against
//! the pipeline contract by p4lb-p4), the target's device config, and a cookie that tells a
//! restarted controller whether the switch already runs it.

use std::path::Path;

use prost::Message;

use p4lb_p4::PipelineIds;
use p4lb_proto::p4info::P4Info;
use p4lb_proto::p4runtime::{forwarding_pipeline_config::Cookie, ForwardingPipelineConfig};

/// Errors of loading the pipeline description.
#[derive(Debug, thiserror::Error)]
pub enum P4InfoError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Contract {
        path: String,
        #[source]
        source: p4lb_p4::P4Error,
    },
}

/// Loads the P4Info at `path` and checks every table and action ID the controller writes
/// against it.
pub fn load(path: &Path) -> Result<(P4Info, PipelineIds), P4InfoError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| P4InfoError::Read {
        path: p.clone(),
        source,
    })?;
    load_text(&text, &p)
}

/// Parses and checks P4Info text given in memory (`what` names it in errors).
pub fn load_text(text: &str, what: &str) -> Result<(P4Info, PipelineIds), P4InfoError> {
    let contract = |source| P4InfoError::Contract {
        path: what.to_string(),
        source,
    };
    let info = p4lb_p4::parse_p4info_text(text).map_err(contract)?;
    let ids = p4lb_p4::check_ids(&info).map_err(contract)?;
    Ok((info, ids))
}

/// FNV-1a 64 over the P4Info encoding and the device config: the pipeline cookie.
pub fn cookie(info: &P4Info, device_config: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in info.encode_to_vec().iter().chain(device_config.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The ForwardingPipelineConfig to push.
pub fn pipeline_config(info: P4Info, device_config: Vec<u8>) -> ForwardingPipelineConfig {
    let c = cookie(&info, &device_config);
    ForwardingPipelineConfig {
        p4info: Some(info),
        p4_device_config: device_config,
        cookie: Some(Cookie { cookie: c }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_p4info_matches_the_contract() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../p4lb-p4/p4lb.p4info.txtpb"
        ));
        let (info, ids) = load(path).unwrap();
        assert!(!info.tables.is_empty());
        assert_eq!(ids.conn_learn_digest, p4lb_p4::externs::conn_learn::ID);
        let (_, ids2) = load_text(p4lb_p4::P4INFO_TXTPB, "embedded").unwrap();
        assert_eq!(ids2.conn_learn_digest, ids.conn_learn_digest);
    }

    #[test]
    fn rejects_garbage() {
        assert!(load_text("tables { preamble { id: nope } }", "garbage").is_err());
        assert!(load_text("pkg_info { arch: \"v1model\" }", "empty").is_err());
    }

    #[test]
    fn the_cookie_covers_the_device_config() {
        let (info, _) = load_text(p4lb_p4::P4INFO_TXTPB, "embedded").unwrap();
        let a = pipeline_config(info.clone(), Vec::new());
        let b = pipeline_config(info, b"{}".to_vec());
        assert_ne!(a.cookie, b.cookie);
    }
}
