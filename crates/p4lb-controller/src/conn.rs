//! Connection learning: conn_learn digests become a conn_table entry (client's
//! 5-tuple → backend) and a conn_reverse entry (the backend's reply tuple → VIP),
//! both written in one batch per digest list. Idle connections are removed on the
//! switch's IdleTimeoutNotification or by the controller's sweep; closed ones (RST, or
//! FIN from both sides) after `conn.close_linger_ms` ([`ConnTable::close`], driven by
//! `Controller::on_close`).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use p4lb_p4::entries as p;
use p4lb_p4::{actions, ConnLearn, FiveTuple};
use p4lb_proto::p4runtime::update::Type;
use p4lb_proto::p4runtime::{P4Data, TableEntry, Update};

use crate::southbound::programmer::table_update;
use crate::state::State;

/// One conn_learn digest member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    pub tuple: FiveTuple,
    pub service_id: u16,
    pub backend_id: u16,
}

impl From<&ConnLearn> for Learned {
    fn from(m: &ConnLearn) -> Learned {
        Learned {
            tuple: m.tuple(),
            service_id: m.service_id,
            backend_id: m.backend_id,
        }
    }
}

/// Decodes one member of a conn_learn digest list (layout: [`p4lb_p4::digest`]), whatever
/// its event.
pub fn parse_learned(d: &P4Data) -> Option<Learned> {
    ConnLearn::from_p4data(d).map(|m| Learned::from(&m))
}

/// A learned connection as installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRec {
    pub backend_id: u16,
    pub service_id: u16,
    pub reverse: FiveTuple,
    pub vip: Ipv4Addr,
    pub vport: u16,
}

/// The reverse tuple and VIP of a connection, from the state (None when its
/// service or backend is unknown).
pub fn resolve(state: &State, l: &Learned) -> Option<ConnRec> {
    let svc = state.service_by_id(l.service_id)?;
    let be = state.endpoint_by_backend(l.backend_id)?;
    Some(ConnRec {
        backend_id: l.backend_id,
        service_id: l.service_id,
        reverse: FiveTuple {
            src: be.backend_ip,
            dst: l.tuple.src,
            protocol: l.tuple.protocol,
            sport: svc.effective_target_port(),
            dport: l.tuple.sport,
        },
        vip: svc.vip,
        vport: svc.port,
    })
}

/// How a connection was seen closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// A FIN from one side: the connection is closed once both sides sent one.
    Fin,
    /// A RST from either side: the connection is closed.
    Rst,
}

/// Which side of a connection a tuple names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's tuple (client -> VIP, the conn_table key).
    Client,
    /// The backend's reply tuple (backend -> client, the conn_reverse key).
    Backend,
}

/// What a close event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseOutcome {
    /// The tuple is no installed connection (either side): nothing to do.
    Unknown,
    /// A FIN from this side noted; the other side has not sent one yet.
    HalfClosed(Side),
    /// The connection is closed; its entries go at this instant.
    Scheduled(Instant),
}

/// Close state of one connection.
#[derive(Debug, Clone, Copy, Default)]
struct Closing {
    client_fin: bool,
    backend_fin: bool,
    delete_at: Option<Instant>,
}

/// Learned connections the controller has installed.
#[derive(Debug, Default)]
pub struct ConnTable {
    map: HashMap<FiveTuple, ConnRec>,
    /// Reply tuple -> client tuple.
    by_reverse: HashMap<FiveTuple, FiveTuple>,
    /// Connections seen closing (at most one per installed connection).
    closing: HashMap<FiveTuple, Closing>,
    /// Counts changes, so that a snapshot is taken only when there are any.
    version: u64,
}

impl ConnTable {
    /// Adds or replaces a connection.
    pub fn insert(&mut self, t: FiveTuple, c: ConnRec) -> Option<ConnRec> {
        self.version += 1;
        let old = self.map.insert(t, c);
        if let Some(o) = &old {
            self.by_reverse.remove(&o.reverse);
        }
        self.by_reverse.insert(c.reverse, t);
        self.closing.remove(&t);
        old
    }

    pub fn remove(&mut self, t: &FiveTuple) -> Option<ConnRec> {
        let old = self.map.remove(t);
        if let Some(o) = &old {
            self.version += 1;
            if self.by_reverse.get(&o.reverse) == Some(t) {
                self.by_reverse.remove(&o.reverse);
            }
            self.closing.remove(t);
        }
        old
    }

    /// Keeps the connections for which `keep` is true.
    pub fn retain(&mut self, keep: impl FnMut(&FiveTuple, &mut ConnRec) -> bool) {
        let before = self.map.len();
        self.map.retain(keep);
        if self.map.len() != before {
            self.version += 1;
            let map = &self.map;
            self.by_reverse
                .retain(|r, t| map.get(t).is_some_and(|c| c.reverse == *r));
            self.closing.retain(|t, _| map.contains_key(t));
        }
    }

