//! The `conn_learn` digest as data: one typed message, encoded and decoded in the member
//! order of [`externs::conn_learn::INFO`](crate::externs::conn_learn::INFO) (the order p4c
//! gives the members of `conn_learn_t`). The switch sends it, the controller reads it.
//!
//! Decoding is strict: every member must be a bitstring that fits its P4Info width, and the
//! event must be one of [`ConnEvent`]; anything else is refused (`None`).

use std::net::Ipv4Addr;

use p4lb_proto::p4runtime::{p4_data, P4Data, P4StructLike};

use crate::bytes;
use crate::entries::FiveTuple;
use crate::externs::conn_learn;
use crate::schema::DigestFieldInfo;

/// What a `conn_learn` message reports (its `event` member).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnEvent {
    /// A new VIP connection completed its handshake (TCP) or got the backend's reply (UDP)
    /// through its transit slot: pin it.
    Learn = 0,
    /// A FIN went through a pinned connection (client or backend side).
    Fin = 1,
    /// A RST went through a pinned connection (client or backend side).
    Rst = 2,
}

impl ConnEvent {
    /// The `event` value on the wire.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The event of a wire value; `None` for a value the pipeline never sends.
    pub fn from_code(v: u64) -> Option<ConnEvent> {
        match v {
            0 => Some(ConnEvent::Learn),
            1 => Some(ConnEvent::Fin),
            2 => Some(ConnEvent::Rst),
            _ => None,
        }
    }
}

/// One `conn_learn` message: a VIP connection (the client's 5-tuple, dst = VIP), its service
/// and backend (0 when the backend side reported a close), and what happened to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnLearn {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub service_id: u16,
    pub backend_id: u16,
    pub event: ConnEvent,
}

impl ConnLearn {
    /// The value of one digest field (0 for a field that is not part of `conn_learn`).
    pub fn value(&self, field: &DigestFieldInfo) -> u64 {
        match *field {
            conn_learn::SRC_ADDR => u64::from(u32::from(self.src_addr)),
            conn_learn::DST_ADDR => u64::from(u32::from(self.dst_addr)),
            conn_learn::PROTOCOL => u64::from(self.protocol),
            conn_learn::SRC_PORT => u64::from(self.src_port),
            conn_learn::DST_PORT => u64::from(self.dst_port),
            conn_learn::SERVICE_ID => u64::from(self.service_id),
            conn_learn::BACKEND_ID => u64::from(self.backend_id),
            conn_learn::EVENT => u64::from(self.event.code()),
            _ => 0,
        }
    }

    /// Builds the message from the member values, given in the layout order of
    /// [`conn_learn::INFO`].
    fn from_values(v: &[u64]) -> Option<ConnLearn> {
        let get = |f: DigestFieldInfo| -> Option<u64> {
            let i = conn_learn::INFO.fields.iter().position(|x| *x == f)?;
            v.get(i).copied()
        };
        Some(ConnLearn {
            src_addr: Ipv4Addr::from(get(conn_learn::SRC_ADDR)? as u32),
            dst_addr: Ipv4Addr::from(get(conn_learn::DST_ADDR)? as u32),
            protocol: get(conn_learn::PROTOCOL)? as u8,
            src_port: get(conn_learn::SRC_PORT)? as u16,
            dst_port: get(conn_learn::DST_PORT)? as u16,
            service_id: get(conn_learn::SERVICE_ID)? as u16,
            backend_id: get(conn_learn::BACKEND_ID)? as u16,
            event: ConnEvent::from_code(get(conn_learn::EVENT)?)?,
        })
    }

    /// The client's 5-tuple (the `conn_table` key of the connection).
    pub fn tuple(&self) -> FiveTuple {
        FiveTuple {
            src: self.src_addr,
            dst: self.dst_addr,
            protocol: self.protocol,
            sport: self.src_port,
            dport: self.dst_port,
        }
    }

    /// The digest data a P4Runtime `DigestList` carries for this message: a struct of
    /// canonical bytestrings.
    pub fn to_p4data(&self) -> P4Data {
        let members = conn_learn::INFO
            .fields
            .iter()
            .map(|f| P4Data {
                data: Some(p4_data::Data::Bitstring(bytes::encode(self.value(f)))),
            })
            .collect();
        P4Data {
            data: Some(p4_data::Data::Struct(P4StructLike { members })),
        }
    }

