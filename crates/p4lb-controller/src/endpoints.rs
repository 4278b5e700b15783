//! Endpoint calls: register (plain, or locked for a restore), deregister, metadata
//! updates, garbage collection. Each validates fully before anything changes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use p4lb_api::labels::is_runtime_label;
use p4lb_proto::api;

use crate::addr::{parse_ipv4, parse_mac, parse_opt_ipv4};
use crate::caller::Caller;
use crate::config::Uplink;
use crate::controller::{Change, Controller};
use crate::error::{Error, Result};
use crate::identity;
use crate::services::refresh_services;
use crate::state::{now_ms, EndpointRec, EndpointState, MigrationState, State};

/// The stable key of an endpoint.
pub fn endpoint_key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

pub(crate) fn check_name(field: &str, v: &str, max: usize) -> Result<()> {
    if v.is_empty() {
        return Err(Error::invalid(format!("{field} is required")));
    }
    if v.len() > max || v.contains('/') || v.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::invalid(format!(
            "{field} {v:?} is not valid (at most {max} characters, no '/', spaces or control characters)"
        )));
    }
    Ok(())
}

pub(crate) fn check_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in labels {
        if k.is_empty() || k.len() > 253 || v.len() > 1024 || k.contains(['=', ',']) {
            return Err(Error::invalid(format!(
                "label {k:?}={v:?} is not valid (non-empty key without '=' or ',')"
            )));
        }
    }
    Ok(())
}

/// Merges a metadata update into `labels` (an empty value removes a label). Identity
/// labels ([`is_runtime_label`]) may be added when missing, like a registration sets
/// them, but never changed or removed afterwards: a service that selects by
/// `k8s.namespace` cannot be joined by relabelling. Returns the identity labels whose
/// change was ignored.
pub(crate) fn merge_labels(
    labels: &mut BTreeMap<String, String>,
    update: BTreeMap<String, String>,
) -> Vec<String> {
    let mut kept = Vec::new();
    for (k, v) in update {
        if is_runtime_label(&k) {
            match labels.get(&k) {
                Some(old) if *old == v => {}
                Some(_) => kept.push(k),
                None if v.is_empty() => {}
                None => {
                    labels.insert(k, v);
                }
            }
        } else if v.is_empty() {
            labels.remove(&k);
        } else {
            labels.insert(k, v);
        }
    }
    kept
}

/// Which endpoint, if any, already uses `ip` (as address or migrated address).
fn ip_owner(state: &State, ip: Ipv4Addr) -> Option<&EndpointRec> {
    state.endpoint_by_ip(ip)
}

/// The id of the active migration a restore of `old_ip` belongs to: one whose
/// source had that address and that is checkpointed or (a retried restore)
/// restoring. The single rule that tells a restore from a fresh start.
pub fn restore_migration(state: &State, old_ip: Ipv4Addr) -> Option<&str> {
    state
        .migrations
        .iter()
        .rev()
        .find(|m| {
            m.source_ip == Some(old_ip)
                && matches!(
                    m.state,
                    MigrationState::Checkpointed | MigrationState::Restoring
                )
        })
        .map(|m| m.id.as_str())
}

/// A RegisterEndpoint request whose fields passed validation.
#[derive(Clone)]
pub(crate) struct Registration {
    key: String,
    container_id: String,
    ifname: String,
    netns_path: String,
    netns_inode: u64,
    ip: Ipv4Addr,
    prefix_len: u32,
    mac: [u8; 6],
    gateway: Option<Ipv4Addr>,
    host_ifname: String,
    labels: BTreeMap<String, String>,
    network: String,
    locked: bool,
    restore_of_ip: Option<Ipv4Addr>,
    /// The node it registers on (the caller's, [`Caller::node`]).
    node: String,
    /// Its namespace and host interface are in the controller's kernel (a caller on
    /// the Unix socket); a node's are not, and are recorded as given.
    local: bool,
    /// Routed behind its node: forwarded to the node's uplink, no port of its own.
    behind_node: bool,
}

