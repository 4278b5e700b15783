//! The `CNI_*` environment: which verb, for which attachment, where plugins live.

use std::path::PathBuf;

use super::error::{CniError, Code};

/// `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(text: &str) -> Result<Self, CniError> {
        Ok(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            other => {
                return Err(
                    CniError::new(Code::InvalidEnvironment, "unknown CNI_COMMAND")
                        .details(format!("CNI_COMMAND={other:?}")),
                )
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

/// Everything the runtime passed in the environment, validated for the verb.
#[derive(Clone, Debug, Default)]
pub struct RuntimeEnv {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: Vec<PathBuf>,
}

impl RuntimeEnv {
    /// Reads and validates the variables `command` needs, through `get` (the process
    /// environment in the binary, a map in tests).
    pub fn from_lookup(
        command: Command,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, CniError> {
        let var = |name: &str| get(name).unwrap_or_default();
        let env = RuntimeEnv {
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
            path: std::env::split_paths(&var("CNI_PATH"))
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
        };
        let (need_attachment, need_netns, need_path) = match command {
            Command::Add | Command::Check => (true, true, true),
            Command::Del => (true, false, true),
            Command::Gc => (false, false, true),
            Command::Status | Command::Version => (false, false, false),
        };
        let mut missing = Vec::new();
        if need_attachment && env.container_id.is_empty() {
            missing.push("CNI_CONTAINERID");
        }
        if need_netns && env.netns.is_empty() {
            missing.push("CNI_NETNS");
        }
        if need_attachment && env.ifname.is_empty() {
            missing.push("CNI_IFNAME");
        }
        if need_path && env.path.is_empty() {
            missing.push("CNI_PATH");
        }
        if !missing.is_empty() {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                "required environment variables missing",
            )
            .details(missing.join(",")));
        }
        if need_attachment {
            validate_container_id(&env.container_id)?;
            validate_ifname(&env.ifname)?;
        }
        Ok(env)
    }
}

/// The longest container ID the p4lb controller registers (its API limit, in bytes).
/// ADD refuses a longer one; DEL of one has nothing to undo.
pub use p4lb_api::MAX_CONTAINER_ID_LEN;

/// Container IDs: `[A-Za-z0-9][A-Za-z0-9_.-]*`.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            Code::InvalidEnvironment,
            "invalid characters in CNI_CONTAINERID",
        )
        .details(id.to_string()))
    }
}

/// Linux interface names: 1–15 bytes, not "." or "..", no '/', ':' or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.len() > 15 {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is . or ..")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains '/', ':' or whitespace")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(
            CniError::new(Code::InvalidEnvironment, "invalid CNI_IFNAME")
                .details(format!("{name:?} {p}")),
        ),
    }
}

/// Network names follow the container ID rule.
pub fn validate_network_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::new(
            Code::InvalidNetworkConfig,
            "missing network name",
        ));
    }
    validate_container_id(name).map_err(|_| {
        CniError::new(
            Code::InvalidNetworkConfig,
            "invalid characters in network name",
        )
        .details(name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn add_needs_everything() {
        let e =
            RuntimeEnv::from_lookup(Command::Add, lookup(&[("CNI_IFNAME", "eth0")])).unwrap_err();
        assert_eq!(e.code, Code::InvalidEnvironment as u32);
        assert!(e.details.contains("CNI_CONTAINERID"));
        assert!(e.details.contains("CNI_NETNS"));
        assert!(e.details.contains("CNI_PATH"));
        assert!(!e.details.contains("CNI_IFNAME"));
    }

    #[test]
    fn del_does_not_need_netns() {
        let env = RuntimeEnv::from_lookup(
            Command::Del,
            lookup(&[
                ("CNI_CONTAINERID", "abc"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/a:/b"),
            ]),
        )
        .unwrap();
        assert_eq!(env.path.len(), 2);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_container_id("a-b_c.d").is_ok());
        assert!(validate_container_id("-a").is_err());
        assert!(validate_container_id("a b").is_err());
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("0123456789abcdef").is_err());
        assert!(validate_ifname("a:b").is_err());
        assert!(validate_ifname("..").is_err());
        assert!(validate_network_name("").is_err());
        assert!(validate_network_name("p4lb-net").is_ok());
    }
}
