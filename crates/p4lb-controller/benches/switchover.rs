//! The controller's figures (not a test): `cargo bench -p p4lb-controller --bench switchover`
//! (as root: the migrations' endpoints live in two network namespaces it creates with
//! `p4lb_testutil::NamedNetns`). Options after `--`,
//! e.g. `-- --entries 50000 --batch 500`.
//!
//! 1. Batched table writes per second against p4lb's software switch (conn_table
//!    inserts over P4Runtime, in batches).
//! 2. Switchover latency of migrations: RESTORED_AT received → table write
//!    acknowledged (as the controller records it), and the caller's round trip.
//!
//! Runs the software switch in-process on a Unix socket in a temporary directory.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;

use p4lb_controller::config::Config;
use p4lb_controller::conn::{ConnRec, ConnTable};
use p4lb_controller::{server, Controller};
use p4lb_p4::FiveTuple;
use p4lb_proto::api;
use p4lb_testutil::NamedNetns;

#[derive(Debug, Parser)]
struct Args {
    /// conn_table entries written in the throughput run.
    #[arg(long, default_value_t = 20000)]
    entries: usize,
    /// Updates per Write request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Migrations in the switchover run.
    #[arg(long, default_value_t = 200)]
    migrations: usize,
    /// Passed by `cargo bench` to every bench target; nothing to do with it.
    #[arg(long, hide = true)]
    bench: bool,
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
    let dir = tempfile_dir()?;
    let ssock = dir.join("switch.sock");
    let sw = p4lb_switch::serve(p4lb_switch::SwitchConfig {
        grpc_addr: p4lb_switch::GrpcAddr::Unix(ssock.clone()),
        ..Default::default()
    })
    .await?;
    let mut cfg = Config {
        state_dir: dir.join("state"),
        ..Default::default()
    };
    cfg.api.socket = dir.join("api.sock");
    cfg.switch.address = format!("unix:{}", ssock.display());
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

    // 2. Switchover latency.
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
    let ns_a = holder_a.path().display().to_string();
    let ns_b = holder_b.path().display().to_string();
    // A service with a second, steady backend, as in a real deployment.
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
    c.add_service(api::AddServiceRequest {
        service: Some(api::Service {
            name: "bench".into(),
            vip: "10.96.9.1".into(),
            port: 80,
            selector: "app=bench".into(),
            ..Default::default()
        }),
        replace: false,
    })
    .await?;
    let mut server_us = Vec::new();
    let mut rtt_us = Vec::new();
    let phases = &ctl.metrics.commit;
    let at_start = (
        phases.commits.get(),
        phases.desired_us.get(),
        phases.write_us.get(),
    );
    for i in 0..args.migrations {
        let ip = format!("10.88.{}.{}", 10 + i / 200, 1 + i % 200);
        let src = format!("src{i}");
        let tgt = format!("tgt{i}");
        c.register_endpoint(api::RegisterEndpointRequest {
            container_id: src.clone(),
            ifname: "eth0".into(),
            netns_path: ns_a.clone(),
            ip: ip.clone(),
            mac: "02:00:00:00:0a:01".into(),
            labels: [("app".to_string(), "bench".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        })
        .await?;
        let m = c
            .migration_event(api::MigrationEventRequest {
                phase: api::MigrationPhase::Lock as i32,
                identity: Some(api::Identity {
                    pid: 0,
                    netns_path: ns_a.clone(),
                }),
                ..Default::default()
            })
            .await?
            .into_inner();
        // A restore hint counts only for a checkpointed migration.
        c.migration_event(api::MigrationEventRequest {
            phase: api::MigrationPhase::Checkpointed as i32,
            identity: Some(api::Identity {
                pid: 0,
                netns_path: ns_a.clone(),
            }),
            migration_id: m.id.clone(),
            ..Default::default()
        })
        .await?;
        c.register_endpoint(api::RegisterEndpointRequest {
            container_id: tgt.clone(),
            ifname: "eth0".into(),
            netns_path: ns_b.clone(),
            ip: ip.clone(),
            mac: "02:00:00:00:0b:01".into(),
            restore_of_ip: ip.clone(),
            ..Default::default()
        })
        .await?;
        let t0 = Instant::now();
        let r = c
            .migration_event(api::MigrationEventRequest {
                phase: api::MigrationPhase::RestoredAt as i32,
                identity: Some(api::Identity {
                    pid: 0,
                    netns_path: ns_b.clone(),
                }),
                migration_id: m.id.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        rtt_us.push(t0.elapsed().as_secs_f64() * 1e6);
        server_us.push(r.switchover_us as f64);
        c.migration_event(api::MigrationEventRequest {
            phase: api::MigrationPhase::Unlock as i32,
            identity: Some(api::Identity {
                pid: 0,
                netns_path: ns_b.clone(),
            }),
            migration_id: m.id.clone(),
            ..Default::default()
        })
        .await?;
        for cid in [src, tgt] {
            c.deregister_endpoint(api::DeregisterEndpointRequest {
                container_id: cid,
                ifname: "eth0".into(),
            })
            .await?;
        }
    }
    println!(
        "switchover (RESTORED_AT received -> write acked, {} migrations): p50 {:.0} us, p99 {:.0} us",
        args.migrations,
        pct(&mut server_us, 0.50),
        pct(&mut server_us, 0.99)
    );
    let commits = (phases.commits.get() - at_start.0).max(1) as f64;
    println!(
        "commits in the switchover run: {commits:.0}; mean per commit: computing the desired \
         entries {:.0} us, writing the difference to the switch {:.0} us",
        (phases.desired_us.get() - at_start.1) as f64 / commits,
        (phases.write_us.get() - at_start.2) as f64 / commits,
    );
    println!(
        "RESTORED_AT round trip at the caller (includes the durable save): p50 {:.0} us, p99 {:.0} us",
        pct(&mut rtt_us, 0.50),
        pct(&mut rtt_us, 0.99)
    );
    drop((holder_a, holder_b));
    let _ = stop.send(true);
    let _ = srv.await;
    ctl.shutdown().await;
    sw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("p4lb-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
