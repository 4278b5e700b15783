//! p4lb-controller: the daemon. With no arguments it reads /etc/p4lb/controller.toml if
//! present and runs against the embedded software switch.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use p4lb_controller::config::{Config, SwitchKind, DEFAULT_CONFIG_PATH};
use p4lb_controller::lock::StateLock;
use p4lb_controller::{readiness, server, Controller};

#[derive(Debug, Parser)]
#[command(name = "p4lb-controller", version, about = "p4lb controller daemon")]
struct Args {
    /// Configuration file (TOML). The default location is optional.
    #[arg(long, short = 'c', env = "P4LB_CONTROLLER_CONFIG")]
    config: Option<PathBuf>,
    /// State directory (persisted state).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// API Unix socket.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Group allowed on the API socket (mode 0660).
    #[arg(long)]
    group: Option<String>,
    /// Also serve the API on this TCP address with mutual TLS (off by default; needs
    /// api.tls_cert, api.tls_key and api.tls_client_ca in the configuration file).
    #[arg(long)]
    tcp: Option<String>,
    /// Switch kind: software or bmv2.
    #[arg(long, value_parser = ["software", "bmv2"])]
    switch_kind: Option<String>,
    /// P4Runtime address of the switch (HOST:PORT or unix:/path); empty with the
    /// software kind = embedded switch.
    #[arg(long)]
    switch_address: Option<String>,
    #[arg(long)]
    device_id: Option<u64>,
    #[arg(long)]
    election_id: Option<u64>,
    /// P4Info text file (default: installed or built-in).
    #[arg(long)]
    p4info: Option<PathBuf>,
    /// BMv2 JSON pushed with the pipeline (bmv2 kind).
    #[arg(long)]
    bmv2_json: Option<PathBuf>,
    /// BMv2 Thrift runtime address (bmv2 kind).
    #[arg(long)]
    thrift: Option<String>,
    /// Listen address of the embedded software switch (default: a root-only unix socket
    /// in the state directory; HOST:PORT only on a loopback address).
    #[arg(long)]
    embedded_listen: Option<String>,
    /// Prometheus HTTP listener (off by default).
    #[arg(long)]
    metrics_http: Option<String>,
    /// Idle timeout of learned connections, in milliseconds (0 = never).
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn build_config(a: &Args) -> anyhow::Result<Config> {
    let (path, required) = match &a.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let mut c = Config::load(&path, required)?;
    if let Some(v) = &a.state_dir {
        c.state_dir = v.clone();
    }
    if let Some(v) = &a.socket {
        c.api.socket = v.clone();
    }
    if let Some(v) = &a.group {
        c.api.group = v.clone();
    }
    if let Some(v) = &a.tcp {
        c.api.tcp = v.clone();
    }
    if let Some(v) = &a.switch_kind {
        c.switch.kind = if v == "bmv2" {
            SwitchKind::Bmv2
        } else {
            SwitchKind::Software
        };
    }
    if let Some(v) = &a.switch_address {
        c.switch.address = v.clone();
    }
    if let Some(v) = a.device_id {
        c.switch.device_id = v;
    }
    if let Some(v) = a.election_id {
        c.switch.election_id = v;
    }
    if let Some(v) = &a.p4info {
        c.switch.p4info = v.clone();
    }
    if let Some(v) = &a.bmv2_json {
        c.switch.bmv2_json = v.clone();
    }
    if let Some(v) = &a.thrift {
        c.switch.thrift = v.clone();
    }
    if let Some(v) = &a.embedded_listen {
        c.switch.embedded_listen = v.clone();
    }
    if let Some(v) = &a.metrics_http {
        c.metrics.http = v.clone();
    }
    if let Some(v) = a.idle_timeout_ms {
        c.conn.idle_timeout_ms = v;
    }
    c.validate()?;
    Ok(c)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let cfg = build_config(&args)?;
    // Before the state, the switch or any socket: one controller per state directory.
    let _lock = StateLock::acquire(&cfg.state_dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let ctl = Controller::start(cfg).await?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "installing SIGTERM handler");
                        return;
                    }
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("shutting down");
            readiness::stopping();
            let _ = tx.send(true);
        });
        let r = server::serve(ctl.clone(), rx).await;
        ctl.shutdown().await;
        r
    })
}