    /// The client tuple of the connection `t` names (either its client tuple or its
    /// reply tuple), and which side `t` is.
    pub fn lookup(&self, t: &FiveTuple) -> Option<(FiveTuple, Side)> {
        if self.map.contains_key(t) {
            return Some((*t, Side::Client));
        }
        self.by_reverse.get(t).map(|f| (*f, Side::Backend))
    }

    /// Records a close event of the connection `t` names (either tuple): a RST, or a FIN
    /// that completes a FIN from the other side, schedules its removal `linger` after
    /// `now`. A connection already scheduled keeps its instant.
    pub fn close(
        &mut self,
        t: &FiveTuple,
        kind: CloseKind,
        now: Instant,
        linger: Duration,
    ) -> CloseOutcome {
        let Some((fwd, side)) = self.lookup(t) else {
            return CloseOutcome::Unknown;
        };
        self.close_side(fwd, side, kind, now, linger)
    }

    /// [`ConnTable::close`] of the connection whose client tuple is `fwd`, from `side`
    /// (the data plane's close events name the client tuple on both sides and tell the side
    /// by their backend id).
    pub fn close_side(
        &mut self,
        fwd: FiveTuple,
        side: Side,
        kind: CloseKind,
        now: Instant,
        linger: Duration,
    ) -> CloseOutcome {
        if !self.map.contains_key(&fwd) {
            return CloseOutcome::Unknown;
        }
        let c = self.closing.entry(fwd).or_default();
        if let Some(at) = c.delete_at {
            return CloseOutcome::Scheduled(at);
        }
        match (kind, side) {
            (CloseKind::Fin, Side::Client) => c.client_fin = true,
            (CloseKind::Fin, Side::Backend) => c.backend_fin = true,
            (CloseKind::Rst, _) => {}
        }
        if kind == CloseKind::Rst || (c.client_fin && c.backend_fin) {
            let at = now + linger;
            c.delete_at = Some(at);
            CloseOutcome::Scheduled(at)
        } else {
            CloseOutcome::HalfClosed(side)
        }
    }

    /// Client tuples of the closed connections whose linger ended at `now`.
    pub fn closed_due(&self, now: Instant) -> Vec<FiveTuple> {
        self.closing
            .iter()
            .filter(|(_, c)| c.delete_at.is_some_and(|at| at <= now))
            .map(|(t, _)| *t)
            .collect()
    }

    /// Connections seen closing (half-closed or scheduled).
    pub fn closing_len(&self) -> usize {
        self.closing.len()
    }

    pub fn contains(&self, t: &FiveTuple) -> bool {
        self.map.contains_key(t)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&FiveTuple, &ConnRec)> {
        self.map.iter()
    }

    /// Changes since the table was created (any insert or removal).
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Connections pinned to `backend_id`.
    pub fn count_backend(&self, backend_id: u16) -> usize {
        self.map
            .values()
            .filter(|c| c.backend_id == backend_id)
            .count()
    }

    /// Insert updates for a connection.
    pub fn inserts(t: &FiveTuple, c: &ConnRec, idle_timeout_ns: i64) -> [Update; 2] {
        [
            table_update(Type::Insert, p::conn_pin(t, c.backend_id, idle_timeout_ns)),
            table_update(
                Type::Insert,
                p::conn_reverse(&c.reverse, c.vip, c.vport, c.service_id),
            ),
        ]
    }

    /// Delete updates for a connection.
    pub fn deletes(t: &FiveTuple, c: &ConnRec) -> [Update; 2] {
        [
            table_update(Type::Delete, p::conn_key(t)),
            table_update(Type::Delete, p::conn_reverse_key(&c.reverse)),
        ]
    }

    /// Removes and returns the connections matching `pred`.
    pub fn drain_where(&mut self, pred: impl Fn(&ConnRec) -> bool) -> Vec<(FiveTuple, ConnRec)> {
        let keys: Vec<FiveTuple> = self
            .map
            .iter()
            .filter(|(_, c)| pred(c))
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter()
            .filter_map(|k| self.remove(&k).map(|c| (k, c)))
            .collect()
    }
}

