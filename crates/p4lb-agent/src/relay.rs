//! The node's controller API for its own plugins: on a node whose controller is on
//! another host, the agent serves the controller API on the node's local root-only
//! socket (where the CNI plugin, the netavark plugin, the CRIU action script and the
//! OCI hook look for it) and relays each call to the controller over mutual TLS with the
//! node's certificate. The controller then trusts this node for its own endpoints only
//! (`Caller::Node` in the controller).
//!
//! What the relay adds, because the controller cannot see this node's kernel:
//!
//! - **Callers by the kernel's word**: a call is admitted when its peer (SO_PEERCRED) is
//!   root, or the socket was given a group ([`p4lb_api::unix`], as the controller's own
//!   socket); a claimed identity (a pid or netns path) must be one the caller may speak
//!   for ([`p4lb_netns::identity::check_claim`], the controller's rule).
//! - **Identities become endpoint keys**: over TCP an endpoint is named by key. The relay
//!   resolves the claimed namespace (its inode, and its addresses when
//!   `check_addresses`), finds the active endpoint of this node registered with that
//!   namespace (the netns paths the controller recorded, resolved here), checks that one
//!   of the endpoint's addresses is configured there, and forwards the call with the key.
//!   A namespace with no endpoint here is NOT_FOUND with the controller's own words
//!   ([`p4lb_api::NO_ENDPOINT_FOR_CALLER`]), so the action script treats it as it would
//!   on the controller's host.
//! - **The migration's target node**: while this agent migrates a container
//!   ([`Outgoing`], filled by the agent's `Migrate`), a LOCK or CHECKPOINTED of that
//!   container's endpoint carries `target_node`, so that the target node may restore it.
//!
//! Every other call is forwarded as it came; the controller decides what a node may do.
//! `Watch` is not relayed (UNIMPLEMENTED): it is an administrator's stream.
//!
//! The endpoint lookup lists the controller's endpoints at each call that names an
//! identity: one extra round trip, no cache that could go stale across a migration.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p4lb_api::unix::{self, UnixPeer};
use p4lb_netns::identity::{self, IdentityError, Netns, Peer};
use p4lb_proto::api::{self, controller_client::ControllerClient, controller_server};
use tonic::transport::{Channel, ClientTlsConfig};
use tonic::{Request, Response, Status};

/// The largest request the relay decodes (the controller's own limit).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Connecting to the controller, and each relayed call.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Containers this agent is migrating away, by name, with their target node.
#[derive(Debug, Clone, Default)]
pub struct Outgoing(Arc<Mutex<BTreeMap<String, String>>>);

impl Outgoing {
    /// Records that `container` is being migrated to `target`; false when it already is.
    pub fn insert(&self, container: &str, target: &str) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.contains_key(container) {
            return false;
        }
        m.insert(container.to_string(), target.to_string());
        true
    }

    pub fn remove(&self, container: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(container);
    }

    /// The target node of the migration of the container `e` belongs to, by the names
    /// its runtime gave it (Podman's container name, the pod's name, the container id).
    pub fn target_of(&self, e: &api::Endpoint) -> Option<String> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        NAME_LABELS
            .iter()
            .filter_map(|l| e.labels.get(*l))
            .chain(std::iter::once(&e.container_id))
            .find_map(|n| m.get(n).cloned())
    }
}

/// The endpoint labels that carry the name an administrator gives `p4lbctl migrate`.
const NAME_LABELS: &[&str] = &[
    p4lb_api::labels::PODMAN_NAME_LABEL,
    "k8s.pod",
    "io.kubernetes.pod.name",
    "name",
];

/// How the relay reaches the controller and whom it admits.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// This node's name: the name its certificate carries, which the controller records
    /// on the endpoints it registers.
    pub node: String,
    /// The controller's `https://HOST:PORT`.
    pub controller: String,
    pub tls: ClientTlsConfig,
    /// The socket was opened to this group (0660): its members are admitted too.
    pub group: Option<u32>,
    /// Also require an endpoint's address to be configured in the caller's namespace
    /// (the controller's `identity.check_addresses`).
    pub check_addresses: bool,
}

/// The relay service (`p4lb.v1.Controller` on the node's socket).
#[derive(Clone)]
pub struct Relay {
    s: Arc<RelaySettings>,
    outgoing: Outgoing,
    upstream: Arc<tokio::sync::Mutex<Option<ControllerClient<Channel>>>>,
}

