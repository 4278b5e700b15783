//! The checked-in P4Info (text format, as p4c emits it) and its parsed form.

use prost_reflect::{DescriptorPool, DynamicMessage};

use p4lb_proto::p4info::P4Info;

use crate::error::P4Error;
use crate::{actions, externs, tables};

/// `p4lb.p4info.txtpb` exactly as checked in (the output of
/// `p4c-bm2-ss --p4runtime-files p4lb.p4info.txtpb`).
pub const P4INFO_TXTPB: &str = include_str!("../p4lb.p4info.txtpb");

const P4INFO_MESSAGE: &str = "p4.config.v1.P4Info";

/// Parses a P4Info in protobuf text format.
pub fn parse_p4info_text(text: &str) -> Result<P4Info, P4Error> {
    let pool = DescriptorPool::decode(p4lb_proto::FILE_DESCRIPTOR_SET)
        .map_err(|e| P4Error::Descriptor(e.to_string()))?;
    let desc = pool.get_message_by_name(P4INFO_MESSAGE).ok_or_else(|| {
        P4Error::Descriptor(format!("{P4INFO_MESSAGE} is not in the descriptor set"))
    })?;
    let dynamic = DynamicMessage::parse_text_format(desc, text)
        .map_err(|e| P4Error::P4InfoText(e.to_string()))?;
    dynamic
        .transcode_to::<P4Info>()
        .map_err(|e| P4Error::P4InfoText(format!("transcoding to P4Info: {e}")))
}

/// The P4Info of p4lb.p4 (the embedded text, parsed).
pub fn p4info() -> Result<P4Info, P4Error> {
    parse_p4info_text(P4INFO_TXTPB)
}

/// What a P4Info decides that the constants cannot: v1model derives the digest's ID from
/// its name (see docs/pipeline.md), so it is read from the P4Info in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineIds {
    pub conn_learn_digest: u32,
}

/// Checks that `info` has every table of [`tables::ALL`], every action of
/// [`actions::ALL`] (looked up by name; an action may also be found by its last name
/// component), every counter of [`externs::COUNTERS`] and every register of
/// [`externs::REGISTERS`] with the IDs of the constants, and finds the `conn_learn` digest.
pub fn check_ids(info: &P4Info) -> Result<PipelineIds, P4Error> {
    let mismatch = |msg: String| Err(P4Error::Mismatch(msg));
    let table_ids: Vec<(u32, &str)> = info
        .tables
        .iter()
        .filter_map(|t| t.preamble.as_ref().map(|p| (p.id, p.name.as_str())))
        .collect();
    for t in tables::ALL {
        match table_ids.iter().find(|(_, n)| *n == t.name) {
            Some((got, _)) if *got == t.id => {}
            Some((got, _)) => {
                return mismatch(format!(
                    "table {} has id {got:#x}, expected {:#x}",
                    t.name, t.id
                ))
            }
            None => return mismatch(format!("table {} is missing", t.name)),
        }
    }
    let action_ids: Vec<(u32, &str)> = info
        .actions
        .iter()
        .filter_map(|a| a.preamble.as_ref().map(|p| (p.id, p.name.as_str())))
        .collect();
    for a in actions::ALL {
        let short = short_name(a.name);
        let found = action_ids
            .iter()
            .find(|(_, n)| *n == a.name || short_name(n) == short);
        match found {
            Some((got, _)) if *got == a.id => {}
            Some((got, n)) => {
                return mismatch(format!("action {n} has id {got:#x}, expected {:#x}", a.id))
            }
            None => return mismatch(format!("action {} is missing", a.name)),
        }
    }
    let externs_ids = info
        .counters
        .iter()
        .map(|c| (&c.preamble, "counter"))
        .chain(info.registers.iter().map(|r| (&r.preamble, "register")))
        .filter_map(|(p, kind)| p.as_ref().map(|p| (p.id, p.name.as_str(), kind)))
        .collect::<Vec<_>>();
    let wanted = externs::COUNTERS
        .iter()
        .map(|c| (c.id, c.name, "counter"))
        .chain(
            externs::REGISTERS
                .iter()
                .map(|r| (r.id, r.name, "register")),
        );
    for (id, name, kind) in wanted {
        match externs_ids
            .iter()
            .find(|(_, n, k)| *n == name && *k == kind)
        {
            Some((got, _, _)) if *got == id => {}
            Some((got, _, _)) => {
                return mismatch(format!("{kind} {name} has id {got:#x}, expected {id:#x}"))
            }
            None => return mismatch(format!("{kind} {name} is missing")),
        }
    }
    let digest = info
        .digests
        .iter()
        .filter_map(|d| d.preamble.as_ref())
        .find(|p| short_name(&p.name) == externs::conn_learn::NAME)
        .map(|p| p.id);
    match digest {
        Some(conn_learn_digest) => Ok(PipelineIds { conn_learn_digest }),
        None => mismatch(format!("digest {} is missing", externs::conn_learn::NAME)),
    }
}

/// The last dotted component of a P4 name (`P4lbIngress.conn_pin` → `conn_pin`).
pub fn short_name(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_p4info_has_the_ids_of_the_constants() {
        let ids = check_ids(&p4info().expect("parses")).expect("matches");
        assert_eq!(ids.conn_learn_digest, externs::conn_learn::ID);
    }

    #[test]
    fn rejects_garbage_and_a_foreign_program() {
        assert!(parse_p4info_text("tables { preamble { id: nope } }").is_err());
        let info = parse_p4info_text("pkg_info { arch: \"v1model\" }").expect("parses");
        assert!(matches!(check_ids(&info), Err(P4Error::Mismatch(_))));
        let mut renumbered = p4info().expect("parses");
        if let Some(p) = renumbered.tables[1].preamble.as_mut() {
            p.id = 0x0200_0077;
        }
        assert!(matches!(check_ids(&renumbered), Err(P4Error::Mismatch(_))));
    }

    #[test]
    fn a_missing_or_renumbered_transit_register_is_a_mismatch() {
        let full = p4info().expect("parses");
        let mut renumbered = full.clone();
        let r = renumbered
            .registers
            .iter_mut()
            .find(|r| {
                r.preamble.as_ref().map(|p| p.name.as_str())
                    == Some(externs::transit_server_ack::NAME)
            })
            .expect("transit_server_ack is in the P4Info");
        if let Some(p) = r.preamble.as_mut() {
            p.id = 0x1600_0077;
        }
        let e = check_ids(&renumbered).expect_err("renumbered register");
        assert!(e.to_string().contains("transit_server_ack"), "{e}");
        let mut missing = full;
        missing.registers.retain(|r| {
            r.preamble.as_ref().map(|p| p.name.as_str()) != Some(externs::transit_client::NAME)
        });
        let e = check_ids(&missing).expect_err("missing register");
        assert!(e.to_string().contains("transit_client"), "{e}");
    }
}