/// Checks every field of a RegisterEndpoint request; no file or state is looked at
/// (the namespace inode of `netns_path` is resolved by the caller).
pub(crate) fn validate_registration(r: api::RegisterEndpointRequest) -> Result<Registration> {
    check_name("container_id", &r.container_id, 256)?;
    check_name("ifname", &r.ifname, 15)?;
    let ip = parse_ipv4("ip", &r.ip)?;
    let prefix_len = match r.prefix_len {
        0 => 32,
        n @ 1..=32 => n,
        n => return Err(Error::invalid(format!("prefix_len {n} is not in 1..=32"))),
    };
    let mac = parse_mac("mac", &r.mac)?;
    if mac[0] & 1 == 1 || mac == [0; 6] {
        return Err(Error::invalid(format!(
            "mac {} is not a unicast address",
            r.mac
        )));
    }
    let gateway = parse_opt_ipv4("gateway", &r.gateway)?;
    let restore_of_ip = parse_opt_ipv4("restore_of_ip", &r.restore_of_ip)?;
    if !r.restore_of_mac.is_empty() {
        parse_mac("restore_of_mac", &r.restore_of_mac)?;
    }
    if !r.host_ifname.is_empty() {
        check_name("host_ifname", &r.host_ifname, 15)?;
    }
    let labels: BTreeMap<String, String> = r.labels.into_iter().collect();
    check_labels(&labels)?;
    if !r.netns_path.is_empty() && !Path::new(&r.netns_path).is_absolute() {
        return Err(Error::invalid(format!(
            "netns_path {:?} must be absolute",
            r.netns_path
        )));
    }
    Ok(Registration {
        key: endpoint_key(&r.container_id, &r.ifname),
        container_id: r.container_id,
        ifname: r.ifname,
        netns_path: r.netns_path,
        netns_inode: 0,
        ip,
        prefix_len,
        mac,
        gateway,
        host_ifname: r.host_ifname,
        labels,
        network: r.network,
        locked: r.locked,
        restore_of_ip,
        node: String::new(),
        local: true,
        behind_node: r.behind_node,
    })
}

/// The message of a registration routed behind a node that has no uplink configured.
pub(crate) fn no_uplink_message(node: &str) -> String {
    format!(
        "node {node} has no uplink in the controller's configuration ([[uplinks]]): a pod \
         routed behind its node needs one"
    )
}

