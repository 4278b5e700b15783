//! P4Runtime behaviour of p4lb-switch: arbitration, pipeline config, Write errors and batch
//! status, Read wildcards, counters, digests with acks, idle timeout.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use p4lb_controller::addr::mac_u64;
use p4lb_controller::southbound::session::set_pipeline_request;
use p4lb_p4::{actions, entries, externs, tables};
use p4lb_proto::p4runtime as p4;
use p4lb_proto::p4runtime::stream_message_response::Update as Resp;
use p4lb_proto::p4runtime::update::Type;
use p4lb_switch::pipeline;
use p4lb_switch::{serve, GrpcAddr, SwitchConfig, SwitchHandle};
use support::frames::{Flow, ACK, SYN, TCP};
use support::p4rt::{self, Session};
use tonic::Code;

/// The P4Info table with the contract's ID `id`.
fn table_mut(info: &mut p4lb_proto::p4info::P4Info, id: u32) -> &mut p4lb_proto::p4info::Table {
    info.tables
        .iter_mut()
        .find(|t| t.preamble.as_ref().map(|p| p.id) == Some(id))
        .expect("table of the contract in the P4Info")
}

async fn start() -> SwitchHandle {
    serve(SwitchConfig {
        grpc_addr: GrpcAddr::Tcp("127.0.0.1:0".parse().unwrap()),
        device_id: 3,
        insecure_loopback: true,
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn session(h: &SwitchHandle, election: u128) -> (Session, i32) {
    Session::open(p4rt::channel(&h.endpoint()).await, 3, election).await
}

fn arbitration_code(u: Resp) -> Option<(i32, u128)> {
    match u {
        Resp::Arbitration(a) => Some((
            a.status.map(|s| s.code).unwrap_or(-1),
            p4rt_u128(&a.election_id),
        )),
        _ => None,
    }
}

fn p4rt_u128(e: &Option<p4::Uint128>) -> u128 {
    e.as_ref()
        .map(|e| (u128::from(e.high) << 64) | u128::from(e.low))
        .unwrap_or(0)
}

#[tokio::test]
async fn arbitration_primary_backup_and_takeover() {
    let h = start().await;
    let (mut a, code) = session(&h, 10).await;
    assert_eq!(code, Code::Ok as i32);
    let (mut b, code) = session(&h, 5).await;
    assert_eq!(code, Code::AlreadyExists as i32, "lower id is a backup");
    a.set_pipeline(Vec::new()).await.unwrap();
    // backup cannot write
    let e = b.write(vec![]).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // a higher id takes over; the old primary is told it is a backup now
    let (mut c, code) = session(&h, 20).await;
    assert_eq!(code, Code::Ok as i32);
    let (code, primary) = a
        .next_matching(Duration::from_secs(2), arbitration_code)
        .await
        .unwrap();
    assert_eq!((code, primary), (Code::AlreadyExists as i32, 20));
    assert_eq!(
        a.write(vec![]).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    c.write(vec![]).await.unwrap();
    // duplicate election id terminates that stream with INVALID_ARGUMENT
    let ch = p4rt::channel(&h.endpoint()).await;
    let mut client = p4lb_controller::southbound::session::client(ch);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(p4rt::arbitration(3, 20)).await.unwrap();
    let mut s = client
        .stream_channel(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let err = s.message().await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // wrong device id terminates with NOT_FOUND
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(p4rt::arbitration(99, 30)).await.unwrap();
    let mut s = client
        .stream_channel(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.message().await.unwrap_err().code(), Code::NotFound);
    // the primary leaves: a backup with a lower id (a, 10) does not take over (spec >= 1.1)
    // and is told there is no primary; re-arbitrating with the previous primary's id does
    drop(c);
    let (code, primary) = a
        .next_matching(Duration::from_secs(2), arbitration_code)
        .await
        .unwrap();
    assert_eq!((code, primary), (Code::NotFound as i32, 20));
    assert_eq!(
        a.write(vec![]).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    a.tx.send(p4rt::arbitration(3, 20)).await.unwrap();
    let (code, primary) = a
        .next_matching(Duration::from_secs(2), arbitration_code)
        .await
        .unwrap();
    assert_eq!((code, primary), (Code::Ok as i32, 20));
    a.election_id = 20;
    a.write(vec![]).await.unwrap();
    drop(b);
    h.shutdown().await;
}

#[tokio::test]
async fn pipeline_config_is_bound_by_name_and_checked() {
    let h = start().await;
    let (mut s, _) = session(&h, 1).await;
    // no pipeline yet
    let e = s.write(vec![]).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = s
        .read(vec![p4rt::table_entity(p4::TableEntry::default())])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    use p4::set_forwarding_pipeline_config_request::Action;
    let set = |p4info: p4lb_proto::p4info::P4Info, action: Action| {
        set_pipeline_request(
            3,
            1,
            action,
            Some(p4::ForwardingPipelineConfig {
                p4info: Some(p4info),
                p4_device_config: b"{}".to_vec(),
                cookie: Some(p4::forwarding_pipeline_config::Cookie { cookie: 42 }),
            }),
        )
    };
    // A table renamed away: INVALID_ARGUMENT naming it.
    let mut bad = p4rt::p4info();
    table_mut(&mut bad, tables::conn_table::ID)
        .preamble
        .as_mut()
        .unwrap()
        .name = tables::conn_table::NAME.replace("conn_table", "something_else");
    let e = s
        .client
        .set_forwarding_pipeline_config(set(bad, Action::VerifyAndCommit))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("conn_table"), "{}", e.message());
    // A match field of the wrong width.
    let mut bad = p4rt::p4info();
    table_mut(&mut bad, tables::vip_services::ID).match_fields[0].bitwidth = 31;
    let e = s
        .client
        .set_forwarding_pipeline_config(set(bad, Action::Verify))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("31"), "{}", e.message());
    // Wrong match kind.
    let mut bad = p4rt::p4info();
    table_mut(&mut bad, tables::arp_proxy::ID).match_fields[0].r#match =
        Some(p4lb_proto::p4info::match_field::Match::MatchType(2));
    assert_eq!(
        s.client
            .set_forwarding_pipeline_config(set(bad, Action::Verify))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // Transit registers are indexed alike: one of another size, or missing, is refused.
    let mut bad = p4rt::p4info();
    let reg = |info: &mut p4lb_proto::p4info::P4Info, name: &str| -> usize {
        info.registers
            .iter()
            .position(|r| r.preamble.as_ref().map(|p| p.name.as_str()) == Some(name))
            .expect("transit register in the P4Info")
    };
    let i = reg(&mut bad, externs::transit_client_port::NAME);
    bad.registers[i].size = 1024;
    let e = s
        .client
        .set_forwarding_pipeline_config(set(bad, Action::Verify))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("transit_client_port"),
        "{}",
        e.message()
    );
    let mut bad = p4rt::p4info();
    let i = reg(&mut bad, externs::transit_server_ack::NAME);
    bad.registers.remove(i);
    let e = s
        .client
        .set_forwarding_pipeline_config(set(bad, Action::Verify))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("transit_server_ack"),
        "{}",
        e.message()
    );
    // Renumbered IDs are fine: binding is by name.
    let mut renum = p4rt::p4info();
    table_mut(&mut renum, tables::vip_services::ID)
        .preamble
        .as_mut()
        .unwrap()
        .id = p4rt::unknown_table_id();
    s.client
        .set_forwarding_pipeline_config(set(renum, Action::Verify))
        .await
        .unwrap();
    // VERIFY changed nothing.
    assert_eq!(
        s.write(vec![]).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    // VERIFY_AND_SAVE + COMMIT
    s.client
        .set_forwarding_pipeline_config(set(p4rt::p4info(), Action::VerifyAndSave))
        .await
        .unwrap();
    let mut commit = set(p4rt::p4info(), Action::Commit);
    commit.config = None;
    s.client
        .set_forwarding_pipeline_config(commit)
        .await
        .unwrap();
    s.write(vec![]).await.unwrap();
    // Get returns what was set.
    let got = s
        .client
        .get_forwarding_pipeline_config(p4::GetForwardingPipelineConfigRequest {
            device_id: 3,
            response_type: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(got.cookie.unwrap().cookie, 42);
    assert_eq!(got.p4info.unwrap(), p4rt::p4info());
    assert_eq!(got.p4_device_config, b"{}".to_vec());
    // RECONCILE_AND_COMMIT keeps the state.
    s.insert(vec![entries::backend_locked(7)]).await;
    s.client
        .set_forwarding_pipeline_config(set(p4rt::p4info(), Action::ReconcileAndCommit))
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
    assert_eq!(r.len(), 1);
    // VERIFY_AND_COMMIT clears it.
    s.client
        .set_forwarding_pipeline_config(set(p4rt::p4info(), Action::VerifyAndCommit))
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
    assert!(r.is_empty());
    // Wrong device id on Write: NOT_FOUND.
    let e = s
        .client
        .write(p4::WriteRequest {
            device_id: 4,
            election_id: Some(p4rt::uint128(1)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let caps = s
        .client
        .capabilities(p4::CapabilitiesRequest { device_id: 3 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.p4runtime_api_version, "1.3.0");
    h.shutdown().await;
}

#[tokio::test]
async fn failed_batch_reports_one_error_per_update_in_order() {
    let h = start().await;
    let (mut s, _) = session(&h, 1).await;
    s.set_pipeline(Vec::new()).await.unwrap();
    s.insert(vec![entries::backend_locked(1)]).await;
    let ins = |e: p4::TableEntry| p4rt::update(Type::Insert, p4rt::table_entity(e));
    let mut wide = entries::backend_forward(2, Ipv4Addr::from(1u32), mac_u64(&[0; 6]), 1);
    if let Some(p4::table_action::Type::Action(a)) =
        wide.action.as_mut().and_then(|a| a.r#type.as_mut())
    {
        a.params[2].value = vec![0x02, 0x00]; // 512 does not fit bit<9>
    }
    let mut padded = entries::backend_forward(
        3,
        Ipv4Addr::new(10, 0, 0, 1),
        mac_u64(&[2, 0, 0, 0, 0, 1]),
        5,
    );
    if let Some(p4::table_action::Type::Action(a)) =
        padded.action.as_mut().and_then(|a| a.r#type.as_mut())
    {
        a.params[0].value = vec![0, 0, 0, 0x0a, 0, 0, 1]; // padded, still fits: accepted
    }
    let updates = vec![
        ins(entries::backend_locked(2)),                             // OK
        ins(entries::entry(p4rt::unknown_table_id(), vec![], None)), // unknown table
        ins(wide),                                                   // too wide
        ins(entries::backend_locked(1)),                             // duplicate
        p4rt::update(Type::Modify, p4rt::table_entity(entries::backend_locked(9))), // missing
        p4rt::update(Type::Delete, p4rt::table_entity(entries::backend_locked(9))), // missing
        ins(entries::entry(
            tables::backends::ID,
            vec![entries::exact(tables::backends::BACKEND_ID.id, 4)],
            p4rt::action(actions::nop::ID, &[]),
        )), // default-only
        ins(entries::entry(
            tables::backends::ID,
            vec![entries::exact(9, 4)],
            p4rt::action(actions::backend_locked::ID, &[]),
        )), // unknown field
        ins(entries::entry(
            tables::backends::ID,
            vec![],
            p4rt::action(actions::backend_locked::ID, &[]),
        )), // missing exact field
        ins(entries::entry(
            tables::backends::ID,
            vec![entries::exact(tables::backends::BACKEND_ID.id, 5)],
            p4rt::action(actions::route_drop::ID, &[]),
        )), // action of another table
        ins(entries::entry(
            tables::ipv4_routes::ID,
            vec![entries::lpm(
                tables::ipv4_routes::DST_ADDR.id,
                0x0a000001,
                8,
            )],
            p4rt::action(actions::route_drop::ID, &[]),
        )), // bits beyond prefix
        ins(padded),                                                 // OK
    ];
    let e = s.write(updates).await.unwrap_err();
    assert_eq!(e.code(), Code::Unknown);
    let codes = p4rt::batch_codes(&e);
    use Code::*;
    let want: Vec<i32> = [
        Ok,
        InvalidArgument,
        OutOfRange, // too wide for its field (spec: OUT_OF_RANGE)
        AlreadyExists,
        NotFound,
        NotFound,
        PermissionDenied, // @defaultonly action in an entry (spec: PERMISSION_DENIED)
        InvalidArgument,
        InvalidArgument,
        InvalidArgument,
        InvalidArgument,
        Ok,
    ]
    .iter()
    .map(|c| *c as i32)
    .collect();
    assert_eq!(codes, want);
    // The OK updates took effect (CONTINUE_ON_ERROR); the padded value reads back canonical.
    let r = s
        .read(vec![p4rt::table_entity(entries::entry(
            tables::backends::ID,
            vec![entries::exact(tables::backends::BACKEND_ID.id, 3)],
            None,
        ))])
        .await
        .unwrap();
    let Some(p4::entity::Entity::TableEntry(te)) = r[0].entity.clone() else {
        panic!()
    };
    let Some(p4::table_action::Type::Action(a)) = te.action.unwrap().r#type else {
        panic!()
    };
    assert_eq!(a.params[0].value, vec![0x0a, 0, 0, 1]);
    assert_eq!(
        s.read(vec![p4rt::table_entity(entries::entry(
            tables::backends::ID,
            vec![],
            None
        ))])
        .await
        .unwrap()
        .len(),
        3
    );
    // The const default entry cannot be modified.
    let mut def = entries::entry(
        tables::backends::ID,
        vec![],
        p4rt::action(actions::backend_locked::ID, &[]),
    );
    def.is_default_action = true;
    let e = s
        .write(vec![p4rt::update(Type::Modify, p4rt::table_entity(def))])
        .await
        .unwrap_err();
    assert_eq!(p4rt::batch_codes(&e), vec![PermissionDenied as i32]);
    h.shutdown().await;
}

#[tokio::test]
async fn read_wildcards_default_entries_and_counters() {
    let h = start().await;
    let (mut s, _) = session(&h, 1).await;
    s.set_pipeline(Vec::new()).await.unwrap();
    s.insert(vec![
        entries::backend_locked(1),
        entries::backend_locked(2),
        entries::route_to_port(
            Ipv4Addr::new(10, 0, 0, 0),
            8,
            1,
            mac_u64(&[2, 0, 0, 0, 0, 1]),
        ),
        entries::entry(
            tables::ipv4_routes::ID,
            vec![],
            p4rt::action(actions::route_to_port::ID, &[2, 5]),
        ),
        entries::port_smac(1, mac_u64(&[2, 0, 0, 0, 0, 0xfe])),
    ])
    .await;
    let all = s
        .read(vec![p4rt::table_entity(p4::TableEntry::default())])
        .await
        .unwrap();
    assert_eq!(all.len(), 5);
    let routes = s
        .read(vec![p4rt::table_entity(entries::entry(
            tables::ipv4_routes::ID,
            vec![],
            None,
        ))])
        .await
        .unwrap();
    assert_eq!(routes.len(), 2);
    // the catch-all route reads back without a match field (don't care)
    assert!(routes.iter().any(
        |e| matches!(&e.entity, Some(p4::entity::Entity::TableEntry(t)) if t.r#match.is_empty())
    ));
    let mut def = entries::entry(tables::ipv4_routes::ID, vec![], None);
    def.is_default_action = true;
    let d = s.read(vec![p4rt::table_entity(def)]).await.unwrap();
    let Some(p4::entity::Entity::TableEntry(te)) = d[0].entity.clone() else {
        panic!()
    };
    assert!(te.is_default_action);
    let Some(p4::table_action::Type::Action(a)) = te.action.unwrap().r#type else {
        panic!()
    };
    assert_eq!(a.action_id, actions::route_drop::ID);
    // time_since_last_hit on a table without idle timeout: INVALID_ARGUMENT
    let mut q = entries::entry(tables::backends::ID, vec![], None);
    q.time_since_last_hit = Some(Default::default());
    assert_eq!(
        s.read(vec![p4rt::table_entity(q)])
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // counters: all cells of one counter, one cell, all counters
    let cnt = |counter_id: u32, index: Option<i64>| p4::Entity {
        entity: Some(p4::entity::Entity::CounterEntry(p4::CounterEntry {
            counter_id,
            index: index.map(|index| p4::Index { index }),
            data: None,
        })),
    };
    assert_eq!(
        s.read(vec![cnt(externs::drops::ID, None)])
            .await
            .unwrap()
            .len(),
        16
    );
    assert_eq!(
        s.read(vec![cnt(externs::drops::ID, Some(3))])
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.read(vec![cnt(0, None)]).await.unwrap().len(),
        4096 + 1024 + 16
    );
    assert_eq!(
        s.read(vec![cnt(externs::drops::ID, Some(16))])
            .await
            .unwrap_err()
            .code(),
        Code::OutOfRange
    );
    h.shutdown().await;
}

const VIP: u32 = 0x0a60_0001;
const CLIENT: u32 = 0x0a00_0001;

#[tokio::test]
async fn digests_are_batched_deduplicated_until_acked() {
    let h = start().await;
    let (mut s, _) = session(&h, 1).await;
    s.set_pipeline(Vec::new()).await.unwrap();
    s.program_vip_on_backend_4(Ipv4Addr::from(VIP)).await;
    let dig = |cfg: Option<p4::digest_entry::Config>| p4::Entity {
        entity: Some(p4::entity::Entity::DigestEntry(p4::DigestEntry {
            digest_id: externs::conn_learn::ID,
            config: cfg,
        })),
    };
    let cfg = p4::digest_entry::Config {
        max_timeout_ns: 50_000_000,
        max_list_size: 2,
        ack_timeout_ns: 10_000_000_000,
    };
    s.write(vec![p4rt::update(Type::Insert, dig(Some(cfg)))])
        .await
        .unwrap();
    let e = s
        .write(vec![p4rt::update(Type::Insert, dig(Some(cfg)))])
        .await
        .unwrap_err();
    assert_eq!(p4rt::batch_codes(&e), vec![Code::AlreadyExists as i32]);
    assert_eq!(s.read(vec![dig(None)]).await.unwrap().len(), 1);
    let dp = h.device.installed().unwrap().dp.clone();
    // A connection is learnt on the ACK that completes its handshake: SYN, the backend's
    // SYN-ACK (ISN 7000), the client's ACK of 7001.
    let send = |sport: u16| {
        let syn = Flow::tcp(CLIENT, sport, VIP, 80);
        let synack =
            Flow::tcp(u32::from(Ipv4Addr::new(10, 1, 0, 4)), 8080, CLIENT, sport).with(|f| {
                f.tcp_flags = SYN | ACK;
                f.seq = 7000;
            });
        let ack = syn.with(|f| {
            f.tcp_flags = ACK;
            f.ack_no = 7001;
        });
        for (f, port) in [(syn, 1), (synack, 2), (ack, 1)] {
            pipeline::process(&dp, &mut f.frame(b""), port, false);
        }
    };
    // two distinct new connections fill a list (max_list_size 2)
    send(1000);
    send(1001);
    let list = s
        .next_matching(Duration::from_secs(2), |u| match u {
            Resp::Digest(d) => Some(d),
            _ => None,
        })
        .await
        .expect("digest list");
    assert_eq!(list.digest_id, externs::conn_learn::ID);
    assert_eq!(list.data.len(), 2);
    let Some(p4::p4_data::Data::Struct(st)) = list.data[0].data.clone() else {
        panic!()
    };
    let vals: Vec<Vec<u8>> = st
        .members
        .iter()
        .map(|m| match &m.data {
            Some(p4::p4_data::Data::Bitstring(b)) => b.clone(),
            _ => panic!(),
        })
        .collect();
    assert_eq!(
        vals,
        vec![
            p4lb_p4::bytes::encode(u64::from(CLIENT)),
            p4lb_p4::bytes::encode(u64::from(VIP)),
            vec![6],
            p4lb_p4::bytes::encode(1000),
            vec![80],
            vec![1],
            vec![4],
            vec![0]
        ]
    );
    // same connections again before the ack: suppressed; a third one goes out on max_timeout
    send(1000);
    send(1001);
    send(1002);
    let l2 = s
        .next_matching(Duration::from_secs(2), |u| match u {
            Resp::Digest(d) => Some(d),
            _ => None,
        })
        .await
        .expect("second list after max_timeout");
    assert_eq!(l2.data.len(), 1);
    assert!(l2.list_id > list.list_id);
    // ack the first list: its messages may be reported again
    s.tx.send(p4::StreamMessageRequest {
        update: Some(p4::stream_message_request::Update::DigestAck(
            p4::DigestListAck {
                digest_id: list.digest_id,
                list_id: list.list_id,
            },
        )),
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    send(1000);
    let l3 = s
        .next_matching(Duration::from_secs(2), |u| match u {
            Resp::Digest(d) => Some(d),
            _ => None,
        })
        .await
        .expect("reported again after ack");
    assert_eq!(l3.data.len(), 1);
    // 1001 is still un-acked (in list 1? no: acked) -- 1002's list is un-acked: suppressed
    send(1002);
    assert!(s
        .next_matching(Duration::from_millis(300), |u| match u {
            Resp::Digest(d) => Some(d),
            _ => None,
        })
        .await
        .is_none());
    h.shutdown().await;
}

#[tokio::test]
async fn idle_timeout_notifies_once_and_reports_time_since_last_hit() {
    let h = start().await;
    let (mut s, _) = session(&h, 1).await;
    s.set_pipeline(Vec::new()).await.unwrap();
    let mut e = entries::conn_pin(&Flow::tcp(CLIENT, 1000, VIP, 80).tuple(), 4, 0);
    e.idle_timeout_ns = 300_000_000;
    s.insert(vec![e.clone()]).await;
    // idle timeout on a table without support: INVALID_ARGUMENT
    let mut bad = entries::backend_locked(1);
    bad.idle_timeout_ns = 1000;
    let err = s
        .write(vec![p4rt::update(Type::Insert, p4rt::table_entity(bad))])
        .await
        .unwrap_err();
    assert_eq!(p4rt::batch_codes(&err), vec![Code::InvalidArgument as i32]);
    let started = std::time::Instant::now();
    let n = s
        .next_matching(Duration::from_secs(3), |u| match u {
            Resp::IdleTimeoutNotification(n) => Some(n),
            _ => None,
        })
        .await
        .expect("idle notification");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(n.table_entry.len(), 1);
    assert_eq!(n.table_entry[0].r#match, e.r#match);
    assert_eq!(n.table_entry[0].idle_timeout_ns, 300_000_000);
    // no second notification while still idle
    assert!(s
        .next_matching(Duration::from_millis(500), |u| match u {
            Resp::IdleTimeoutNotification(n) => Some(n),
            _ => None,
        })
        .await
        .is_none());
    // time_since_last_hit on read
    let mut q = entries::entry(tables::conn_table::ID, vec![], None);
    q.time_since_last_hit = Some(Default::default());
    let r = s.read(vec![p4rt::table_entity(q.clone())]).await.unwrap();
    let Some(p4::entity::Entity::TableEntry(te)) = r[0].entity.clone() else {
        panic!()
    };
    assert!(te.time_since_last_hit.unwrap().elapsed_ns >= 700_000_000);
    // a hit resets it (the backend is missing so the packet drops, but the entry was hit)
    let dp = h.device.installed().unwrap().dp.clone();
    let mut f = Flow::tcp(CLIENT, 1000, VIP, 80).frame(b"");
    s.insert(vec![entries::vip_service(
        Ipv4Addr::from(VIP),
        TCP,
        80,
        1,
        7,
        8080,
    )])
    .await;
    pipeline::process(&dp, &mut f, 1, false);
    let r = s.read(vec![p4rt::table_entity(q)]).await.unwrap();
    let Some(p4::entity::Entity::TableEntry(te)) = r[0].entity.clone() else {
        panic!()
    };
    assert!(te.time_since_last_hit.unwrap().elapsed_ns < 200_000_000);
    // and after another idle period it is reported again
    assert!(s
        .next_matching(Duration::from_secs(3), |u| match u {
            Resp::IdleTimeoutNotification(n) => Some(n),
            _ => None,
        })
        .await
        .is_some());
    h.shutdown().await;
}

/// The transit slot a VIP SYN takes is readable cell by cell through P4Runtime, register by
/// register; writes are checked against each register's width.
#[tokio::test]
async fn transit_registers_are_read_and_written_by_id() {
    let h = start().await;
    let (mut s, _) = session(&h, 1).await;
    s.set_pipeline(Vec::new()).await.unwrap();
    let b4 = Ipv4Addr::new(10, 1, 0, 4);
    s.program_vip_on_backend_4(Ipv4Addr::from(VIP)).await;
    let dp = h.device.installed().unwrap().dp.clone();
    pipeline::process(
        &dp,
        &mut Flow::tcp(CLIENT, 1234, VIP, 80).frame(b""),
        1,
        false,
    );
    let index = i64::from(p4lb_p4::hash::transit_crc(CLIENT, TCP, 1234, 8080));
    let reg = |register_id: u32, index: i64| p4::Entity {
        entity: Some(p4::entity::Entity::RegisterEntry(p4::RegisterEntry {
            register_id,
            index: Some(p4::Index { index }),
            data: None,
        })),
    };
    let value = |e: &p4::Entity| -> (u32, u64) {
        match &e.entity {
            Some(p4::entity::Entity::RegisterEntry(r)) => {
                match r.data.as_ref().and_then(|d| d.data.as_ref()) {
                    Some(p4::p4_data::Data::Bitstring(b)) => {
                        (r.register_id, p4lb_p4::bytes::to_u64(b))
                    }
                    other => panic!("register data {other:?}"),
                }
            }
            other => panic!("not a register entry: {other:?}"),
        }
    };
    // Register id 0: every transit register at that index, in contract order.
    let all: Vec<(u32, u64)> = s
        .read(vec![reg(0, index)])
        .await
        .unwrap()
        .iter()
        .map(value)
        .collect();
    assert_eq!(
        all,
        vec![
            (externs::transit_marks::ID, 2),
            (externs::transit_client::ID, u64::from(CLIENT)),
            (externs::transit_backend::ID, u64::from(u32::from(b4))),
            (externs::transit_client_port::ID, 1234),
            (externs::transit_backend_port::ID, 8080),
            (externs::transit_protocol::ID, u64::from(TCP)),
            (externs::transit_state::ID, 0),
            (externs::transit_server_ack::ID, 0),
        ]
    );
    let write = |register_id: u32, v: Vec<u8>| {
        p4rt::update(
            Type::Modify,
            p4::Entity {
                entity: Some(p4::entity::Entity::RegisterEntry(p4::RegisterEntry {
                    register_id,
                    index: Some(p4::Index { index }),
                    data: Some(p4::P4Data {
                        data: Some(p4::p4_data::Data::Bitstring(v)),
                    }),
                })),
            },
        )
    };
    // transit_state is bit<2>: 4 does not fit (OUT_OF_RANGE, as the spec asks); 2 does.
    let e = s
        .write(vec![write(externs::transit_state::ID, vec![4])])
        .await
        .unwrap_err();
    assert_eq!(p4rt::batch_codes(&e), vec![Code::OutOfRange as i32]);
    s.write(vec![write(externs::transit_state::ID, vec![2])])
        .await
        .unwrap();
    let got = s
        .read(vec![reg(externs::transit_state::ID, index)])
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(value).collect::<Vec<_>>(),
        vec![(externs::transit_state::ID, 2)]
    );
    let e = s
        .write(vec![write(0x1600_0077, vec![1])])
        .await
        .unwrap_err();
    assert_eq!(p4rt::batch_codes(&e), vec![Code::InvalidArgument as i32]);
    h.shutdown().await;
}

fn conn_tuple(i: u32) -> p4lb_p4::FiveTuple {
    p4lb_p4::FiveTuple {
        src: Ipv4Addr::from(0x0b00_0000 + i),
        dst: Ipv4Addr::from(VIP),
        protocol: 6,
        sport: 1024 + (i % 60000) as u16,
        dport: 80,
    }
}

#[tokio::test]
async fn thousands_of_failing_updates_get_a_bounded_status_and_the_session_stays_up() {
    let h = start().await;
    let (mut s, _) = session(&h, 1).await;
    s.set_pipeline(Vec::new()).await.unwrap();
    const N: u32 = 5000;
    let pins: Vec<p4::TableEntry> = (0..N)
        .map(|i| entries::conn_pin(&conn_tuple(i), 1, 0))
        .collect();
    s.insert(pins.clone()).await;
    // The same inserts again: every one fails (ALREADY_EXISTS), one newcomer succeeds.
    let mut ups: Vec<p4::Update> = pins
        .into_iter()
        .map(|e| p4rt::update(Type::Insert, p4rt::table_entity(e)))
        .collect();
    ups.push(p4rt::update(
        Type::Insert,
        p4rt::table_entity(entries::conn_pin(&conn_tuple(N), 1, 0)),
    ));
    let e = s.write(ups).await.unwrap_err();
    assert_eq!(e.code(), Code::Unknown, "{e:?}");
    assert!(
        e.details().len() <= p4lb_switch::limits::MAX_WRITE_ERROR_DETAILS_BYTES,
        "status details of {} bytes",
        e.details().len()
    );
    assert!(
        e.message()
            .contains(&format!("{N} of {} updates failed", N + 1)),
        "{}",
        e.message()
    );
    let (codes, messages) = p4lb_controller::southbound::session::per_update_errors(&e);
    // The first updates are reported one by one, then one summary stands for the rest.
    assert!(
        codes.len() > 10 && codes.len() < N as usize,
        "{}",
        codes.len()
    );
    assert!(codes[..codes.len() - 1]
        .iter()
        .all(|c| *c == Code::AlreadyExists as i32));
    let summary = messages.last().unwrap();
    assert!(summary.contains("not reported one by one"), "{summary}");
    // The session is intact: the stream still answers and writes still work.
    s.insert(vec![entries::conn_pin(&conn_tuple(N + 1), 1, 0)])
        .await;
    let all = s
        .read(vec![p4rt::table_entity(entries::entry(
            tables::conn_table::ID,
            vec![],
            None,
        ))])
        .await
        .unwrap();
    assert_eq!(all.len(), N as usize + 2);
    s.tx.send(p4rt::arbitration(3, 1)).await.unwrap();
    assert_eq!(
        s.next_matching(Duration::from_secs(2), arbitration_code)
            .await,
        Some((0, 1)),
        "the stream channel survived the failed write"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_wildcard_read_streams_responses_under_the_size_cap() {
    let h = start().await;
    let (mut s, _) = session(&h, 1).await;
    s.set_pipeline(Vec::new()).await.unwrap();
    const N: u32 = 3000;
    for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
        s.insert(
            chunk
                .iter()
                .map(|i| {
                    let mut e = entries::conn_pin(&conn_tuple(*i), 1, 0);
                    e.metadata = vec![0xab; p4lb_switch::limits::MAX_ENTRY_METADATA_BYTES];
                    e
                })
                .collect(),
        )
        .await;
    }
    let mut stream = s
        .client
        .read(p4::ReadRequest {
            device_id: 3,
            entities: vec![p4rt::table_entity(entries::entry(
                tables::conn_table::ID,
                vec![],
                None,
            ))],
            role: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let (mut total, mut responses) = (0, 0);
    while let Some(r) = stream.message().await.unwrap() {
        use prost::Message;
        assert!(
            r.encoded_len() <= p4lb_switch::limits::MAX_READ_RESPONSE_BYTES,
            "a ReadResponse of {} bytes",
            r.encoded_len()
        );
        total += r.entities.len();
        responses += 1;
    }
    assert_eq!(total, N as usize);
    assert!(responses > 1);
    h.shutdown().await;
}
