//! A small P4Runtime client for tests: arbitration stream, pipeline config, entry builders.

use std::time::Duration;

use hyper_util::rt::TokioIo;
use p4lb_p4::{actions, tables};
use p4lb_proto::google::rpc;
use p4lb_proto::p4info::P4Info;
use p4lb_proto::p4runtime as p4;
use p4lb_proto::p4runtime::p4_runtime_client::P4RuntimeClient;
use prost::Message;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Streaming;

pub fn p4info() -> P4Info {
    p4lb_p4::p4info().expect("checked-in P4Info parses")
}

pub async fn channel(address: &str) -> Channel {
    if let Some(path) = address.strip_prefix("unix:") {
        let path = path.to_string();
        let ep = Endpoint::from_static("http://[::]:50051").connect_timeout(Duration::from_secs(5));
        return ep
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let p = path.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(p).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(s))
                }
            }))
            .await
            .expect("connect over unix socket");
    }
    let uri = if address.starts_with("http") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    Endpoint::from_shared(uri)
        .unwrap()
        .connect()
        .await
        .expect("connect")
}

/// One controller session: client + arbitration stream.
pub struct Session {
    pub client: P4RuntimeClient<Channel>,
    pub device_id: u64,
    pub election_id: u128,
    pub tx: mpsc::Sender<p4::StreamMessageRequest>,
    pub rx: Streaming<p4::StreamMessageResponse>,
}

pub fn uint128(v: u128) -> p4::Uint128 {
    p4::Uint128 {
        high: (v >> 64) as u64,
        low: v as u64,
    }
}

pub fn arbitration(device_id: u64, election_id: u128) -> p4::StreamMessageRequest {
    p4::StreamMessageRequest {
        update: Some(p4::stream_message_request::Update::Arbitration(
            p4::MasterArbitrationUpdate {
                device_id,
                role: None,
                election_id: Some(uint128(election_id)),
                status: None,
            },
        )),
    }
}

impl Session {
    /// Opens a stream and sends the arbitration update; returns the session and the first
    /// arbitration answer's status code.
    pub async fn open(channel: Channel, device_id: u64, election_id: u128) -> (Session, i32) {
        let mut client = P4RuntimeClient::new(channel)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        let (tx, rx) = mpsc::channel(64);
        tx.send(arbitration(device_id, election_id)).await.unwrap();
        let mut stream = client
            .stream_channel(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("stream channel")
            .into_inner();
        let code = loop {
            let m = tokio::time::timeout(Duration::from_secs(5), stream.message())
                .await
                .expect("arbitration answer in time")
                .expect("stream ok")
                .expect("stream open");
            if let Some(p4::stream_message_response::Update::Arbitration(a)) = m.update {
                break a.status.map(|s| s.code).unwrap_or(-1);
            }
        };
        (
            Session {
                client,
                device_id,
                election_id,
                tx,
                rx: stream,
            },
            code,
        )
    }

    pub async fn set_pipeline(&mut self, device_config: Vec<u8>) -> Result<(), tonic::Status> {
        self.client
            .set_forwarding_pipeline_config(p4::SetForwardingPipelineConfigRequest {
                device_id: self.device_id,
                election_id: Some(uint128(self.election_id)),
                action: p4::set_forwarding_pipeline_config_request::Action::VerifyAndCommit as i32,
                config: Some(p4::ForwardingPipelineConfig {
                    p4info: Some(p4info()),
                    p4_device_config: device_config,
                    cookie: Some(p4::forwarding_pipeline_config::Cookie { cookie: 7 }),
                }),
                role: String::new(),
            })
            .await
            .map(|_| ())
    }

    pub async fn write(&mut self, updates: Vec<p4::Update>) -> Result<(), tonic::Status> {
        self.client
            .write(p4::WriteRequest {
                device_id: self.device_id,
                election_id: Some(uint128(self.election_id)),
                updates,
                atomicity: 0,
                role: String::new(),
            })
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
        let mut s = self
            .client
            .read(p4::ReadRequest {
                device_id: self.device_id,
                entities,
                role: String::new(),
            })
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(r) = s.message().await? {
            out.extend(r.entities);
        }
        Ok(out)
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
    let b = v.to_be_bytes();
    let first = b.iter().position(|x| *x != 0).unwrap_or(7);
    b[first..].to_vec()
}

pub fn mac_u64(m: [u8; 6]) -> u64 {
    m.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b))
}

pub fn exact(field_id: u32, v: u64) -> p4::FieldMatch {
    p4::FieldMatch {
        field_id,
        field_match_type: Some(p4::field_match::FieldMatchType::Exact(
            p4::field_match::Exact { value: bs(v) },
        )),
    }
}

pub fn lpm(field_id: u32, v: u32, plen: i32) -> p4::FieldMatch {
    p4::FieldMatch {
        field_id,
        field_match_type: Some(p4::field_match::FieldMatchType::Lpm(p4::field_match::Lpm {
            value: bs(u64::from(v)),
            prefix_len: plen,
        })),
    }
}

