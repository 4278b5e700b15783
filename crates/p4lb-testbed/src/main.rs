//! `p4lb-testbed`: build, enter and clean up the hermetic testbed.

mod bench;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use p4lb_testbed::enter::{self, Bind, HoldConfig};
use p4lb_testbed::session::DEFAULT_PREFIX;
use p4lb_testbed::spec::RootfsSpec;
use p4lb_testbed::{
    cleanup, containerd, cri, images, migration, rootfs, scenario, Testbed, TestbedOptions,
};

#[derive(Parser)]
#[command(name = "p4lb-testbed", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the rootfs (or reuse the cached one) and print where it is.
    Build,
    /// Show the rootfs hash, cache, and the versions of the key packages.
    Info,
    /// Run a command inside a fresh testbed (default: an interactive shell).
    Run {
        /// Build the local images first.
        #[arg(long)]
        images: bool,
        /// Start containerd first.
        #[arg(long)]
        containerd: bool,
        #[arg(trailing_var_arg = true)]
        command: Vec<String>,
    },
    /// Remove sessions, host network namespaces and links left by crashed runs.
    Cleanup {
        /// Name prefixes to remove (default: the session prefix).
        #[arg(long = "prefix")]
        prefixes: Vec<String>,
    },
    /// Live migration demo: a container behind a VIP migrates twice to a new
    /// address while a client keeps 50 connections; `--baseline` instead
    /// shows the testbed and measures the no-lock checkpoint/restore baseline.
    Demo {
        #[arg(long)]
        baseline: bool,
        #[arg(long, default_value_t = 5)]
        tries: usize,
    },
    /// One migration with CRIU's own dump/restore times (`--print-stats`)
    /// next to the p4lb lock -> unlock stall and the client's longest stall.
    BenchMigration,
    /// (internal) Enter the rootfs and hold the session's namespaces.
    #[command(hide = true)]
    Hold {
        #[arg(long)]
        rootfs: PathBuf,
        #[arg(long)]
        session: PathBuf,
        #[arg(long, default_value = "p4lb-testbed")]
        hostname: String,
        #[arg(long = "bind")]
        binds: Vec<String>,
    },
}

const KEY_PACKAGES: &[&str] = &[
    "criu",
    "podman",
    "crun",
    "runc",
    "containerd",
    "netavark",
    "containernetworking-plugins",
    "docker-registry",
];

fn print_versions(rootfs: &std::path::Path) {
    let list =
        std::fs::read_to_string(rootfs.join("etc/p4lb-testbed.packages")).unwrap_or_default();
    for line in list.lines() {
        if let Some((name, version)) = line.split_once(' ') {
            if KEY_PACKAGES.contains(&name) {
                println!("  {name:<30} {version}");
            }
        }
    }
}

/// The live migration demo: a server container behind a VIP migrates twice to
/// a new pod with a new address while a client holds connections to the VIP.
/// Returns false when a connection was reset, failed or lost data.
fn live_demo() -> Result<bool> {
    const CONNS: usize = 50;
    const RATE: f64 = 5.0;
    const MIGRATIONS: usize = 2;
    let helper = std::env::current_exe().context("finding the p4lb-testbed binary")?;
    println!("starting the testbed, the p4lb controller (embedded software switch) and the CNI plugin...");
    let w = scenario::World::start(helper).context("setting up the live migration demo")?;
    w.pod_netns("cli", "cli", "clients", "")?;
    let mut ip = w.pod_netns("srv", "srv0", "pods", "")?;
    w.add_service()?;
    w.run_server("web", &[])?;
    println!(
        "server container `web` in pod srv0 at {ip}, behind VIP {}:{}",
        scenario::VIP,
        scenario::PORT
    );
    let client = w.start_client(CONNS, RATE)?;
    println!("client: {CONNS} connections to the VIP, {RATE} requests/s each");
    std::thread::sleep(Duration::from_secs(4));
    let mut moved = Vec::new();
    let mut ids = vec!["srv0".to_string()];
    for i in 1..=MIGRATIONS {
        client.mark()?;
        let new_id = format!("srv{i}");
        let m = w
            .migrate("web", &ids[i - 1], &new_id, i)
            .with_context(|| format!("migration {i}"))?;
        if m.old_ip != ip || m.new_ip == m.old_ip {
            bail!(
                "migration {i}: expected {ip} -> a new address, got {} -> {}",
                m.old_ip,
                m.new_ip
            );
        }
        println!(
            "migration {i}: {ids_old} ({}) -> {new_id} ({}): podman checkpoint {} ms, new pod + restore {} ms",
            m.old_ip,
            m.new_ip,
            m.checkpoint_ms,
            m.restore_ms,
            ids_old = ids[i - 1]
        );
        ip = m.new_ip.clone();
        ids.push(new_id);
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
            v.source_key,
            v.target_key,
            m.old_ip,
            m.new_ip,
            v.state,
            v.switchover_us as f64 / 1000.0,
            v.stall_us as f64 / 1000.0,
            v.connections_carried
        );
    }
    let (survived, _) = migration::judge(&out.interim[0], last)?;
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

