//! `p4lb-tools`: what runs in the hermetic testbed besides the tests: the
//! live migration demo (`make demo`, Podman's own commands on a p4lb netavark
//! network) and three benchmarks, one migration timed
//! step by step (`bench-migration`), the no-lock checkpoint/restore
//! baseline (`bench-baseline`, `make baseline`) and a SYN flood against a VIP
//! (`bench-flood`). The first ones use the `p4lb-testbed` binary to hold the
//! testbed's namespaces (found next to this one, or `P4LB_TESTBED_BIN`); the
//! flood runs the `p4lb-controller` binary in namespaces of its own.
//!
//! - `main.rs`: the command line and the demo,
//! - `bench.rs`: `bench-migration`; `criu_floor.rs`: its exec floor (a do-nothing
//!   CRIU action script, same run),
//! - `baseline.rs`: `bench-baseline`,
//! - `flood.rs`: `bench-flood`.

mod baseline;
mod bench;
mod criu_floor;
mod flood;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use p4lb_e2e::cri;
use p4lb_e2e::judge::judge;
use p4lb_e2e::scenario;
use p4lb_testbed::session::helper_binary;
use p4lb_testbed::{images, rootfs, Testbed, TestbedOptions};

#[derive(Parser)]
#[command(name = "p4lb-tools", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Live migration demo: a container on a p4lb Podman network, behind a VIP,
    /// migrates twice (podman checkpoint/rm/restore --ignore-static-ip) to a new
    /// address while a client keeps 50 connections.
    Demo {
        /// The switch: `embedded` (p4lb's software switch inside the controller) or
        /// `bmv2` (the `simple_switch_grpc` of the install prefix in `P4LB_P4_PREFIX`).
        #[arg(long, default_value = "embedded", value_parser = ["embedded", "bmv2"])]
        switch: String,
    },
    /// One migration with CRIU's own dump/restore times (`--print-stats`)
    /// next to the p4lb lock -> unlock stall and the client's longest stall.
    BenchMigration {
        /// The switch, as for `demo`.
        #[arg(long, default_value = "embedded", value_parser = ["embedded", "bmv2"])]
        switch: String,
    },
    /// Shows the testbed and measures the no-lock checkpoint/restore baseline
    /// (Podman, same IP).
    BenchBaseline {
        #[arg(long, default_value_t = 5)]
        tries: usize,
    },
    /// A spoofed SYN flood against a VIP while established connections stream
    /// through it and one migration runs (the p4lb-controller binary with its
    /// embedded switch, in network namespaces; needs root).
    BenchFlood {
        /// Seconds of flood.
        #[arg(long, default_value_t = 60)]
        duration_s: u64,
        /// Established connections streaming during the flood.
        #[arg(long, default_value_t = 200)]
        conns: usize,
        /// Seconds of measurement before the flood (the baseline).
        #[arg(long, default_value_t = 10)]
        baseline_s: u64,
        /// Seconds between read-backs of the switch's conn_table (0 = never).
        #[arg(long, default_value_t = 5)]
        switch_read_every_s: u64,
        /// SYNs per second (0 = as fast as one thread goes).
        #[arg(long, default_value_t = 0)]
        syn_rate: u64,
    },
}

/// The p4lb network of the demo's server container, and its subnet.
const DEMO_NET: &str = "p4pods";
const DEMO_SUBNET: &str = "10.89.0.0/24";

/// The live migration demo, with nothing but what a Podman user types for the
/// server container: a p4lb network (`podman network create -d p4lb`), `podman run
/// --network`, then twice `podman container checkpoint --tcp-established --export`,
/// `podman rm`, `podman container restore --import --tcp-established
/// --ignore-static-ip` (a new address each time), while a client in a namespace of
/// its own (wired by the CNI plugin: the world outside, not a container that
/// migrates) holds connections to the VIP. Returns false when a connection was
/// reset, failed or lost data.
/// The switch named on the command line.
fn switch_target(name: &str) -> Result<scenario::SwitchTarget> {
    if name != "bmv2" {
        return Ok(scenario::SwitchTarget::Embedded);
    }
    match p4lb_e2e::bmv2::prefix_from_env()? {
        Some(p) => Ok(scenario::SwitchTarget::Bmv2(p)),
        None => bail!(
            "--switch bmv2 needs {} (the BMv2/p4c install prefix with bin/simple_switch_grpc \
             and bin/p4c-bm2-ss)",
            p4lb_e2e::bmv2::PREFIX_ENV
        ),
    }
}

