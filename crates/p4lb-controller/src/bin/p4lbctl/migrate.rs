//! `p4lbctl migrate <container> --to <node>`: asks the source node's agent to move a
//! container to the target node's agent (mutual TLS with an admin certificate of the
//! nodes' CA), then prints each phase's time, and, when the controller's socket is
//! reachable, the switchover and the client-visible stall of its migration record.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use p4lb_api::{api, Client};

/// How long the controller's record of the migration is waited for (the action script
/// reports the unlock just before the restore command returns).
const RECORD_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The container (name or ID) on the source node.
    pub container: String,
    /// The target node's name (the DNS name in its agent's certificate).
    #[arg(long)]
    pub to: String,
    /// The target node's agent ("https://HOST:PORT").
    #[arg(long)]
    pub to_agent: String,
    /// The source node's name.
    #[arg(long)]
    pub from: String,
    /// The source node's agent ("https://HOST:PORT").
    #[arg(long)]
    pub from_agent: String,
    /// The nodes' CA certificate (PEM).
    #[arg(long, env = "P4LB_AGENT_CA")]
    pub ca: PathBuf,
    /// This administrator's certificate, issued by the nodes' CA (PEM).
    #[arg(long, env = "P4LB_AGENT_CERT")]
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    #[arg(long, env = "P4LB_AGENT_KEY")]
    pub key: PathBuf,
}

fn ms(us: i64) -> String {
    format!("{:>9.1} ms", us as f64 / 1000.0)
}

/// The controller's record of the migration from `source_ip` that ended after
/// `since_us` (UNIX µs), if the controller answers.
async fn record(socket: &Path, source_ip: &str, since_us: i64) -> Option<api::Migration> {
    let c = Client::connect(socket, Duration::from_secs(2), Duration::from_secs(5))
        .await
        .ok()?;
    let deadline = tokio::time::Instant::now() + RECORD_WAIT;
    loop {
        let found = c
            .list_migrations()
            .await
            .ok()?
            .into_iter()
            .rev()
            .find(|m| m.source_ip == source_ip && m.locked_unix_us >= since_us);
        match found {
            Some(m) if matches!(m.state.as_str(), "done" | "aborted") => return Some(m),
            Some(m) if tokio::time::Instant::now() >= deadline => return Some(m),
            None if tokio::time::Instant::now() >= deadline => return None,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

pub async fn run(a: MigrateArgs, socket: &Path, as_json: bool, out: &mut String) -> Result<()> {
    use std::fmt::Write;
    let tls = p4lb_api::tls::client_config(&a.ca, &a.cert, &a.key)?;
    let mut agent = p4lb_agent::client::connect(&a.from_agent, &a.from, tls).await?;
    let since_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let r = agent
        .migrate(api::MigrateRequest {
            container: a.container.clone(),
            target_node: a.to.clone(),
            target_address: a.to_agent.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))
        .with_context(|| format!("migrating {} from {} to {}", a.container, a.from, a.to))?
        .into_inner();
    let m = record(socket, &r.source_address, since_us).await;
    if as_json {
        let v = json!({ "migration": r, "controller": m });
        out.push_str(&serde_json::to_string_pretty(&v)?);
        out.push('\n');
        return Ok(());
    }
    let t = r.times.unwrap_or_default();
    writeln!(
        out,
        "migrated {} from {} to {}: {} -> {}",
        r.container, r.source_node, r.target_node, r.source_address, r.target_address
    )?;
    writeln!(out, "  checkpoint {}", ms(t.checkpoint_us))?;
    writeln!(
        out,
        "  transfer   {} ({:.1} MiB, sha256 {})",
        ms(t.transfer_us),
        r.archive_bytes as f64 / (1 << 20) as f64,
        r.archive_sha256
    )?;
    writeln!(out, "  restore    {}", ms(t.restore_us))?;
    writeln!(out, "  clean-up   {}", ms(t.cleanup_us))?;
    writeln!(out, "  total      {}", ms(t.total_us))?;
    match m {
        Some(m) => {
            writeln!(
                out,
                "  switchover {} (controller, migration {}, {})",
                ms(m.switchover_us),
                m.id,
                m.state
            )?;
            writeln!(
                out,
                "  stall      {} (lock -> unlock: what clients saw)",
                ms(m.stall_us)
            )?;
        }
        None => writeln!(
            out,
            "  (no migration record of {} on the controller at {}: switchover and stall unknown)",
            r.source_address,
            socket.display()
        )?,
    }
    Ok(())
}
