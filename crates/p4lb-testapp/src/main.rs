//! `p4lb-testapp`: test client/server for p4lb's migration tests.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use p4lb_testapp::client::{Client, ClientOptions};
use p4lb_testapp::report::Report;
use p4lb_testapp::{pause, server};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(name = "p4lb-testapp", version, about)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Answer numbered requests (echo with number, count and checksum).
    Server {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:7000")]
        listen: SocketAddr,
        /// Carry a process-wide counter in every reply (must survive checkpoint/restore).
        #[arg(long)]
        stateful: bool,
        /// Write to this many MiB of memory before listening and keep it (so that a
        /// checkpoint carries it).
        #[arg(long, default_value_t = 0)]
        touch_mib: usize,
    },
    /// Stream numbered requests over many connections and check every reply.
    ///
    /// Prints a JSON report on stdout and a summary on stderr at exit, and an
    /// interim one on SIGUSR1. Runs for --duration or until SIGINT/SIGTERM.
    Client {
        /// Server address.
        #[arg(long)]
        target: SocketAddr,
        /// Number of connections.
        #[arg(long, default_value_t = 1)]
        conns: usize,
        /// Requests per second per connection (0 = as fast as replies come).
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Payload bytes per request.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Send requests on schedule without waiting for replies (needs --rate > 0).
        #[arg(long)]
        pipeline: bool,
        /// Stop after this many seconds (default: run until signalled).
        #[arg(long)]
        duration: Option<f64>,
        /// Connect timeout in seconds.
        #[arg(long, default_value_t = 5.0)]
        connect_timeout: f64,
        /// Exit with status 2 when any connection is not clean.
        #[arg(long)]
        strict: bool,
    },
    /// Sleep until SIGTERM/SIGINT (pod sandbox init).
    Pause,
}

fn print_report(r: &Report) -> Result<()> {
    println!("{}", serde_json::to_string(r)?);
    eprint!("{}", r.human());
    Ok(())
}

async fn run_client(opts: ClientOptions, duration: Option<Duration>, strict: bool) -> Result<i32> {
    if opts.conns == 0 {
        anyhow::bail!("--conns must be at least 1");
    }
    if !(opts.rate >= 0.0 && opts.rate.is_finite()) {
        anyhow::bail!("--rate must be a finite number >= 0");
    }
    if opts.pipeline && opts.rate == 0.0 {
        anyhow::bail!("--pipeline needs a --rate above 0");
    }
    let mut usr1 = signal(SignalKind::user_defined1()).context("installing SIGUSR1 handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let client = Client::start(opts);
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = usr1.recv() => print_report(&client.report(false))?,
            _ = tick.tick() => if client.all_ended() { break },
        }
    }
    let report = client.finish().await;
    print_report(&report)?;
    Ok(
        if strict && report.totals.clean != report.totals.connections {
            2
        } else {
            0
        },
    )
}

fn secs(name: &str, v: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("{name} must be a non-negative number of seconds"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.mode {
        Mode::Server {
            listen,
            stateful,
            touch_mib,
        } => {
            let shutdown = async {
                let mut term = match signal(SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return std::future::pending().await,
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            };
            server::run(
                server::ServerOptions {
                    listen,
                    stateful,
                    touch_mib,
                },
                shutdown,
            )
            .await
        }
        Mode::Client {
            target,
            conns,
            rate,
            payload,
            pipeline,
            duration,
            connect_timeout,
            strict,
        } => {
            let opts = ClientOptions {
                target,
                conns,
                rate,
                pipeline,
                payload,
                connect_timeout: secs("--connect-timeout", connect_timeout)?,
            };
            let duration = duration.map(|d| secs("--duration", d)).transpose()?;
            let code = run_client(opts, duration, strict).await?;
            std::process::exit(code);
        }
        Mode::Pause => pause::run().await,
    }
}
