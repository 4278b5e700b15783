//! Learned connections under a digest storm: the capacity policy (`conn.max_entries`), a
//! batch of inserts the switch refuses (the session stays up, nothing half-installed is
//! kept), the bounded digest queue, and close events (RST, FIN from both sides) removing
//! a connection after its linger. Digest lists are built here and handed to the
//! controller the way its digest task does; the switch is p4lb's software switch.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::*;
use p4lb_controller::conn::{CloseKind, CloseOutcome, Side};
use p4lb_controller::controller::DIGEST_QUEUE_LISTS;
use p4lb_controller::metrics::Gauges;
use p4lb_controller::Controller;
use p4lb_p4::entries as p;
use p4lb_p4::{ConnEvent, ConnLearn, FiveTuple};
use p4lb_proto::api;
use p4lb_proto::p4runtime::{update::Type, DigestList};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 1);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 88, 7, 2);

fn client_tuple(i: u32) -> FiveTuple {
    FiveTuple {
        src: Ipv4Addr::from(0x0b00_0000 + i),
        dst: VIP,
        protocol: 6,
        sport: 1024 + (i % 60000) as u16,
        dport: 80,
    }
}

/// The backend's reply tuple of connection `i` (the service's target port is 80).
fn reply_tuple(i: u32) -> FiveTuple {
    let t = client_tuple(i);
    FiveTuple {
        src: BACKEND,
        dst: t.src,
        protocol: 6,
        sport: 80,
        dport: t.sport,
    }
}

/// A digest list learning connections `range` (the message literal is the one place
/// here that knows the digest's layout).
fn digest(
    list_id: u64,
    range: std::ops::Range<u32>,
    service_id: u16,
    backend_id: u16,
) -> DigestList {
    events(list_id, range, service_id, backend_id, ConnEvent::Learn)
}

/// A digest list with `event` for connections `range` (client tuples on both sides; a
/// backend-side close event carries backend id 0, as conn_reverse does not know it).
fn events(
    list_id: u64,
    range: std::ops::Range<u32>,
    service_id: u16,
    backend_id: u16,
    event: ConnEvent,
) -> DigestList {
    DigestList {
        digest_id: p4lb_p4::externs::conn_learn::ID,
        list_id,
        data: range
            .map(|i| {
                let t = client_tuple(i);
                ConnLearn {
                    src_addr: t.src,
                    dst_addr: t.dst,
                    protocol: t.protocol,
                    src_port: t.sport,
                    dst_port: t.dport,
                    service_id,
                    backend_id,
                    event,
                }
                .to_p4data()
            })
            .collect(),
        timestamp: 0,
    }
}

/// A controller with `max_entries` and `linger_ms`, one backend behind VIP:80; returns
/// the service and backend ids.
async fn setup(
    dir: &std::path::Path,
    ssock: &std::path::Path,
    max_entries: u64,
    linger_ms: u64,
) -> (Ctl, u16, u16) {
    let mut cfg = config(dir, ssock);
    cfg.conn.max_entries = max_entries;
    cfg.conn.close_linger_ms = linger_ms;
    cfg.conn.persist_interval_ms = 0;
    let mut c = Ctl::start(cfg).await;
    let be = c
        .client
        .register_endpoint(register_req(
            "b1",
            &BACKEND.to_string(),
            "02:00:00:00:07:02",
            "",
        ))
        .await
        .unwrap()
        .into_inner();
    let svc = c
        .client
        .add_service(api::AddServiceRequest {
            service: Some(api::Service {
                name: "flood".into(),
                vip: VIP.to_string(),
                port: 80,
                selector: "app=web".into(),
                ..Default::default()
            }),
            replace: false,
        })
        .await
        .unwrap()
        .into_inner();
    (c, svc.service_id as u16, be.backend_id as u16)
}

