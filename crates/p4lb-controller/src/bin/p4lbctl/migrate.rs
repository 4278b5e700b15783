//! `p4lbctl migrate <container> --to <node>`: asks the source node's agent to move a
//! container to the target node's agent (mutual TLS with an admin certificate of the
//! nodes' CA), then prints each phase's time, and, when the controller is reachable,
//! the switchover and the client-visible stall of its migration record. The agents'
//! addresses come from the controller's node registry (`ListNodes`), the source node
//! from asking each registered node's agent (`Inspect`); `--from`, `--from-agent` and
//! `--to-agent` give them explicitly.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use p4lb_api::{api, Client};
use tonic::transport::ClientTlsConfig;

/// How long the controller's record of the migration is waited for (the action script
/// reports the unlock just before the restore command returns).
const RECORD_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The container (name or ID; on a node whose agent runs containerd, the pod's name
    /// or the pod's or container's ID).
    pub container: String,
    /// The target node's name (the DNS name in its agent's certificate).
    #[arg(long)]
    pub to: String,
    /// The target node's agent ("https://HOST:PORT"); default: the address the node
    /// registered with the controller.
    #[arg(long)]
    pub to_agent: Option<String>,
    /// The source node's name; default: the registered node whose agent has the
    /// container.
    #[arg(long)]
    pub from: Option<String>,
    /// The source node's agent ("https://HOST:PORT"); default: its registered address.
    #[arg(long, requires = "from")]
    pub from_agent: Option<String>,
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

/// The controller's record of the migration from `source_ip` that started after
/// `since_us` (UNIX µs), if the controller answers.
async fn record(c: &Client, source_ip: &str, since_us: i64) -> Option<api::Migration> {
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

/// Where the container is and where it goes: (source node, its agent, target agent).
async fn route(
    a: &MigrateArgs,
    ctl: &Result<Client>,
    tls: &ClientTlsConfig,
) -> Result<(String, String, String)> {
    if let (Some(from), Some(from_agent), Some(to_agent)) = (&a.from, &a.from_agent, &a.to_agent) {
        return Ok((from.clone(), from_agent.clone(), to_agent.clone()));
    }
    let c = ctl.as_ref().map_err(|e| {
        anyhow::anyhow!(
            "finding the nodes' agents needs the controller ({e}); or give --from, \
             --from-agent and --to-agent"
        )
    })?;
    let nodes = c.list_nodes().await?;
    let agent_of = |name: &str| {
        nodes
            .iter()
            .find(|n| n.name == name && !n.agent_address.is_empty())
            .map(|n| n.agent_address.clone())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "node {name} has no agent registered with the controller (p4lbctl nodes ls)"
                )
            })
    };
    let to_agent = match &a.to_agent {
        Some(t) => t.clone(),
        None => agent_of(&a.to)?,
    };
    if let Some(from) = &a.from {
        let from_agent = match &a.from_agent {
            Some(f) => f.clone(),
            None => agent_of(from)?,
        };
        return Ok((from.clone(), from_agent, to_agent));
    }
    // Ask every other registered node's agent whether it runs the container.
    let mut running = Vec::new();
    let mut unreachable = Vec::new();
    for n in nodes
        .iter()
        .filter(|n| n.name != a.to && !n.agent_address.is_empty())
    {
        let found = async {
            let mut agent =
                p4lb_agent::client::connect(&n.agent_address, &n.name, tls.clone()).await?;
            let r = agent
                .inspect(api::InspectRequest {
                    container: a.container.clone(),
                })
                .await;
            anyhow::Ok(r)
        }
        .await;
        match found {
            Ok(Ok(i)) if i.get_ref().state == "running" => {
                running.push((n.name.clone(), n.agent_address.clone()))
            }
            Ok(Ok(_)) => {}
            Ok(Err(s)) if s.code() == tonic::Code::NotFound => {}
            Ok(Err(s)) if is_transport(&s) => {
                let why = match refusal(a, &n.agent_address, &n.name).await {
                    Some(why) => why,
                    None => s.message().to_string(),
                };
                unreachable.push(format!("{}: {why}", n.name))
            }
            Ok(Err(s)) => unreachable.push(format!("{}: {}", n.name, s.message())),
            Err(e) => unreachable.push(format!("{}: {e}", n.name)),
        }
    }
    match running.as_slice() {
        [(from, from_agent)] => Ok((from.clone(), from_agent.clone(), to_agent)),
        [] => anyhow::bail!(
            "no registered node other than {} runs {}{}",
            a.to,
            a.container,
            if unreachable.is_empty() {
                String::new()
            } else {
                format!(" (not asked: {})", unreachable.join("; "))
            }
        ),
        more => anyhow::bail!(
            "{} runs on several nodes ({}): give --from",
            a.container,
            more.iter()
                .map(|m| m.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Whether a call failed below gRPC (the connection closed, e.g. by a TLS peer that
/// refused this caller's certificate after the handshake).
fn is_transport(s: &tonic::Status) -> bool {
    matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown)
        && s.message().contains("transport error")
}

/// Why node `node`'s agent at `address` refuses this caller's certificate, if it does
/// (an agent that refuses it only closes the connection).
async fn refusal(a: &MigrateArgs, address: &str, node: &str) -> Option<String> {
    p4lb_api::tls::refusal(address, node, &a.ca, &a.cert, &a.key, super::TLS_PROBE)
        .await
        .map(|why| format!("{why} (is --cert issued by the CA node {node}'s agent trusts?)"))
}

/// `ctl`: the controller, if it was reached (for the nodes' agents and the migration's
/// record).
pub async fn run(
    a: &MigrateArgs,
    ctl: Result<Client>,
    as_json: bool,
    out: &mut String,
) -> Result<()> {
    use std::fmt::Write;
    let tls = p4lb_api::tls::client_config(&a.ca, &a.cert, &a.key)?;
    let (from, from_agent, to_agent) = route(a, &ctl, &tls).await?;
    let mut agent = match p4lb_agent::client::connect(&from_agent, &from, tls).await {
        Ok(c) => c,
        Err(e) => {
            return Err(match refusal(a, &from_agent, &from).await {
                Some(why) => anyhow::Error::from(e).context(why),
                None => e.into(),
            })
        }
    };
    let since_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let r = match agent
        .migrate(api::MigrateRequest {
            container: a.container.clone(),
            target_node: a.to.clone(),
            target_address: to_agent,
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => {
            let e = anyhow::anyhow!("{}: {}", s.code(), s.message())
                .context(format!("migrating {} from {from} to {}", a.container, a.to));
            return Err(match is_transport(&s) {
                true => match refusal(a, &from_agent, &from).await {
                    Some(why) => e.context(why),
                    None => e,
                },
                false => e,
            });
        }
    };
    let m = match &ctl {
        Ok(c) => record(c, &r.source_address, since_us).await,
        Err(_) => None,
    };
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
    match (m, &ctl) {
        (Some(m), _) => {
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
        (None, Ok(c)) => writeln!(
            out,
            "  (no migration record of {} on the controller at {}: switchover and stall unknown)",
            r.source_address,
            c.socket().display()
        )?,
        (None, Err(e)) => writeln!(
            out,
            "  (controller not reached: {e}; switchover and stall unknown)"
        )?,
    }
    Ok(())
}
