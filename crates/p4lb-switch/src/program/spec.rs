//! Which stage of the data path each object of the pipeline contract is.
//!
//! The contract itself (names, IDs, widths, match kinds, default actions, the digest layout)
//! is `p4lb_p4`'s ([`p4lb_p4::tables`], [`p4lb_p4::actions`], [`p4lb_p4::externs`]); this
//! module only names the tables, actions, counters and registers the Rust data path executes, each
//! pointing at its contract description. A table of the contract without a [`TableKind`] is
//! still bound and writable, but the data path does not apply it.

use p4lb_p4::schema::{ActionInfo, CounterInfo, RegisterInfo, TableInfo};
use p4lb_p4::{actions, externs, tables};

pub use p4lb_p4::schema::MatchKind;

/// The tables the data path applies, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableKind {
    ArpProxy,
    VipServices,
    ConnTable,
    MaglevSlots,
    Backends,
    ConnReverse,
    ServiceVip,
    Ipv4Routes,
    L2Forward,
    PortSmac,
}

impl TableKind {
    pub const ALL: [TableKind; 10] = [
        TableKind::ArpProxy,
        TableKind::VipServices,
        TableKind::ConnTable,
        TableKind::MaglevSlots,
        TableKind::Backends,
        TableKind::ConnReverse,
        TableKind::ServiceVip,
        TableKind::Ipv4Routes,
        TableKind::L2Forward,
        TableKind::PortSmac,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The contract's description of this table.
    pub fn info(self) -> &'static TableInfo {
        match self {
            TableKind::ArpProxy => &tables::arp_proxy::INFO,
            TableKind::VipServices => &tables::vip_services::INFO,
            TableKind::ConnTable => &tables::conn_table::INFO,
            TableKind::MaglevSlots => &tables::maglev_slots::INFO,
            TableKind::Backends => &tables::backends::INFO,
            TableKind::ConnReverse => &tables::conn_reverse::INFO,
            TableKind::ServiceVip => &tables::service_vip::INFO,
            TableKind::Ipv4Routes => &tables::ipv4_routes::INFO,
            TableKind::L2Forward => &tables::l2_forward::INFO,
            TableKind::PortSmac => &tables::port_smac::INFO,
        }
    }

    /// The data-path table of a contract table (by its contract ID).
    pub fn of(contract_id: u32) -> Option<TableKind> {
        Self::ALL.into_iter().find(|k| k.info().id == contract_id)
    }
}

/// The actions of the contract, as the data path executes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionKind {
    Nop,
    ArpReply,
    SetService,
    ConnPin,
    ConnMiss,
    SetBackend,
    BackendForward,
    BackendLocked,
    RewriteSrc,
    RouteToPort,
    RouteLocked,
    RouteDrop,
    L2Output,
    L2Drop,
    SetSmac,
    /// An action of the contract that only tables the data path does not apply use.
    NotExecuted,
}

impl ActionKind {
    /// Every executed action with its contract description.
    const EXECUTED: [(ActionKind, &'static ActionInfo); 15] = [
        (ActionKind::Nop, &actions::nop::INFO),
        (ActionKind::ArpReply, &actions::arp_reply::INFO),
        (ActionKind::SetService, &actions::set_service::INFO),
        (ActionKind::ConnPin, &actions::conn_pin::INFO),
        (ActionKind::ConnMiss, &actions::conn_miss::INFO),
        (ActionKind::SetBackend, &actions::set_backend::INFO),
        (ActionKind::BackendForward, &actions::backend_forward::INFO),
        (ActionKind::BackendLocked, &actions::backend_locked::INFO),
        (ActionKind::RewriteSrc, &actions::rewrite_src::INFO),
        (ActionKind::RouteToPort, &actions::route_to_port::INFO),
        (ActionKind::RouteLocked, &actions::route_locked::INFO),
        (ActionKind::RouteDrop, &actions::route_drop::INFO),
        (ActionKind::L2Output, &actions::l2_output::INFO),
        (ActionKind::L2Drop, &actions::l2_drop::INFO),
        (ActionKind::SetSmac, &actions::set_smac::INFO),
    ];

    /// The data-path action of a contract action (by its contract ID).
    pub fn of(contract_id: u32) -> ActionKind {
        Self::EXECUTED
            .iter()
            .find(|(_, a)| a.id == contract_id)
            .map(|(k, _)| *k)
            .unwrap_or(ActionKind::NotExecuted)
    }
}

/// Parameters a P4Info may lack (older revisions of the contract): (action ID, parameter
/// ID), both of the contract.
pub const OPTIONAL_PARAMS: &[(u32, u32)] = &[(
    actions::rewrite_src::ID,
    actions::rewrite_src::SERVICE_ID.id,
)];

/// Indirect counters, by index in [`CounterKind::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterKind {
    BackendPackets = 0,
    ServicePackets = 1,
    Drops = 2,
}

