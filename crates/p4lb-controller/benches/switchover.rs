//! The controller's figures (not a test): `cargo bench -p p4lb-controller --bench switchover`
//! (as root: the migrations' endpoints live in two network namespaces it creates with
//! `p4lb_testutil::NamedNetns`). Options after `--`,
//! e.g. `-- --entries 50000 --batch 500`.
//!
//! 1. Batched table writes per second against p4lb's software switch (conn_table
//!    inserts over P4Runtime, in batches).
//! 2. Switchover latency of migrations: UNLOCK received (as the CRIU action script sends it:
//!    the repoint and the release in one commit, no RESTORED_AT) → table write
//!    acknowledged (as the controller records it), and the caller's round trip, for
//!    each number of services selecting the migrating backend (`--services`) and of
//!    connections learned on it before the switchover (`--learned`, through the
//!    digest path as the switch reports them).
//!
//! Runs each part twice (`--switch`): with p4lb's software switch served on a Unix socket in
//! a temporary directory, which the controller connects to as to a switch process of its
//! own, and with the controller's embedded switch, which it calls in process; then prints
//! the in-process rows against the socket's.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;

use p4lb_controller::config::Config;
use p4lb_controller::conn::{ConnRec, ConnTable};
use p4lb_controller::{server, Controller};
use p4lb_p4::{ConnEvent, ConnLearn, FiveTuple};
use p4lb_proto::api;
use p4lb_proto::p4runtime::DigestList;
use p4lb_testutil::NamedNetns;

#[derive(Debug, Parser)]
struct Args {
    /// conn_table entries written in the throughput run.
    #[arg(long, default_value_t = 20000)]
    entries: usize,
    /// Updates per Write request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Migrations per row of the switchover run.
    #[arg(long, default_value_t = 200)]
    migrations: usize,
    /// Migrations per row when 1 000 or more connections are learned for each.
    #[arg(long, default_value_t = 50)]
    migrations_large: usize,
    /// Connections learned (through the digest path) on the migrating backend before
    /// each switchover; one row per value.
    #[arg(long, value_delimiter = ',', default_value = "0,1000,10000")]
    learned: Vec<u32>,
    /// Services selecting the migrating backend (each with its own Maglev slots); one
    /// group of rows per value, ascending.
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    services: Vec<usize>,
    /// How the controller reaches the switch, one pass each: `listener` (the switch's Unix
    /// socket, as a switch process of its own), `embedded` (the controller's own switch,
    /// called in process).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "listener,embedded"
    )]
    switch: Vec<Via>,
    /// Passed by `cargo bench` to every bench target; nothing to do with it.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Via {
    Listener,
    Embedded,
}

impl Via {
    fn describe(self) -> &'static str {
        match self {
            Via::Listener => "over its Unix socket (listener)",
            Via::Embedded => "in process (embedded)",
        }
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut runs = Vec::new();
    for &via in &args.switch {
        println!("== the controller reaches the switch {}", via.describe());
        runs.push((via, run(&args, via).await?));
    }
    // The same rows through both ways, in this run: the in-process calls against the socket.
    let of = |v: Via| runs.iter().find(|(w, _)| *w == v).map(|(_, r)| r);
    if let (Some(base), Some(emb)) = (of(Via::Listener), of(Via::Embedded)) {
        println!("embedded (in process) against listener (socket), same rows, this run:");
        for (b, e) in base.iter().zip(emb) {
            println!(
                "  {:>2} services, {:>5} learned: switchover p50 {:.0} vs {:.0} us ({:.2} x), \
                 p99 {:.0} vs {:.0} us ({:.2} x); write per commit {:.0} vs {:.0} us; UNLOCK \
                 round trip p50 {:.0} vs {:.0} us ({:.2} x)",
                b.services,
                b.learned,
                e.p50,
                b.p50,
                e.p50 / b.p50.max(1.0),
                e.p99,
                b.p99,
                e.p99 / b.p99.max(1.0),
                e.write,
                b.write,
                e.rtt_p50,
                b.rtt_p50,
                e.rtt_p50 / b.rtt_p50.max(1.0),
            );
        }
    }
    Ok(())
}

