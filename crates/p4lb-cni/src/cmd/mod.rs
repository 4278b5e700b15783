//! The verbs. Each takes an [`Invocation`] (validated environment and configuration)
//! and returns the JSON to print, or a CNI error.

pub mod add;
pub mod check;
pub mod del;
pub mod gc;
pub mod status;
pub mod version;

use std::collections::HashMap;

use p4lb_api::labels::{is_runtime_label, HOST_ALIAS_PREFIX, LABEL_ANNOTATION_PREFIX};
use sha2::{Digest, Sha256};

use crate::cni::args::CniArgs;
use crate::cni::delegate::{find_in_path, Delegate};
use crate::cni::env::RuntimeEnv;
use crate::cni::error::{CniError, Code};
use crate::cni::netconf::NetConf;
use crate::cni::version::Version;
use crate::config::P4lbConf;
use crate::net::{NetNs, Netlink};
use crate::restore;

/// `CNI_ARGS` keys this plugin reads.
pub const KNOWN_ARGS: &[&str] = &[
    "IP",
    "MAC",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
    "P4LB_RESTORE_FROM",
    "P4LB_RESTORE_FROM_MAC",
];

/// A validated call.
pub struct Invocation {
    pub env: RuntimeEnv,
    pub conf: NetConf,
    pub p4: P4lbConf,
}

/// Host end of the veth: `p4lb` + 10 hex digits of SHA-256("<container>/<ifname>").
/// Deterministic, so DEL finds it even when the container's namespace is gone.
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    let digest = Sha256::digest(format!("{container_id}/{ifname}").as_bytes());
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("p4lb{hex}")
}

/// Longest interface alias the kernel stores (`IFALIASZ` - 1).
pub const MAX_ALIAS_LEN: usize = 255;

/// The alias on the host end: names the attachment so GC can map links back to it,
/// and marks the link as p4lb's (DEL deletes no host link without it).
pub fn host_alias(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{HOST_ALIAS_PREFIX}{network}:{container_id}/{ifname}")
}

/// Parses an alias written by [`host_alias`] for `network`.
pub fn parse_alias<'a>(alias: &'a str, network: &str) -> Option<(&'a str, &'a str)> {
    let rest = alias
        .strip_prefix(HOST_ALIAS_PREFIX)?
        .strip_prefix(network)?
        .strip_prefix(':')?;
    rest.split_once('/')
}

impl Invocation {
    /// The attachment this call is about, for [`crate::attach`].
    pub fn target(&self) -> crate::attach::Target {
        crate::attach::Target {
            container_id: self.env.container_id.clone(),
            ifname: self.env.ifname.clone(),
            netns: self.env.netns.clone().into(),
            network: self.conf.name.clone(),
            switch_netns: self.p4.switch_netns.clone(),
            routed: self.p4.routed,
        }
    }

    /// The controller's socket and timeout, for [`crate::attach`].
    pub fn controller(&self) -> crate::attach::ControllerConf {
        crate::attach::ControllerConf {
            socket: self.p4.controller_socket.clone(),
            timeout: self.p4.controller_timeout,
        }
    }

    pub fn args(&self) -> Result<CniArgs, CniError> {
        CniArgs::parse(&self.env.args, KNOWN_ARGS)
    }

    /// The netlink connection for the side the switch sees.
    pub fn host_netlink(&self) -> Result<(Netlink, Option<NetNs>), CniError> {
        self.target().host_netlink()
    }

