//! The options of a p4lb network (`podman network create -d p4lb -o KEY=VALUE`),
//! checked at `create` (a bad or unknown option creates nothing) and read again at
//! every `setup`/`teardown`.
//!
//! | option | value | default |
//! |---|---|---|
//! | `socket` | the controller's API socket (absolute path) | `/run/p4lb/controller.sock` |
//! | `timeout_ms` | bound for connecting and for each controller call | 10000 |
//! | `labels` | endpoint labels, `k=v[,k=v…]` (services select by them) | none |
//! | `checkpoint_mode` | `migrate` or `snapshot`: what a leave-running checkpoint means | the action script's default |
//! | `switch_netns` | namespace of the switch's ports (absolute path) | the host's |
//! | `mtu` | 68..65535 | the kernel's |
//! | `router_mac` | the switch's router MAC, when the controller does not report it | from the controller |
//! | `routed` | `true`: pods are routed behind this node, whose uplink is on a switch port (docs/multi-node.md); `false`: each pod on a switch port of its own | `false` |

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use p4lb_api::labels::{is_runtime_label, CheckpointMode, CHECKPOINT_LABEL};
use p4lb_api::DEFAULT_SOCKET;
use p4lb_cni::net::link::parse_mac;

use crate::Error;

/// Every option a p4lb network accepts.
pub const KNOWN: &[&str] = &[
    "socket",
    "timeout_ms",
    "labels",
    "checkpoint_mode",
    "switch_netns",
    "mtu",
    "router_mac",
    "routed",
];

/// Longest label name and value the controller accepts.
const MAX_LABEL_KEY: usize = 253;
const MAX_LABEL_VALUE: usize = 1024;

/// A p4lb network's validated options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetOptions {
    pub socket: PathBuf,
    pub timeout: Duration,
    pub labels: BTreeMap<String, String>,
    pub checkpoint_mode: Option<CheckpointMode>,
    pub switch_netns: Option<PathBuf>,
    pub mtu: Option<u32>,
    pub router_mac: Option<[u8; 6]>,
    pub routed: bool,
}

fn bad(key: &str, value: &str, why: impl std::fmt::Display) -> Error {
    Error::Option(format!("option {key}={value:?}: {why}"))
}

fn absolute(key: &str, value: &str) -> Result<PathBuf, Error> {
    let p = PathBuf::from(value);
    if !p.is_absolute() {
        return Err(bad(key, value, "must be an absolute path"));
    }
    Ok(p)
}

/// Parses `k=v,k=v`. A name must be non-empty, without `=`, `,` or white space, and
/// must not be an identity label the runtime sets (`container.*`, `podman.*`, …) or
/// the checkpoint label (use `checkpoint_mode`).
pub fn parse_labels(value: &str) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    for pair in value.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| bad("labels", value, format!("{pair:?} is not NAME=VALUE")))?;
        if k.is_empty() || k.len() > MAX_LABEL_KEY || k.chars().any(char::is_whitespace) {
            return Err(bad(
                "labels",
                value,
                format!("label name {k:?} must be 1..{MAX_LABEL_KEY} characters without spaces"),
            ));
        }
        if v.len() > MAX_LABEL_VALUE || v.chars().any(char::is_control) {
            return Err(bad(
                "labels",
                value,
                format!(
                    "label {k}: value longer than {MAX_LABEL_VALUE} or with control characters"
                ),
            ));
        }
        if is_runtime_label(k) {
            return Err(bad(
                "labels",
                value,
                format!("{k} is an identity label only the runtime sets"),
            ));
        }
        if k == CHECKPOINT_LABEL {
            return Err(bad(
                "labels",
                value,
                "set the checkpoint mode with -o checkpoint_mode=",
            ));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(bad("labels", value, format!("label {k} given twice")));
        }
    }
    Ok(out)
}

