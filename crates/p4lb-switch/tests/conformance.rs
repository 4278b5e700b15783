//! Where the P4Runtime specification prescribes an answer, p4lb-switch gives it
//! (docs/p4runtime-conformance.md): entity kinds the program lacks, status codes of malformed
//! values, distinct messages per DigestList, arbitration after the primary leaves, and
//! COMMIT replaying the writes made since VERIFY_AND_SAVE. Through the real gRPC service,
//! each test twice: over the switch's listener, and in process, as the controller calls
//! the switch it embeds.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use p4lb_controller::southbound::channel::SwitchChannel;
use p4lb_controller::southbound::session::set_pipeline_request;
use p4lb_p4::{actions, entries, externs, tables};
use p4lb_proto::p4runtime as p4;
use p4lb_proto::p4runtime::entity::Entity as E;
use p4lb_proto::p4runtime::set_forwarding_pipeline_config_request::Action;
use p4lb_proto::p4runtime::stream_message_response::Update as Resp;
use p4lb_proto::p4runtime::update::Type;
use p4lb_switch::pipeline;
use p4lb_switch::{serve, GrpcAddr, SwitchConfig, SwitchHandle};
use support::frames::{Flow, ACK, SYN};
use support::p4rt::{self, Session};
use tonic::Code;

const VIP: u32 = 0x0a60_0001;
const CLIENT: u32 = 0x0a00_0001;

