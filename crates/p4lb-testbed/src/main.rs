//! `p4lb-testbed`: build, enter and clean up the hermetic testbed. The demo
//! and the benchmarks that run in it are `p4lb-tools`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use p4lb_testbed::enter::{self, Bind, HoldConfig};
use p4lb_testbed::session::DEFAULT_PREFIX;
use p4lb_testbed::spec::RootfsSpec;
use p4lb_testbed::{cleanup, containerd, images, rootfs, Testbed, TestbedOptions};

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
                rootfs::print_key_package_versions(&path);
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
        Cmd::Hold { .. } => unreachable!("handled in main"),
    }
}
