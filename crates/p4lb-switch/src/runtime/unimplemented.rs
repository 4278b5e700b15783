//! Entity kinds the p4lb program has none of (action profiles, meters, direct counters and
//! meters, packet replication engine entries, value sets, externs). Like BMv2, a Read of
//! them answers no entities, so clients that wipe a switch with wildcard reads of every
//! kind (finsy's `Switch.delete_all()`, p4runtime-shell's `*.read()`) work; a Write of them
//! answers UNIMPLEMENTED for that update only. An Entity with no kind set at all stays
//! INVALID_ARGUMENT.

use p4lb_proto::p4runtime::entity::Entity;
use tonic::Code;

use super::status::{rt, RtError};

/// The name of an entity kind this switch does not implement, `None` for the kinds it does.
pub fn kind(entity: &Entity) -> Option<&'static str> {
    match entity {
        Entity::ExternEntry(_) => Some("extern entries"),
        Entity::ActionProfileMember(_) => Some("action profile members"),
        Entity::ActionProfileGroup(_) => Some("action profile groups"),
        Entity::MeterEntry(_) => Some("meter entries"),
        Entity::DirectMeterEntry(_) => Some("direct meter entries"),
        Entity::DirectCounterEntry(_) => Some("direct counter entries"),
        Entity::PacketReplicationEngineEntry(_) => {
            Some("packet replication engine entries (multicast groups, clone sessions)")
        }
        Entity::ValueSetEntry(_) => Some("value set entries"),
        Entity::TableEntry(_)
        | Entity::CounterEntry(_)
        | Entity::RegisterEntry(_)
        | Entity::DigestEntry(_) => None,
    }
}

/// The per-update error of a Write of an unimplemented kind.
pub fn write_error(kind: &str) -> RtError {
    rt(
        Code::Unimplemented,
        format!("{kind} are not implemented: the p4lb program declares none"),
    )
}