/// One pass of the whole bench with the switch reached `via`.
async fn run(args: &Args, via: Via) -> Result<Vec<Row>> {
    let dir = tempfile_dir()?;
    let mut cfg = Config {
        state_dir: dir.join("state"),
        ..Default::default()
    };
    // Listener: p4lb's software switch in this process too, served on a Unix socket the
    // controller connects to, as to a switch of its own. Embedded: no address, so the
    // controller starts the switch and calls it in process.
    let sw = match via {
        Via::Listener => {
            let ssock = dir.join("switch.sock");
            cfg.switch.address = format!("unix:{}", ssock.display());
            Some(
                p4lb_switch::serve(p4lb_switch::SwitchConfig {
                    grpc_addr: p4lb_switch::GrpcAddr::Unix(ssock),
                    ..Default::default()
                })
                .await?,
            )
        }
        Via::Embedded => None,
    };
    cfg.api.socket = dir.join("api.sock");
    cfg.identity.check_addresses = false;
    cfg.conn.idle_timeout_ms = 0;
    let ctl = Controller::start(cfg.clone()).await?;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let srv = tokio::spawn(server::serve(ctl.clone(), rx));
    if !ctl.wait_synced(Duration::from_secs(5)).await {
        anyhow::bail!("the controller did not program the switch");
    }

    // 1. Batched writes.
    let rec = ConnRec {
        backend_id: 1,
        service_id: 1,
        reverse: FiveTuple {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            protocol: 6,
            sport: 80,
            dport: 1,
        },
        vip: Ipv4Addr::new(10, 96, 0, 1),
        vport: 80,
    };
    let tuples: Vec<FiveTuple> = (0..args.entries as u32)
        .map(|i| FiveTuple {
            src: Ipv4Addr::from(0x0b00_0000 + i),
            dst: Ipv4Addr::new(10, 96, 0, 1),
            protocol: 6,
            sport: 1024 + (i % 60000) as u16,
            dport: 80,
        })
        .collect();
    let started = Instant::now();
    for chunk in tuples.chunks(args.batch) {
        let ups: Vec<_> = chunk
            .iter()
            .map(|t| ConnTable::inserts(t, &rec, 0)[0].clone())
            .collect();
        ctl.link
            .write(ups)
            .await
            .map_err(|f| anyhow::anyhow!(f.summary()))?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "batched writes: {} conn_table inserts in batches of {} took {:.3} s = {:.0} entries/s",
        args.entries,
        args.batch,
        secs,
        args.entries as f64 / secs
    );
    let started = Instant::now();
    for chunk in tuples.chunks(args.batch) {
        let ups: Vec<_> = chunk
            .iter()
            .map(|t| ConnTable::deletes(t, &rec)[0].clone())
            .collect();
        ctl.link
            .write(ups)
            .await
            .map_err(|f| anyhow::anyhow!(f.summary()))?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "batched deletes: {:.0} entries/s",
        args.entries as f64 / secs
    );

    // 2. Switchover latency, as a function of learned connections and services.
    let mut c = p4lb_api::Client::connect(
        &cfg.api.socket,
        Duration::from_secs(5),
        Duration::from_secs(60),
    )
    .await?
    .raw();
    // The source and target sides of every migration (removed on drop).
    let holder_a = NamedNetns::create(&p4lb_testutil::unique_name("p4lbbench-a"))?;
    let holder_b = NamedNetns::create(&p4lb_testutil::unique_name("p4lbbench-b"))?;
    let ns = Sides {
        a: holder_a.path().display().to_string(),
        b: holder_b.path().display().to_string(),
    };
    // A service's second, steady backend, as in a real deployment.
    c.register_endpoint(api::RegisterEndpointRequest {
        container_id: "steady".into(),
        ifname: "eth0".into(),
        ip: "10.88.9.250".into(),
        mac: "02:00:00:00:09:fa".into(),
        labels: [("app".to_string(), "bench".to_string())]
            .into_iter()
            .collect(),
        ..Default::default()
    })
    .await?;
    let mut services = 0usize;
    let mut rows = Vec::new();
    let mut seq = 0usize;
    for &want_services in &args.services {
        // Every service selects the migrating endpoint: each one's Maglev slots name it.
        while services < want_services {
            c.add_service(api::AddServiceRequest {
                service: Some(api::Service {
                    name: format!("bench{services}"),
                    vip: format!("10.96.{}.{}", 9 + services / 250, 1 + services % 250),
                    port: 80,
                    selector: "app=bench".into(),
                    ..Default::default()
                }),
                replace: false,
            })
            .await?;
            services += 1;
        }
        let service_id = c
            .list_services(api::ListServicesRequest {})
            .await?
            .into_inner()
            .services
            .iter()
            .find(|s| s.name == "bench0")
            .map(|s| s.service_id as u16)
            .ok_or_else(|| anyhow::anyhow!("service bench0 is gone"))?;
        for &learned in &args.learned {
            let migrations = if learned >= 1000 {
                args.migrations.min(args.migrations_large)
            } else {
                args.migrations
            };
            let mut server_us = Vec::new();
            let mut rtt_us = Vec::new();
            let phases = &ctl.metrics.commit;
            let at_start = (
                phases.commits.get(),
                phases.desired_us.get(),
                phases.write_us.get(),
            );
            let mut carried = 0u32;
            for _ in 0..migrations {
                let r = migrate(&ctl, &mut c, &ns, seq, service_id, learned).await?;
                seq += 1;
                server_us.push(r.switchover_us as f64);
                rtt_us.push(r.rtt_us);
                carried = carried.max(r.carried);
            }
            let commits = (phases.commits.get() - at_start.0).max(1) as f64;
            rows.push(Row {
                services,
                learned,
                carried,
                migrations,
                p50: pct(&mut server_us, 0.50),
                p99: pct(&mut server_us, 0.99),
                max: pct(&mut server_us, 1.0),
                desired: (phases.desired_us.get() - at_start.1) as f64 / commits,
                write: (phases.write_us.get() - at_start.2) as f64 / commits,
                rtt_p50: pct(&mut rtt_us, 0.50),
                rtt_p99: pct(&mut rtt_us, 0.99),
            });
        }
    }
    println!(
        "switchover = UNLOCK (with the repoint) received -> write acked (us); desired, write = \
         mean per commit of the row, registrations and removals included (us); rtt = UNLOCK at \
         the caller, with the durable save (us)"
    );
    println!(
        "{:>8} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "services",
        "learned",
        "carried",
        "migrations",
        "p50",
        "p99",
        "max",
        "desired",
        "write",
        "rtt p50",
        "rtt p99"
    );
    for r in &rows {
        println!(
            "{:>8} {:>8} {:>8} {:>10} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>9.0} {:>9.0}",
            r.services,
            r.learned,
            r.carried,
            r.migrations,
            r.p50,
            r.p99,
            r.max,
            r.desired,
            r.write,
            r.rtt_p50,
            r.rtt_p99
        );
    }
    if let (Some(base), Some(last)) = (rows.first(), rows.last()) {
        if base.p99 > 0.0 {
            println!(
                "p99 with {} services and {} learned connections = {:.2} x the p99 with {} and {}",
                last.services,
                last.learned,
                last.p99 / base.p99,
                base.services,
                base.learned
            );
        }
    }
    drop((holder_a, holder_b));
    let _ = stop.send(true);
    let _ = srv.await;
    ctl.shutdown().await;
    if let Some(sw) = sw {
        sw.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rows)
}