/// conn_table entries of a read-back, as learned connections (entries whose
/// service/backend is unknown come back in the second list, to be deleted).
pub fn adopt(state: &State, entries: &[TableEntry]) -> (Vec<(FiveTuple, ConnRec)>, Vec<FiveTuple>) {
    let mut ok = Vec::new();
    let mut stale = Vec::new();
    for e in entries {
        let Some(t) = FiveTuple::from_matches(&e.r#match) else {
            continue;
        };
        let backend = match p::action_of(e) {
            Some((a, params)) if a == actions::conn_pin::ID && params.len() == 1 => {
                params[0] as u16
            }
            _ => {
                stale.push(t);
                continue;
            }
        };
        let svc = state
            .services
            .values()
            .find(|s| s.vip == t.dst && s.protocol == t.protocol && s.port == t.dport);
        match svc.and_then(|s| {
            resolve(
                state,
                &Learned {
                    tuple: t,
                    service_id: s.service_id,
                    backend_id: backend,
                },
            )
        }) {
            Some(c) => ok.push((t, c)),
            None => stale.push(t),
        }
    }
    (ok, stale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p4lb_proto::p4runtime::{p4_data, P4StructLike};

    fn bits(v: &[u8]) -> P4Data {
        P4Data {
            data: Some(p4_data::Data::Bitstring(v.to_vec())),
        }
    }

    #[test]
    fn every_change_counts_and_lookups_do_not() {
        let t = FiveTuple {
            src: Ipv4Addr::new(10, 66, 0, 2),
            dst: Ipv4Addr::new(10, 99, 0, 1),
            protocol: 6,
            sport: 40000,
            dport: 80,
        };
        let c = ConnRec {
            backend_id: 2,
            service_id: 1,
            reverse: t,
            vip: Ipv4Addr::new(10, 99, 0, 1),
            vport: 80,
        };
        let mut tab = ConnTable::default();
        assert_eq!(tab.version(), 0);
        tab.insert(t, c);
        assert_eq!(tab.version(), 1);
        assert!(tab.contains(&t) && tab.iter().count() == 1);
        assert_eq!(tab.version(), 1);
        tab.retain(|_, _| true);
        assert_eq!(tab.version(), 1, "retain that removes nothing is no change");
        let other = FiveTuple { sport: 40001, ..t };
        assert!(tab.remove(&other).is_none());
        assert_eq!(tab.version(), 1);
        assert_eq!(tab.drain_where(|x| x.backend_id == 2).len(), 1);
        assert_eq!(tab.version(), 2);
        assert!(tab.is_empty());
    }

    #[test]
    fn close_needs_a_rst_or_a_fin_from_both_sides_and_forgets_removed_connections() {
        let t = |sport| FiveTuple {
            src: Ipv4Addr::new(10, 66, 0, 2),
            dst: Ipv4Addr::new(10, 99, 0, 1),
            protocol: 6,
            sport,
            dport: 80,
        };
        let rec = |sport| ConnRec {
            backend_id: 2,
            service_id: 1,
            reverse: FiveTuple {
                src: Ipv4Addr::new(10, 88, 0, 2),
                dst: Ipv4Addr::new(10, 66, 0, 2),
                protocol: 6,
                sport: 8080,
                dport: sport,
            },
            vip: Ipv4Addr::new(10, 99, 0, 1),
            vport: 80,
        };
        let mut tab = ConnTable::default();
        for p in [1000, 1001, 1002] {
            tab.insert(t(p), rec(p));
        }
        let now = Instant::now();
        let linger = Duration::from_secs(2);
        assert_eq!(
            tab.close(&t(9), CloseKind::Rst, now, linger),
            CloseOutcome::Unknown
        );
        assert_eq!(
            tab.close(&t(1000), CloseKind::Rst, now, linger),
            CloseOutcome::Scheduled(now + linger)
        );
        assert_eq!(
            tab.close(&t(1001), CloseKind::Fin, now, linger),
            CloseOutcome::HalfClosed(Side::Client)
        );
        assert_eq!(
            tab.close(&t(1001), CloseKind::Fin, now, linger),
            CloseOutcome::HalfClosed(Side::Client),
            "the same side twice is still half closed"
        );
        assert_eq!(
            tab.close(&rec(1002).reverse, CloseKind::Fin, now, linger),
            CloseOutcome::HalfClosed(Side::Backend)
        );
        assert_eq!(tab.closed_due(now + linger), vec![t(1000)]);
        let later = now + Duration::from_secs(1);
        assert_eq!(
            tab.close(&rec(1001).reverse, CloseKind::Fin, later, linger),
            CloseOutcome::Scheduled(later + linger)
        );
        let mut due = tab.closed_due(later + linger);
        due.sort_by_key(|t| t.sport);
        assert_eq!(due, vec![t(1000), t(1001)]);
        assert!(tab.closed_due(now).is_empty());
        // Removal forgets the close state and the reverse index; a new connection on the
        // same tuple starts open.
        tab.remove(&t(1000));
        tab.remove(&t(1001));
        assert!(tab.lookup(&rec(1001).reverse).is_none());
        tab.insert(t(1001), rec(1001));
        assert!(tab.closed_due(later + linger).is_empty());
        tab.retain(|k, _| k.sport != 1002);
        assert_eq!(tab.closing_len(), 0);
        assert!(tab.lookup(&rec(1002).reverse).is_none());
    }

    #[test]
    fn parses_a_digest_member() {
        let d = P4Data {
            data: Some(p4_data::Data::Struct(P4StructLike {
                members: vec![
                    bits(&[10, 0, 0, 1]),
                    bits(&[10, 96, 0, 1]),
                    bits(&[6]),
                    bits(&[0x9c, 0x40]),
                    bits(&[80]),
                    bits(&[1]),
                    bits(&[0, 2]),
                    bits(&[0]),
                ],
            })),
        };
        let l = parse_learned(&d).unwrap();
        assert_eq!(l.tuple.src, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(l.tuple.sport, 40000);
        assert_eq!(l.backend_id, 2);
        assert!(parse_learned(&bits(&[1])).is_none());
    }
}