/// A switch for a test that reaches it `via` (printed, so that a failure says which way).
async fn start(via: Via) -> SwitchHandle {
    eprintln!("reaching the switch: {via:?}");
    serve(SwitchConfig {
        grpc_addr: GrpcAddr::Tcp("127.0.0.1:0".parse().unwrap()),
        device_id: 3,
        insecure_loopback: true,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// How a test reaches the switch.
#[derive(Debug, Clone, Copy)]
enum Via {
    /// Over its gRPC listener, as any controller.
    Listener,
    /// Its services called in this process, as the controller calls its embedded switch.
    InProcess,
}

const VIAS: [Via; 2] = [Via::Listener, Via::InProcess];

async fn channel(h: &SwitchHandle, via: Via) -> SwitchChannel {
    match via {
        Via::Listener => p4rt::channel(&h.endpoint()).await.into(),
        Via::InProcess => SwitchChannel::in_process(h.in_process()),
    }
}

async fn session(h: &SwitchHandle, via: Via, election: u128) -> (Session, i32) {
    Session::open(channel(h, via).await, 3, election).await
}

fn entity(e: E) -> p4::Entity {
    p4::Entity { entity: Some(e) }
}

/// One entity of every kind the p4lb program has none of.
fn unimplemented_kinds() -> Vec<p4::Entity> {
    vec![
        entity(E::ExternEntry(p4::ExternEntry::default())),
        entity(E::ActionProfileMember(p4::ActionProfileMember::default())),
        entity(E::ActionProfileGroup(p4::ActionProfileGroup::default())),
        entity(E::MeterEntry(p4::MeterEntry::default())),
        entity(E::DirectMeterEntry(p4::DirectMeterEntry::default())),
        entity(E::DirectCounterEntry(p4::DirectCounterEntry::default())),
        entity(E::PacketReplicationEngineEntry(
            p4::PacketReplicationEngineEntry::default(),
        )),
        entity(E::ValueSetEntry(p4::ValueSetEntry::default())),
    ]
}

fn arbitration_answer(u: Resp) -> Option<(i32, Option<u128>)> {
    match u {
        Resp::Arbitration(a) => Some((
            a.status.map(|s| s.code).unwrap_or(-1),
            a.election_id
                .map(|e| (u128::from(e.high) << 64) | u128::from(e.low)),
        )),
        _ => None,
    }
}

#[tokio::test]
async fn unimplemented_entity_kinds_read_empty_and_write_unimplemented() {
    for via in VIAS {
        let h = start(via).await;
        let (mut s, _) = session(&h, via, 1).await;
        s.set_pipeline(Vec::new()).await.unwrap();
        s.insert(vec![entries::backend_locked(1)]).await;
        // A wildcard read of every kind at once: only the table entry comes back.
        let mut all = unimplemented_kinds();
        all.push(p4rt::table_entity(entries::entry(0, vec![], None)));
        let r = s.read(all).await.expect("read of unimplemented kinds");
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(matches!(r[0].entity, Some(E::TableEntry(_))));
        // Each write of them fails alone, with UNIMPLEMENTED; the valid update still applies.
        let mut ups: Vec<p4::Update> = unimplemented_kinds()
            .into_iter()
            .map(|e| p4rt::update(Type::Insert, e))
            .collect();
        ups.push(p4rt::update(
            Type::Insert,
            p4rt::table_entity(entries::backend_locked(2)),
        ));
        let e = s.write(ups).await.unwrap_err();
        let mut want = vec![Code::Unimplemented as i32; 8];
        want.push(Code::Ok as i32);
        assert_eq!(p4rt::batch_codes(&e), want);
        // An entity with nothing set is still malformed.
        let e = s.read(vec![p4::Entity { entity: None }]).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        h.shutdown().await;
    }
}

#[tokio::test]
async fn malformed_values_get_the_codes_the_spec_gives() {
    for via in VIAS {
        let h = start(via).await;
        let (mut s, _) = session(&h, via, 1).await;
        s.set_pipeline(Vec::new()).await.unwrap();
        let ins = |e: p4::TableEntry| p4rt::update(Type::Insert, p4rt::table_entity(e));
        let mut empty = entries::backend_locked(1);
        if let Some(p4::field_match::FieldMatchType::Exact(x)) =
            empty.r#match[0].field_match_type.as_mut()
        {
            x.value = Vec::new();
        }
        let mut wide = entries::backend_locked(1);
        if let Some(p4::field_match::FieldMatchType::Exact(x)) =
            wide.r#match[0].field_match_type.as_mut()
        {
            x.value = vec![1, 0, 0]; // 2^16 does not fit the 16-bit backend id
        }
        let mut empty_param = entries::backend_forward(3, Ipv4Addr::new(10, 0, 0, 1), 2, 1);
        if let Some(p4::table_action::Type::Action(a)) =
            empty_param.action.as_mut().and_then(|a| a.r#type.as_mut())
        {
            a.params[0].value = Vec::new();
        }
        let counter = |index: i64| {
            entity(E::CounterEntry(p4::CounterEntry {
                counter_id: externs::drops::ID,
                index: Some(p4::Index { index }),
                data: Some(p4::CounterData::default()),
            }))
        };
        let updates = vec![
            ins(empty),
            ins(wide),
            ins(empty_param),
            ins(entries::entry(
                tables::backends::ID,
                vec![entries::exact(tables::backends::BACKEND_ID.id, 4)],
                p4rt::action(actions::nop::ID, &[]),
            )),
            p4rt::update(Type::Modify, counter(-1)),
            p4rt::update(Type::Modify, counter(externs::drops::SIZE)),
        ];
        let e = s.write(updates).await.unwrap_err();
        use Code::*;
        let want: Vec<i32> = [
            InvalidArgument,  // empty bytestring
            OutOfRange,       // too wide for its field
            InvalidArgument,  // empty action parameter
            PermissionDenied, // @defaultonly action in a table entry
            InvalidArgument,  // negative counter index
            OutOfRange,       // index past the counter's size
        ]
        .iter()
        .map(|c| *c as i32)
        .collect();
        assert_eq!(p4rt::batch_codes(&e), want);
        assert_eq!(
            s.read(vec![counter(-1)]).await.unwrap_err().code(),
            InvalidArgument
        );
        h.shutdown().await;
    }
}

#[tokio::test]
async fn one_digest_list_never_carries_a_message_twice() {
    for via in VIAS {
        let h = start(via).await;
        let (mut s, _) = session(&h, via, 1).await;
        s.set_pipeline(Vec::new()).await.unwrap();
        s.program_vip_on_backend_4(Ipv4Addr::from(VIP)).await;
        // No ack timeout: lists are not remembered, but one list still holds distinct messages.
        let cfg = p4::digest_entry::Config {
            max_timeout_ns: 200_000_000,
            max_list_size: 100,
            ack_timeout_ns: 0,
        };
        s.write(vec![p4rt::update(
            Type::Insert,
            entity(E::DigestEntry(p4::DigestEntry {
                digest_id: externs::conn_learn::ID,
                config: Some(cfg),
            })),
        )])
        .await
        .unwrap();
        let dp = h.device.installed().unwrap().dp.clone();
        // Two handshakes (each learnt on its completing ACK), then more segments of both
        // connections: an established, unpinned connection asks again with every segment.
        let backend = u32::from(Ipv4Addr::new(10, 1, 0, 4));
        let ack_of = |sport: u16| {
            Flow::tcp(CLIENT, sport, VIP, 80).with(|f| {
                f.tcp_flags = ACK;
                f.seq += 1;
                f.ack_no = 5001;
            })
        };
        for sport in [1000u16, 1001] {
            let syn = Flow::tcp(CLIENT, sport, VIP, 80);
            let synack = Flow::tcp(backend, 8080, CLIENT, sport).with(|f| {
                f.tcp_flags = SYN | ACK;
                f.seq = 5000;
                f.ack_no = syn.seq + 1;
            });
            pipeline::process(&dp, &mut syn.frame(b""), 1, false);
            pipeline::process(&dp, &mut synack.frame(b""), 2, false);
            pipeline::process(&dp, &mut ack_of(sport).frame(b""), 1, false);
        }
        for sport in [1000u16, 1001, 1000] {
            pipeline::process(&dp, &mut ack_of(sport).frame(b"data"), 1, false);
        }
        let list = s
            .next_matching(Duration::from_secs(5), |u| match u {
                Resp::Digest(d) => Some(d),
                _ => None,
            })
            .await
            .expect("a digest list after max_timeout");
        let distinct: std::collections::HashSet<Vec<u8>> = list
            .data
            .iter()
            .map(prost::Message::encode_to_vec)
            .collect();
        assert_eq!(
            distinct.len(),
            list.data.len(),
            "a message repeated within one list: {:?}",
            list.data
        );
        assert_eq!(list.data.len(), 2, "two connections were learned");
        h.shutdown().await;
    }
}

/// A StreamChannel whose arbitration update carries no election id.
async fn stream_without_election_id(
    h: &SwitchHandle,
    via: Via,
) -> (
    tokio::sync::mpsc::Sender<p4::StreamMessageRequest>,
    tonic::Streaming<p4::StreamMessageResponse>,
) {
    let mut client = p4lb_controller::southbound::session::client(channel(h, via).await);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut req = p4rt::arbitration(3, 0);
    if let Some(p4::stream_message_request::Update::Arbitration(a)) = req.update.as_mut() {
        a.election_id = None;
    }
    tx.send(req).await.unwrap();
    let inbound = client
        .stream_channel(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, inbound)
}

async fn next_arbitration(
    s: &mut tonic::Streaming<p4::StreamMessageResponse>,
) -> Option<(i32, Option<u128>)> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(2), s.message())
            .await
            .ok()?
            .ok()??;
        if let Some(a) = m.update.and_then(arbitration_answer) {
            return Some(a);
        }
    }
}

#[tokio::test]
async fn a_backup_never_inherits_the_primary_role_with_a_lower_id() {
    for via in VIAS {
        let h = start(via).await;
        // A stream without an election id, alone: a backup, and there is no primary.
        let (anon_tx, mut anon) = stream_without_election_id(&h, via).await;
        assert_eq!(
            next_arbitration(&mut anon).await,
            Some((Code::NotFound as i32, None))
        );
        let (mut a, code) = session(&h, via, 10).await;
        assert_eq!(code, Code::Ok as i32);
        let (mut b, code) = session(&h, via, 5).await;
        assert_eq!(code, Code::AlreadyExists as i32);
        a.set_pipeline(Vec::new()).await.unwrap();
        // The primary leaves: no primary; the backup (5 < 10) is told so and cannot write.
        drop(a);
        let got = b
            .next_matching(Duration::from_secs(2), arbitration_answer)
            .await;
        assert_eq!(got, Some((Code::NotFound as i32, Some(10))));
        assert_eq!(
            b.write(vec![]).await.unwrap_err().code(),
            Code::PermissionDenied
        );
        // A newcomer with a lower id than the previous primary's does not become primary either.
        let (_c, code) = session(&h, via, 7).await;
        assert_eq!(code, Code::NotFound as i32);
        // The stream without an election id heard every change and never became primary.
        assert_eq!(
            next_arbitration(&mut anon).await,
            Some((Code::AlreadyExists as i32, Some(10)))
        );
        assert_eq!(
            next_arbitration(&mut anon).await,
            Some((Code::NotFound as i32, Some(10)))
        );
        // Nor does a write without an election id pass while streams are open.
        let e = b
            .client
            .write(p4::WriteRequest {
                device_id: 3,
                election_id: None,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        // Arbitrating with at least the previous primary's id makes the backup primary.
        b.tx.send(p4rt::arbitration(3, 10)).await.unwrap();
        let got = b
            .next_matching(Duration::from_secs(2), arbitration_answer)
            .await;
        assert_eq!(got, Some((Code::Ok as i32, Some(10))));
        b.election_id = 10;
        b.write(vec![]).await.unwrap();
        drop(anon_tx);
        h.shutdown().await;
    }
}

#[tokio::test]
async fn commit_replays_the_writes_made_since_verify_and_save() {
    for via in VIAS {
        let h = start(via).await;
        let (mut s, _) = session(&h, via, 1).await;
        s.set_pipeline(Vec::new()).await.unwrap();
        s.insert(vec![entries::backend_locked(1)]).await;
        let set = |action: Action| {
            let mut r = set_pipeline_request(
                3,
                1,
                action,
                Some(p4::ForwardingPipelineConfig {
                    p4info: Some(p4rt::p4info()),
                    ..Default::default()
                }),
            );
            if action == Action::Commit {
                r.config = None;
            }
            r
        };
        s.client
            .set_forwarding_pipeline_config(set(Action::VerifyAndSave))
            .await
            .unwrap();
        // Written after the save: kept by COMMIT. A failed update is not replayed.
        let e = s
            .write(vec![
                p4rt::update(Type::Insert, p4rt::table_entity(entries::backend_locked(2))),
                p4rt::update(Type::Insert, p4rt::table_entity(entries::backend_locked(1))),
            ])
            .await
            .unwrap_err();
        assert_eq!(
            p4rt::batch_codes(&e),
            vec![Code::Ok as i32, Code::AlreadyExists as i32]
        );
        s.insert(vec![entries::backend_locked(3)]).await;
        s.client
            .set_forwarding_pipeline_config(set(Action::Commit))
            .await
            .unwrap();
        let r = s
            .read(vec![p4rt::table_entity(entries::entry(
                tables::backends::ID,
                vec![],
                None,
            ))])
            .await
            .unwrap();
        let mut ids: Vec<u64> = r
            .iter()
            .filter_map(|e| match &e.entity {
                Some(E::TableEntry(t)) => match &t.r#match[0].field_match_type {
                    Some(p4::field_match::FieldMatchType::Exact(x)) => {
                        Some(p4lb_p4::bytes::to_u64(&x.value))
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect();
        ids.sort();
        // Entry 1 belongs to the pipeline before the save; 2 and 3 were written for the saved one.
        assert_eq!(ids, vec![2, 3]);
        h.shutdown().await;
    }
}
