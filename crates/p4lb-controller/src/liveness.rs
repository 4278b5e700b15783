//! Withdrawal of endpoints whose container is gone without a deregistration (the
//! runtime deleted it while the controller was down, and never retries).
//!
//! An endpoint is gone when its host-side interface no longer exists in the
//! controller's network namespace (looked for only when it was there at
//! registration, see [`EndpointRec::host_if_local`]), or when the network namespace
//! it registered from no longer exists (its path is gone or now names another
//! namespace). The
//! check runs once when the controller starts and then every
//! `endpoints.liveness_interval_ms`. A gone endpoint is withdrawn: it leaves every
//! service's Maglev slots, its routes, backend row and learned connections are
//! removed, its switch port detached, and the record is kept in state `stale`
//! (visible in `p4lbctl endpoints ls`) until it is deregistered — by the runtime's
//! DEL when it is retried, GarbageCollect, `p4lbctl endpoints rm`, or a new
//! registration of the same key. Keeping the record lets the runtime's late DEL
//! still find what it registered, and shows the operator what was withdrawn.
//! Endpoints that take part in a live migration are never withdrawn: their
//! interface may legitimately be in flux. Only endpoints of the controller's own node
//! are checked: another node's namespace paths and interfaces name things of another
//! kernel, which the controller cannot see.
//!
//! The same check keeps the controller's netlink sockets in its endpoints' namespaces
//! (`p4lb_netns::AddrSockets`, read at each migration event) in line: dropped for an
//! endpoint that is gone, stale or detached (a kept socket holds its namespace alive),
//! made for a live one without (after a restart).

use std::collections::HashMap;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Weak;
use std::time::Duration;

use crate::controller::{Change, Controller};
use crate::error::Result;
use crate::services::refresh_services;
use crate::state::{EndpointRec, EndpointState, State};

/// Why an endpoint is considered gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gone {
    /// Its host-side interface does not exist.
    Interface(String),
    /// Its network namespace path does not exist, or names another namespace.
    Netns(String),
}

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gone::Interface(i) => write!(f, "host interface {i} is gone"),
            Gone::Netns(p) => write!(f, "network namespace {p} is gone"),
        }
    }
}

/// Whether endpoint `e` takes part in a migration that is still active: as its
/// source or target, as a restore of its source's address, or registered for a
/// restore (locked or restoring) while any migration is active.
pub fn in_live_migration(st: &State, e: &EndpointRec) -> bool {
    let mut active = st.migrations.iter().filter(|m| m.active()).peekable();
    if active.peek().is_none() {
        return false;
    }
    if e.locked || e.state == EndpointState::Restoring {
        return true;
    }
    active.any(|m| {
        m.source_key == e.key
            || m.target_key == e.key
            || (m.source_ip.is_some()
                && (e.restore_of_ip == m.source_ip || Some(e.ip) == m.source_ip))
    })
}

/// Whether interface `name` exists in the controller's network namespace; only
/// "no such device" counts as missing.
pub fn interface_exists(name: &str) -> bool {
    match nix::net::if_::if_nametoindex(name) {
        Ok(_) => true,
        // Only "no such device" means gone; any other failure proves nothing.
        Err(e) => e != nix::errno::Errno::ENODEV,
    }
}

fn netns_gone(path: &str, inode: u64) -> bool {
    match std::fs::metadata(Path::new(path)) {
        Ok(m) => m.ino() != inode,
        Err(e) => e.kind() == ErrorKind::NotFound,
    }
}

/// Whether `e` is gone, and why. Endpoints without a host interface or a recorded
/// namespace are only checked for what they have.
pub fn gone(e: &EndpointRec) -> Option<Gone> {
    if e.detached || e.state == EndpointState::Stale {
        return None;
    }
    if e.host_if_local && !e.host_ifname.is_empty() && !interface_exists(&e.host_ifname) {
        return Some(Gone::Interface(e.host_ifname.clone()));
    }
    if !e.netns_path.is_empty() && e.netns_inode != 0 && netns_gone(&e.netns_path, e.netns_inode) {
        return Some(Gone::Netns(e.netns_path.clone()));
    }
    None
}

/// Whether `e` lives on `local_node`, the controller's own node, and so can be checked
/// here (an empty node is a record written before nodes existed: the controller's).
pub fn checked_here(e: &EndpointRec, local_node: &str) -> bool {
    e.node.is_empty() || e.node == local_node
}

/// What one check of the endpoints of `local_node` (the controller's own node) found,
/// each endpoint looked at once ([`check_endpoints`]).
#[derive(Debug, Default)]
pub struct Checked {
    /// Endpoints that are gone and may be withdrawn, with the reason.
    pub stale: Vec<(String, Gone)>,
    /// Namespace inode → path of the endpoints that are live (not gone, stale or
    /// detached): those a netlink socket may be kept in.
    pub live_netns: HashMap<u64, String>,
}