fn demo(baseline: bool, tries: usize) -> Result<()> {
    let tb = Testbed::start(TestbedOptions::default())?;
    println!(
        "testbed: rootfs {} at {} ({} in {:.1} s)",
        tb.rootfs().hash,
        tb.rootfs().path.display(),
        if tb.rootfs().built { "built" } else { "reused" },
        tb.rootfs().elapsed.as_secs_f64()
    );
    print_versions(&tb.rootfs().path);
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
    let socket = containerd::start(&tb)?;
    let mut c = cri::Cri::connect(&socket)?;
    let v = c.version()?;
    println!(
        "containerd CRI: {} {} (API {})",
        v.runtime_name, v.runtime_version, v.runtime_api_version
    );
    println!("commands: p4lb-testbed run [--images] [--containerd] [CMD...]; p4lb-testbed cleanup");
    if baseline {
        for gap_ms in [0, 1500] {
            let r = migration::run_baseline(
                &tb,
                &migration::BaselineOptions {
                    tries,
                    ip_up_before_restore: std::time::Duration::from_millis(gap_ms),
                    ..Default::default()
                },
            )?;
            print!("{}", r.summary());
        }
    } else {
        println!("live migration demo: run `p4lb-testbed demo` without --baseline (make demo)");
    }
    tb.stop()?;
    Ok(())
}

fn run(images_first: bool, with_containerd: bool, command: Vec<String>) -> Result<i32> {
    let tb = Testbed::start(TestbedOptions::default())?;
    if images_first {
        images::build_podman_images(&tb)?;
    }
    if with_containerd {
        containerd::start(&tb)?;
        if images_first {
            images::load_into_containerd(&tb)?;
        }
    }
    let command = if command.is_empty() {
        vec!["/bin/bash".to_string()]
    } else {
        command
    };
    let interactive = command.len() == 1 && command[0].ends_with("sh");
    let mut cmd = if interactive {
        tb.interactive_command(&command)
    } else {
        tb.command(&command)
    };
    let status = cmd.status().context("running the command in the testbed")?;
    tb.stop()?;
    Ok(status.code().unwrap_or(1))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `hold` must run before anything starts a thread.
    if let Cmd::Hold {
        rootfs,
        session,
        hostname,
        binds,
    } = &cli.cmd
    {
        let result = binds
            .iter()
            .map(|b| Bind::parse(b))
            .collect::<Result<Vec<_>, _>>()
            .and_then(|binds| {
                enter::hold(&HoldConfig {
                    rootfs: rootfs.clone(),
                    session: session.clone(),
                    binds,
                    hostname: hostname.clone(),
                })
            });
        return match result {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                eprintln!("p4lb-testbed hold: {e}");
                ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("p4lb-testbed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Build => {
            let r = rootfs::ensure(&RootfsSpec::default())?;
            println!("{}", r.path.display());
            Ok(0)
        }
        Cmd::Info => {
            let spec = RootfsSpec::default();
            println!("rootfs hash: {}", spec.hash());
            println!("cache: {}", p4lb_testbed::paths::cache_root().display());
            let path = rootfs::path_for(&spec);
            if path.join("etc/p4lb-testbed.packages").is_file() {
                println!("built: {}", path.display());
                print_versions(&path);
            } else {
                println!("not built yet (run `p4lb-testbed build`)");
            }
            for (hash, p) in rootfs::cached() {
                println!("cached: {hash} {}", p.display());
            }
            Ok(0)
        }
        Cmd::Run {
            images,
            containerd,
            command,
        } => run(images, containerd, command),
        Cmd::Cleanup { prefixes } => {
            let prefixes = if prefixes.is_empty() {
                vec![DEFAULT_PREFIX.to_string()]
            } else {
                prefixes
            };
            let mut failed = false;
            for p in &prefixes {
                let r = cleanup::cleanup(p);
                println!(
                    "cleanup {p}: {} sessions stopped, {} session dirs removed, {} netns removed, {} links removed",
                    r.sessions_stopped, r.session_dirs_removed, r.netns_removed, r.links_removed
                );
                for e in &r.errors {
                    eprintln!("cleanup {p}: {e}");
                    failed = true;
                }
            }
            if failed {
                bail!("cleanup left errors (above)");
            }
            Ok(0)
        }
        Cmd::Demo { baseline, tries } => {
            if baseline {
                demo(baseline, tries).map(|_| 0)
            } else {
                live_demo().map(|ok| if ok { 0 } else { 1 })
            }
        }
        Cmd::BenchMigration => bench::bench_migration().map(|_| 0),
        Cmd::Hold { .. } => unreachable!("handled in main"),
    }
}
