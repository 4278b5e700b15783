//! p4lb-agent: the node agent (see the library's documentation and docs/multi-node.md).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

use p4lb_agent::relay::{Relay, RelaySettings};
use p4lb_agent::{AgentService, Config, Faults};

#[derive(Debug, Parser)]
#[command(
    name = "p4lb-agent",
    version,
    about = "The p4lb node agent: moves containers between nodes"
)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, env = "P4LB_AGENT_CONFIG", default_value = p4lb_agent::config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Fault injection for tests: `corrupt-archive` flips a byte of every outgoing
    /// archive after its digest is taken (the target must refuse it);
    /// `pause-receive` stops this agent (SIGSTOP) when an incoming archive's header
    /// arrives.
    #[arg(long, hide = true)]
    inject_fault: Option<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    p4lb_api::log::init_stderr();
    let args = Args::parse();
    let config = Config::load(&args.config)?;
    let faults = match args.inject_fault.as_deref() {
        None => Faults::default(),
        Some("corrupt-archive") => Faults {
            corrupt_archive: true,
            ..Faults::default()
        },
        Some("pause-receive") => Faults {
            pause_receive: true,
            ..Faults::default()
        },
        Some(f) => {
            anyhow::bail!("unknown fault {f:?} (known: corrupt-archive, pause-receive)")
        }
    };
    p4lb_agent::prepare_work_dir(&config.work_dir)?;
    let (server_tls, client_tls) = p4lb_agent::tls_configs(&config)?;
    if let Some(c) = config.controller.clone() {
        tokio::spawn(p4lb_agent::register_forever(c, client_tls.clone()));
    }
    let (settings, runtime) = p4lb_agent::from_config(&config, client_tls.clone(), faults);
    let service = AgentService::new(settings, runtime);
    if let (Some(r), Some(c)) = (&config.relay, &config.controller) {
        let gid = p4lb_api::unix::resolve_group(&r.group).context("relay.group")?;
        let socket = p4lb_agent::bind_relay_socket(&r.socket, gid)?;
        let relay = Relay::new(
            RelaySettings {
                node: config.node.clone(),
                controller: c.address.clone(),
                tls: client_tls,
                group: gid,
                check_addresses: r.check_addresses,
            },
            service.outgoing(),
        );
        tracing::info!(socket = %r.socket.display(), controller = %c.address, "relaying this node's controller API");
        tokio::spawn(async move {
            if let Err(e) = p4lb_agent::serve_relay(relay, socket).await {
                tracing::error!("the node's relay stopped: {e}");
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    tracing::info!(node = %config.node, listen = %config.listen, "p4lb-agent serving");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stopping");
    };
    p4lb_agent::serve(listener, server_tls, service, shutdown).await?;
    Ok(())
}
