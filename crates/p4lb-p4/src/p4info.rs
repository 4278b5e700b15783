//! The checked-in P4Info (text format, as p4c emits it) and its parsed form.

use prost_reflect::{DescriptorPool, DynamicMessage};

use p4lb_proto::p4info::P4Info;

use crate::error::P4Error;

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