fn status_of(e: IdentityError) -> Status {
    match e {
        IdentityError::Invalid(m) => Status::invalid_argument(m),
        IdentityError::NotFound(m) => Status::not_found(m),
        IdentityError::Denied(m) => Status::permission_denied(m),
        IdentityError::Internal(m) => Status::internal(m),
    }
}

fn ipv4(s: &str) -> Option<Ipv4Addr> {
    s.parse().ok()
}

impl Relay {
    pub fn new(s: RelaySettings, outgoing: Outgoing) -> Relay {
        Relay {
            s: Arc::new(s),
            outgoing,
            upstream: Arc::default(),
        }
    }

    /// The server, decoding requests of at most [`MAX_REQUEST_BYTES`].
    pub fn into_server(self) -> controller_server::ControllerServer<Relay> {
        controller_server::ControllerServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    /// The controller, connected at the first call (and again after the channel
    /// failed to connect; an established channel reconnects by itself).
    async fn upstream(&self) -> Result<ControllerClient<Channel>, Status> {
        let mut g = self.upstream.lock().await;
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        let ch = p4lb_api::client::tls_channel(
            &self.s.controller,
            &self.s.tls,
            CONNECT_TIMEOUT,
            Some(CALL_TIMEOUT),
        )
        .await
        .map_err(|e| {
            Status::unavailable(format!(
                "this node's relay cannot reach the controller at {}: {e}",
                self.s.controller
            ))
        })?;
        let c = ControllerClient::new(ch).max_decoding_message_size(8 * 1024 * 1024);
        *g = Some(c.clone());
        Ok(c)
    }

    /// The caller, admitted by its peer credentials. The relay serves its node's Unix
    /// socket only: a request without peer credentials is refused.
    fn admit<T>(&self, req: &Request<T>, call: &str) -> Result<UnixPeer, Status> {
        let Some(Some(peer)) = unix::peer(req) else {
            tracing::warn!(call, "refused relay call without peer credentials");
            return Err(Status::permission_denied(
                "the kernel did not report who is calling (the relay serves its node's Unix \
                 socket only): refused",
            ));
        };
        unix::admit(&peer, self.s.group.is_some(), "the p4lb API of this node").inspect_err(
            |_| tracing::warn!(call, uid = peer.uid, pid = ?peer.pid, "refused relay call from non-root caller"),
        )?;
        tracing::debug!(call, uid = peer.uid, pid = ?peer.pid, "relaying");
        Ok(peer)
    }

    /// Resolves a claimed identity and checks the caller may speak for it.
    fn claim(
        &self,
        peer: UnixPeer,
        id: Option<&api::Identity>,
        read_addrs: bool,
    ) -> Result<Netns, Status> {
        let id =
            id.ok_or_else(|| Status::invalid_argument("identity is required (pid or netns_path)"))?;
        let ns = identity::resolve(id.pid, &id.netns_path, read_addrs).map_err(status_of)?;
        let p = Peer {
            uid: peer.uid,
            pid: peer.pid,
        };
        identity::check_claim(p, &ns)
            .inspect_err(|e| tracing::warn!(?p, error = %e, "refused identity claim"))
            .map_err(status_of)?;
        Ok(ns)
    }

    /// The active endpoint of this node registered in namespace `ns`
    /// ([`endpoint_of`]), from the controller's list of endpoints.
    async fn endpoint_in(&self, ns: &Netns) -> Result<api::Endpoint, Status> {
        let mut up = self.upstream().await?;
        let reply = up.list_endpoints(api::ListEndpointsRequest {}).await?;
        let cut = reply
            .metadata()
            .get(p4lb_api::TRUNCATED_HEADER)
            .map(|v| v.to_str().unwrap_or("some").to_string());
        endpoint_of(
            reply.into_inner().endpoints,
            ns,
            &self.s.node,
            |path| identity::netns_inode(Path::new(path)).ok(),
            self.s.check_addresses,
            cut.as_deref(),
        )
    }
}

/// Which of `all` is node `node`'s active endpoint registered in namespace `ns`
/// (`inode_of` resolves a recorded netns path here), preferring one whose address is
/// configured there, checked like the controller checks its local callers: one of its
/// addresses must be configured in `ns` when `check_addresses`. Only `node`'s endpoints
/// are compared: another node's netns paths name namespaces of another kernel.
///
/// None found: NOT_FOUND in the controller's words ([`p4lb_api::NO_ENDPOINT_FOR_CALLER`]),
/// or RESOURCE_EXHAUSTED when the list was cut (`cut`: the controller's
/// [`p4lb_api::TRUNCATED_HEADER`]), since the endpoint may be among those left out.
fn endpoint_of(
    all: Vec<api::Endpoint>,
    ns: &Netns,
    node: &str,
    inode_of: impl Fn(&str) -> Option<u64>,
    check_addresses: bool,
    cut: Option<&str>,
) -> Result<api::Endpoint, Status> {
    let mut candidates: Vec<api::Endpoint> = all
        .into_iter()
        .filter(|e| e.node == node && !matches!(e.state.as_str(), "migrated" | "stale"))
        .filter(|e| !e.netns_path.is_empty() && inode_of(&e.netns_path) == Some(ns.inode))
        .collect();
    if let Some(addrs) = &ns.addrs {
        candidates.sort_by_key(|e| !ipv4(&e.ip).is_some_and(|ip| addrs.contains(&ip)));
    }
    let Some(e) = candidates.into_iter().next() else {
        if let Some(cut) = cut {
            return Err(Status::resource_exhausted(format!(
                "the controller's list of endpoints was cut to its size limit ({cut}): \
                 the endpoint of {} cannot be looked up through this node's relay",
                ns.described
            )));
        }
        return Err(Status::not_found(format!(
            "{} {} on this node",
            p4lb_api::NO_ENDPOINT_FOR_CALLER,
            ns.described
        )));
    };
    let ip = ipv4(&e.ip).ok_or_else(|| {
        Status::internal(format!(
            "endpoint {} has no IPv4 address ({:?})",
            e.key, e.ip
        ))
    })?;
    let others: Vec<Ipv4Addr> = e
        .migrated_ips
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(e.restore_of_ip.as_str()))
        .filter_map(ipv4)
        .collect();
    let ok_ip = identity::configured_ip(ns, ip, &others);
    // The namespace itself matched above; this checks the address.
    identity::verify(
        ns,
        ns.inode,
        ok_ip,
        &format!("endpoint {}", e.key),
        check_addresses,
    )
    .map_err(status_of)?;
    Ok(e)
}

type WatchStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<api::Event, Status>> + Send + 'static>>;

/// Forwards a call as it came, after admitting its caller.
macro_rules! forward {
    ($self:ident, $req:ident, $call:literal, $method:ident) => {{
        $self.admit(&$req, $call)?;
        let mut up = $self.upstream().await?;
        up.$method($req.into_inner()).await
    }};
}

#[tonic::async_trait]
impl controller_server::Controller for Relay {
    async fn register_endpoint(
        &self,
        req: Request<api::RegisterEndpointRequest>,
    ) -> Result<Response<api::Endpoint>, Status> {
        let peer = self.admit(&req, "RegisterEndpoint")?;
        let r = req.into_inner();
        // The controller records a node's netns path as given: it must name a
        // namespace here, one the caller may speak for.
        if !r.netns_path.is_empty() {
            let id = api::Identity {
                pid: 0,
                netns_path: r.netns_path.clone(),
            };
            self.claim(peer, Some(&id), false)
                .map_err(|e| Status::new(e.code(), format!("netns_path: {}", e.message())))?;
        }
        self.upstream().await?.register_endpoint(r).await
    }

    async fn deregister_endpoint(
        &self,
        req: Request<api::DeregisterEndpointRequest>,
    ) -> Result<Response<api::DeregisterEndpointResponse>, Status> {
        forward!(self, req, "DeregisterEndpoint", deregister_endpoint)
    }

    async fn get_endpoint(
        &self,
        req: Request<api::GetEndpointRequest>,
    ) -> Result<Response<api::Endpoint>, Status> {
        let peer = self.admit(&req, "GetEndpoint")?;
        let r = req.into_inner();
        if r.identity.is_some() {
            let ns = self.claim(peer, r.identity.as_ref(), false)?;
            return self.endpoint_in(&ns).await.map(Response::new);
        }
        self.upstream().await?.get_endpoint(r).await
    }

    async fn list_endpoints(
        &self,
        req: Request<api::ListEndpointsRequest>,
    ) -> Result<Response<api::ListEndpointsResponse>, Status> {
        forward!(self, req, "ListEndpoints", list_endpoints)
    }