impl CounterKind {
    pub const ALL: [CounterKind; 3] = [
        CounterKind::BackendPackets,
        CounterKind::ServicePackets,
        CounterKind::Drops,
    ];

    /// The contract's description of this counter.
    pub fn info(self) -> &'static CounterInfo {
        match self {
            CounterKind::BackendPackets => &externs::backend_packets::INFO,
            CounterKind::ServicePackets => &externs::service_packets::INFO,
            CounterKind::Drops => &externs::drops::INFO,
        }
    }
}

/// The transit registers (one pending VIP connection per index across all of them), by
/// index in [`RegisterKind::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterKind {
    Mark = 0,
    Client = 1,
    Backend = 2,
    ClientPort = 3,
    BackendPort = 4,
    Protocol = 5,
    State = 6,
    ServerAck = 7,
}

impl RegisterKind {
    pub const ALL: [RegisterKind; 8] = [
        RegisterKind::Mark,
        RegisterKind::Client,
        RegisterKind::Backend,
        RegisterKind::ClientPort,
        RegisterKind::BackendPort,
        RegisterKind::Protocol,
        RegisterKind::State,
        RegisterKind::ServerAck,
    ];

    /// The contract's description of this register.
    pub fn info(self) -> &'static RegisterInfo {
        match self {
            RegisterKind::Mark => &externs::transit_marks::INFO,
            RegisterKind::Client => &externs::transit_client::INFO,
            RegisterKind::Backend => &externs::transit_backend::INFO,
            RegisterKind::ClientPort => &externs::transit_client_port::INFO,
            RegisterKind::BackendPort => &externs::transit_backend_port::INFO,
            RegisterKind::Protocol => &externs::transit_protocol::INFO,
            RegisterKind::State => &externs::transit_state::INFO,
            RegisterKind::ServerAck => &externs::transit_server_ack::INFO,
        }
    }
}

/// Drop reasons (indexes into the `drops` counter), from [`p4lb_p4::DropReason`].
pub mod drop_reason {
    use p4lb_p4::DropReason;

    pub const LOCKED: usize = DropReason::Locked as usize;
    pub const NO_ROUTE: usize = DropReason::NoRoute as usize;
    pub const PARSER_ERROR: usize = DropReason::ParserError as usize;
    pub const TTL: usize = DropReason::Ttl as usize;
    pub const NO_BACKEND: usize = DropReason::NoBackend as usize;
    pub const HOLD_FULL: usize = DropReason::HoldFull as usize;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_point_at_distinct_contract_objects_in_order() {
        for (i, k) in TableKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
            assert_eq!(TableKind::of(k.info().id), Some(*k));
            assert_eq!(tables::by_id(k.info().id), Some(k.info()));
        }
        for (k, a) in ActionKind::EXECUTED {
            assert_eq!(ActionKind::of(a.id), k);
            assert_eq!(actions::by_id(a.id), Some(a));
        }
        for (i, k) in CounterKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
            assert!(externs::COUNTERS.contains(k.info()));
        }
        assert_eq!(RegisterKind::ALL.len(), externs::REGISTERS.len());
        for (i, k) in RegisterKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
            assert_eq!(externs::REGISTERS[i], *k.info());
        }
    }
}
