//! The p4lb P4 program (p4lb.p4) and its P4Info, with the names and IDs the rest of p4lb
//! binds to.
//!
//! - [`tables`], [`actions`], [`externs`]: every P4Info ID, name, match field, action
//!   parameter (with bit widths), counter, register and digest, as constants. A test checks
//!   them against the checked-in `p4lb.p4info.txtpb`, which in turn must equal what p4c emits
//!   for `p4lb.p4` (`make p4-check`).
//! - [`p4info()`]: the checked-in P4Info, parsed.
//! - [`hash`]: the crc16-based slot and transit-register indexes, bit-exact with BMv2.
//! - [`bmv2`]: loading the BMv2 JSON that p4c produces (never checked in).
//!
//! docs/pipeline.md describes the pipeline these objects belong to.

pub mod actions;
pub mod bmv2;
mod error;
pub mod externs;
pub mod hash;
mod p4info;
pub mod schema;
pub mod tables;

pub use error::P4Error;
pub use externs::DropReason;
pub use p4info::{p4info, parse_p4info_text, P4INFO_TXTPB};

/// The P4 source, for tools that want to show or compile it.
pub const P4_SOURCE: &str = include_str!("../p4lb.p4");