    async fn update_endpoint_metadata(
        &self,
        req: Request<api::UpdateEndpointMetadataRequest>,
    ) -> Result<Response<api::Endpoint>, Status> {
        let peer = self.admit(&req, "UpdateEndpointMetadata")?;
        let mut r = req.into_inner();
        if r.identity.is_some() {
            let ns = self.claim(peer, r.identity.as_ref(), self.s.check_addresses)?;
            let e = self.endpoint_in(&ns).await?;
            if !r.key.is_empty() && r.key != e.key {
                return Err(Status::permission_denied(format!(
                    "{} is not endpoint {}",
                    ns.described, r.key
                )));
            }
            r.key = e.key;
            r.identity = None;
        }
        self.upstream().await?.update_endpoint_metadata(r).await
    }

    async fn garbage_collect(
        &self,
        req: Request<api::GarbageCollectRequest>,
    ) -> Result<Response<api::GarbageCollectResponse>, Status> {
        forward!(self, req, "GarbageCollect", garbage_collect)
    }

    async fn add_service(
        &self,
        req: Request<api::AddServiceRequest>,
    ) -> Result<Response<api::Service>, Status> {
        forward!(self, req, "AddService", add_service)
    }

    async fn remove_service(
        &self,
        req: Request<api::RemoveServiceRequest>,
    ) -> Result<Response<api::RemoveServiceResponse>, Status> {
        forward!(self, req, "RemoveService", remove_service)
    }

    async fn list_services(
        &self,
        req: Request<api::ListServicesRequest>,
    ) -> Result<Response<api::ListServicesResponse>, Status> {
        forward!(self, req, "ListServices", list_services)
    }

    async fn migration_event(
        &self,
        req: Request<api::MigrationEventRequest>,
    ) -> Result<Response<api::Migration>, Status> {
        let peer = self.admit(&req, "MigrationEvent")?;
        let mut r = req.into_inner();
        if !r.endpoint_key.is_empty() {
            return Err(Status::invalid_argument(
                "endpoint_key is for callers over TCP; a caller on this node proves its \
                 endpoint with identity",
            ));
        }
        let ns = self.claim(peer, r.identity.as_ref(), self.s.check_addresses)?;
        let e = self.endpoint_in(&ns).await?;
        let phase = api::MigrationPhase::try_from(r.phase).ok();
        if r.target_node.is_empty()
            && matches!(
                phase,
                Some(api::MigrationPhase::Lock | api::MigrationPhase::Checkpointed)
            )
        {
            if let Some(t) = self.outgoing.target_of(&e) {
                tracing::info!(endpoint = %e.key, target = %t, "the migration's target node comes from this agent's migration");
                r.target_node = t;
            }
        }
        r.endpoint_key = e.key;
        r.identity = None;
        self.upstream().await?.migration_event(r).await
    }

    async fn list_migrations(
        &self,
        req: Request<api::ListMigrationsRequest>,
    ) -> Result<Response<api::ListMigrationsResponse>, Status> {
        forward!(self, req, "ListMigrations", list_migrations)
    }

    async fn get_migration(
        &self,
        req: Request<api::GetMigrationRequest>,
    ) -> Result<Response<api::Migration>, Status> {
        forward!(self, req, "GetMigration", get_migration)
    }

    async fn status(
        &self,
        req: Request<api::StatusRequest>,
    ) -> Result<Response<api::StatusResponse>, Status> {
        forward!(self, req, "Status", status)
    }

    async fn dump_tables(
        &self,
        req: Request<api::DumpTablesRequest>,
    ) -> Result<Response<api::DumpTablesResponse>, Status> {
        forward!(self, req, "DumpTables", dump_tables)
    }

    async fn list_switch_ports(
        &self,
        req: Request<api::ListPortsRequest>,
    ) -> Result<Response<api::ListPortsResponse>, Status> {
        forward!(self, req, "ListSwitchPorts", list_switch_ports)
    }

    async fn metrics(
        &self,
        req: Request<api::MetricsRequest>,
    ) -> Result<Response<api::MetricsResponse>, Status> {
        forward!(self, req, "Metrics", metrics)
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<api::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.admit(&req, "Watch")?;
        Err(Status::unimplemented(
            "Watch is not relayed by a node: watch the controller itself \
             (p4lbctl --controller https://…)",
        ))
    }

    async fn register_node(
        &self,
        req: Request<api::RegisterNodeRequest>,
    ) -> Result<Response<api::Node>, Status> {
        forward!(self, req, "RegisterNode", register_node)
    }