/// The change that registers `r` on top of `state`: checks against the other
/// endpoints and services, picks the switch port (in `ports`, none of `retired`; for
/// an endpoint routed behind its node, the node's entry of `uplinks`) and backend id.
pub(crate) fn plan_registration(
    state: &State,
    r: Registration,
    ports: (u32, u32),
    retired: &std::collections::BTreeSet<u32>,
    uplinks: &[Uplink],
) -> Result<(Change, EndpointRec)> {
    let key = r.key;
    let ip = r.ip;
    let mut st = state.clone();
    // A container restored under its old id replaces the record its
    // checkpoint left behind and inherits its backend. Another node's record is taken
    // over only by the restore of a migration that names this node as its target.
    let inherited = match st.endpoints.get(&key) {
        Some(e) if e.detached => {
            if e.node != r.node {
                let m = st
                    .migrations
                    .iter()
                    .rev()
                    .find(|m| m.active() && m.source_key == key)
                    .ok_or_else(|| {
                        Error::denied(format!(
                            "endpoint {key} is on node {}; no migration of it is active",
                            e.node
                        ))
                    })?;
                crate::migration::cross_node_restore(m, &r.node)?;
            }
            st.endpoints.remove(&key)
        }
        // A withdrawn (stale) record gives way to the new registration (of its node).
        Some(e) if e.state == EndpointState::Stale => {
            if e.node != r.node {
                return Err(Error::denied(format!(
                    "endpoint {key} is on node {}: node {} may not replace it",
                    e.node, r.node
                )));
            }
            st.endpoints.remove(&key);
            None
        }
        Some(_) => {
            return Err(Error::exists(format!(
                "endpoint {key} is already registered"
            )))
        }
        None => None,
    };
    // A restore of another node's endpoint, while a migration of it runs: only through
    // a checkpointed migration that names this node as its target.
    if let Some(old) = r.restore_of_ip {
        if let Some(m) = st
            .migrations
            .iter()
            .rev()
            .find(|m| m.active() && m.source_ip == Some(old))
        {
            crate::migration::cross_node_restore(m, &r.node)?;
        }
    }
    // A restore hint counts only for a migration the controller knows: an active
    // one of that source address, checkpointed (or restoring, for a retried
    // restore). Anything else is a fresh start: unlocked, no restore target.
    let restore_of_ip = r
        .restore_of_ip
        .filter(|&old| restore_migration(&st, old).is_some());
    let fresh_start = r.restore_of_ip.is_some() && restore_of_ip.is_none();
    let locked = (r.locked && !fresh_start) || restore_of_ip.is_some() || inherited.is_some();
    if st.services.values().any(|s| s.vip == ip) {
        return Err(Error::exists(format!("{ip} is a service VIP")));
    }
    if let Some(other) = ip_owner(&st, ip) {
        // A restore may register the address its checkpointed source still holds,
        // locked, while that source is locked by a migration.
        let source_locked = other.locked
            && st
                .migrations
                .iter()
                .any(|m| m.active() && m.source_key == other.key);
        if !(locked && source_locked) {
            return Err(Error::exists(format!(
                "{ip} is already used by endpoint {}",
                other.key
            )));
        }
        if other.node != r.node {
            let m = st
                .migrations
                .iter()
                .rev()
                .find(|m| m.active() && m.source_key == other.key);
            match m {
                Some(m) => crate::migration::cross_node_restore(m, &r.node)?,
                None => {
                    return Err(Error::exists(format!(
                        "{ip} is already used by endpoint {}",
                        other.key
                    )))
                }
            }
        }
    }
    if !r.host_ifname.is_empty() {
        // A pod's own interface is attached to the switch: it is unique among attached
        // interfaces. A routed pod's interface is on its node: unique on that node.
        let clash = |e: &&EndpointRec| {
            e.host_ifname == r.host_ifname
                && e.behind_node == r.behind_node
                && (!r.behind_node || e.node == r.node)
        };
        if let Some(other) = st.endpoints.values().find(clash) {
            let what = if r.behind_node {
                format!("is already used on node {} by", r.node)
            } else {
                String::from("is already attached for")
            };
            return Err(Error::exists(format!(
                "host interface {} {what} endpoint {}",
                r.host_ifname, other.key
            )));
        }
    }
    // A routed pod uses its node's uplink port and MAC; a pod of its own gets a free
    // port of the range.
    let (port, next_hop_mac) = if r.behind_node {
        let up = uplinks
            .iter()
            .find(|u| u.node == r.node)
            .ok_or_else(|| Error::precondition(no_uplink_message(&r.node)))?;
        let routed = st.endpoints.values().filter(|e| e.behind_node).count();
        crate::limits::check_count(
            "endpoints routed behind their node",
            routed + 1,
            crate::limits::MAX_ROUTED_ENDPOINTS,
        )?;
        (up.port, Some(up.mac))
    } else {
        let port = st
            .free_port(ports.0, ports.1, retired)
            .ok_or_else(|| Error::precondition("no free switch port"))?;
        (port, None)
    };
    let backend_id = match &inherited {
        Some(old) => old.backend_id,
        None => st
            .free_backend_id()
            .ok_or_else(|| Error::precondition("no free backend id"))?,
    };
    let mut rec = EndpointRec {
        key: key.clone(),
        container_id: r.container_id,
        ifname: r.ifname,
        netns_path: r.netns_path,
        netns_inode: r.netns_inode,
        ip,
        prefix_len: r.prefix_len,
        mac: r.mac,
        gateway: r.gateway,
        host_ifname: r.host_ifname.clone(),
        switch_port: port,
        backend_id,
        backend_ip: ip,
        locked,
        state: if locked {
            EndpointState::Restoring
        } else {
            EndpointState::Ready
        },
        labels: r.labels,
        network: r.network,
        migrated_ips: Vec::new(),
        restore_of_ip,
        created_unix_ms: now_ms(),
        detached: false,
        host_if_local: r.local
            && !r.behind_node
            && !r.host_ifname.is_empty()
            && crate::liveness::interface_exists(&r.host_ifname),
        node: r.node,
        behind_node: r.behind_node,
        next_hop_mac,
    };
    if let Some(old) = inherited {
        rec.backend_ip = old.backend_ip;
        for a in std::iter::once(old.ip).chain(old.migrated_ips) {
            if a != rec.ip && !rec.migrated_ips.contains(&a) {
                rec.migrated_ips.push(a);
            }
        }
        for (k, v) in old.labels {
            rec.labels.entry(k).or_insert(v);
        }
    }
    crate::limits::check_labels(&rec.labels)?;
    st.endpoints.insert(key, rec.clone());
    refresh_services(&mut st);
    let mut change = Change::new(st);
    if let Some(port) = rec.attached_port() {
        change.port_adds.push((port, r.host_ifname));
    }
    Ok((change, rec))
}