impl NetOptions {
    /// Validates a network's options; an unknown option is refused.
    pub fn parse(opts: Option<&BTreeMap<String, String>>) -> Result<Self, Error> {
        let mut o = NetOptions {
            socket: PathBuf::from(DEFAULT_SOCKET),
            timeout: Duration::from_millis(10_000),
            labels: BTreeMap::new(),
            checkpoint_mode: None,
            switch_netns: None,
            mtu: None,
            router_mac: None,
            routed: false,
        };
        for (k, v) in opts.into_iter().flatten() {
            match k.as_str() {
                "socket" => o.socket = absolute(k, v)?,
                "timeout_ms" => {
                    let ms: u64 = v.parse().map_err(|_| bad(k, v, "not a number"))?;
                    if ms == 0 || ms > 600_000 {
                        return Err(bad(k, v, "must be 1..600000"));
                    }
                    o.timeout = Duration::from_millis(ms);
                }
                "labels" => o.labels = parse_labels(v)?,
                "checkpoint_mode" => {
                    o.checkpoint_mode = Some(v.parse().map_err(|e| bad(k, v, e))?);
                }
                "switch_netns" => o.switch_netns = Some(absolute(k, v)?),
                "mtu" => {
                    let m: u32 = v.parse().map_err(|_| bad(k, v, "not a number"))?;
                    if !(68..=65535).contains(&m) {
                        return Err(bad(k, v, "must be 68..65535"));
                    }
                    o.mtu = Some(m);
                }
                "router_mac" => {
                    o.router_mac = Some(parse_mac(v).ok_or_else(|| bad(k, v, "not a MAC address"))?)
                }
                "routed" => {
                    o.routed = match v.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad(k, v, "must be true or false")),
                    }
                }
                _ => {
                    return Err(Error::Option(format!(
                        "unknown option {k:?} (a p4lb network accepts: {})",
                        KNOWN.join(", ")
                    )))
                }
            }
        }
        if o.routed {
            if let Some(p) = &o.switch_netns {
                return Err(bad(
                    "switch_netns",
                    &p.display().to_string(),
                    "a routed pod's veth stays in the node's namespace: drop switch_netns or \
                     routed",
                ));
            }
        }
        Ok(o)
    }

    /// The endpoint labels of every container on the network.
    pub fn endpoint_labels(&self) -> std::collections::HashMap<String, String> {
        let mut l: std::collections::HashMap<String, String> =
            self.labels.clone().into_iter().collect();
        if let Some(m) = self.checkpoint_mode {
            let v = match m {
                CheckpointMode::Migrate => "migrate",
                CheckpointMode::Snapshot => "snapshot",
            };
            l.insert(CHECKPOINT_LABEL.to_string(), v.to_string());
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Result<NetOptions, Error> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        NetOptions::parse(Some(&m))
    }

    #[test]
    fn defaults_and_every_option() {
        let d = NetOptions::parse(None).unwrap();
        assert_eq!(d.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(d.timeout, Duration::from_secs(10));
        assert!(d.endpoint_labels().is_empty());
        let o = opts(&[
            ("socket", "/run/x.sock"),
            ("timeout_ms", "2500"),
            ("labels", "app=web,tier=gold"),
            ("checkpoint_mode", "snapshot"),
            ("switch_netns", "/run/netns/sw"),
            ("mtu", "1400"),
            ("router_mac", "02:00:00:00:00:FE"),
        ])
        .unwrap();
        assert_eq!(o.socket, PathBuf::from("/run/x.sock"));
        assert_eq!(o.timeout, Duration::from_millis(2500));
        assert_eq!(o.mtu, Some(1400));
        assert_eq!(o.router_mac, Some([2, 0, 0, 0, 0, 0xfe]));
        assert!(!o.routed);
        assert!(opts(&[("routed", "true")]).unwrap().routed);
        let l = o.endpoint_labels();
        assert_eq!(l["app"], "web");
        assert_eq!(l["tier"], "gold");
        assert_eq!(l[CHECKPOINT_LABEL], "snapshot");
    }

    #[test]
    fn bad_values_and_unknown_options_are_refused_with_the_reason() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("sockett", "/x")], "unknown option \"sockett\""),
            (&[("socket", "rel.sock")], "absolute path"),
            (&[("timeout_ms", "0")], "1..600000"),
            (&[("timeout_ms", "x")], "not a number"),
            (&[("mtu", "10")], "68..65535"),
            (&[("router_mac", "zz")], "not a MAC"),
            (&[("checkpoint_mode", "move")], "allowed: migrate, snapshot"),
            (&[("labels", "app")], "not NAME=VALUE"),
            (&[("labels", "=web")], "label name"),
            (&[("labels", "container.id=x")], "identity label"),
            (
                &[("labels", "p4lb.io/checkpoint=migrate")],
                "checkpoint_mode",
            ),
            (&[("labels", "a=1,a=2")], "given twice"),
            (&[("switch_netns", "netns")], "absolute path"),
            (&[("routed", "yes")], "true or false"),
            (
                &[("routed", "true"), ("switch_netns", "/run/netns/sw")],
                "drop switch_netns or routed",
            ),
        ];
        for (pairs, want) in cases {
            let e = opts(pairs).unwrap_err().to_string();
            assert!(e.contains(want), "{pairs:?}: {e:?} lacks {want:?}");
        }
    }
}
