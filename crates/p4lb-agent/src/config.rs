//! The agent's configuration file (TOML, default `/etc/p4lb/agent.toml`): the node's
//! name, where it listens, its certificate, who may call it, and the node's runtime.
//!
//! ```toml
//! node = "node-a"                 # the DNS name in this node's certificate
//! listen = "0.0.0.0:7443"
//! work_dir = "/var/lib/p4lb-agent" # archives in transit (0700)
//! max_archive_bytes = 4294967296   # larger archives are refused, sent or received
//! transfer_timeout_secs = 600      # sending an archive and its restore on the target
//! admins = ["admin"]               # certificate names that may call Migrate
//! peers = ["node-b"]               # nodes that may send this node an archive
//! runtime = "podman"               # or "cri": containerd over its CRI socket ([cri])
//!
//! [tls]
//! ca = "/etc/p4lb/agent/ca.pem"
//! cert = "/etc/p4lb/agent/node.pem"
//! key = "/etc/p4lb/agent/node.key" # mode 0600
//!
//! [podman]
//! command = "podman"
//! global_args = ["--root", "/var/lib/containers/storage"]
//! ignore_static_ip = true
//!
//! [cri]                           # read when runtime = "cri"
//! socket = "/run/containerd/containerd.sock"
//! namespace = "default"           # the pods `p4lbctl migrate POD` names
//!
//! [controller]                    # optional: register with the controller over TCP
//! address = "https://controller.example:50061"
//! advertise = "https://node-a.example:7443" # this agent, as others reach it
//!
//! [relay]                         # optional, needs [controller]: the controller API
//! socket = "/run/p4lb/controller.sock" # for this node's plugins, relayed over TLS
//! group = ""                      # empty: root only (0600); a group: 0660
//! check_addresses = true          # an endpoint's address must be in the caller's netns
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::runtime::{CriRuntime, NodeRuntime, Podman};

/// The default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/p4lb/agent.toml";
/// Most bytes of a configuration file.
pub const MAX_CONFIG_BYTES: u64 = 64 << 10;
/// Default largest archive: 4 GiB.
pub const DEFAULT_MAX_ARCHIVE: u64 = 4 << 30;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PodmanConfig {
    pub command: String,
    pub global_args: Vec<String>,
    pub ignore_static_ip: bool,
}

impl Default for PodmanConfig {
    fn default() -> Self {
        let p = Podman::default();
        PodmanConfig {
            command: p.command,
            global_args: p.global_args,
            ignore_static_ip: p.ignore_static_ip,
        }
    }
}

impl From<&PodmanConfig> for Podman {
    fn from(c: &PodmanConfig) -> Podman {
        Podman {
            command: c.command.clone(),
            global_args: c.global_args.clone(),
            ignore_static_ip: c.ignore_static_ip,
        }
    }
}

/// Which runtime the agent drives.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    #[default]
    Podman,
    Cri,
}

/// containerd's CRI socket and the namespace of the pods moved by name.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CriConfig {
    pub socket: PathBuf,
    pub namespace: String,
}

impl Default for CriConfig {
    fn default() -> Self {
        let c = CriRuntime::default();
        CriConfig {
            socket: c.socket,
            namespace: c.namespace,
        }
    }
}

/// The controller the agent registers its node with (RegisterNode), over TCP with
/// mutual TLS and the node's certificate.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// The controller's TCP API (`https://HOST:PORT`).
    pub address: String,
    /// This agent's address as the other nodes and the admins reach it (`https://HOST:PORT`).
    pub advertise: String,
}

/// The node's controller API for its own plugins ([`crate::relay`]): served on `socket`
/// (where the plugins look for the controller) and relayed to `[controller].address`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    pub socket: PathBuf,
    /// A group whose members may call too (socket mode 0660); empty: root only (0600).
    pub group: String,
    pub check_addresses: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            socket: PathBuf::from(p4lb_api::DEFAULT_SOCKET),
            group: String::new(),
            check_addresses: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: String,
    pub listen: SocketAddr,
    #[serde(default = "default_work_dir")]
    pub work_dir: PathBuf,
    #[serde(default = "default_max_archive")]
    pub max_archive_bytes: u64,
    /// How long sending an archive and the target's restore of it may take.
    #[serde(default = "default_transfer_timeout")]
    pub transfer_timeout_secs: u64,
    #[serde(default)]
    pub admins: Vec<String>,
    #[serde(default)]
    pub peers: Vec<String>,
    pub tls: TlsFiles,
    #[serde(default)]
    pub runtime: RuntimeKind,
    #[serde(default)]
    pub podman: PodmanConfig,
    #[serde(default)]
    pub cri: CriConfig,
    #[serde(default)]
    pub controller: Option<ControllerConfig>,
    #[serde(default)]
    pub relay: Option<RelayConfig>,
}