    /// Decodes one member of a `DigestList` (a struct or tuple of bitstrings, one per field of
    /// the digest, each fitting its width, and a known event). `None` when the shape or a
    /// value does not fit.
    pub fn from_p4data(d: &P4Data) -> Option<ConnLearn> {
        let members = match d.data.as_ref()? {
            p4_data::Data::Struct(s) | p4_data::Data::Tuple(s) => &s.members,
            _ => return None,
        };
        if members.len() != conn_learn::INFO.fields.len() {
            return None;
        }
        let v = members
            .iter()
            .zip(conn_learn::INFO.fields)
            .map(|(m, f)| match &m.data {
                Some(p4_data::Data::Bitstring(b)) => bytes::decode(b, f.bitwidth).ok(),
                _ => None,
            })
            .collect::<Option<Vec<u64>>>()?;
        ConnLearn::from_values(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ConnLearn {
        ConnLearn {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 96, 0, 1),
            protocol: 6,
            src_port: 40000,
            dst_port: 80,
            service_id: 3,
            backend_id: 4,
            event: ConnEvent::Rst,
        }
    }

    #[test]
    fn round_trips_through_p4data() {
        let m = sample();
        assert_eq!(ConnLearn::from_p4data(&m.to_p4data()), Some(m));
        assert_eq!(m.tuple().sport, 40000);
    }

    #[test]
    fn members_are_in_layout_order_and_fit_their_widths() {
        let m = sample();
        let Some(p4_data::Data::Struct(s)) = m.to_p4data().data else {
            panic!("digest data is a struct")
        };
        assert_eq!(s.members.len(), conn_learn::INFO.fields.len());
        for (member, field) in s.members.iter().zip(conn_learn::INFO.fields) {
            let Some(p4_data::Data::Bitstring(b)) = &member.data else {
                panic!("{} is a bitstring", field.name)
            };
            assert_eq!(
                bytes::decode(b, field.bitwidth),
                Ok(m.value(field)),
                "{}",
                field.name
            );
            assert_ne!(m.value(field), 0, "{} is a field of ConnLearn", field.name);
        }
    }

    #[test]
    fn rejects_other_shapes() {
        let short = P4Data {
            data: Some(p4_data::Data::Struct(P4StructLike {
                members: vec![P4Data {
                    data: Some(p4_data::Data::Bitstring(vec![1])),
                }],
            })),
        };
        assert_eq!(ConnLearn::from_p4data(&short), None);
        assert_eq!(ConnLearn::from_p4data(&P4Data::default()), None);
    }

    /// `m`'s digest data with member `i` replaced by the bitstring `b`.
    fn with_member(m: &ConnLearn, i: usize, b: Vec<u8>) -> P4Data {
        let mut d = m.to_p4data();
        if let Some(p4_data::Data::Struct(s)) = d.data.as_mut() {
            s.members[i] = P4Data {
                data: Some(p4_data::Data::Bitstring(b)),
            };
        }
        d
    }

    #[test]
    fn every_event_round_trips_and_unknown_events_are_refused() {
        for e in [ConnEvent::Learn, ConnEvent::Fin, ConnEvent::Rst] {
            let m = ConnLearn {
                event: e,
                ..sample()
            };
            assert_eq!(ConnLearn::from_p4data(&m.to_p4data()), Some(m));
            assert_eq!(ConnEvent::from_code(u64::from(e.code())), Some(e));
        }
        let event = conn_learn::INFO.fields.len() - 1;
        assert_eq!(conn_learn::INFO.fields[event], conn_learn::EVENT);
        for bad in [vec![3], vec![0xff]] {
            assert_eq!(
                ConnLearn::from_p4data(&with_member(&sample(), event, bad)),
                None
            );
        }
    }

    #[test]
    fn values_wider_than_their_member_are_refused() {
        // protocol is bit<8>: two significant bytes do not fit.
        assert_eq!(
            ConnLearn::from_p4data(&with_member(&sample(), 2, vec![1, 6])),
            None
        );
        // service_id is bit<16>: padding is fine, a 17th bit is not.
        assert!(ConnLearn::from_p4data(&with_member(&sample(), 5, vec![0, 0, 3])).is_some());
        assert_eq!(
            ConnLearn::from_p4data(&with_member(&sample(), 5, vec![1, 0, 3])),
            None
        );
    }
}