    /// Runs the IPAM plugin with `verb`. `set_env` overrides variables (GC sets the
    /// attachment of a stale lease; ADD/DEL of a restore drop IP=/MAC=).
    ///
    /// The IPAM plugin gets our configuration unchanged. If it refuses its version
    /// (code 1; e.g. a plugin built before 1.1.0 given a 1.1.0 configuration), the
    /// configuration is sent again with the highest version both of us speak. GC and
    /// STATUS, which exist only from 1.1.0 on, are skipped for a plugin without 1.1.0.
    pub fn ipam(
        &self,
        verb: &str,
        set_env: Vec<(&'static str, String)>,
    ) -> Result<Vec<u8>, CniError> {
        let Some(t) = &self.conf.ipam_type else {
            return Ok(Vec::new());
        };
        let plugin = find_in_path(t, &self.env.path)?;
        let run = |stdin: &[u8]| {
            Delegate {
                plugin: &plugin,
                command: verb,
                stdin,
                set_env: set_env.clone(),
            }
            .run()
        };
        if matches!(verb, "GC" | "STATUS") {
            let supported = self.ipam_versions(&plugin)?;
            if !supported.iter().any(|v| *v >= Version::V1_1_0) {
                return Ok(Vec::new());
            }
        }
        match run(&self.conf.raw) {
            Err(e) if e.code == Code::IncompatibleVersion as u32 => {
                let supported = self.ipam_versions(&plugin)?;
                let Some(best) = supported
                    .into_iter()
                    .filter(|v| *v <= self.conf.version && *v >= Version::new(0, 3, 0))
                    .max()
                else {
                    return Err(e);
                };
                let mut conf = self.conf.value.clone();
                conf.insert("cniVersion".into(), best.to_string().into());
                let raw = serde_json::to_vec(&conf).map_err(|e| {
                    CniError::new(Code::Ipam, "re-encoding config").details(e.to_string())
                })?;
                run(&raw)
            }
            other => other,
        }
    }

    /// The IPAM's VERSION answer.
    fn ipam_versions(&self, plugin: &std::path::Path) -> Result<Vec<Version>, CniError> {
        let out = Delegate {
            plugin,
            command: "VERSION",
            stdin: br#"{"cniVersion":"1.1.0"}"#,
            set_env: Vec::new(),
        }
        .run()?;
        let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
            CniError::new(Code::Ipam, "IPAM VERSION answer is not JSON").details(e.to_string())
        })?;
        Ok(v.get("supportedVersions")
            .and_then(|s| s.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .filter_map(|x| Version::parse(x).ok())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The `CNI_ARGS` the IPAM plugin sees: a restore's old address is withheld unless
    /// `keepIpOnRestore` (the new pod gets a new address; the old one follows it as a
    /// migrated address in the controller).
    pub fn ipam_env(&self, hint: Option<&restore::RestoreHint>) -> Vec<(&'static str, String)> {
        match hint {
            Some(h)
                if h.source == restore::HintSource::PodmanArgs && !self.p4.keep_ip_on_restore =>
            {
                vec![("CNI_ARGS", CniArgs::without(&self.env.args, &["IP", "MAC"]))]
            }
            _ => Vec::new(),
        }
    }

    /// Endpoint labels: configuration, switch name, Kubernetes identity from
    /// `CNI_ARGS`, and `labels.p4lb.io/<k>` pod annotations. An annotation never sets
    /// an identity label (`k8s.*`, `io.kubernetes.*`, …: [`is_runtime_label`]); it is
    /// ignored with a warning.
    pub fn labels(&self, args: &CniArgs) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> = self.p4.labels.clone().into_iter().collect();
        if let Some(s) = &self.p4.switch {
            labels.insert("p4lb.switch".into(), s.clone());
        }
        for (key, label) in [
            ("K8S_POD_NAMESPACE", "k8s.namespace"),
            ("K8S_POD_NAME", "k8s.pod"),
            ("K8S_POD_INFRA_CONTAINER_ID", "k8s.infra-container-id"),
            ("K8S_POD_UID", "k8s.pod-uid"),
        ] {
            if let Some(v) = args.get(key) {
                labels.insert(label.into(), v.to_string());
            }
        }
        if let Some(ann) = restore::pod_annotations(&self.conf.runtime_config) {
            for (k, v) in ann {
                if let (Some(name), Some(v)) = (k.strip_prefix(LABEL_ANNOTATION_PREFIX), v.as_str())
                {
                    if is_runtime_label(name) {
                        eprintln!(
                            "p4lb: warning: pod annotation {k} ignored: {name} is an identity \
                             label only the runtime sets"
                        );
                    } else if !name.is_empty() {
                        labels.insert(name.to_string(), v.to_string());
                    }
                }
            }
        }
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        let n = host_ifname("abc", "eth0");
        assert_eq!(n.len(), 14);
        assert!(n.starts_with("p4lb"));
        assert_eq!(n, host_ifname("abc", "eth0"));
        assert_ne!(n, host_ifname("abc", "eth1"));
        let a = host_alias("net1", "abc", "eth0");
        assert_eq!(parse_alias(&a, "net1"), Some(("abc", "eth0")));
        assert_eq!(parse_alias(&a, "net"), None);
        assert_eq!(parse_alias("other", "net1"), None);
    }
}