/// The change that removes endpoint `key` (routes, backend row, port and its
/// connections); `None` when it is not registered. The source of an active
/// migration is kept, detached and locked, for its restore.
pub(crate) fn plan_deregistration(state: &State, key: &str) -> (Option<Change>, bool) {
    let mut st = state.clone();
    let Some(rec) = st.endpoints.remove(key) else {
        return (None, false);
    };
    if rec.detached {
        return (None, false);
    }
    let migrating = rec.active()
        && st
            .migrations
            .iter()
            .any(|m| m.active() && m.source_key == key);
    if migrating {
        // The checkpointed container's network goes away before its restore:
        // keep the (locked) backend and its connections for the target.
        let mut kept = rec.clone();
        kept.detached = true;
        kept.host_ifname.clear();
        kept.netns_inode = 0;
        st.endpoints.insert(key.to_string(), kept);
    } else {
        for svc in st.services.values_mut() {
            svc.backends.retain(|b| b != key);
        }
    }
    refresh_services(&mut st);
    let mut change = Change::new(st);
    change.port_removes.extend(rec.attached_port());
    if rec.backend_id != 0 && !migrating {
        change.drop_backends.push(rec.backend_id);
    }
    (Some(change), true)
}

impl Controller {
    /// RegisterEndpoint from a caller on the controller's own host.
    pub async fn register_endpoint(&self, r: api::RegisterEndpointRequest) -> Result<EndpointRec> {
        self.register_endpoint_as(&Caller::InProcess, r).await
    }

    /// RegisterEndpoint: on the caller's node. The netns path of a caller over TCP
    /// names a namespace of another kernel: it is recorded as given, never resolved.
    pub async fn register_endpoint_as(
        &self,
        caller: &Caller,
        r: api::RegisterEndpointRequest,
    ) -> Result<EndpointRec> {
        let mut reg = validate_registration(r)?;
        reg.node = caller.node(&self.node_name).to_string();
        reg.local = caller.is_local();
        if reg.local && !reg.netns_path.is_empty() {
            reg.netns_inode = identity::netns_inode(Path::new(&reg.netns_path))
                .map_err(|e| Error::invalid(format!("netns_path {}: {e}", reg.netns_path)))?;
        }
        let (key, ip, restore_of_ip) = (reg.key.clone(), reg.ip, reg.restore_of_ip);
        let own_netns = (reg.local && !reg.netns_path.is_empty())
            .then(|| (reg.netns_path.clone(), reg.netns_inode));
        let ports = (self.cfg.ports.first, self.cfg.ports.last);
        let retired = self.ports.retired();
        let uplinks = self.uplinks.clone();
        let (rec, _) = self
            .commit_queued(move |st: &State| {
                let (change, rec) = plan_registration(st, reg.clone(), ports, &retired, &uplinks)?;
                Ok((Some(change), rec))
            })
            .await?;
        if let (Some(old), None) = (restore_of_ip, rec.restore_of_ip) {
            tracing::warn!(
                key = %key,
                %ip,
                restore_of_ip = %old,
                "restore hint ignored, starting fresh: no checkpointed migration of {old} is known"
            );
        }
        tracing::info!(key = %key, %ip, port = rec.switch_port, backend_id = rec.backend_id, locked = rec.locked, node = %rec.node, behind_node = rec.behind_node, "endpoint registered");
        let detail = if rec.behind_node {
            format!("ip={ip} port={} behind_node={}", rec.switch_port, rec.node)
        } else {
            format!("ip={ip} port={}", rec.switch_port)
        };
        self.emit("endpoint", "added", &key, detail);
        if let Some((path, inode)) = own_netns {
            self.keep_socket_in(&path, inode);
        }
        Ok(rec)
    }

