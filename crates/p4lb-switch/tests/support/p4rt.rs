//! Driving a P4Runtime target from the tests: the controller's own P4Runtime client
//! (`p4lb_controller::southbound::session`: channel, arbitration, pipeline push, Write, Read)
//! and p4lb-p4's entry builders (`p4lb_p4::entries`), wrapped in the shapes the tests use
//! (addresses as `u32`, MACs as `[u8; 6]`, panics instead of errors).

use std::net::Ipv4Addr;
use std::time::Duration;

use p4lb_controller::southbound::forwarding::pipeline_config;
use p4lb_controller::southbound::session::{
    self as client, arbitrate, per_update_errors, read_entities, set_pipeline_request,
    write_request, Inbound,
};
use p4lb_p4::{actions, entries, tables, FiveTuple};
use p4lb_proto::google::rpc;
use p4lb_proto::p4info::P4Info;
use p4lb_proto::p4runtime as p4;
use p4lb_proto::p4runtime::p4_runtime_client::P4RuntimeClient;
use p4lb_proto::p4runtime::set_forwarding_pipeline_config_request::Action as SetAction;
use prost::Message;
use tokio::sync::mpsc;
use tonic::transport::Channel;

pub fn p4info() -> P4Info {
    p4lb_p4::p4info().expect("checked-in P4Info parses")
}

/// A table ID the program does not have (one past the highest of the contract).
pub fn unknown_table_id() -> u32 {
    tables::ALL.iter().map(|t| t.id).max().unwrap_or(0) + 1
}

/// A gRPC channel to `address` ("host:port", "http://…" or "unix:/path").
pub async fn channel(address: &str) -> Channel {
    client::connect_channel(address, Duration::from_secs(5))
        .await
        .expect("connect")
}

/// One controller session: client + arbitration stream.
pub struct Session {
    pub client: P4RuntimeClient<Channel>,
    pub device_id: u64,
    pub election_id: u128,
    pub tx: mpsc::Sender<p4::StreamMessageRequest>,
    pub rx: Inbound,
}

pub fn uint128(v: u128) -> p4::Uint128 {
    client::election_id(v)
}

pub fn arbitration(device_id: u64, election_id: u128) -> p4::StreamMessageRequest {
    client::arbitration_request(device_id, election_id)
}

impl Session {
    /// Opens a stream and sends the arbitration update; returns the session and the first
    /// arbitration answer's status code.
    pub async fn open(channel: Channel, device_id: u64, election_id: u128) -> (Session, i32) {
        let mut client = client::client(channel);
        let (tx, rx, answer) =
            arbitrate(&mut client, device_id, election_id, Duration::from_secs(5))
                .await
                .expect("arbitration answer in time");
        let code = answer.status.map(|s| s.code).unwrap_or(-1);
        (
            Session {
                client,
                device_id,
                election_id,
                tx,
                rx,
            },
            code,
        )
    }

    /// Pushes p4lb's pipeline (the checked-in P4Info and `device_config`) as the controller
    /// does (VERIFY_AND_COMMIT).
    pub async fn set_pipeline(&mut self, device_config: Vec<u8>) -> Result<(), tonic::Status> {
        self.client
            .set_forwarding_pipeline_config(set_pipeline_request(
                self.device_id,
                self.election_id,
                SetAction::VerifyAndCommit,
                Some(pipeline_config(p4info(), device_config)),
            ))
            .await
            .map(|_| ())
    }

    pub async fn write(&mut self, updates: Vec<p4::Update>) -> Result<(), tonic::Status> {
        self.client
            .write(write_request(self.device_id, self.election_id, updates))
            .await
            .map(|_| ())
    }

    pub async fn insert(&mut self, entries: Vec<p4::TableEntry>) {
        let ups = entries
            .into_iter()
            .map(|e| update(p4::update::Type::Insert, table_entity(e)))
            .collect();
        self.write(ups).await.expect("insert entries");
    }

    pub async fn read(
        &mut self,
        entities: Vec<p4::Entity>,
    ) -> Result<Vec<p4::Entity>, tonic::Status> {
        read_entities(&mut self.client, self.device_id, entities).await
    }

    /// Next stream message that `pick` accepts, within `timeout`.
    pub async fn next_matching<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(p4::stream_message_response::Update) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let m = tokio::time::timeout_at(deadline, self.rx.message())
                .await
                .ok()?
                .ok()??;
            if let Some(u) = m.update {
                if let Some(t) = pick(u) {
                    return Some(t);
                }
            }
        }
    }

    pub async fn counter(&mut self, counter_id: u32, index: i64) -> (i64, i64) {
        let r = self
            .read(vec![p4::Entity {
                entity: Some(p4::entity::Entity::CounterEntry(p4::CounterEntry {
                    counter_id,
                    index: Some(p4::Index { index }),
                    data: None,
                })),
            }])
            .await
            .expect("counter read");
        match r.first().and_then(|e| e.entity.clone()) {
            Some(p4::entity::Entity::CounterEntry(c)) => {
                let d = c.data.unwrap_or_default();
                (d.packet_count, d.byte_count)
            }
            _ => panic!("no counter entry returned"),
        }
    }
}