fn metric(ctl: &Controller, name: &str) -> u64 {
    let text = ctl.metrics.render(Gauges::default());
    let key = format!("p4lb_controller_{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
        .parse()
        .unwrap()
}

async fn switch_conns(ssock: &std::path::Path) -> (usize, usize) {
    let t = read_all(ssock).await;
    (t["conn_table"].len(), t["conn_reverse"].len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_storm_installs_at_most_max_entries_and_counts_the_rest() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let (c, svc, be) = setup(&dir, &ssock, 100, 2000).await;
    for list in 0..4u32 {
        c.ctl
            .on_digest(digest(
                u64::from(list) + 1,
                list * 75..(list + 1) * 75,
                svc,
                be,
            ))
            .await;
    }
    assert_eq!(c.ctl.inner.lock().await.conns.len(), 100);
    assert_eq!(switch_conns(&ssock).await, (100, 100));
    assert_eq!(metric(&c.ctl, "connections_refused_total"), 200);
    assert_eq!(metric(&c.ctl, "connections_learned_total"), 100);
    // The installed connections are the first ones learned: none was evicted.
    {
        let g = c.ctl.inner.lock().await;
        assert!((0..100).all(|i| g.conns.contains(&client_tuple(i))));
    }
    // A closed connection makes room again.
    c.ctl.on_close(client_tuple(0), CloseKind::Rst).await;
    c.ctl
        .reap_closed(Instant::now() + Duration::from_secs(3))
        .await;
    c.ctl.on_digest(digest(9, 300..302, svc, be)).await;
    assert_eq!(c.ctl.inner.lock().await.conns.len(), 100);
    assert_eq!(metric(&c.ctl, "connections_refused_total"), 201);
    c.stop().await;
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_switch_refuses_keeps_the_session_and_leaves_nothing_half_installed() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let (c, svc, be) = setup(&dir, &ssock, 65536, 2000).await;
    // Someone else's entries fill the switch's conn_table (the controller does not know
    // them), so every conn_table insert of the next list fails with RESOURCE_EXHAUSTED
    // while its conn_reverse insert succeeds.
    let size = p4lb_p4::tables::conn_table::SIZE as u32;
    let fill: Vec<_> = (0..size)
        .map(|i| {
            let mut t = client_tuple(i);
            t.dst = Ipv4Addr::new(10, 97, 0, 1);
            p4lb_controller::southbound::programmer::table_update(
                Type::Insert,
                p::conn_pin(&t, be, 0),
            )
        })
        .collect();
    for chunk in fill.chunks(4096) {
        c.ctl.link.write(chunk.to_vec()).await.unwrap();
    }
    let sessions = c
        .ctl
        .link
        .reconnects
        .load(std::sync::atomic::Ordering::Relaxed);
    c.ctl.on_digest(digest(1, 0..1000, svc, be)).await;
    assert!(c.ctl.link.is_connected(), "the session went down");
    assert_eq!(
        c.ctl
            .link
            .reconnects
            .load(std::sync::atomic::Ordering::Relaxed),
        sessions,
        "the session was re-established"
    );
    assert_eq!(
        c.ctl.inner.lock().await.conns.len(),
        0,
        "refused connections recorded"
    );
    assert_eq!(metric(&c.ctl, "connection_install_errors_total"), 1000);
    // The conn_reverse halves the switch took were deleted again.
    assert_eq!(switch_conns(&ssock).await, (size as usize, 0));
    // The session still works: with room again, the next list is installed.
    let del: Vec<_> = (0..10u32)
        .map(|i| {
            let mut t = client_tuple(i);
            t.dst = Ipv4Addr::new(10, 97, 0, 1);
            p4lb_controller::southbound::programmer::table_update(Type::Delete, p::conn_key(&t))
        })
        .collect();
    c.ctl.link.write(del).await.unwrap();
    c.ctl.on_digest(digest(2, 0..10, svc, be)).await;
    assert_eq!(c.ctl.inner.lock().await.conns.len(), 10);
    c.stop().await;
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_digest_queue_drops_and_counts_lists_without_waiting() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let (c, svc, be) = setup(&dir, &ssock, 65536, 2000).await;
    // Hold the controller lock: the digest task cannot make progress.
    let g = c.ctl.inner.lock().await;
    let mut queued = 0;
    let extra = 20;
    for list in 0..(DIGEST_QUEUE_LISTS + extra) as u32 {
        if c.ctl
            .enqueue_digest(digest(u64::from(list) + 1, list..list + 1, svc, be))
            .await
        {
            queued += 1;
        }
    }
    // The task may have taken one list before blocking on the lock.
    assert!(
        (DIGEST_QUEUE_LISTS..=DIGEST_QUEUE_LISTS + 1).contains(&queued),
        "{queued} lists queued"
    );
    let dropped = metric(&c.ctl, "digest_lists_dropped_total");
    assert_eq!(dropped as usize, DIGEST_QUEUE_LISTS + extra - queued);
    drop(g);
    // The queued lists are processed once the lock is free.
    assert!(
        eventually(Duration::from_secs(10), || async {
            c.ctl.inner.lock().await.conns.len() == queued
        })
        .await,
        "queued lists not processed"
    );
    c.stop().await;
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_events_remove_a_connection_after_the_linger() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    // A long linger: the close task never reaps during the test; reap_closed is called
    // with explicit instants instead.
    let linger = Duration::from_secs(600);
    let (c, svc, be) = setup(&dir, &ssock, 65536, linger.as_millis() as u64).await;
    c.ctl.on_digest(digest(1, 0..4, svc, be)).await;
    assert_eq!(switch_conns(&ssock).await, (4, 4));
    let now = Instant::now();

    // An unknown tuple changes nothing.
    assert_eq!(
        c.ctl.on_close(client_tuple(99), CloseKind::Rst).await,
        CloseOutcome::Unknown
    );
    // RST (from either side): removed once the linger is over, not before.
    assert!(matches!(
        c.ctl.on_close(client_tuple(0), CloseKind::Rst).await,
        CloseOutcome::Scheduled(_)
    ));
    assert!(matches!(
        c.ctl.on_close(reply_tuple(1), CloseKind::Rst).await,
        CloseOutcome::Scheduled(_)
    ));
    assert_eq!(c.ctl.reap_closed(now).await, 0);
    assert_eq!(switch_conns(&ssock).await, (4, 4));
    // FIN from the client only: half closed, never removed.
    assert_eq!(
        c.ctl.on_close(client_tuple(2), CloseKind::Fin).await,
        CloseOutcome::HalfClosed(Side::Client)
    );
    // FIN from both sides: removed after the linger.
    assert_eq!(
        c.ctl.on_close(reply_tuple(3), CloseKind::Fin).await,
        CloseOutcome::HalfClosed(Side::Backend)
    );
    assert!(matches!(
        c.ctl.on_close(client_tuple(3), CloseKind::Fin).await,
        CloseOutcome::Scheduled(_)
    ));
    assert_eq!(c.ctl.reap_closed(now).await, 0);
    let after = Instant::now() + linger;
    assert_eq!(c.ctl.reap_closed(after).await, 3);
    assert_eq!(switch_conns(&ssock).await, (1, 1));
    {
        let g = c.ctl.inner.lock().await;
        assert!(g.conns.contains(&client_tuple(2)));
    }
    assert_eq!(metric(&c.ctl, "connections_closed_total"), 3);
    c.stop().await;
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_linger_a_rst_removes_the_connection_at_once() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let (c, svc, be) = setup(&dir, &ssock, 65536, 0).await;
    c.ctl.on_digest(digest(1, 0..2, svc, be)).await;
    c.ctl.on_close(reply_tuple(1), CloseKind::Rst).await;
    assert_eq!(switch_conns(&ssock).await, (1, 1));
    c.stop().await;
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_events_from_the_data_plane_remove_connections_after_the_linger() {
    let (_d, dir) = tempdir();
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let linger = Duration::from_secs(600);
    let (c, svc, be) = setup(&dir, &ssock, 65536, linger.as_millis() as u64).await;
    c.ctl.on_digest(digest(1, 0..3, svc, be)).await;
    assert_eq!(switch_conns(&ssock).await, (3, 3));
    let now = Instant::now();
    // Connection 0: FIN from the client (its backend id) and from the backend (id 0).
    c.ctl
        .on_digest(events(2, 0..1, svc, be, ConnEvent::Fin))
        .await;
    c.ctl
        .on_digest(events(3, 0..1, svc, 0, ConnEvent::Fin))
        .await;
    // Connection 1: RST from the backend side.
    c.ctl
        .on_digest(events(4, 1..2, svc, 0, ConnEvent::Rst))
        .await;
    // Connection 2: FIN from the client only, twice: half closed, kept.
    c.ctl
        .on_digest(events(5, 2..3, svc, be, ConnEvent::Fin))
        .await;
    c.ctl
        .on_digest(events(6, 2..3, svc, be, ConnEvent::Fin))
        .await;
    // A close event never learns: nothing new is installed for an unknown tuple.
    c.ctl
        .on_digest(events(7, 50..60, svc, be, ConnEvent::Rst))
        .await;
    assert_eq!(c.ctl.reap_closed(now).await, 0);
    assert_eq!(switch_conns(&ssock).await, (3, 3));
    assert_eq!(c.ctl.reap_closed(Instant::now() + linger).await, 2);
    assert_eq!(switch_conns(&ssock).await, (1, 1));
    {
        let g = c.ctl.inner.lock().await;
        assert!(g.conns.contains(&client_tuple(2)));
    }
    c.stop().await;
    sw.shutdown().await;
}