fn live_demo(switch: &str) -> Result<bool> {
    const CONNS: usize = 50;
    const RATE: f64 = 5.0;
    const MIGRATIONS: usize = 2;
    let helper = helper_binary()?;
    let target = switch_target(switch)?;
    println!(
        "starting the testbed, the p4lb controller (switch: {}) and the netavark plugin...",
        target.name()
    );
    let w =
        scenario::World::start_on(helper, target).context("setting up the live migration demo")?;
    w.pod_netns("cli", "cli", "clients", "")?;
    w.create_network(DEMO_NET, DEMO_SUBNET)?;
    println!("podman network create -d p4lb --subnet {DEMO_SUBNET} -o labels=app=web {DEMO_NET}");
    w.add_service()?;
    w.run_server_on_network("web", DEMO_NET)?;
    let mut ip = w.address("web", DEMO_NET)?;
    println!(
        "server container `web` (podman run --network {DEMO_NET}) at {ip}, behind VIP {}:{}",
        scenario::VIP,
        scenario::PORT
    );
    let client = w.start_client(CONNS, RATE)?;
    println!("client: {CONNS} connections to the VIP, {RATE} requests/s each");
    std::thread::sleep(Duration::from_secs(4));
    let mut moved = Vec::new();
    let mut history = vec![ip.clone()];
    for i in 1..=MIGRATIONS {
        client.mark()?;
        let m = w
            .migrate_podman("web", DEMO_NET, i, true)
            .with_context(|| format!("migration {i}"))?;
        if m.old_ip != ip || history.contains(&m.new_ip) {
            bail!(
                "migration {i}: expected {ip} -> a new address (not one of {history:?}), got {} -> {}",
                m.old_ip,
                m.new_ip
            );
        }
        println!(
            "migration {i}: web ({}) -> web ({}): podman checkpoint {} ms, podman rm + restore {} ms",
            m.old_ip, m.new_ip, m.checkpoint_ms, m.restore_ms,
        );
        ip = m.new_ip.clone();
        history.push(m.new_ip.clone());
        moved.push(m);
        std::thread::sleep(Duration::from_secs(3));
    }
    let out = client.finish()?;
    let last = &out.last;
    if out.interim.len() != MIGRATIONS {
        bail!(
            "the client printed {} interim reports, expected {MIGRATIONS}; stderr: {}",
            out.interim.len(),
            out.stderr
        );
    }
    println!("\nclient's view ({} connections):", last.totals.connections);
    let (mut prev, mut prev_ms) = (0, 0);
    for (phase, r) in out.interim.iter().chain(std::iter::once(last)).enumerate() {
        let label = match phase {
            0 => "before migration 1".to_string(),
            p if p == MIGRATIONS => format!("after migration {MIGRATIONS}"),
            p => format!("between migrations {p} and {}", p + 1),
        };
        let (d, ms) = (r.totals.requests_done, r.elapsed_ms);
        println!(
            "  requests served {label:<28} {:>6} in {:.1} s",
            d.saturating_sub(prev),
            ms.saturating_sub(prev_ms) as f64 / 1000.0
        );
        (prev, prev_ms) = (d, ms);
    }
    let t = &last.totals;
    println!(
        "  longest stall                                {:>6} ms",
        t.longest_stall_ms
    );
    println!(
        "  connections reset                            {:>6}",
        t.reset
    );
    println!(
        "  connections failed                           {:>6}",
        t.failed
    );
    println!(
        "  bytes lost                                   {:>6}",
        t.lost_bytes
    );
    println!(
        "  bytes duplicated                             {:>6}",
        t.duplicated_bytes
    );
    println!(
        "  out-of-order bytes / corrupt replies         {:>6} / {}",
        t.out_of_order_bytes, t.corrupt_replies
    );
    let migs = w.migrations()?;
    println!("\ncontroller's migration records (p4lbctl --json migrations ls):");
    for (v, m) in migs.iter().rev().take(MIGRATIONS).rev().zip(&moved) {
        println!(
            "  {} {} -> {} ({} -> {}): {}, switchover {:.1} ms, lock->unlock stall {:.1} ms, {} connections carried",
            v.id,
            short_key(&v.source_key),
            short_key(&v.target_key),
            m.old_ip,
            m.new_ip,
            v.state,
            v.switchover_us as f64 / 1000.0,
            v.stall_us as f64 / 1000.0,
            v.connections_carried
        );
    }
    let (survived, _) = judge(&out.interim[0], last)?;
    let records_done = migs.len() >= MIGRATIONS
        && migs
            .iter()
            .rev()
            .take(MIGRATIONS)
            .all(|v| v.state == "done");
    let ok = survived == t.connections
        && t.connections == CONNS as u64
        && t.reset == 0
        && t.failed == 0
        && t.lost_bytes == 0
        && t.duplicated_bytes == 0
        && records_done;
    println!(
        "\nconnections survived: {survived}/{} ({MIGRATIONS} migrations to new addresses) -> {}",
        t.connections,
        if ok { "PASS" } else { "FAIL" }
    );
    if !ok {
        eprintln!("client stderr:\n{}\n{}", out.stderr, w.diag());
    }
    w.tb.sh("podman rm -f -t 0 web >/dev/null 2>&1 || true")?;
    drop(w);
    Ok(ok)
}