    async fn list_nodes(
        &self,
        req: Request<api::ListNodesRequest>,
    ) -> Result<Response<api::ListNodesResponse>, Status> {
        forward!(self, req, "ListNodes", list_nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(labels: &[(&str, &str)], cid: &str) -> api::Endpoint {
        api::Endpoint {
            container_id: cid.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn ep(key: &str, node: &str, ip: &str, netns: &str, state: &str) -> api::Endpoint {
        api::Endpoint {
            key: key.into(),
            node: node.into(),
            ip: ip.into(),
            netns_path: netns.into(),
            state: state.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_namespace_is_matched_to_this_nodes_active_endpoint_registered_in_it() {
        let inode_of = |p: &str| match p {
            "/run/netns/a" => Some(7),
            "/run/netns/b" => Some(8),
            _ => None,
        };
        let ns = Netns {
            inode: 7,
            addrs: Some(vec!["10.0.0.6".parse().unwrap()]),
            described: "pid 42".into(),
        };
        let all = vec![
            // Another node's path that happens to name this namespace here.
            ep("other/eth0", "node-b", "10.0.0.6", "/run/netns/a", "ready"),
            ep(
                "gone/eth0",
                "node-a",
                "10.0.0.6",
                "/run/netns/a",
                "migrated",
            ),
            ep("side/eth0", "node-a", "10.0.0.5", "/run/netns/a", "ready"),
            ep("web/eth0", "node-a", "10.0.0.6", "/run/netns/a", "locked"),
            ep(
                "elsewhere/eth0",
                "node-a",
                "10.0.0.6",
                "/run/netns/b",
                "ready",
            ),
        ];
        let e = endpoint_of(all.clone(), &ns, "node-a", inode_of, true, None).unwrap();
        assert_eq!(
            e.key, "web/eth0",
            "the endpoint whose address is configured there"
        );

        // Its address is not configured there: refused when checking, as the controller.
        let bare = Netns {
            addrs: Some(vec![]),
            ..ns.clone()
        };
        let only = vec![all[2].clone()];
        let e = endpoint_of(only.clone(), &bare, "node-a", inode_of, true, None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(endpoint_of(only, &bare, "node-a", inode_of, false, None).is_ok());

        // None: the controller's words, or the list was cut.
        let e = endpoint_of(all.clone(), &ns, "node-c", inode_of, true, None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(
            e.message().starts_with(p4lb_api::NO_ENDPOINT_FOR_CALLER),
            "{}",
            e.message()
        );
        let e = endpoint_of(all, &ns, "node-c", inode_of, true, Some("10 of 20")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("10 of 20"), "{}", e.message());
    }

    #[tokio::test]
    async fn a_request_that_did_not_come_over_the_unix_socket_is_refused() {
        use controller_server::Controller;
        let relay = Relay::new(
            RelaySettings {
                node: "node-a".into(),
                controller: "https://127.0.0.1:1".into(),
                tls: ClientTlsConfig::new(),
                group: None,
                check_addresses: true,
            },
            Outgoing::default(),
        );
        let e = relay
            .status(Request::new(api::StatusRequest {}))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        let e = relay
            .migration_event(Request::new(api::MigrationEventRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    }

    #[test]
    fn an_endpoint_is_matched_to_the_migration_of_its_container_by_name() {
        let o = Outgoing::default();
        assert!(o.insert("web", "node-b"));
        assert!(
            !o.insert("web", "node-c"),
            "one migration of a container at a time"
        );
        assert!(o.insert("cache-pod", "node-c"));
        let podman = endpoint(&[("podman.name", "web")], "0123abcd");
        let pod = endpoint(&[("k8s.pod", "cache-pod")], "sandbox1");
        let other = endpoint(&[("podman.name", "db"), ("app", "web")], "web2");
        assert_eq!(o.target_of(&podman).as_deref(), Some("node-b"));
        assert_eq!(o.target_of(&pod).as_deref(), Some("node-c"));
        // A label other than a name that matches counts for nothing.
        assert_eq!(o.target_of(&other), None);
        o.remove("web");
        assert_eq!(o.target_of(&podman), None);
        // By container id when the runtime gave no name.
        assert!(o.insert("0123abcd", "node-b"));
        assert_eq!(
            o.target_of(&endpoint(&[], "0123abcd")).as_deref(),
            Some("node-b")
        );
    }
}