pub fn action(action_id: u32, params: &[u64]) -> Option<p4::TableAction> {
    Some(p4::TableAction {
        r#type: Some(p4::table_action::Type::Action(p4::Action {
            action_id,
            params: params
                .iter()
                .enumerate()
                .map(|(i, v)| p4::action::Param {
                    param_id: i as u32 + 1,
                    value: bs(*v),
                })
                .collect(),
        })),
    })
}

pub fn entry(
    table_id: u32,
    m: Vec<p4::FieldMatch>,
    act: Option<p4::TableAction>,
) -> p4::TableEntry {
    p4::TableEntry {
        table_id,
        r#match: m,
        action: act,
        ..Default::default()
    }
}

// ---- entries of the p4lb tables ----

pub fn arp_proxy(ip: u32, plen: i32, mac: [u8; 6]) -> p4::TableEntry {
    entry(
        tables::arp_proxy::ID,
        vec![lpm(1, ip, plen)],
        action(actions::arp_reply::ID, &[mac_u64(mac)]),
    )
}

pub fn vip_service(
    vip: u32,
    proto: u8,
    port: u16,
    service_id: u16,
    slot_count: u16,
    target_port: u16,
) -> p4::TableEntry {
    entry(
        tables::vip_services::ID,
        vec![
            exact(1, u64::from(vip)),
            exact(2, u64::from(proto)),
            exact(3, u64::from(port)),
        ],
        action(
            actions::set_service::ID,
            &[
                u64::from(service_id),
                u64::from(slot_count),
                u64::from(target_port),
            ],
        ),
    )
}

pub fn five(src: u32, dst: u32, proto: u8, sport: u16, dport: u16) -> Vec<p4::FieldMatch> {
    vec![
        exact(1, u64::from(src)),
        exact(2, u64::from(dst)),
        exact(3, u64::from(proto)),
        exact(4, u64::from(sport)),
        exact(5, u64::from(dport)),
    ]
}

pub fn conn_pin(
    src: u32,
    dst: u32,
    proto: u8,
    sport: u16,
    dport: u16,
    backend: u16,
) -> p4::TableEntry {
    entry(
        tables::conn_table::ID,
        five(src, dst, proto, sport, dport),
        action(actions::conn_pin::ID, &[u64::from(backend)]),
    )
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
    entry(
        tables::conn_reverse::ID,
        five(src, dst, proto, sport, dport),
        action(
            actions::rewrite_src::ID,
            &[u64::from(vip), u64::from(vport), u64::from(service_id)],
        ),
    )
}

pub fn service_vip(service_id: u16, vip: u32, vport: u16) -> p4::TableEntry {
    entry(
        tables::service_vip::ID,
        vec![exact(1, u64::from(service_id) + 1)],
        action(
            actions::rewrite_src::ID,
            &[u64::from(vip), u64::from(vport), u64::from(service_id)],
        ),
    )
}

pub fn maglev_slot(service_id: u16, slot: u16, backend: u16) -> p4::TableEntry {
    entry(
        tables::maglev_slots::ID,
        vec![exact(1, u64::from(service_id)), exact(2, u64::from(slot))],
        action(actions::set_backend::ID, &[u64::from(backend)]),
    )
}

pub fn backend_forward(backend: u16, ip: u32, dmac: [u8; 6], port: u16) -> p4::TableEntry {
    entry(
        tables::backends::ID,
        vec![exact(1, u64::from(backend))],
        action(
            actions::backend_forward::ID,
            &[u64::from(ip), mac_u64(dmac), u64::from(port)],
        ),
    )
}

pub fn backend_locked(backend: u16) -> p4::TableEntry {
    entry(
        tables::backends::ID,
        vec![exact(1, u64::from(backend))],
        action(actions::backend_locked::ID, &[]),
    )
}

pub fn route(dst: u32, plen: i32, port: u16, dmac: [u8; 6]) -> p4::TableEntry {
    entry(
        tables::ipv4_routes::ID,
        vec![lpm(1, dst, plen)],
        action(
            actions::route_to_port::ID,
            &[u64::from(port), mac_u64(dmac)],
        ),
    )
}

pub fn route_locked(dst: u32, plen: i32) -> p4::TableEntry {
    entry(
        tables::ipv4_routes::ID,
        vec![lpm(1, dst, plen)],
        action(actions::route_locked::ID, &[]),
    )
}

pub fn port_smac(port: u16, mac: [u8; 6]) -> p4::TableEntry {
    entry(
        tables::port_smac::ID,
        vec![exact(1, u64::from(port))],
        action(actions::set_smac::ID, &[mac_u64(mac)]),
    )
}

pub fn l2(dst: [u8; 6], port: u16) -> p4::TableEntry {
    entry(
        tables::l2_forward::ID,
        vec![exact(1, mac_u64(dst))],
        action(actions::l2_output::ID, &[u64::from(port)]),
    )
}

/// The canonical codes of a failed Write's per-update errors.
pub fn batch_codes(st: &tonic::Status) -> Vec<i32> {
    let s = rpc::Status::decode(st.details()).expect("google.rpc.Status in details");
    s.details
        .iter()
        .map(|a| {
            assert_eq!(a.type_url, "type.googleapis.com/p4.v1.Error");
            p4::Error::decode(a.value.as_slice())
                .expect("p4.v1.Error")
                .canonical_code
        })
        .collect()
}
