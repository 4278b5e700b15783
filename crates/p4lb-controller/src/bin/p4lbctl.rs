//! p4lbctl: inspect and drive the p4lb controller over its Unix socket.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use serde::Serialize;
use serde_json::json;

use p4lb_api::{api, Client, DEFAULT_SOCKET};

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
}

#[derive(Debug, Subcommand)]
enum EndpointsCmd {
    Ls,
    Show { key: String },
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

/// Prints `v` as pretty JSON. API messages go through their serde derive (the one
/// JSON mapping of them, proto field names); passing through `Value` keeps the
/// keys sorted.
fn print_json(v: &impl Serialize) -> Result<()> {
    let v = serde_json::to_value(v)?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

fn ms(us: i64) -> String {
    if us == 0 {
        String::from("-")
    } else {
        format!("{:.3} ms", us as f64 / 1000.0)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let c = Client::connect(&args.socket, CONNECT_TIMEOUT, CALL_TIMEOUT).await?;
    let status = |s: tonic::Status| anyhow::anyhow!("{}: {}", s.code(), s.message());
    match args.cmd {
        Cmd::Status => {
            let s = c.status().await?;
            if args.json {
                return print_json(&s);
            }
            println!("ready:             {}", s.ready);
            println!(
                "switch:            {} ({}), connected: {}",
                s.switch_address, s.switch_kind, s.switch_connected
            );
            println!("endpoints:         {}", s.endpoints);
            println!("services:          {}", s.services);
            println!("active migrations: {}", s.active_migrations);
            println!("table entries:     {}", s.table_entries);
            println!("version:           {}", s.version);
            println!("{}", s.message);
        }
        Cmd::Endpoints(EndpointsCmd::Ls) => {
            let endpoints = c.list_endpoints().await?;
            if args.json {
                return print_json(&endpoints);
            }
            println!(
                "{:<40} {:<15} {:<17} {:>4} {:>7} {:<9} MIGRATED",
                "KEY", "IP", "MAC", "PORT", "BACKEND", "STATE"
            );
            for e in endpoints {
                println!(
                    "{:<40} {:<15} {:<17} {:>4} {:>7} {:<9} {}",
                    e.key,
                    e.ip,
                    e.mac,
                    e.switch_port,
                    e.backend_id,
                    e.state,
                    e.migrated_ips.join(",")
                );
            }
        }
        Cmd::Endpoints(EndpointsCmd::Show { key }) => {
            // Through `call`, so an unknown key reports the controller's own message.
            let req = api::GetEndpointRequest {
                key,
                ..Default::default()
            };
            let e = c.call("GetEndpoint", c.raw().get_endpoint(req)).await?;
            print_json(&e)?;
        }
        Cmd::Services(ServicesCmd::Ls) => {
            let services = c.list_services().await?;
            if args.json {
                return print_json(&services);
            }
            println!(
                "{:<20} {:<15} {:<5} {:>5} {:>6} {:>4} {:>5} BACKENDS",
                "NAME", "VIP", "PROTO", "PORT", "TARGET", "ID", "SLOTS"
            );
            for s in services {
                println!(
                    "{:<20} {:<15} {:<5} {:>5} {:>6} {:>4} {:>5} {}",
                    s.name,
                    s.vip,
                    s.protocol,
                    s.port,
                    s.target_port,
                    s.service_id,
                    s.slot_count,
                    s.resolved_backends.join(",")
                );
            }
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
            print_json(&s)?;
        }
        Cmd::Services(ServicesCmd::Rm { name }) => {
            c.remove_service(&name).await?;
            if args.json {
                return print_json(&json!({ "removed": name }));
            }
            println!("removed {name}");
        }
        Cmd::Migrations(MigrationsCmd::Ls) => {
            let migrations = c.list_migrations().await?;
            if args.json {
                return print_json(&migrations);
            }
            println!(
                "{:<10} {:<12} {:<30} {:<30} {:>12} {:>12} {:>6}",
                "ID", "STATE", "SOURCE", "TARGET", "SWITCHOVER", "STALL", "CONNS"
            );
            for m in migrations {
                println!(
                    "{:<10} {:<12} {:<30} {:<30} {:>12} {:>12} {:>6}",
                    m.id,
                    m.state,
                    m.source_key,
                    m.target_key,
                    ms(m.switchover_us),
                    ms(m.stall_us),
                    m.connections_carried
                );
            }
        }
        Cmd::Migrations(MigrationsCmd::Show { id }) => {
            let m = c.get_migration(&id).await?;
            print_json(&m)?;
        }
        Cmd::Switch(SwitchCmd::Tables { table }) => {
            let rows = c.dump_tables(&table.unwrap_or_default()).await?;
            if args.json {
                return print_json(&rows);
            }
            for t in rows {
                println!("{:<26} {:<70} {}", t.table, t.r#match, t.action);
            }
        }
        Cmd::Switch(SwitchCmd::Ports) => {
            let s = c.status().await?;
            if s.switch_kind != "software" {
                anyhow::bail!("port listing needs the software switch (this switch is {}); use BMv2's runtime CLI", s.switch_kind);
            }
            let ch = p4lb_controller::southbound::session::connect_channel(
                &s.switch_address,
                std::time::Duration::from_secs(2),
            )
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
            let l = api::switch_ports_client::SwitchPortsClient::new(ch)
                .list_ports(api::ListPortsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if args.json {
                return print_json(&l.ports);
            }
            println!(
                "{:>5} {:<16} {:>10} {:>10} {:>8}",
                "PORT", "IFACE", "RX_PKTS", "TX_PKTS", "DROPS"
            );
            for p in l.ports {
                println!(
                    "{:>5} {:<16} {:>10} {:>10} {:>8}",
                    p.port, p.iface, p.rx_packets, p.tx_packets, p.drops
                );
            }
        }
        Cmd::Metrics => {
            print!("{}", c.metrics().await?);
        }
    }
    Ok(())
}
