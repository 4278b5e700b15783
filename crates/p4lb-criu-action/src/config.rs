//! Configuration and failure policy.
//!
//! Read from `/etc/p4lb/criu-action.toml` (or `$P4LB_ACTION_CONFIG`), then overridden
//! by the environment (`P4LB_ACTION_POLICY`, `P4LB_CONTROLLER_SOCKET`). A missing file
//! means defaults; a malformed one is an error (never silently ignored).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use p4lb_api::{CheckpointMode, ParseCheckpointModeError, DEFAULT_SOCKET};
use serde::Deserialize;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/p4lb/criu-action.toml";
pub const DEFAULT_STATE_DIR: &str = "/run/p4lb/criu-action";

/// What to do when the controller cannot be reached or refuses a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Fail the action (non-zero exit): CRIU aborts the checkpoint or restore, so
    /// connections are never silently lost. The default.
    Strict,
    /// Log and go on (exit 0): the checkpoint/restore proceeds without the switch
    /// being told; clients may see resets.
    IgnoreController,
}

impl FromStr for Policy {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "strict" => Ok(Self::Strict),
            "ignore-controller" => Ok(Self::IgnoreController),
            other => Err(ConfigError::BadValue {
                what: "policy",
                value: other.to_owned(),
                allowed: "strict, ignore-controller",
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{what} {value:?} is not valid (allowed: {allowed})")]
    BadValue {
        what: &'static str,
        value: String,
        allowed: &'static str,
    },
    #[error("{what} must be between 1 and 60000 ms, got {value}")]
    BadTimeout { what: &'static str, value: u64 },
    #[error(transparent)]
    Mode(#[from] ParseCheckpointModeError),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    policy: Option<String>,
    controller_socket: Option<PathBuf>,
    connect_timeout_ms: Option<u64>,
    call_timeout_ms: Option<u64>,
    leave_running_default: Option<String>,
    state_dir: Option<PathBuf>,
    lock: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub policy: Policy,
    pub controller_socket: PathBuf,
    pub connect_timeout: Duration,
    pub call_timeout: Duration,
    /// Mode of a leave-running checkpoint without a `p4lb.io/checkpoint` label.
    pub leave_running_default: CheckpointMode,
    /// Per-CRIU-run state (which side, migration id) between two actions.
    pub state_dir: PathBuf,
    /// Hold the source's traffic at the switch from `network-lock` on (and keep
    /// a leave-running migration's source off the network). `false` turns p4lb's
    /// lock off for comparison runs: the migration is still tracked and
    /// repointed, but clients may see resets.
    pub lock: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            policy: Policy::Strict,
            controller_socket: PathBuf::from(DEFAULT_SOCKET),
            connect_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
            leave_running_default: CheckpointMode::Snapshot,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            lock: true,
        }
    }
}

impl Config {
    /// Loads the file named by `P4LB_ACTION_CONFIG` (or the default path), then
    /// applies environment overrides.
    pub fn load(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let path = env
            .get("P4LB_ACTION_CONFIG")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(ConfigError::Read { path, source: e }),
        };
        let mut cfg = match text {
            Some(t) => Self::from_toml(&path, &t)?,
            None => Self::default(),
        };
        cfg.apply_env(env)?;
        Ok(cfg)
    }

    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let f: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        let mut c = Self::default();
        if let Some(p) = f.policy {
            c.policy = p.parse()?;
        }
        if let Some(s) = f.controller_socket {
            c.controller_socket = s;
        }
        if let Some(ms) = f.connect_timeout_ms {
            c.connect_timeout = timeout("connect_timeout_ms", ms)?;
        }
        if let Some(ms) = f.call_timeout_ms {
            c.call_timeout = timeout("call_timeout_ms", ms)?;
        }
        if let Some(m) = f.leave_running_default {
            c.leave_running_default = m.parse()?;
        }
        if let Some(d) = f.state_dir {
            c.state_dir = d;
        }
        if let Some(l) = f.lock {
            c.lock = l;
        }
        Ok(c)
    }

    fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        if let Some(p) = env.get("P4LB_ACTION_POLICY").filter(|s| !s.is_empty()) {
            self.policy = p.parse()?;
        }
        if let Some(s) = env.get("P4LB_CONTROLLER_SOCKET").filter(|s| !s.is_empty()) {
            self.controller_socket = PathBuf::from(s);
        }
        if let Some(d) = env.get("P4LB_ACTION_STATE_DIR").filter(|s| !s.is_empty()) {
            self.state_dir = PathBuf::from(d);
        }
        if let Some(l) = env.get("P4LB_ACTION_LOCK").filter(|s| !s.is_empty()) {
            self.lock = match l.as_str() {
                "on" | "true" => true,
                "off" | "false" => false,
                other => {
                    return Err(ConfigError::BadValue {
                        what: "P4LB_ACTION_LOCK",
                        value: other.to_owned(),
                        allowed: "on, off",
                    })
                }
            };
        }
        Ok(())
    }
}

fn timeout(what: &'static str, ms: u64) -> Result<Duration, ConfigError> {
    if ms == 0 || ms > 60_000 {
        return Err(ConfigError::BadTimeout { what, value: ms });
    }
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_strict_with_bounded_timeouts() {
        let c = Config::default();
        assert_eq!(c.policy, Policy::Strict);
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.call_timeout, Duration::from_secs(5));
        assert_eq!(c.leave_running_default, CheckpointMode::Snapshot);
    }

    #[test]
    fn missing_file_means_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("none.toml");
        let c = Config::load(&env(&[("P4LB_ACTION_CONFIG", p.to_str().unwrap())])).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn file_then_env_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(
            &p,
            "policy = \"ignore-controller\"\ncontroller_socket = \"/x.sock\"\ncall_timeout_ms = 1500\nleave_running_default = \"migrate\"\n",
        )
        .unwrap();
        let c = Config::load(&env(&[("P4LB_ACTION_CONFIG", p.to_str().unwrap())])).unwrap();
        assert_eq!(c.policy, Policy::IgnoreController);
        assert_eq!(c.controller_socket, PathBuf::from("/x.sock"));
        assert_eq!(c.call_timeout, Duration::from_millis(1500));
        assert_eq!(c.leave_running_default, CheckpointMode::Migrate);
        let c = Config::load(&env(&[
            ("P4LB_ACTION_CONFIG", p.to_str().unwrap()),
            ("P4LB_ACTION_POLICY", "strict"),
            ("P4LB_CONTROLLER_SOCKET", "/y.sock"),
        ]))
        .unwrap();
        assert_eq!(c.policy, Policy::Strict);
        assert_eq!(c.controller_socket, PathBuf::from("/y.sock"));
    }

    #[test]
    fn bad_values_are_errors() {
        let p = Path::new("/t.toml");
        assert!(Config::from_toml(p, "policy = \"lenient\"").is_err());
        assert!(Config::from_toml(p, "call_timeout_ms = 0").is_err());
        assert!(Config::from_toml(p, "call_timeout_ms = 600000").is_err());
        assert!(Config::from_toml(p, "unknown_key = 1").is_err());
        assert!(Config::from_toml(p, "leave_running_default = \"both\"").is_err());
        assert!(Config::from_toml(p, "policy = [").is_err());
        assert!(Config::load(&env(&[
            ("P4LB_ACTION_CONFIG", "/nonexistent/p4lb.toml"),
            ("P4LB_ACTION_POLICY", "sometimes"),
        ]))
        .is_err());
    }

    #[test]
    fn lock_can_be_turned_off_by_file_or_environment() {
        let p = Path::new("/etc/p4lb/criu-action.toml");
        assert!(Config::default().lock);
        assert!(!Config::from_toml(p, "lock = false\n").unwrap().lock);
        assert!(Config::from_toml(p, "lock = \"no\"\n").is_err());
        let mut c = Config::default();
        c.apply_env(&env(&[("P4LB_ACTION_LOCK", "off")])).unwrap();
        assert!(!c.lock);
        c.apply_env(&env(&[("P4LB_ACTION_LOCK", "on")])).unwrap();
        assert!(c.lock);
        assert!(c
            .apply_env(&env(&[("P4LB_ACTION_LOCK", "sometimes")]))
            .is_err());
    }
}
