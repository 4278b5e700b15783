//! p4lbctl: inspect and drive the p4lb controller over its Unix socket.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use p4lb_controller::client;
use p4lb_controller::config::DEFAULT_SOCKET;
use p4lb_proto::api;

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

fn endpoint_json(e: &api::Endpoint) -> Value {
    json!({
        "key": e.key, "container_id": e.container_id, "ifname": e.ifname,
        "netns_path": e.netns_path, "netns_inode": e.netns_inode, "ip": e.ip,
        "prefix_len": e.prefix_len, "mac": e.mac, "gateway": e.gateway,
        "host_ifname": e.host_ifname, "switch_port": e.switch_port, "backend_id": e.backend_id,
        "locked": e.locked, "labels": e.labels, "network": e.network,
        "migrated_ips": e.migrated_ips, "state": e.state, "created_unix_ms": e.created_unix_ms,
        "router_mac": e.router_mac,
    })
}

fn service_json(s: &api::Service) -> Value {
    json!({
        "name": s.name, "vip": s.vip, "protocol": s.protocol, "port": s.port,
        "target_port": s.target_port, "backends": s.backends, "selector": s.selector,
        "name_pattern": s.name_pattern, "service_id": s.service_id,
        "resolved_backends": s.resolved_backends, "slot_count": s.slot_count,
    })
}

fn migration_json(m: &api::Migration) -> Value {
    json!({
        "id": m.id, "source_key": m.source_key, "target_key": m.target_key,
        "source_ip": m.source_ip, "target_ip": m.target_ip, "state": m.state,
        "locked_unix_us": m.locked_unix_us, "checkpointed_unix_us": m.checkpointed_unix_us,
        "restore_started_unix_us": m.restore_started_unix_us,
        "restored_unix_us": m.restored_unix_us, "unlocked_unix_us": m.unlocked_unix_us,
        "switchover_us": m.switchover_us, "stall_us": m.stall_us,
        "connections_carried": m.connections_carried, "leave_running": m.leave_running,
        "error": m.error, "image_dir": m.image_dir, "no_lock": m.no_lock,
    })
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
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
    let mut c = client::connect(&args.socket)
        .await
        .with_context(|| format!("connecting to {}", args.socket.display()))?;
    let status = |s: tonic::Status| anyhow::anyhow!("{}: {}", s.code(), s.message());
    match args.cmd {
        Cmd::Status => {
            let s = c
                .status(api::StatusRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if args.json {
                return print_json(&json!({
                    "ready": s.ready, "switch_connected": s.switch_connected,
                    "switch_address": s.switch_address, "switch_kind": s.switch_kind,
                    "endpoints": s.endpoints, "services": s.services,
                    "active_migrations": s.active_migrations, "version": s.version,
                    "table_entries": s.table_entries, "message": s.message,
                }));
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
            let l = c
                .list_endpoints(api::ListEndpointsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if args.json {
                return print_json(&Value::Array(
                    l.endpoints.iter().map(endpoint_json).collect(),
                ));
            }
            println!(
                "{:<40} {:<15} {:<17} {:>4} {:>7} {:<9} MIGRATED",
                "KEY", "IP", "MAC", "PORT", "BACKEND", "STATE"
            );
            for e in l.endpoints {
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
            let e = c
                .get_endpoint(api::GetEndpointRequest {
                    key,
                    ..Default::default()
                })
                .await
                .map_err(status)?
                .into_inner();
            print_json(&endpoint_json(&e))?;
        }
        Cmd::Services(ServicesCmd::Ls) => {
            let l = c
                .list_services(api::ListServicesRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if args.json {
                return print_json(&Value::Array(l.services.iter().map(service_json).collect()));
            }
            println!(
                "{:<20} {:<15} {:<5} {:>5} {:>6} {:>4} {:>5} BACKENDS",
                "NAME", "VIP", "PROTO", "PORT", "TARGET", "ID", "SLOTS"
            );
            for s in l.services {
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
                .await
                .map_err(status)?
                .into_inner();
            print_json(&service_json(&s))?;
        }
        Cmd::Services(ServicesCmd::Rm { name }) => {
            c.remove_service(api::RemoveServiceRequest { name: name.clone() })
                .await
                .map_err(status)?;
            if args.json {
                return print_json(&json!({ "removed": name }));
            }
            println!("removed {name}");
        }
        Cmd::Migrations(MigrationsCmd::Ls) => {
            let l = c
                .list_migrations(api::ListMigrationsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if args.json {
                return print_json(&Value::Array(
                    l.migrations.iter().map(migration_json).collect(),
                ));
            }
            println!(
                "{:<10} {:<12} {:<30} {:<30} {:>12} {:>12} {:>6}",
                "ID", "STATE", "SOURCE", "TARGET", "SWITCHOVER", "STALL", "CONNS"
            );
            for m in l.migrations {
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
            let m = c
                .get_migration(api::GetMigrationRequest { id })
                .await
                .map_err(status)?
                .into_inner();
            print_json(&migration_json(&m))?;
        }
        Cmd::Switch(SwitchCmd::Tables { table }) => {
            let r = c
                .dump_tables(api::DumpTablesRequest {
                    table: table.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            if args.json {
                return print_json(&Value::Array(
                    r.rows
                        .iter()
                        .map(|t| json!({"table": t.table, "match": t.r#match, "action": t.action}))
                        .collect(),
                ));
            }
            for t in r.rows {
                println!("{:<26} {:<70} {}", t.table, t.r#match, t.action);
            }
        }
        Cmd::Switch(SwitchCmd::Ports) => {
            let s = c
                .status(api::StatusRequest {})
                .await
                .map_err(status)?
                .into_inner();
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
                return print_json(&Value::Array(l.ports.iter().map(|p| json!({
                    "port": p.port, "iface": p.iface, "rx_packets": p.rx_packets, "tx_packets": p.tx_packets,
                    "rx_bytes": p.rx_bytes, "tx_bytes": p.tx_bytes, "drops": p.drops,
                })).collect()));
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
            let m = c
                .metrics(api::MetricsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            print!("{}", m.prometheus_text);
        }
    }
    Ok(())
}