pub fn update(ty: p4::update::Type, entity: p4::Entity) -> p4::Update {
    p4::Update {
        r#type: ty as i32,
        entity: Some(entity),
    }
}

pub fn table_entity(e: p4::TableEntry) -> p4::Entity {
    p4::Entity {
        entity: Some(p4::entity::Entity::TableEntry(e)),
    }
}

/// Canonical bytestring of `v`.
pub fn bs(v: u64) -> Vec<u8> {
    p4lb_p4::bytes::encode(v)
}

pub fn mac_u64(m: [u8; 6]) -> u64 {
    m.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b))
}

pub fn exact(field_id: u32, v: u64) -> p4::FieldMatch {
    entries::exact(field_id, v)
}

pub fn lpm(field_id: u32, v: u32, plen: i32) -> p4::FieldMatch {
    entries::lpm(field_id, u64::from(v), plen)
}

/// A call of action `action_id` with `params` in parameter order (IDs 1..n for an action
/// outside the program).
pub fn action(action_id: u32, params: &[u64]) -> Option<p4::TableAction> {
    match actions::by_id(action_id) {
        Some(a) => entries::action(a, params),
        None => entries::action_with_ids(action_id, (1..).zip(params.iter().copied())),
    }
}

pub fn entry(
    table_id: u32,
    m: Vec<p4::FieldMatch>,
    act: Option<p4::TableAction>,
) -> p4::TableEntry {
    entries::entry(table_id, m, act)
}

// ---- entries of the p4lb tables (p4lb_p4::entries) ----

fn tuple(src: u32, dst: u32, protocol: u8, sport: u16, dport: u16) -> FiveTuple {
    FiveTuple {
        src: Ipv4Addr::from(src),
        dst: Ipv4Addr::from(dst),
        protocol,
        sport,
        dport,
    }
}

pub fn arp_proxy(ip: u32, plen: i32, mac: [u8; 6]) -> p4::TableEntry {
    entries::arp_proxy(Ipv4Addr::from(ip), plen, mac_u64(mac))
}

pub fn vip_service(
    vip: u32,
    proto: u8,
    port: u16,
    service_id: u16,
    slot_count: u16,
    target_port: u16,
) -> p4::TableEntry {
    entries::vip_service(
        Ipv4Addr::from(vip),
        proto,
        port,
        service_id,
        slot_count,
        target_port,
    )
}

/// The match of a `conn_table` entry for this 5-tuple.
pub fn five(src: u32, dst: u32, proto: u8, sport: u16, dport: u16) -> Vec<p4::FieldMatch> {
    entries::conn_key(&tuple(src, dst, proto, sport, dport)).r#match
}

pub fn conn_pin(
    src: u32,
    dst: u32,
    proto: u8,
    sport: u16,
    dport: u16,
    backend: u16,
) -> p4::TableEntry {
    entries::conn_pin(&tuple(src, dst, proto, sport, dport), backend, 0)
}

#[allow(clippy::too_many_arguments)]
pub fn conn_reverse(
    src: u32,
    dst: u32,
    proto: u8,
    sport: u16,
    dport: u16,
    vip: u32,
    vport: u16,
    service_id: u16,
) -> p4::TableEntry {
    entries::conn_reverse(
        &tuple(src, dst, proto, sport, dport),
        Ipv4Addr::from(vip),
        vport,
        service_id,
    )
}

pub fn service_vip(service_id: u16, vip: u32, vport: u16) -> p4::TableEntry {
    entries::service_vip(service_id, Ipv4Addr::from(vip), vport)
}

pub fn maglev_slot(service_id: u16, slot: u16, backend: u16) -> p4::TableEntry {
    entries::maglev_slot(service_id, slot, backend)
}

pub fn backend_forward(backend: u16, ip: u32, dmac: [u8; 6], port: u16) -> p4::TableEntry {
    entries::backend_forward(backend, Ipv4Addr::from(ip), mac_u64(dmac), u32::from(port))
}

pub fn backend_locked(backend: u16) -> p4::TableEntry {
    entries::backend_locked(backend)
}

pub fn route(dst: u32, plen: i32, port: u16, dmac: [u8; 6]) -> p4::TableEntry {
    entries::route_to_port(Ipv4Addr::from(dst), plen, u32::from(port), mac_u64(dmac))
}

pub fn route_locked(dst: u32, plen: i32) -> p4::TableEntry {
    entries::route_locked(Ipv4Addr::from(dst), plen)
}

pub fn port_smac(port: u16, mac: [u8; 6]) -> p4::TableEntry {
    entries::port_smac(u32::from(port), mac_u64(mac))
}

pub fn l2(dst: [u8; 6], port: u16) -> p4::TableEntry {
    entries::l2_output(mac_u64(dst), u32::from(port))
}

/// The canonical codes of a failed Write's per-update errors.
pub fn batch_codes(st: &tonic::Status) -> Vec<i32> {
    let s = rpc::Status::decode(st.details()).expect("google.rpc.Status in details");
    for a in &s.details {
        assert_eq!(a.type_url, "type.googleapis.com/p4.v1.Error");
        p4::Error::decode(a.value.as_slice()).expect("p4.v1.Error");
    }
    let (codes, _) = per_update_errors(st);
    assert_eq!(codes.len(), s.details.len(), "one p4.v1.Error per update");
    codes
}