/// Checks every endpoint of `st` on `local_node` once.
pub fn check_endpoints(st: &State, local_node: &str) -> Checked {
    let mut out = Checked::default();
    for e in st
        .endpoints
        .values()
        .filter(|e| checked_here(e, local_node))
    {
        match gone(e) {
            Some(why) => {
                if !in_live_migration(st, e) {
                    out.stale.push((e.key.clone(), why));
                }
            }
            None => {
                // gone() does not look at stale or detached endpoints: their namespace
                // may be dead, and a kept socket would hold it (and its veth) alive.
                if e.state != EndpointState::Stale
                    && !e.detached
                    && !e.netns_path.is_empty()
                    && e.netns_inode != 0
                {
                    out.live_netns.insert(e.netns_inode, e.netns_path.clone());
                }
            }
        }
    }
    out
}

/// The change that withdraws endpoint `key`: out of every service, no routes,
/// backend row, learned connections or port; the record kept as `stale`.
fn plan_withdrawal(st: &State, key: &str) -> Option<Change> {
    let mut st = st.clone();
    let e = st.endpoints.get_mut(key)?;
    // An endpoint routed behind its node leaves the node's uplink port attached.
    let port = e.attached_port();
    let backend = e.backend_id;
    e.state = EndpointState::Stale;
    e.locked = false;
    e.host_ifname.clear();
    e.backend_id = 0;
    refresh_services(&mut st);
    let mut change = Change::new(st);
    change.port_removes.extend(port);
    if backend != 0 {
        change.drop_backends.push(backend);
    }
    Some(change)
}

impl Controller {
    /// Withdraws every endpoint whose interface or namespace is gone (see the
    /// module documentation); returns the keys withdrawn.
    pub async fn withdraw_stale(&self) -> Result<Vec<String>> {
        let local = self.node_name.clone();
        let checked = check_endpoints(&self.inner.lock().await.state, &local);
        // Sockets are kept only in the namespaces of live endpoints of this node; those
        // without one (as after a restart) get one.
        self.addr_sockets
            .retain(|i| checked.live_netns.contains_key(&i));
        for (inode, path) in &checked.live_netns {
            if !self.addr_sockets.has(*inode) {
                self.keep_socket_in(path, *inode);
            }
        }
        let mut withdrawn = Vec::new();
        for (key, why) in checked.stale {
            let k = key.clone();
            let local = local.clone();
            // Re-checked against the state current at the commit's turn.
            let (removed, _) = self
                .commit_queued(move |st: &State| {
                    let live = st.endpoints.get(&k).is_some_and(|e| {
                        checked_here(e, &local) && !in_live_migration(st, e) && gone(e).is_some()
                    });
                    if !live {
                        return Ok((None, false));
                    }
                    let change = plan_withdrawal(st, &k);
                    let withdrawn = change.is_some();
                    Ok((change, withdrawn))
                })
                .await?;
            if removed {
                tracing::warn!(key = %key, reason = %why, "stale endpoint withdrawn from its services");
                self.emit("endpoint", "withdrawn", &key, why.to_string());
                withdrawn.push(key);
            }
        }
        Ok(withdrawn)
    }
}

