//! p4lbctl: inspect and drive the p4lb controller over its Unix socket, or over TCP
//! with mutual TLS (`--controller https://HOST:PORT` and a client certificate).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use serde::Serialize;
use serde_json::json;

use p4lb_api::{api, Client, DEFAULT_SOCKET};

#[path = "p4lbctl/migrate.rs"]
mod migrate;

/// How long connecting to the controller may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take (a table dump of a large switch is the slowest).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(name = "p4lbctl", version, about = "Control the p4lb controller")]
struct Args {
    /// Controller API socket.
    #[arg(long, global = true, env = "P4LB_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// A controller over TCP (https://HOST:PORT) instead of the socket; needs
    /// --tls-ca, --tls-cert and --tls-key.
    #[arg(long, global = true, env = "P4LB_CONTROLLER")]
    controller: Option<String>,
    /// The CA of the controller's certificate (PEM).
    #[arg(long, global = true, env = "P4LB_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// This caller's certificate (PEM): its first DNS name is the admin or node name
    /// the controller sees.
    #[arg(long, global = true, env = "P4LB_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM, mode 0600).
    #[arg(long, global = true, env = "P4LB_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Controller and switch status.
    Status,
    /// Endpoints (pods attached to the switch).
    #[command(subcommand)]
    Endpoints(EndpointsCmd),
    /// Services (VIPs).
    #[command(subcommand)]
    Services(ServicesCmd),
    /// Migrations with their timings.
    #[command(subcommand)]
    Migrations(MigrationsCmd),
    /// The switch: table contents and ports.
    #[command(subcommand)]
    Switch(SwitchCmd),
    /// Prometheus metrics text.
    Metrics,
    /// Nodes registered with the controller (their agents' addresses).
    #[command(subcommand)]
    Nodes(NodesCmd),
    /// Certificates for the mutual TLS of the API over TCP, switches and node agents
    /// (local files only; does not contact the controller).
    #[command(subcommand)]
    Cert(CertCmd),
    /// Moves a container to another node through the nodes' agents.
    Migrate(migrate::MigrateArgs),
}

#[derive(Debug, Subcommand)]
enum NodesCmd {
    Ls,
}

#[derive(Debug, Subcommand)]
enum CertCmd {
    /// A new certificate authority: DIR/ca.pem and DIR/ca-key.pem (mode 0600).
    Ca {
        #[arg(long)]
        out: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "p4lb CA")]
        cn: String,
    },
    /// A certificate signed by the CA in --ca: OUT/NAME.pem and OUT/NAME-key.pem (mode
    /// 0600). NAME is its first DNS name: the node or admin name the controller sees.
    Issue {
        /// The CA directory (ca.pem, ca-key.pem).
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        name: String,
        /// An IP address the holder serves on (repeatable).
        #[arg(long = "ip")]
        ips: Vec<std::net::IpAddr>,
        /// A further DNS name (repeatable).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// Days of validity.
        #[arg(long, default_value_t = p4lb_controller::cert::LEAF_DAYS)]
        days: i64,
        #[arg(long)]
        out: PathBuf,
    },
}

/// `p4lbctl cert ...`: files only, no controller.
fn cert(cmd: CertCmd, out: &mut String) -> Result<()> {
    use p4lb_controller::cert;
    use std::fmt::Write;
    let issued = match cmd {
        CertCmd::Ca { out: dir, cn } => cert::make_ca(&dir, &cn)?,
        CertCmd::Issue {
            ca,
            name,
            ips,
            dns,
            days,
            out: dir,
        } => {
            anyhow::ensure!(days > 0, "--days must be positive");
            cert::issue(&ca, &name, &cert::Names { dns, ips }, days, &dir)?
        }
    };
    writeln!(out, "{}", issued.cert.display())?;
    writeln!(out, "{}", issued.key.display())?;
    Ok(())
}

