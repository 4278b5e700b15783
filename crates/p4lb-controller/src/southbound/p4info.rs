//! Loading the P4Info (protobuf text format) and building the pipeline config.

use std::path::Path;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};

use p4lb_proto::p4info::P4Info;
use p4lb_proto::p4runtime::{forwarding_pipeline_config::Cookie, ForwardingPipelineConfig};

use crate::pipeline;

/// Errors of loading the pipeline description.
#[derive(Debug, thiserror::Error)]
pub enum P4InfoError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing P4Info text format {path}: {msg}")]
    Parse { path: String, msg: String },
    #[error("P4Info {path} does not match the pipeline contract: {msg}")]
    Mismatch { path: String, msg: String },
}

/// Parses P4Info text format with the descriptors compiled into p4lb-proto.
pub fn parse_text(text: &str) -> Result<P4Info, String> {
    let pool = DescriptorPool::decode(p4lb_proto::FILE_DESCRIPTOR_SET)
        .map_err(|e| format!("descriptor set: {e}"))?;
    let desc = pool
        .get_message_by_name("p4.config.v1.P4Info")
        .ok_or_else(|| String::from("p4.config.v1.P4Info missing from descriptors"))?;
    let dynamic = DynamicMessage::parse_text_format(desc, text).map_err(|e| e.to_string())?;
    P4Info::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| e.to_string())
}

/// IDs the controller learns from the P4Info rather than assuming.
#[derive(Debug, Clone, Copy)]
pub struct PipelineIds {
    pub conn_learn_digest: u32,
}

/// Loads the P4Info at `path` and checks every table and action ID the controller
/// writes against it.
pub fn load(path: &Path) -> Result<(P4Info, PipelineIds), P4InfoError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| P4InfoError::Read {
        path: p.clone(),
        source,
    })?;
    let info = parse_text(&text).map_err(|msg| P4InfoError::Parse {
        path: p.clone(),
        msg,
    })?;
    let ids = check(&info).map_err(|msg| P4InfoError::Mismatch { path: p, msg })?;
    Ok((info, ids))
}

/// Parses and checks P4Info text given in memory (`what` names it in errors).
pub fn load_text(text: &str, what: &str) -> Result<(P4Info, PipelineIds), P4InfoError> {
    let info = parse_text(text).map_err(|msg| P4InfoError::Parse {
        path: what.to_string(),
        msg,
    })?;
    let ids = check(&info).map_err(|msg| P4InfoError::Mismatch {
        path: what.to_string(),
        msg,
    })?;
    Ok((info, ids))
}

/// Verifies the pinned IDs and finds the digest id.
pub fn check(info: &P4Info) -> Result<PipelineIds, String> {
    let tables: Vec<(u32, String)> = info
        .tables
        .iter()
        .filter_map(|t| t.preamble.as_ref().map(|p| (p.id, p.name.clone())))
        .collect();
    for (id, name) in pipeline::table::ALL {
        match tables.iter().find(|(_, n)| n == name) {
            Some((got, _)) if got == id => {}
            Some((got, _)) => {
                return Err(format!("table {name} has id {got:#x}, expected {id:#x}"))
            }
            None => return Err(format!("table {name} is missing")),
        }
    }
    let actions: Vec<(u32, String)> = info
        .actions
        .iter()
        .filter_map(|a| a.preamble.as_ref().map(|p| (p.id, p.name.clone())))
        .collect();
    for (id, name) in pipeline::action::ALL {
        let short = name.rsplit('.').next().unwrap_or(name);
        let found = actions
            .iter()
            .find(|(_, n)| n == name || n.rsplit('.').next() == Some(short));
        match found {
            Some((got, _)) if got == id => {}
            Some((got, n)) => return Err(format!("action {n} has id {got:#x}, expected {id:#x}")),
            None => return Err(format!("action {name} is missing")),
        }
    }
    let digest = info
        .digests
        .iter()
        .filter_map(|d| d.preamble.as_ref())
        .find(|p| p.name == "conn_learn" || p.name.ends_with(".conn_learn"))
        .map(|p| p.id)
        .ok_or_else(|| String::from("digest conn_learn is missing"))?;
    Ok(PipelineIds {
        conn_learn_digest: digest,
    })
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
        assert_eq!(ids.conn_learn_digest, 0x176F_0187);
        let (_, ids2) = load_text(p4lb_p4::P4INFO_TXTPB, "embedded").unwrap();
        assert_eq!(ids2.conn_learn_digest, ids.conn_learn_digest);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_text("tables { preamble { id: nope } }").is_err());
        let info = parse_text("pkg_info { arch: \"v1model\" }").unwrap();
        assert!(check(&info).is_err());
    }
}
