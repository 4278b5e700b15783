//! `p4lb-switch`: p4lb's software P4Runtime target, with simple_switch_grpc-like flags.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use p4lb_switch::{serve, GrpcAddr, SwitchConfig, TlsFiles};

#[derive(Debug, Parser)]
#[command(
    name = "p4lb-switch",
    version,
    about = "p4lb's software P4Runtime switch"
)]
struct Args {
    /// gRPC (P4Runtime + SwitchPorts) address: unix:/path (mode 0600, root only; the
    /// default is unix:/run/p4lb-switch/switch.sock) or tcp://HOST:PORT (needs --tls-cert,
    /// --tls-key and --tls-client-ca: mutual TLS).
    #[arg(long, visible_alias = "listen")]
    grpc_addr: Option<String>,
    /// TLS certificate (PEM) of a TCP listener.
    #[arg(long, requires_all = ["tls_key", "tls_client_ca"])]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM; refused when group or others may read it).
    #[arg(long, requires_all = ["tls_cert", "tls_client_ca"])]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that signs the certificates of the clients allowed to connect.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_client_ca: Option<PathBuf>,
    /// Serve TCP without TLS, on a loopback address only: every local user can connect
    /// and take control of the switch. For tests.
    #[arg(long, conflicts_with = "tls_cert")]
    insecure_loopback: bool,
    /// P4Runtime device id.
    #[arg(long, default_value_t = 0)]
    device_id: u64,
    /// Attach a port: PORT@IFACE (repeatable), as simple_switch's -i.
    #[arg(short = 'i', long = "interface", value_name = "PORT@IFACE")]
    interfaces: Vec<String>,
    /// CPU port number (accepted for compatibility; the p4lb program does not use it).
    #[arg(long)]
    cpu_port: Option<u32>,
    /// Nice value of the data-plane thread (e.g. -10 to favour packet processing).
    #[arg(long, allow_hyphen_values = true)]
    dataplane_nice: Option<i32>,
    /// Receive through PACKET_MMAP (TPACKET_V3) rings instead of recvmmsg.
    #[arg(long)]
    rx_ring: bool,
    /// Log filter (tracing EnvFilter syntax), e.g. info, debug, p4lb_switch=trace.
    #[arg(long, default_value = "info", env = "P4LB_SWITCH_LOG")]
    log_level: String,
}

fn parse_iface(s: &str) -> Result<(u32, String)> {
    let Some((port, iface)) = s.split_once('@') else {
        bail!("interface `{s}` must be PORT@IFACE");
    };
    let port: u32 = port
        .parse()
        .with_context(|| format!("bad port number in `{s}`"))?;
    if iface.is_empty() {
        bail!("interface `{s}` has an empty interface name");
    }
    Ok((port, iface.to_string()))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log_level)
                .with_context(|| format!("invalid log level `{}`", args.log_level))?,
        )
        .with_writer(std::io::stderr)
        .init();
    let grpc_addr: GrpcAddr = match &args.grpc_addr {
        Some(a) => a.parse().map_err(anyhow::Error::msg)?,
        None => SwitchConfig::default().grpc_addr,
    };
    let ports = args
        .interfaces
        .iter()
        .map(|s| parse_iface(s))
        .collect::<Result<Vec<_>>>()?;
    let handle = serve(SwitchConfig {
        grpc_addr,
        device_id: args.device_id,
        ports,
        cpu_port: args.cpu_port,
        dataplane_nice: args.dataplane_nice,
        rx_ring: args.rx_ring,
        tls: match (args.tls_cert, args.tls_key, args.tls_client_ca) {
            (Some(cert), Some(key), Some(client_ca)) => Some(TlsFiles {
                cert,
                key,
                client_ca,
            }),
            _ => None,
        },
        insecure_loopback: args.insecure_loopback,
    })
    .await
    .context("starting the switch")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}