#[derive(Debug, Subcommand)]
enum EndpointsCmd {
    Ls,
    Show {
        key: String,
    },
    /// Removes an endpoint by hand ("<container-id>/<ifname>"), as the runtime's
    /// deregistration would.
    Rm {
        key: String,
        /// Also remove an endpoint that takes part in a live migration.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ServicesCmd {
    Ls,
    Add {
        name: String,
        #[arg(long)]
        vip: String,
        #[arg(long)]
        port: u32,
        #[arg(long, default_value = "tcp")]
        protocol: String,
        #[arg(long, default_value_t = 0)]
        target_port: u32,
        /// Endpoint key (repeatable).
        #[arg(long = "backend")]
        backends: Vec<String>,
        /// Label selector "k=v,k2=v2".
        #[arg(long, default_value = "")]
        selector: String,
        /// Glob on the pod name ("web-*").
        #[arg(long, default_value = "")]
        name_pattern: String,
        /// Maglev table size (prime; 0 = controller default).
        #[arg(long, default_value_t = 0)]
        slots: u32,
        #[arg(long)]
        replace: bool,
    },
    Rm {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum MigrationsCmd {
    Ls,
    Show { id: String },
}

#[derive(Debug, Subcommand)]
enum SwitchCmd {
    /// Table entries read back from the switch (optionally one table).
    Tables { table: Option<String> },
    /// Ports of the software switch (PortAttacher on the switch's address).
    Ports,
}

/// The active migration endpoint `e` takes part in: as its source or target, as a
/// restore of its source's address, or registered for a restore while one runs.
fn live_migration_of<'a>(
    e: &api::Endpoint,
    ms: &'a [api::Migration],
) -> Option<&'a api::Migration> {
    let active = |m: &&api::Migration| !matches!(m.state.as_str(), "done" | "aborted");
    ms.iter()
        .filter(active)
        .find(|m| {
            m.source_key == e.key
                || m.target_key == e.key
                || (!m.source_ip.is_empty() && m.source_ip == e.ip)
        })
        .or_else(|| {
            (e.locked || e.state == "restoring")
                .then(|| ms.iter().find(active))
                .flatten()
        })
}

/// Appends `v` as pretty JSON. API messages go through their serde derive (the one
/// JSON mapping of them, proto field names); passing through `Value` keeps the
/// keys sorted.
fn json_into(out: &mut String, v: &impl Serialize) -> Result<()> {
    let v = serde_json::to_value(v)?;
    out.push_str(&serde_json::to_string_pretty(&v)?);
    out.push('\n');
    Ok(())
}

fn ms(us: i64) -> String {
    if us == 0 {
        String::from("-")
    } else {
        format!("{:.3} ms", us as f64 / 1000.0)
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        String::from("-")
    } else {
        s.to_string()
    }
}

/// A table whose columns are as wide as their widest cell (a 64-character
/// container id included); `right` marks right-aligned columns. The last column
/// is not padded.
struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(columns: &[(&'static str, bool)]) -> Table {
        Table {
            headers: columns.iter().map(|c| c.0).collect(),
            right: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self, out: &mut String) {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for cells in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in cells.iter().enumerate().take(n) {
                if i > 0 {
                    line.push(' ');
                }
                let pad = widths[i].saturating_sub(c.chars().count());
                if self.right[i] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    if i + 1 < n {
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

/// `name: value` lines with the values aligned.
fn fields(out: &mut String, rows: &[(&str, String)]) {
    let w = rows.iter().map(|r| r.0.len() + 1).max().unwrap_or(0);
    for (k, v) in rows {
        out.push_str(&format!("{:<w$} {v}\n", format!("{k}:")));
    }
}

/// An endpoint's state; a restore target waiting for its migration also shows
/// which address it restores and how long it has waited ("restoring (restore of
/// 10.88.0.2, 12 s)"): the controller unlocks it after `restore_lock_timeout_ms`.
fn endpoint_state(e: &api::Endpoint) -> String {
    if !(e.locked && e.state == "restoring") {
        return or_dash(&e.state);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let age = now.saturating_sub(e.created_unix_ms).max(0) / 1000;
    if e.restore_of_ip.is_empty() {
        format!("{} ({age} s)", e.state)
    } else {
        format!("{} (restore of {}, {age} s)", e.state, e.restore_of_ip)
    }
}

/// The PORT cell of `endpoints ls`: the endpoint's own switch port, or `up:N` for an
/// endpoint routed behind its node (N: the node's uplink port).
fn port_cell(e: &api::Endpoint) -> String {
    if e.behind_node {
        format!("up:{}", e.switch_port)
    } else {
        e.switch_port.to_string()
    }
}

fn endpoint_fields(out: &mut String, e: &api::Endpoint) {
    let mut labels: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    fields(
        out,
        &[
            ("key", e.key.clone()),
            ("node", or_dash(&e.node)),
            ("state", endpoint_state(e)),
            ("locked", e.locked.to_string()),
            ("ip", format!("{}/{}", e.ip, e.prefix_len)),
            ("mac", or_dash(&e.mac)),
            ("gateway", or_dash(&e.gateway)),
            (
                "switch port",
                if e.behind_node {
                    format!(
                        "{} (uplink of node {}: routed behind it)",
                        e.switch_port, e.node
                    )
                } else {
                    e.switch_port.to_string()
                },
            ),
            ("backend id", e.backend_id.to_string()),
            ("migrated ips", or_dash(&e.migrated_ips.join(","))),
            ("network", or_dash(&e.network)),
            (
                "netns",
                format!("{} (inode {})", or_dash(&e.netns_path), e.netns_inode),
            ),
            ("host ifname", or_dash(&e.host_ifname)),
            ("router mac", or_dash(&e.router_mac)),
            ("created (unix ms)", e.created_unix_ms.to_string()),
            ("labels", or_dash(&labels.join(","))),
        ],
    );
}

fn service_fields(out: &mut String, s: &api::Service) {
    fields(
        out,
        &[
            ("name", s.name.clone()),
            ("vip", format!("{}:{} ({})", s.vip, s.port, s.protocol)),
            ("target port", s.target_port.to_string()),
            ("service id", s.service_id.to_string()),
            ("slots", s.slot_count.to_string()),
            ("backends", or_dash(&s.backends.join(","))),
            ("selector", or_dash(&s.selector)),
            ("name pattern", or_dash(&s.name_pattern)),
            ("resolved backends", or_dash(&s.resolved_backends.join(","))),
        ],
    );
}

fn migration_fields(out: &mut String, m: &api::Migration) {
    let us = |v: i64| {
        if v == 0 {
            String::from("-")
        } else {
            v.to_string()
        }
    };
    fields(
        out,
        &[
            ("id", m.id.clone()),
            ("state", m.state.clone()),
            (
                "source",
                format!("{} ({})", or_dash(&m.source_key), or_dash(&m.source_ip)),
            ),
            (
                "target",
                format!("{} ({})", or_dash(&m.target_key), or_dash(&m.target_ip)),
            ),
            (
                "nodes",
                format!(
                    "{} -> {}",
                    or_dash(&m.source_node),
                    if m.target_node.is_empty() {
                        or_dash(&m.source_node)
                    } else {
                        m.target_node.clone()
                    }
                ),
            ),
            ("switchover", ms(m.switchover_us)),
            ("stall", ms(m.stall_us)),
            ("connections carried", m.connections_carried.to_string()),
            ("locked (unix us)", us(m.locked_unix_us)),
            ("checkpointed (unix us)", us(m.checkpointed_unix_us)),
            ("restore started (unix us)", us(m.restore_started_unix_us)),
            ("restored (unix us)", us(m.restored_unix_us)),
            ("unlocked (unix us)", us(m.unlocked_unix_us)),
            ("leave running", m.leave_running.to_string()),
            ("no lock", m.no_lock.to_string()),
            ("image dir", or_dash(&m.image_dir)),
            ("error", or_dash(&m.error)),
        ],
    );
}

/// Writes the output. A reader that went away (`p4lbctl ... | head -1`) ends
/// the program quietly with success, like other command-line tools, instead of
/// a panic of `println!`.
fn emit(out: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(anyhow::anyhow!("writing to stdout: {e}")),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let probe = match (
        &args.controller,
        &args.tls_ca,
        &args.tls_cert,
        &args.tls_key,
    ) {
        (Some(a), Some(ca), Some(cert), Some(key)) => {
            Some((a.clone(), ca.clone(), cert.clone(), key.clone()))
        }
        _ => None,
    };
    let mut out = String::new();
    if let Err(e) = run(args, &mut out).await {
        // A controller that refused this caller's certificate only closed the
        // connection: say why.
        if let Some((address, ca, cert, key)) = probe {
            let host = address
                .trim_start_matches("https://")
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
                .unwrap_or_default();
            if let Some(why) =
                p4lb_api::tls::refusal(&address, &host, &ca, &cert, &key, TLS_PROBE).await
            {
                return Err(e.context(format!(
                    "{why} (is --tls-cert issued by the CA the controller trusts?)"
                )));
            }
        }
        return Err(e);
    }
    emit(&out)
}

/// How long finding out why a TLS peer refused this caller may take. It runs only after
/// a call already failed below gRPC, so it delays only that error; a busy peer's
/// handshake (debug builds on a loaded 2-core machine) has been seen to take over 3 s, and
/// without the peer's alert the error would not say that the certificate was refused.
pub(crate) const TLS_PROBE: Duration = Duration::from_secs(10);

/// The controller's client: over TCP with mutual TLS when `--controller` is given,
/// otherwise on the Unix socket.
async fn connect(args: &Args) -> Result<Client> {
    let Some(address) = &args.controller else {
        anyhow::ensure!(
            args.tls_ca.is_none() && args.tls_cert.is_none() && args.tls_key.is_none(),
            "--tls-ca/--tls-cert/--tls-key are used with --controller https://HOST:PORT only"
        );
        return Ok(Client::connect(&args.socket, CONNECT_TIMEOUT, CALL_TIMEOUT).await?);
    };
    let (Some(ca), Some(cert), Some(key)) = (&args.tls_ca, &args.tls_cert, &args.tls_key) else {
        anyhow::bail!(
            "--controller {address} needs --tls-ca, --tls-cert and --tls-key \
             (or P4LB_TLS_CA, P4LB_TLS_CERT, P4LB_TLS_KEY): the API over TCP is mutual TLS only"
        );
    };
    let tls = p4lb_api::tls::client_config(ca, cert, key).map_err(|e| {
        let flag = match e.file() {
            p4lb_api::tls::PemFile::Ca => "--tls-ca",
            p4lb_api::tls::PemFile::Cert => "--tls-cert",
            p4lb_api::tls::PemFile::Key => "--tls-key",
        };
        anyhow::anyhow!("{flag}: {e}")
    })?;
    Ok(Client::connect_tls(address, &tls, CONNECT_TIMEOUT, CALL_TIMEOUT).await?)
}

async fn run(args: Args, out: &mut String) -> Result<()> {
    use std::fmt::Write;
    if let Cmd::Migrate(m) = &args.cmd {
        return migrate::run(m, connect(&args).await, args.json, out).await;
    }
    let c = match args.cmd {
        Cmd::Cert(cmd) => return cert(cmd, out),
        _ => connect(&args).await?,
    };
    let status = |s: tonic::Status| anyhow::anyhow!("{}: {}", s.code(), s.message());
    match args.cmd {
        // Handled above, without a controller.
        Cmd::Cert(_) => {}
        Cmd::Status => {
            let s = c.status().await?;
            if args.json {
                return json_into(out, &s);
            }
            writeln!(out, "ready:             {}", s.ready)?;
            writeln!(
                out,
                "switch:            {} ({}), connected: {}",
                s.switch_address, s.switch_kind, s.switch_connected
            )?;
            writeln!(out, "endpoints:         {}", s.endpoints)?;
            writeln!(out, "services:          {}", s.services)?;
            writeln!(out, "active migrations: {}", s.active_migrations)?;
            writeln!(out, "table entries:     {}", s.table_entries)?;
            writeln!(out, "version:           {}", s.version)?;
            writeln!(out, "{}", s.message)?;
        }
        Cmd::Endpoints(EndpointsCmd::Ls) => {
            let endpoints = c.list_endpoints().await?;
            if args.json {
                return json_into(out, &endpoints);
            }
            let mut t = Table::new(&[
                ("KEY", false),
                ("IP", false),
                ("MAC", false),
                ("PORT", true),
                ("BACKEND", true),
                ("STATE", false),
                ("MIGRATED", false),
            ]);
            for e in endpoints {
                let state = endpoint_state(&e);
                let port = port_cell(&e);
                t.row(vec![
                    e.key,
                    e.ip,
                    e.mac,
                    port,
                    e.backend_id.to_string(),
                    state,
                    e.migrated_ips.join(","),
                ]);
            }
            t.render(out);
        }
        Cmd::Endpoints(EndpointsCmd::Show { key }) => {
            // Through `call`, so an unknown key reports the controller's own message.
            let req = api::GetEndpointRequest {
                key,
                ..Default::default()
            };
            let e = c.call("GetEndpoint", c.raw().get_endpoint(req)).await?;
            if args.json {
                return json_into(out, &e);
            }
            endpoint_fields(out, &e);
        }
        Cmd::Endpoints(EndpointsCmd::Rm { key, force }) => {
            let Some((container_id, ifname)) = key.split_once('/') else {
                anyhow::bail!("endpoint key {key:?} is not <container-id>/<ifname>");
            };
            let Some(e) = c.get_endpoint(&key).await? else {
                anyhow::bail!("no endpoint {key}");
            };
            if !force {
                let migrations = c.list_migrations().await?;
                if let Some(m) = live_migration_of(&e, &migrations) {
                    anyhow::bail!(
                        "endpoint {key} takes part in live migration {} ({}); \
                         refusing to remove it (use --force to remove it anyway)",
                        m.id,
                        m.state
                    );
                }
            }
            let existed = c.deregister_endpoint(container_id, ifname).await?;
            if args.json {
                return json_into(out, &json!({ "key": key, "removed": existed }));
            }
            if existed {
                writeln!(out, "endpoint {key} removed")?;
            } else {
                writeln!(out, "endpoint {key} was already gone")?;
            }
        }
        Cmd::Services(ServicesCmd::Ls) => {
            let services = c.list_services().await?;
            if args.json {
                return json_into(out, &services);
            }
            let mut t = Table::new(&[
                ("NAME", false),
                ("VIP", false),
                ("PROTO", false),
                ("PORT", true),
                ("TARGET", true),
                ("ID", true),
                ("SLOTS", true),
                ("BACKENDS", false),
            ]);
            for s in services {
                t.row(vec![
                    s.name,
                    s.vip,
                    s.protocol,
                    s.port.to_string(),
                    s.target_port.to_string(),
                    s.service_id.to_string(),
                    s.slot_count.to_string(),
                    s.resolved_backends.join(","),
                ]);
            }
            t.render(out);
        }
        Cmd::Services(ServicesCmd::Add {
            name,
            vip,
            port,
            protocol,
            target_port,
            backends,
            selector,
            name_pattern,
            slots,
            replace,
        }) => {
            let s = c
                .add_service(api::AddServiceRequest {
                    service: Some(api::Service {
                        name,
                        vip,
                        protocol,
                        port,
                        target_port,
                        backends,
                        selector,
                        name_pattern,
                        slot_count: slots,
                        ..Default::default()
                    }),
                    replace,
                })
                .await?;
            if args.json {
                return json_into(out, &s);
            }
            service_fields(out, &s);
        }
        Cmd::Services(ServicesCmd::Rm { name }) => {
            c.remove_service(&name).await?;
            if args.json {
                return json_into(out, &json!({ "removed": name }));
            }
            writeln!(out, "removed {name}")?;
        }
        Cmd::Migrations(MigrationsCmd::Ls) => {
            let migrations = c.list_migrations().await?;
            if args.json {
                return json_into(out, &migrations);
            }
            let mut t = Table::new(&[
                ("ID", false),
                ("STATE", false),
                ("SOURCE", false),
                ("TARGET", false),
                ("SWITCHOVER", true),
                ("STALL", true),
                ("CONNS", true),
            ]);
            for m in migrations {
                t.row(vec![
                    m.id,
                    m.state,
                    m.source_key,
                    m.target_key,
                    ms(m.switchover_us),
                    ms(m.stall_us),
                    m.connections_carried.to_string(),
                ]);
            }
            t.render(out);
        }
        Cmd::Migrations(MigrationsCmd::Show { id }) => {
            let m = c.get_migration(&id).await?;
            if args.json {
                return json_into(out, &m);
            }
            migration_fields(out, &m);
        }
        Cmd::Switch(SwitchCmd::Tables { table }) => {
            let rows = c.dump_tables(&table.unwrap_or_default()).await?;
            if args.json {
                return json_into(out, &rows);
            }
            let mut t = Table::new(&[("TABLE", false), ("MATCH", false), ("ACTION", false)]);
            for r in rows {
                t.row(vec![r.table, r.r#match, r.action]);
            }
            t.render(out);
        }
        Cmd::Switch(SwitchCmd::Ports) => {
            let s = c.status().await?;
            // The software switch reports per-port counters itself; other switches
            // (BMv2) are listed by the controller, which manages their ports.
            let l = if s.switch_kind == "software" {
                let ch = p4lb_controller::southbound::session::connect_channel(
                    &s.switch_address,
                    std::time::Duration::from_secs(2),
                )
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
                api::switch_ports_client::SwitchPortsClient::new(ch)
                    .list_ports(api::ListPortsRequest {})
                    .await
                    .map_err(status)?
                    .into_inner()
            } else {
                c.list_switch_ports().await?
            };
            let counters = s.switch_kind == "software";
            if args.json {
                return json_into(out, &l.ports);
            }
            let mut t = Table::new(&[
                ("PORT", true),
                ("IFACE", false),
                ("RX_PKTS", true),
                ("TX_PKTS", true),
                ("DROPS", true),
            ]);
            for p in l.ports {
                let n = |v: u64| {
                    if counters {
                        v.to_string()
                    } else {
                        String::from("-")
                    }
                };
                t.row(vec![
                    p.port.to_string(),
                    p.iface,
                    n(p.rx_packets),
                    n(p.tx_packets),
                    n(p.drops),
                ]);
            }
            t.render(out);
        }
        Cmd::Metrics => {
            out.push_str(&c.metrics().await?);
        }
        // Handled above, with its own connections.
        Cmd::Migrate(_) => {}
        Cmd::Nodes(NodesCmd::Ls) => {
            let nodes = c.list_nodes().await?;
            if args.json {
                return json_into(out, &nodes);
            }
            let mut t = Table::new(&[
                ("NAME", false),
                ("AGENT", false),
                ("REGISTERED (UNIX MS)", true),
            ]);
            for n in nodes {
                t.row(vec![
                    n.name,
                    n.agent_address,
                    n.registered_unix_ms.to_string(),
                ]);
            }
            t.render(out);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routed_endpoint_shows_its_nodes_uplink_port() {
        let mut e = api::Endpoint {
            switch_port: 3,
            node: "node-b".into(),
            ..Default::default()
        };
        assert_eq!(port_cell(&e), "3");
        e.switch_port = 300;
        e.behind_node = true;
        assert_eq!(port_cell(&e), "up:300");
    }
}
