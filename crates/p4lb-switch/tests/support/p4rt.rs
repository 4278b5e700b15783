//! Driving a P4Runtime target from the tests: the controller's own P4Runtime client
//! (`p4lb_controller::southbound::session`: channel, arbitration, pipeline push, Write, Read)
//! wrapped in a [`Session`] that panics instead of returning errors. The tests build their
//! entries with p4lb-p4's typed builders (`p4lb_p4::entries`) directly.

use std::time::Duration;

use p4lb_controller::southbound::channel::SwitchChannel;
use p4lb_controller::southbound::forwarding::pipeline_config;
use p4lb_controller::southbound::session::{
    self as client, arbitrate, per_update_errors, read_entities, set_pipeline_request,
    write_request, Inbound,
};
use p4lb_p4::{actions, entries, tables};
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
    pub client: P4RuntimeClient<SwitchChannel>,
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
    pub async fn open(
        channel: impl Into<SwitchChannel>,
        device_id: u64,
        election_id: u128,
    ) -> (Session, i32) {
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

    /// Service 1 at `vip`:80/TCP (target port 8080): every one of its 7 Maglev slots on
    /// backend 4 (10.1.0.4, MAC 02:00:00:00:00:04, port 2), and its reverse path
    /// (`service_vip`, mark 2).
    pub async fn program_vip_on_backend_4(&mut self, vip: std::net::Ipv4Addr) {
        self.insert(vec![
            entries::vip_service(vip, 6, 80, 1, 7, 8080),
            entries::backend_forward(
                4,
                std::net::Ipv4Addr::new(10, 1, 0, 4),
                p4lb_controller::addr::mac_u64(&[2, 0, 0, 0, 0, 4]),
                2,
            ),
            entries::service_vip(1, vip, 80),
        ])
        .await;
        self.insert(
            (0..7)
                .map(|slot| entries::maglev_slot(1, slot, 4))
                .collect(),
        )
        .await;
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

/// A call of action `action_id` with `params` in parameter order (IDs 1..n for an action
/// outside the program), for Writes the switch must refuse.
pub fn action(action_id: u32, params: &[u64]) -> Option<p4::TableAction> {
    match actions::by_id(action_id) {
        Some(a) => entries::action(a, params),
        None => entries::action_with_ids(action_id, (1..).zip(params.iter().copied())),
    }
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
