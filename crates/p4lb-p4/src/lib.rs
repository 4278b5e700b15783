//! The p4lb P4 program (p4lb.p4) and its P4Info: the one place in p4lb that knows the
//! pipeline's IDs, names, widths, match kinds and digest layout. The controller, the
//! software switch's program binding, and the switch's tests and bench all build on it;
//! changing a table means changing this crate (plus the program and its P4Info).
//!
//! Where to look:
//! - [`tables`], [`actions`], [`externs`]: every P4Info ID, name, match field, action
//!   parameter (with bit widths), counter, register and digest, as constants ([`schema`] has
//!   their shapes). A test checks them against the checked-in `p4lb.p4info.txtpb`, which in
//!   turn must equal what p4c emits for `p4lb.p4` (`make p4-check`).
//! - [`entries`]: typed builders of every kind of table entry the controller and the tests
//!   write (`entries::backend_forward(..) -> TableEntry`, ...), the [`FiveTuple`] key of the
//!   connection tables, and reading entries back (`action_of`, `canonicalize`).
//! - [`digest`]: the `conn_learn` message ([`ConnLearn`], its [`ConnEvent`]: learn, FIN,
//!   RST), encoded and decoded in the member order of [`externs::conn_learn::INFO`].
//! - [`bytes`]: P4Runtime canonical bytestrings, encode and decode.
//! - [`p4info()`], [`parse_p4info_text`]: the checked-in P4Info, parsed; [`check_ids`]: does
//!   a P4Info carry the IDs of the constants (tables, actions, counters, registers; and
//!   which digest ID it chose).
//! - [`hash`]: BMv2's crc16 over a 5-tuple (`crc16_5tuple`, behind the Maglev slot and the
//!   index of the transit registers) and the slot itself (`maglev_slot`), bit-exact with BMv2; the
//!   software switch's data path hashes with it.
//! - [`HOLD_PORT`]: where `backend_locked` / `route_locked` send a locked destination's
//!   packets (held and run again at unlock on p4lb-switch; dropped on BMv2).
//! - [`bmv2`]: loading the BMv2 JSON that p4c produces (never checked in) and where to find
//!   it (`$P4LB_BMV2_JSON`, `build/p4lb.json`).
//!
//! docs/pipeline.md describes the pipeline these objects belong to.

pub mod actions;
pub mod bmv2;
pub mod bytes;
pub mod digest;
pub mod entries;
mod error;
pub mod externs;
pub mod hash;
mod p4info;
pub mod schema;
pub mod tables;

pub use digest::{ConnEvent, ConnLearn};
pub use entries::FiveTuple;
pub use error::P4Error;
pub use externs::DropReason;
pub use p4info::{check_ids, p4info, parse_p4info_text, short_name, PipelineIds, P4INFO_TXTPB};

/// The P4 source, for tools that want to show or compile it.
pub const P4_SOURCE: &str = include_str!("../p4lb.p4");

/// `HOLD_PORT` of p4lb.p4: the egress port of `backend_locked` and `route_locked`. A target
/// with a hold buffer keeps what leaves for it and runs it through the pipeline again when
/// the `backends` or `ipv4_routes` table changes; one without drops it. Data ports are
/// 1..=[`MAX_DATA_PORT`].
pub const HOLD_PORT: u16 = 510;

/// The largest port number a data port may have: below [`HOLD_PORT`] and v1model's drop
/// port (511).
pub const MAX_DATA_PORT: u16 = 509;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_port_and_hold_full_reason_are_those_of_the_program() {
        assert!(P4_SOURCE.contains(&format!("const bit<9> HOLD_PORT = {HOLD_PORT};")));
        assert!(P4_SOURCE.contains(&format!(
            "const bit<32> DROP_HOLD_FULL    = {};",
            DropReason::HoldFull.index()
        )));
        const { assert!(MAX_DATA_PORT < HOLD_PORT && HOLD_PORT < 511) };
    }
}