/// An endpoint key for a line of the report: a 64-character container id at its
/// start cut to 12 characters, as `podman ps` shows it.
fn short_key(key: &str) -> String {
    match key.split_once('-') {
        Some((id, rest)) if id.len() == 64 && id.is_ascii() => format!("{}-{rest}", &id[..12]),
        _ => key.to_string(),
    }
}

/// Shows the testbed (rootfs, package versions, CRIU, Podman, containerd's
/// CRI) and measures the no-lock checkpoint/restore baseline with the address
/// up right at the restore and 1.5 s before it. Fails when a run of it does
/// not show what [`baseline::BaselineResult::check`] requires.
fn bench_baseline(tries: usize) -> Result<()> {
    let tb = Testbed::start(TestbedOptions::default())?;
    println!(
        "testbed: rootfs {} at {} ({} in {:.1} s)",
        tb.rootfs().hash,
        tb.rootfs().path.display(),
        if tb.rootfs().built { "built" } else { "reused" },
        tb.rootfs().elapsed.as_secs_f64()
    );
    rootfs::print_key_package_versions(&tb.rootfs().path);
    let criu = tb.output(&["criu", "check"])?;
    println!(
        "criu check: {}",
        String::from_utf8_lossy(&criu.stdout)
            .trim()
            .lines()
            .last()
            .unwrap_or("")
    );
    images::build_podman_images(&tb)?;
    println!(
        "podman images: {} {}",
        images::TEST_IMAGE,
        images::PAUSE_IMAGE
    );
    let hello = tb.run(&[
        "podman",
        "run",
        "--rm",
        "--network",
        "none",
        images::TEST_IMAGE,
        "echo",
        "hello from a container",
    ])?;
    println!("podman run: {}", hello.trim());
    let socket = cri::start_containerd(&tb)?;
    let mut c = cri::Cri::connect(&socket)?;
    let v = c.version()?;
    println!(
        "containerd CRI: {} {} (API {})",
        v.runtime_name, v.runtime_version, v.runtime_api_version
    );
    println!("commands: p4lb-testbed run [--images] [--containerd] [CMD...]; p4lb-testbed cleanup");
    for gap_ms in [0, 1500] {
        let opts = baseline::BaselineOptions {
            tries,
            ip_up_before_restore: Duration::from_millis(gap_ms),
            ..Default::default()
        };
        let r = baseline::run_baseline(&tb, &opts)?;
        print!("{}", r.summary());
        for e in r.tries.iter().filter_map(|t| t.restore_error.as_ref()) {
            println!("restore failure: {e}");
        }
        r.check(&opts)?;
    }
    tb.stop()?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.cmd {
        Cmd::Demo { switch } => live_demo(&switch).map(|ok| if ok { 0 } else { 1 }),
        Cmd::BenchMigration { switch } => {
            switch_target(&switch).and_then(|t| bench::bench_migration(t).map(|_| 0))
        }
        Cmd::BenchBaseline { tries } => bench_baseline(tries).map(|_| 0),
        Cmd::BenchFlood {
            duration_s,
            conns,
            baseline_s,
            switch_read_every_s,
            syn_rate,
        } => flood::bench_flood(&flood::FloodOptions {
            duration: Duration::from_secs(duration_s),
            conns,
            baseline: Duration::from_secs(baseline_s),
            switch_read_every: (switch_read_every_s > 0)
                .then(|| Duration::from_secs(switch_read_every_s)),
            syn_rate,
        })
        .map(|_| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("p4lb-tools: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::short_key;

    #[test]
    fn short_key_cuts_a_full_container_id_and_keeps_anything_else() {
        let id = "ed7ffab21c259af353c02abdcc8abc1ccdf1642dbc4482e4e954d6c1c879fcb4";
        assert_eq!(
            short_key(&format!("{id}-5990b980dd/eth0")),
            "ed7ffab21c25-5990b980dd/eth0"
        );
        assert_eq!(short_key("srv0/eth0"), "srv0/eth0");
        assert_eq!(short_key("short-id/eth0"), "short-id/eth0");
    }
}