/// The namespaces of a migration's source and target.
struct Sides {
    a: String,
    b: String,
}

/// One row of the switchover table.
struct Row {
    services: usize,
    learned: u32,
    carried: u32,
    migrations: usize,
    p50: f64,
    p99: f64,
    max: f64,
    desired: f64,
    write: f64,
    rtt_p50: f64,
    rtt_p99: f64,
}

/// What one migration measured.
struct Measured {
    switchover_us: i64,
    rtt_us: f64,
    carried: u32,
}

/// Connection `i` of migration `seq`: a client of its own, so no two collide.
fn client_tuple(seq: usize, i: u32) -> FiveTuple {
    FiveTuple {
        src: Ipv4Addr::from(0x0c00_0000 + ((seq as u32 & 0xff) << 16) + (i >> 8)),
        dst: Ipv4Addr::new(10, 96, 9, 1),
        protocol: 6,
        sport: 1024 + (i & 0xff) as u16,
        dport: 80,
    }
}

/// One migration driven as the action script and the CNI plugin drive it (LOCK,
/// CHECKPOINTED, the restore registered, RESTORE_STARTED, UNLOCK), with `learned`
/// connections learned on the source's backend first (digests, as the switch sends
/// them); both endpoints are removed afterwards.
async fn migrate(
    ctl: &Controller,
    c: &mut api::controller_client::ControllerClient<tonic::transport::Channel>,
    ns: &Sides,
    seq: usize,
    service_id: u16,
    learned: u32,
) -> Result<Measured> {
    let ip = format!("10.88.{}.{}", 10 + (seq / 200) % 200, 1 + seq % 200);
    let src = format!("src{seq}");
    let tgt = format!("tgt{seq}");
    let ident = |netns: &str| {
        Some(api::Identity {
            pid: 0,
            netns_path: netns.to_string(),
        })
    };
    let ep = c
        .register_endpoint(api::RegisterEndpointRequest {
            container_id: src.clone(),
            ifname: "eth0".into(),
            netns_path: ns.a.clone(),
            ip: ip.clone(),
            mac: "02:00:00:00:0a:01".into(),
            labels: [("app".to_string(), "bench".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let backend_id = ep.backend_id as u16;
    let mut list_id = (seq as u64) << 32;
    let mut next = 0u32;
    while next < learned {
        let end = (next + 1000).min(learned);
        list_id += 1;
        ctl.on_digest(DigestList {
            digest_id: p4lb_p4::externs::conn_learn::ID,
            list_id,
            data: (next..end)
                .map(|i| {
                    let t = client_tuple(seq, i);
                    ConnLearn {
                        src_addr: t.src,
                        dst_addr: t.dst,
                        protocol: t.protocol,
                        src_port: t.sport,
                        dst_port: t.dport,
                        service_id,
                        backend_id,
                        event: ConnEvent::Learn,
                    }
                    .to_p4data()
                })
                .collect(),
            timestamp: 0,
        })
        .await;
        next = end;
    }
    let m = c
        .migration_event(api::MigrationEventRequest {
            phase: api::MigrationPhase::Lock as i32,
            identity: ident(&ns.a),
            ..Default::default()
        })
        .await?
        .into_inner();
    // A restore hint counts only for a checkpointed migration.
    c.migration_event(api::MigrationEventRequest {
        phase: api::MigrationPhase::Checkpointed as i32,
        identity: ident(&ns.a),
        migration_id: m.id.clone(),
        ..Default::default()
    })
    .await?;
    c.register_endpoint(api::RegisterEndpointRequest {
        container_id: tgt.clone(),
        ifname: "eth0".into(),
        netns_path: ns.b.clone(),
        ip: ip.clone(),
        mac: "02:00:00:00:0b:01".into(),
        restore_of_ip: ip.clone(),
        ..Default::default()
    })
    .await?;
    c.migration_event(api::MigrationEventRequest {
        phase: api::MigrationPhase::RestoreStarted as i32,
        identity: ident(&ns.b),
        migration_id: m.id.clone(),
        ..Default::default()
    })
    .await?;
    // The switchover as the CRIU action script makes it: UNLOCK without a RESTORED_AT,
    // the repoint and the release in one commit.
    let t0 = Instant::now();
    let r = c
        .migration_event(api::MigrationEventRequest {
            phase: api::MigrationPhase::Unlock as i32,
            identity: ident(&ns.b),
            migration_id: m.id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let rtt_us = t0.elapsed().as_secs_f64() * 1e6;
    for cid in [src, tgt] {
        c.deregister_endpoint(api::DeregisterEndpointRequest {
            container_id: cid,
            ifname: "eth0".into(),
        })
        .await?;
    }
    Ok(Measured {
        switchover_us: r.switchover_us,
        rtt_us,
        carried: r.connections_carried,
    })
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("p4lb-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