    /// Keeps a netlink socket in the namespace at `path` (if it is still the one with
    /// `inode`), off the caller's answer: its migration events then read the addresses
    /// without a thread. Only endpoints' namespaces get one (at registration, and at
    /// the liveness check for those without, as after a restart).
    pub(crate) fn keep_socket_in(&self, path: &str, inode: u64) {
        let sockets = self.addr_sockets.clone();
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            let kept = p4lb_netns::NetNs::open(&path).and_then(|ns| {
                if ns.inode() == inode {
                    sockets.keep(&ns)
                } else {
                    Ok(false)
                }
            });
            if let Err(e) = kept {
                tracing::debug!(
                    netns = %path,
                    error = %e,
                    "no netlink socket kept in the namespace"
                );
            }
        });
    }

    /// Drops the kept sockets of namespaces no endpoint of `st` is in.
    pub(crate) fn keep_sockets_of(&self, st: &State) {
        let inodes: std::collections::HashSet<u64> =
            st.endpoints.values().map(|e| e.netns_inode).collect();
        self.addr_sockets.retain(|i| inodes.contains(&i));
    }

    /// DeregisterEndpoint from a caller on the controller's own host.
    pub async fn deregister_endpoint(&self, container_id: &str, ifname: &str) -> Result<bool> {
        self.deregister_endpoint_as(&Caller::InProcess, container_id, ifname)
            .await
    }

    /// DeregisterEndpoint: removes routes, backend row, port, and its connections. A
    /// node removes only its own endpoints.
    pub async fn deregister_endpoint_as(
        &self,
        caller: &Caller,
        container_id: &str,
        ifname: &str,
    ) -> Result<bool> {
        check_name("container_id", container_id, 256)?;
        check_name("ifname", ifname, 15)?;
        let key = endpoint_key(container_id, ifname);
        let k = key.clone();
        let caller = caller.clone();
        let (removed, _) = self
            .commit_queued(move |st: &State| {
                if let Some(e) = st.endpoints.get(&k) {
                    caller.require_own(&format!("endpoint {k}"), &e.node)?;
                }
                Ok(plan_deregistration(st, &k))
            })
            .await?;
        if removed {
            let g = self.inner.lock().await;
            self.keep_sockets_of(&g.state);
            drop(g);
            tracing::info!(key = %key, "endpoint deregistered");
            self.emit("endpoint", "removed", &key, String::new());
        }
        Ok(removed)
    }

    /// GarbageCollect from a caller on the controller's own host.
    pub async fn garbage_collect(&self, r: api::GarbageCollectRequest) -> Result<Vec<String>> {
        self.garbage_collect_as(&Caller::InProcess, r).await
    }

    /// GarbageCollect: removes endpoints of `network` not among the valid ones, of the
    /// caller's node only (a runtime lists its own attachments); an admin's, of every
    /// node.
    pub async fn garbage_collect_as(
        &self,
        caller: &Caller,
        r: api::GarbageCollectRequest,
    ) -> Result<Vec<String>> {
        let node = match caller {
            Caller::Admin(_) => None,
            c => Some(c.node(&self.node_name).to_string()),
        };
        if r.network.is_empty() {
            return Err(Error::invalid("network is required"));
        }
        let valid: std::collections::HashSet<String> = r
            .valid_attachments
            .iter()
            .map(|a| endpoint_key(&a.container_id, &a.ifname))
            .collect();
        let mut g = self.inner.lock().await;
        let mut st = g.state.clone();
        // Sources of active migrations stay until their migration ends.
        let migrating: std::collections::HashSet<String> = st
            .migrations
            .iter()
            .filter(|m| m.active())
            .map(|m| m.source_key.clone())
            .collect();
        let gone: Vec<EndpointRec> = st
            .endpoints
            .values()
            .filter(|e| {
                e.network == r.network
                    && node.as_ref().is_none_or(|n| *n == e.node)
                    && !valid.contains(&e.key)
                    && !migrating.contains(&e.key)
            })
            .cloned()
            .collect();
        if gone.is_empty() {
            return Ok(Vec::new());
        }
        let mut change_ports = Vec::new();
        let mut drop_backends = Vec::new();
        for e in &gone {
            st.endpoints.remove(&e.key);
            for svc in st.services.values_mut() {
                svc.backends.retain(|b| b != &e.key);
            }
            change_ports.extend(e.attached_port());
            if e.backend_id != 0 {
                drop_backends.push(e.backend_id);
            }
        }
        refresh_services(&mut st);
        let mut change = Change::new(st);
        change.port_removes = change_ports;
        change.drop_backends = drop_backends;
        self.commit(&mut g, change).await?;
        drop(g);
        let keys: Vec<String> = gone.into_iter().map(|e| e.key).collect();
        for k in &keys {
            self.emit("endpoint", "removed", k, String::from("garbage collected"));
        }
        tracing::info!(network = %r.network, removed = keys.len(), "garbage collected endpoints");
        Ok(keys)
    }

    /// UpdateEndpointMetadata: merges labels (an empty value removes a label; identity
    /// labels are set once: [`merge_labels`]); a local caller must prove it is the
    /// endpoint (its identity), a node that the endpoint is its own.
    pub async fn update_metadata_as(
        &self,
        caller: &Caller,
        r: api::UpdateEndpointMetadataRequest,
    ) -> Result<EndpointRec> {
        if r.key.is_empty() {
            return Err(Error::invalid("key is required"));
        }
        let ns = if caller.is_local() {
            Some(identity::resolve_with(
                r.identity.as_ref(),
                self.cfg.identity.check_addresses,
                Some(&self.addr_sockets),
            )?)
        } else {
            None
        };
        let labels: BTreeMap<String, String> = r.labels.into_iter().collect();
        check_labels(&labels)?;
        let mut g = self.inner.lock().await;
        let mut st = g.state.clone();
        let ep = st
            .endpoints
            .get_mut(&r.key)
            .ok_or_else(|| Error::not_found(format!("no endpoint {}", r.key)))?;
        match &ns {
            Some(ns) => identity::verify(
                ns,
                ep.netns_inode,
                ep.ip,
                &format!("endpoint {}", ep.key),
                self.cfg.identity.check_addresses,
            )?,
            None => caller.require_own(&format!("endpoint {}", ep.key), &ep.node)?,
        }
        let kept = merge_labels(&mut ep.labels, labels);
        if !kept.is_empty() {
            tracing::warn!(
                key = %ep.key,
                labels = ?kept,
                "label update ignored: identity labels keep the value they were first given"
            );
        }
        // The merged labels are bounded like the labels of a registration.
        crate::limits::check_labels(&ep.labels)?;
        let rec = ep.clone();
        refresh_services(&mut st);
        self.commit(&mut g, Change::new(st)).await?;
        drop(g);
        self.emit("endpoint", "updated", &rec.key, String::from("labels"));
        Ok(rec)
    }

    /// GetEndpoint from a caller on the controller's own host.
    pub async fn get_endpoint(&self, r: api::GetEndpointRequest) -> Result<EndpointRec> {
        self.get_endpoint_as(&Caller::InProcess, r).await
    }

    /// GetEndpoint by key, address or identity (identity: local callers only, whose
    /// namespaces are the controller's kernel's).
    pub async fn get_endpoint_as(
        &self,
        caller: &Caller,
        r: api::GetEndpointRequest,
    ) -> Result<EndpointRec> {
        if !r.key.is_empty() {
            let g = self.inner.lock().await;
            return g
                .state
                .endpoints
                .get(&r.key)
                .cloned()
                .ok_or_else(|| Error::not_found(format!("no endpoint {}", r.key)));
        }
        if !r.ip.is_empty() {
            let ip = parse_ipv4("ip", &r.ip)?;
            let g = self.inner.lock().await;
            return g
                .state
                .endpoint_by_ip(ip)
                .cloned()
                .ok_or_else(|| Error::not_found(format!("no endpoint has {ip}")));
        }
        if r.identity.is_some() {
            if !caller.is_local() {
                return Err(Error::invalid(
                    "a caller over TCP looks endpoints up by key or ip: the controller does \
                     not resolve another host's namespaces",
                ));
            }
            let ns = identity::resolve(r.identity.as_ref(), false)?;
            let g = self.inner.lock().await;
            return g
                .state
                .endpoints
                .values()
                .find(|e| e.netns_inode == ns.inode && e.active())
                .cloned()
                .ok_or_else(|| Error::not_found(format!("no endpoint in {}", ns.described)));
        }
        Err(Error::invalid("give a key, an ip or an identity"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::state::MigrationRec;

    const PORTS: (u32, u32) = (1, 10);
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0x0b, 1];
    const MAC_C: [u8; 6] = [2, 0, 0, 0, 0x0c, 1];

    /// The shared uplinks, here with node-c's attached by the controller and node-b's not.
    fn uplinks() -> Vec<Uplink> {
        let mut u = crate::config::sample_uplinks();
        u[0].interface = String::new();
        u[1].interface = "p4lbup-c".into();
        u
    }

    fn reg(node: &str, cid: &str, ip: &str, host_if: &str, behind_node: bool) -> Registration {
        let mut r = validate_registration(api::RegisterEndpointRequest {
            container_id: cid.into(),
            ifname: "eth0".into(),
            ip: ip.into(),
            prefix_len: 24,
            mac: "02:00:00:00:01:01".into(),
            host_ifname: host_if.into(),
            network: "p4lb".into(),
            behind_node,
            ..Default::default()
        })
        .expect("a valid registration");
        r.node = node.into();
        // As a node registers: nothing of it is in the controller's kernel.
        r.local = false;
        r
    }

    fn plan(st: &State, r: Registration) -> Result<(Change, EndpointRec)> {
        plan_registration(st, r, PORTS, &BTreeSet::new(), &uplinks())
    }

    fn refused(r: Result<(Change, EndpointRec)>) -> Error {
        match r {
            Ok((_, rec)) => panic!("registered {rec:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_routed_pod_uses_its_nodes_uplink_and_attaches_no_port() {
        let st = State::new();
        let (c, own) = plan(&st, reg("node-a", "a", "10.88.0.2", "veth-a", false)).unwrap();
        assert_eq!((own.switch_port, own.behind_node), (1, false));
        assert_eq!(c.port_adds, [(1, String::from("veth-a"))]);
        let st = c.state;

        let (c, r1) = plan(&st, reg("node-b", "b1", "10.88.0.3", "veth-b1", true)).unwrap();
        assert!(r1.behind_node);
        assert_eq!(r1.switch_port, 300);
        assert_eq!(r1.next_hop_mac, Some(MAC_B));
        assert_eq!(r1.mac, [2, 0, 0, 0, 1, 1], "the pod keeps its own MAC");
        assert_eq!(r1.dmac(), MAC_B);
        assert!(!r1.host_if_local);
        assert!(c.port_adds.is_empty(), "{:?}", c.port_adds);
        assert!(r1.to_api().behind_node);
        let st = c.state;

        // A second pod behind the same node shares the uplink; a pod of its own still
        // gets the next free port of the range.
        let (c, r2) = plan(&st, reg("node-b", "b2", "10.88.0.4", "veth-b2", true)).unwrap();
        assert_eq!((r2.switch_port, r2.next_hop_mac), (300, Some(MAC_B)));
        assert_ne!(r2.backend_id, r1.backend_id);
        assert!(c.port_adds.is_empty());
        let st = c.state;
        let (c, own2) = plan(&st, reg("node-a", "a2", "10.88.0.5", "veth-a2", false)).unwrap();
        assert_eq!(own2.switch_port, 2);
        assert_eq!(c.port_adds, [(2, String::from("veth-a2"))]);
    }

    #[test]
    fn a_routed_pod_of_a_node_without_an_uplink_is_refused() {
        let st = State::new();
        let e = plan(&st, reg("node-z", "z", "10.88.0.2", "veth-z", true));
        let e = refused(e);
        assert!(matches!(e, Error::FailedPrecondition(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "node node-z has no uplink in the controller's configuration ([[uplinks]]): a \
             pod routed behind its node needs one"
        );
        // Without the flag the same node gets a port of its own.
        plan(&st, reg("node-z", "z", "10.88.0.2", "veth-z", false)).unwrap();
    }

    #[test]
    fn host_interface_names_clash_only_where_they_live() {
        let st = State::new();
        let (c, _) = plan(&st, reg("node-b", "b1", "10.88.0.2", "veth0", true)).unwrap();
        let st = c.state;
        // The same name attached to the switch, and on another node: no clash.
        let (c, _) = plan(&st, reg("node-a", "a1", "10.88.0.3", "veth0", false)).unwrap();
        let (c, _) = plan(&c.state, reg("node-c", "c1", "10.88.0.4", "veth0", true)).unwrap();
        // On the same node it is one interface.
        let e = plan(&c.state, reg("node-b", "b2", "10.88.0.5", "veth0", true));
        let e = refused(e);
        assert!(matches!(e, Error::AlreadyExists(_)), "{e:?}");
        assert!(e.to_string().contains("on node node-b"), "{e}");
        let e = plan(&c.state, reg("node-a", "a2", "10.88.0.6", "veth0", false));
        let e = refused(e);
        assert!(e.to_string().contains("already attached"), "{e}");
    }

    #[test]
    fn removing_or_replacing_a_routed_pod_never_detaches_the_uplink() {
        let st = State::new();
        let (c, r) = plan(&st, reg("node-b", "b1", "10.88.0.2", "veth-b1", true)).unwrap();
        let st = c.state;
        let (c, removed) = plan_deregistration(&st, &r.key);
        assert!(removed);
        let c = c.expect("a change");
        assert!(c.port_removes.is_empty(), "{:?}", c.port_removes);
        assert_eq!(c.drop_backends, [r.backend_id]);

        // A stale routed record gives way to a new registration of its key, of either
        // kind, and no port is detached for it.
        let mut stale = st.clone();
        if let Some(e) = stale.endpoints.get_mut(&r.key) {
            e.state = EndpointState::Stale;
            e.host_ifname.clear();
            e.backend_id = 0;
        }
        let (c, again) = plan(&stale, reg("node-b", "b1", "10.88.0.2", "veth-b1", true)).unwrap();
        assert!(c.port_adds.is_empty() && c.port_removes.is_empty());
        assert_eq!((again.switch_port, again.behind_node), (300, true));
        let (c, own) = plan(&stale, reg("node-b", "b1", "10.88.0.2", "veth-b1", false)).unwrap();
        assert!(c.port_removes.is_empty());
        assert_eq!(c.port_adds, [(own.switch_port, String::from("veth-b1"))]);
        assert!(!own.behind_node && own.next_hop_mac.is_none());
    }

    /// The planning of a migration between nodes: a routed pod of node B checkpointed
    /// for node C is restored there behind node C's uplink, locked, with the address
    /// it had on node B (the repoint then moves the backend: tests/routed_endpoints.rs).
    #[test]
    fn a_restore_on_another_node_is_routed_behind_that_node() {
        let st = State::new();
        let (c, src) = plan(&st, reg("node-b", "src", "10.88.0.2", "veth-s", true)).unwrap();
        let mut st = c.state;
        if let Some(e) = st.endpoints.get_mut(&src.key) {
            e.locked = true;
            e.state = EndpointState::Locked;
        }
        st.migrations.push(MigrationRec {
            id: "m1".into(),
            source_key: src.key.clone(),
            source_ip: Some(src.ip),
            state: MigrationState::Checkpointed,
            backend_id: src.backend_id,
            source_node: "node-b".into(),
            target_node: "node-c".into(),
            ..Default::default()
        });
        let mut r = reg("node-c", "tgt", "10.88.0.9", "veth-t", true);
        r.restore_of_ip = Some(src.ip);
        r.locked = true;
        let (c, tgt) = plan(&st, r).unwrap();
        assert!(c.port_adds.is_empty());
        assert_eq!(tgt.restore_of_ip, Some(src.ip));
        assert!(tgt.locked);
        assert_eq!((tgt.switch_port, tgt.next_hop_mac), (301, Some(MAC_C)));
        assert_eq!(tgt.node, "node-c");
    }
}
