//! Typed action calls: what a table entry tells the data path to do.

use super::spec::ActionKind;

pub type Mac = [u8; 6];

/// One action with its parameters decoded (the table entry's "action data").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Nop,
    ArpReply {
        mac: Mac,
    },
    SetService {
        service_id: u16,
        slot_count: u16,
        target_port: u16,
    },
    ConnPin {
        backend_id: u16,
    },
    ConnMiss,
    SetBackend {
        backend_id: u16,
    },
    BackendForward {
        ip: u32,
        dmac: Mac,
        port: u16,
    },
    BackendLocked,
    RewriteSrc {
        vip: u32,
        vport: u16,
        service_id: Option<u16>,
    },
    RouteToPort {
        port: u16,
        dmac: Mac,
    },
    RouteLocked,
    RouteDrop,
    L2Output {
        port: u16,
    },
    L2Drop,
    SetSmac {
        mac: Mac,
    },
}

pub fn mac_from_u64(v: u64) -> Mac {
    let b = v.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

impl Act {
    /// Builds the action from its parameter values in contract order (`None` = absent
    /// optional parameter). Values were already checked against their widths.
    pub fn build(kind: ActionKind, p: &[Option<u64>]) -> Act {
        let v = |i: usize| p.get(i).copied().flatten().unwrap_or(0);
        match kind {
            ActionKind::Nop | ActionKind::NotExecuted => Act::Nop,
            ActionKind::ArpReply => Act::ArpReply {
                mac: mac_from_u64(v(0)),
            },
            ActionKind::SetService => Act::SetService {
                service_id: v(0) as u16,
                slot_count: v(1) as u16,
                target_port: v(2) as u16,
            },
            ActionKind::ConnPin => Act::ConnPin {
                backend_id: v(0) as u16,
            },
            ActionKind::ConnMiss => Act::ConnMiss,
            ActionKind::SetBackend => Act::SetBackend {
                backend_id: v(0) as u16,
            },
            ActionKind::BackendForward => Act::BackendForward {
                ip: v(0) as u32,
                dmac: mac_from_u64(v(1)),
                port: v(2) as u16,
            },
            ActionKind::BackendLocked => Act::BackendLocked,
            ActionKind::RewriteSrc => Act::RewriteSrc {
                vip: v(0) as u32,
                vport: v(1) as u16,
                service_id: p.get(2).copied().flatten().map(|x| x as u16),
            },
            ActionKind::RouteToPort => Act::RouteToPort {
                port: v(0) as u16,
                dmac: mac_from_u64(v(1)),
            },
            ActionKind::RouteLocked => Act::RouteLocked,
            ActionKind::RouteDrop => Act::RouteDrop,
            ActionKind::L2Output => Act::L2Output { port: v(0) as u16 },
            ActionKind::L2Drop => Act::L2Drop,
            ActionKind::SetSmac => Act::SetSmac {
                mac: mac_from_u64(v(0)),
            },
        }
    }
}