fn default_work_dir() -> PathBuf {
    PathBuf::from("/var/lib/p4lb-agent")
}

fn default_max_archive() -> u64 {
    DEFAULT_MAX_ARCHIVE
}

/// Default [`Config::transfer_timeout_secs`]: 4 GiB at 100 Mbit/s, and a restore.
pub const DEFAULT_TRANSFER_TIMEOUT_SECS: u64 = 600;

fn default_transfer_timeout() -> u64 {
    DEFAULT_TRANSFER_TIMEOUT_SECS
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// Is `s` a name the agent accepts for a node or a container (DNS-name and container
/// name characters, at most 253 bytes)?
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !s.starts_with(['-', '.'])
}

impl Config {
    /// Parses and checks a configuration; `path` names it in errors.
    pub fn parse(path: &str, text: &str) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_string(),
            message,
        };
        let c: Config = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if !valid_name(&c.node) {
            return Err(invalid(format!(
                "node = {:?} is not a valid node name",
                c.node
            )));
        }
        for n in c.admins.iter().chain(&c.peers) {
            if !valid_name(n) {
                return Err(invalid(format!("{n:?} is not a valid certificate name")));
            }
        }
        if c.max_archive_bytes == 0 {
            return Err(invalid("max_archive_bytes must be above 0".into()));
        }
        if c.transfer_timeout_secs == 0 {
            return Err(invalid("transfer_timeout_secs must be above 0".into()));
        }
        if let Some(ctl) = &c.controller {
            for (k, v) in [("address", &ctl.address), ("advertise", &ctl.advertise)] {
                if !v.starts_with("https://") {
                    return Err(invalid(format!(
                        "controller.{k} = {v:?} is not https://HOST:PORT"
                    )));
                }
            }
        }
        if let Some(r) = &c.relay {
            if c.controller.is_none() {
                return Err(invalid(
                    "[relay] needs [controller]: the relay forwards to controller.address".into(),
                ));
            }
            if !r.socket.is_absolute() {
                return Err(invalid(format!(
                    "relay.socket = {:?} is not an absolute path",
                    r.socket
                )));
            }
        }
        if c.podman.command.is_empty() {
            return Err(invalid("podman.command is empty".into()));
        }
        if !c.cri.socket.is_absolute() {
            return Err(invalid(format!(
                "cri.socket = {:?} is not an absolute path",
                c.cri.socket
            )));
        }
        if !valid_name(&c.cri.namespace) {
            return Err(invalid(format!(
                "cri.namespace = {:?} is not a valid namespace",
                c.cri.namespace
            )));
        }
        Ok(c)
    }

    /// The runtime this configuration names.
    pub fn node_runtime(&self) -> NodeRuntime {
        match self.runtime {
            RuntimeKind::Podman => NodeRuntime::Podman((&self.podman).into()),
            RuntimeKind::Cri => NodeRuntime::Cri(CriRuntime {
                socket: self.cri.socket.clone(),
                namespace: self.cri.namespace.clone(),
            }),
        }
    }

    /// Reads and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let data =
            p4lb_api::read_bounded(path, MAX_CONFIG_BYTES).map_err(|source| ConfigError::Read {
                path: shown.clone(),
                source,
            })?;
        let text = String::from_utf8(data).map_err(|_| ConfigError::Invalid {
            path: shown.clone(),
            message: "not UTF-8".into(),
        })?;
        Config::parse(&shown, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
node = "node-a"
listen = "127.0.0.1:7443"
[tls]
ca = "/ca.pem"
cert = "/n.pem"
key = "/n.key"
"#;

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        let c = Config::parse("example", &example).unwrap();
        assert_eq!(c.node, "node-a");
        assert_eq!(c.peers, ["node-b"]);
        assert_eq!(c.podman.global_args.len(), 2);
        assert_eq!(c.runtime, RuntimeKind::Podman);
        assert_eq!(c.cri.socket, Path::new("/run/containerd/containerd.sock"));
        assert_eq!(
            c.controller.map(|c| c.advertise),
            Some("https://node-a.example:7443".to_string())
        );
        assert_eq!(c.relay, Some(RelayConfig::default()));
    }

    #[test]
    fn the_relay_needs_a_controller_and_an_absolute_socket() {
        const CTL: &str = "[controller]\naddress = \"https://c:1\"\nadvertise = \"https://a:2\"\n";
        let c = Config::parse("t", &format!("{MIN}{CTL}[relay]\n")).unwrap();
        let r = c.relay.unwrap();
        assert_eq!(r.socket, Path::new(p4lb_api::DEFAULT_SOCKET));
        assert!(r.group.is_empty() && r.check_addresses);
        assert!(Config::parse("t", MIN).unwrap().relay.is_none());
        let e = Config::parse("t", &format!("{MIN}[relay]\n")).unwrap_err();
        assert!(e.to_string().contains("needs [controller]"), "{e}");
        let e =
            Config::parse("t", &format!("{MIN}{CTL}[relay]\nsocket = \"x.sock\"\n")).unwrap_err();
        assert!(e.to_string().contains("not an absolute path"), "{e}");
    }

    #[test]
    fn the_packaged_example_parses() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/p4lb/agent.toml.example");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.node, "node-a");
        assert_eq!(c.peers, ["node-b"]);
        assert!(c.controller.is_some());
        assert_eq!(c.runtime, RuntimeKind::Podman);
        assert_eq!(c.cri, CriConfig::default());
    }

    #[test]
    fn defaults_and_refusals() {
        let c = Config::parse("t", MIN).unwrap();
        assert_eq!(c.max_archive_bytes, DEFAULT_MAX_ARCHIVE);
        assert!(c.admins.is_empty() && c.peers.is_empty());
        assert_eq!(c.podman, PodmanConfig::default());
        for (patch, want) in [
            ("node = \"node-a\"", "node = \"../x\""),
            ("listen = \"127.0.0.1:7443\"", "listen = \"nowhere\""),
        ] {
            let bad = MIN.replace(patch, want);
            assert!(Config::parse("t", &bad).is_err(), "{bad}");
        }
        let e = Config::parse("t", &format!("{MIN}\nbogus = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = Config::parse(
            "t",
            &format!("{MIN}\n[controller]\naddress = \"https://c:1\"\nadvertise = \"n:1\"\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("controller.advertise"), "{e}");
        let e = Config::parse("t", &format!("max_archive_bytes = 0\n{MIN}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_archive_bytes"), "{e}");
    }

    #[test]
    fn runtime_cri_selects_containerd_over_its_socket() {
        let c = Config::parse(
            "t",
            &format!("runtime = \"cri\"\n{MIN}\n[cri]\nsocket = \"/run/b/containerd.sock\"\n"),
        )
        .unwrap();
        assert_eq!(c.runtime, RuntimeKind::Cri);
        match c.node_runtime() {
            NodeRuntime::Cri(r) => {
                assert_eq!(r.socket, Path::new("/run/b/containerd.sock"));
                assert_eq!(r.namespace, "default");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Config::parse("t", MIN).unwrap().node_runtime(),
            NodeRuntime::Podman(_)
        ));
        for bad in ["runtime = \"docker\"\n", ""] {
            let text = if bad.is_empty() {
                format!("{MIN}\n[cri]\nsocket = \"relative.sock\"\n")
            } else {
                format!("{bad}{MIN}")
            };
            assert!(Config::parse("t", &text).is_err(), "{text}");
        }
    }

    #[test]
    fn names() {
        assert!(valid_name("node-a") && valid_name("web_1.x"));
        assert!(!valid_name("") && !valid_name("-x") && !valid_name("a/b"));
        assert!(!valid_name(&"a".repeat(254)));
    }
}
