//! The p4lb CNI plugin: wires a pod to a switch port and registers it with the controller.
//!
//! The binary is `p4lb`, installed as `/opt/cni/bin/p4lb`. For each pod it creates a
//! veth pair (the pod end inside the pod's network namespace, the host end where p4lb's
//! switch reads its ports), takes an address from the delegated IPAM plugin, sets
//! routes and the gateway neighbour inside the pod, turns transmit checksum offload off
//! on both ends, and registers the endpoint with the p4lb controller over its Unix
//! socket. See README.md for configuration, error codes and restore behaviour.
//!
//! # Why the CNI layer is ours
//!
//! The Rust `cni-plugin` crate is archived and stops at older specification versions;
//! the CNI surface a plugin needs is small and fully specified (environment variables,
//! one JSON document in, one out, a handful of well-known error codes). Owning it in
//! [`cni`] lets us follow SPEC 1.1.0 exactly — STATUS and GC, version negotiation for
//! 0.3.0 … 1.1.0, results written in the version the runtime asked for, errors as
//! `{cniVersion, code, msg, details}` — without carrying an unmaintained dependency on
//! the path every pod start takes.
//!
//! # Layout
//!
//! - [`cni`]: specification types (environment, `CNI_ARGS`, netconf, results, errors,
//!   versions, delegation to IPAM).
//! - [`config`]: p4lb's own netconf keys.
//! - [`restore`]: what happens at restore (telling a restore from a fresh start; an
//!   annotation hint counts only for a checkpointed migration of the same workload).
//! - [`cmd`]`::Invocation::labels`: endpoint labels (pod annotations never set identity
//!   labels).
//! - [`net`]: namespaces (opened and entered through `p4lb-netns`), veth,
//!   addresses/routes/neighbours, ethtool.
//! - [`api_client`]: the controller client (`p4lb_api::Client`) with failures as CNI
//!   errors.
//! - [`parse_invocation`]: the whole input of a call (environment, stdin), parsed and
//!   validated with no side effect (also the entry point of the `cni_input` fuzz target).
//! - [`attach`]: wiring a container to a switch port and registering it (and undoing
//!   both) from plain typed inputs; the CNI verbs and the netavark plugin
//!   (`p4lb-netavark`) both call it.
//! - [`cmd`]: the verbs (ADD, DEL, CHECK, GC, STATUS, VERSION); [`cmd::del`] and
//!   [`cmd::gc`] say what they never touch.
//! - [`pending`]: deregistrations DEL could not make (controller unreachable), recorded
//!   in `stateDir` and finished by the next DEL or GC that reaches the controller.

pub mod api_client;
pub mod attach;
pub mod cmd;
pub mod cni;
pub mod config;
pub mod net;
pub mod pending;
pub mod restore;

use serde_json::Value;

use cni::env::{Command, RuntimeEnv};
use cni::error::{CniError, Code};
use cni::netconf::NetConf;
use cni::version::Version;

/// Runs one plugin invocation: `command`, the environment through `get`, `stdin`.
/// Returns what to print on success (nothing for DEL/CHECK/GC/STATUS).
pub async fn run(
    command: Command,
    get: impl Fn(&str) -> Option<String>,
    stdin: Vec<u8>,
) -> Result<Option<Value>, CniError> {
    if command == Command::Version {
        return Ok(Some(cmd::version::run(&stdin)));
    }
    let inv = parse_invocation(command, get, stdin)?;
    match command {
        Command::Add => cmd::add::run(&inv).await.map(Some),
        Command::Del => cmd::del::run(&inv).await,
        Command::Check => cmd::check::run(&inv).await,
        Command::Gc => cmd::gc::run(&inv).await,
        Command::Status => cmd::status::run(&inv).await,
        Command::Version => unreachable!("handled above"),
    }
}

/// Parses and validates one invocation's input (the `CNI_*` environment through
/// `get`, the network configuration on `stdin`, p4lb's own keys) without touching
/// anything: no file, socket or namespace is opened. Every verb but VERSION starts
/// here; the fuzz target `cni_input` calls it directly.
pub fn parse_invocation(
    command: Command,
    get: impl Fn(&str) -> Option<String>,
    stdin: Vec<u8>,
) -> Result<cmd::Invocation, CniError> {
    let env = RuntimeEnv::from_lookup(command, get)?;
    let conf = NetConf::parse(stdin)?;
    let min = match command {
        Command::Check => Some(Version::V0_4_0),
        Command::Gc | Command::Status => Some(Version::V1_1_0),
        _ => None,
    };
    if let Some(min) = min {
        if conf.version < min {
            return Err(CniError::new(
                Code::IncompatibleVersion,
                format!("config version does not allow {}", command.as_str()),
            )
            .details(format!("cniVersion {} < {min}", conf.version)));
        }
    }
    let p4 = config::P4lbConf::from_netconf(&conf.value)?;
    Ok(cmd::Invocation { env, conf, p4 })
}