/// Checks at start, then every `every` (`None`: only at start).
pub(crate) async fn liveness_loop(ctl: Weak<Controller>, every: Option<Duration>) {
    let mut tick = every.map(tokio::time::interval);
    if let Some(t) = tick.as_mut() {
        // The first tick is immediate; the check at start runs below.
        t.tick().await;
    }
    loop {
        {
            let Some(ctl) = ctl.upgrade() else { return };
            if let Err(e) = ctl.withdraw_stale().await {
                tracing::warn!(error = %e, "withdrawing stale endpoints");
            }
        }
        match tick.as_mut() {
            Some(t) => {
                t.tick().await;
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::state::{MigrationRec, MigrationState};

    fn ep(key: &str, ip: [u8; 4]) -> EndpointRec {
        EndpointRec {
            mac: [2, 0, 0, 0, 0, ip[3]],
            host_if_local: true,
            ..EndpointRec::sample(key, Ipv4Addr::from(ip), 1)
        }
    }

    #[test]
    fn a_missing_interface_or_namespace_is_gone_and_nothing_else() {
        let mut e = ep("a", [10, 0, 0, 2]);
        assert_eq!(gone(&e), None, "nothing recorded, nothing to check");
        e.host_ifname = String::from("lo");
        assert_eq!(gone(&e), None);
        e.host_ifname = String::from("p4lbnosuchif0");
        assert_eq!(gone(&e), Some(Gone::Interface(e.host_ifname.clone())));
        e.host_if_local = false;
        assert_eq!(
            gone(&e),
            None,
            "an interface in the switch's own namespace is not looked for here"
        );
        e.host_if_local = true;
        e.detached = true;
        assert_eq!(gone(&e), None, "a detached source has no interface");

        let mut e = ep("b", [10, 0, 0, 3]);
        let f = tempfile::NamedTempFile::new().unwrap();
        let ino = std::fs::metadata(f.path()).unwrap().ino();
        e.netns_path = f.path().display().to_string();
        e.netns_inode = ino;
        assert_eq!(gone(&e), None);
        e.netns_inode = ino + 1;
        assert_eq!(gone(&e), Some(Gone::Netns(e.netns_path.clone())));
        e.netns_inode = ino;
        drop(f);
        assert_eq!(gone(&e), Some(Gone::Netns(e.netns_path.clone())));
    }

    #[test]
    fn endpoints_of_an_active_migration_are_live() {
        let mut st = State::new();
        let src = ep("src", [10, 0, 0, 2]);
        let mut tgt = ep("tgt", [10, 0, 0, 9]);
        tgt.restore_of_ip = Some(src.ip);
        let mut locked = ep("locked", [10, 0, 0, 4]);
        locked.locked = true;
        let other = ep("other", [10, 0, 0, 5]);
        for e in [&src, &tgt, &locked, &other] {
            st.endpoints.insert(e.key.clone(), e.clone());
        }
        // Without an active migration nothing is protected.
        assert!(st.endpoints.values().all(|e| !in_live_migration(&st, e)));
        st.migrations.push(MigrationRec {
            id: String::from("m1"),
            source_key: src.key.clone(),
            source_ip: Some(src.ip),
            state: MigrationState::Checkpointed,
            ..Default::default()
        });
        assert!(in_live_migration(&st, &src));
        assert!(in_live_migration(&st, &tgt));
        assert!(in_live_migration(&st, &locked));
        assert!(!in_live_migration(&st, &other));
        st.migrations[0].state = MigrationState::Done;
        assert!(!in_live_migration(&st, &src));
    }

    #[test]
    fn only_endpoints_of_the_controllers_own_node_are_checked() {
        let mut st = State::new();
        // Three endpoints whose namespace path does not exist on this host: one of this
        // node, one of a record without a node (an old state file), one of another node.
        for (key, node, ip) in [
            ("here", "n1", [10, 0, 0, 2]),
            ("old", "", [10, 0, 0, 3]),
            ("there", "n2", [10, 0, 0, 4]),
        ] {
            let mut e = ep(key, ip);
            e.node = node.to_string();
            e.netns_path = format!("/run/netns/p4lb-no-such-netns-{key}");
            e.netns_inode = 4026531992;
            st.endpoints.insert(e.key.clone(), e);
        }
        let mut keys: Vec<String> = check_endpoints(&st, "n1")
            .stale
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        assert_eq!(keys, ["here", "old"]);
        // Seen from the other node's controller, its own endpoint and the unnamed one.
        let mut keys: Vec<String> = check_endpoints(&st, "n2")
            .stale
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        assert_eq!(keys, ["old", "there"]);
    }

    #[test]
    fn only_live_endpoints_namespaces_may_keep_a_socket() {
        let mut st = State::new();
        let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        for (key, ip) in [
            ("live", [10, 0, 0, 2]),
            ("stale", [10, 0, 0, 3]),
            ("detached", [10, 0, 0, 4]),
            ("gone", [10, 0, 0, 5]),
        ] {
            let mut e = ep(key, ip);
            e.node = "n1".into();
            e.netns_path = "/proc/self/ns/net".into();
            e.netns_inode = own;
            match key {
                "stale" => e.state = EndpointState::Stale,
                "detached" => e.detached = true,
                "gone" => e.netns_path = "/run/netns/p4lb-no-such-netns-gone".into(),
                _ => {}
            }
            st.endpoints.insert(e.key.clone(), e);
        }
        let checked = check_endpoints(&st, "n1");
        assert_eq!(
            checked.live_netns,
            HashMap::from([(own, "/proc/self/ns/net".to_string())])
        );
        let stale: Vec<&str> = checked.stale.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(stale, ["gone"]);
        // Another node's endpoints are not this controller's to keep sockets for.
        assert!(check_endpoints(&st, "n2").live_netns.is_empty());
    }

    #[test]
    fn withdrawing_a_routed_endpoint_detaches_no_port() {
        let mut st = State::new();
        let mut pod = ep("pod", [10, 0, 0, 2]);
        pod.host_ifname = String::from("veth-pod");
        pod.switch_port = 3;
        let mut routed = ep("routed", [10, 0, 0, 3]);
        routed.host_ifname = String::from("veth-routed");
        routed.switch_port = 300;
        routed.backend_id = 2;
        routed.behind_node = true;
        routed.next_hop_mac = Some([2, 0, 0, 0, 0x0b, 1]);
        for e in [&pod, &routed] {
            st.endpoints.insert(e.key.clone(), e.clone());
        }
        let c = plan_withdrawal(&st, "pod").expect("a change");
        assert_eq!(c.port_removes, [3]);
        let c = plan_withdrawal(&st, "routed").expect("a change");
        assert!(c.port_removes.is_empty(), "{:?}", c.port_removes);
        assert_eq!(c.drop_backends, [2]);
        assert_eq!(c.state.endpoints["routed"].state, EndpointState::Stale);
    }
}
