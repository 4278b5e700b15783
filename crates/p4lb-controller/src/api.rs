//! The gRPC API (p4lb.v1.Controller): caller checks (who calls: [`Caller`], from the
//! transport), then the calls of [`crate::endpoints`], [`crate::services`],
//! [`crate::migration`] and [`crate::nodes`], which apply the rules by node.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use p4lb_proto::api::{self, controller_server, Identity};

use crate::caller::Caller;
use crate::controller::Controller;
use crate::entries::{format_action, format_match};
use crate::error::{Error, Result};
use crate::identity;
use crate::limits::{self, check_request, take_within, Request as Checked};
use crate::metrics::Metrics;

/// Who may call: on the Unix socket root, or members of the configured socket group;
/// over TCP holders of a client certificate of the client CA (the TLS handshake checks
/// it), admins when their certificate's name is in `admins`.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub group: Option<u32>,
    pub admins: Vec<String>,
}

/// The tonic service.
#[derive(Clone)]
pub struct Api {
    ctl: Arc<Controller>,
    access: Access,
}

impl Api {
    pub fn new(ctl: Arc<Controller>, access: Access) -> Api {
        Api { ctl, access }
    }

    /// The server, decoding requests of at most [`limits::MAX_REQUEST_BYTES`].
    pub fn into_server(self) -> controller_server::ControllerServer<Api> {
        controller_server::ControllerServer::new(self)
            .max_decoding_message_size(limits::MAX_REQUEST_BYTES)
    }

    /// Refuses a request over a limit (INVALID_ARGUMENT naming the limit).
    fn check(&self, call: &str, r: Checked<'_>) -> Result<(), Status> {
        check_request(r).map_err(|e| {
            Metrics::inc(&self.ctl.metrics.api_errors);
            tracing::info!(call, error = %e, "API call refused");
            Status::from(e)
        })
    }

    /// A list reply cut to [`limits::MAX_LIST_REPLY_BYTES`]; a cut reply carries
    /// the metadata [`limits::TRUNCATED_HEADER`] = "<returned> of <total>".
    fn list<T: prost::Message, R>(
        &self,
        call: &str,
        items: impl IntoIterator<Item = T>,
        wrap: impl FnOnce(Vec<T>) -> R,
    ) -> Response<R> {
        let (kept, total) = take_within(items, limits::MAX_LIST_REPLY_BYTES);
        let returned = kept.len();
        let mut resp = Response::new(wrap(kept));
        if returned < total {
            tracing::warn!(
                call,
                returned,
                total,
                limit = limits::MAX_LIST_REPLY_BYTES,
                "list reply cut to its size limit"
            );
            if let Ok(v) = format!("{returned} of {total}").parse() {
                resp.metadata_mut().insert(limits::TRUNCATED_HEADER, v);
            }
        }
        resp
    }

    /// Who calls, from the transport: the Unix socket's peer credentials (root or the
    /// socket's group), or the TLS client certificate's name. A TCP caller without a
    /// certificate name is refused (the TLS handshake already refused callers without
    /// a certificate of the client CA).
    fn authorize<T>(&self, req: &Request<T>, call: &str) -> Result<Caller, Status> {
        Metrics::inc(&self.ctl.metrics.api_calls);
        let Some(peer) = p4lb_api::unix::peer(req) else {
            return self.tcp_caller(req, call);
        };
        let Some(cred) = peer else {
            tracing::debug!(call, "API call on the Unix socket without peer credentials");
            return Ok(Caller::Local);
        };
        tracing::debug!(call, uid = cred.uid, gid = cred.gid, pid = ?cred.pid, "API call");
        if let Err(e) = p4lb_api::unix::admit(
            &cred,
            self.access.group.is_some(),
            "the p4lb controller API",
        ) {
            Metrics::inc(&self.ctl.metrics.api_errors);
            tracing::warn!(call, uid = cred.uid, pid = ?cred.pid, "refused API call from non-root caller");
            return Err(e);
        }
        Ok(Caller::Local)
    }

    /// A caller that is not on the Unix socket: a TLS client (admin or node by its
    /// certificate's name), or no transport at all (in-process).
    fn tcp_caller<T>(&self, req: &Request<T>, call: &str) -> Result<Caller, Status> {
        if let Some(name) = p4lb_api::tls::peer_name(req) {
            let caller = if self.access.admins.contains(&name) {
                Caller::Admin(name)
            } else {
                Caller::Node(name)
            };
            tracing::debug!(call, caller = %caller.describe(), peer = ?req.remote_addr(), "API call");
            return Ok(caller);
        }
        if req.remote_addr().is_some() || req.peer_certs().is_some() {
            Metrics::inc(&self.ctl.metrics.api_errors);
            tracing::warn!(call, peer = ?req.remote_addr(), "refused API call over TCP without a named client certificate");
            return Err(Status::permission_denied(
                "a caller over TCP needs a client certificate whose first DNS subject \
                 alternative name names it",
            ));
        }
        tracing::debug!(call, "API call without transport information (in-process)");
        Ok(Caller::InProcess)
    }

    /// Counts and logs a refusal by caller kind (a node calling an admin's call).
    fn require_admin(&self, caller: &Caller, call: &str) -> Result<(), Status> {
        caller.require_admin(call).map_err(|e| {
            Metrics::inc(&self.ctl.metrics.api_errors);
            tracing::warn!(call, caller = %caller.describe(), error = %e, "API call refused");
            e.into()
        })
    }

    /// The claimed `identity` must be one the connecting process may speak for
    /// ([`identity::check_claim`]). Claims that name nothing resolvable are left to
    /// the call, which reports them; connections without peer credentials (TCP,
    /// in-process) are not checked.
    fn check_identity<T>(
        &self,
        req: &Request<T>,
        id: Option<&Identity>,
        call: &str,
    ) -> Result<(), Status> {
        let Some(Some(cred)) = p4lb_api::unix::peer(req) else {
            return Ok(());
        };
        let Ok(ns) = identity::resolve(id, false) else {
            return Ok(());
        };
        let peer = identity::Peer {
            uid: cred.uid,
            pid: cred.pid,
        };
        identity::check_claim(peer, &ns).map_err(|e| {
            Metrics::inc(&self.ctl.metrics.api_errors);
            tracing::warn!(call, ?peer, error = %e, "refused identity claim");
            e.into()
        })
    }

    fn reply<T>(&self, call: &str, r: Result<T>) -> Result<Response<T>, Status> {
        match r {
            Ok(v) => Ok(Response::new(v)),
            Err(e) => {
                Metrics::inc(&self.ctl.metrics.api_errors);
                tracing::info!(call, error = %e, "API call refused");
                Err(e.into())
            }
        }
    }

    fn endpoint_api(&self, e: &crate::state::EndpointRec) -> api::Endpoint {
        let mut a = e.to_api();
        a.router_mac = self.ctl.cfg.switch.router_mac.to_ascii_lowercase();
        a
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<api::Event, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl controller_server::Controller for Api {
    async fn register_endpoint(
        &self,
        req: Request<api::RegisterEndpointRequest>,
    ) -> Result<Response<api::Endpoint>, Status> {
        let caller = self.authorize(&req, "RegisterEndpoint")?;
        self.check("RegisterEndpoint", Checked::Register(req.get_ref()))?;
        let r = self
            .ctl
            .register_endpoint_as(&caller, req.into_inner())
            .await;
        self.reply("RegisterEndpoint", r.map(|e| self.endpoint_api(&e)))
    }

    async fn deregister_endpoint(
        &self,
        req: Request<api::DeregisterEndpointRequest>,
    ) -> Result<Response<api::DeregisterEndpointResponse>, Status> {
        let caller = self.authorize(&req, "DeregisterEndpoint")?;
        self.check("DeregisterEndpoint", Checked::Deregister(req.get_ref()))?;
        let r = req.into_inner();
        let out = self
            .ctl
            .deregister_endpoint_as(&caller, &r.container_id, &r.ifname)
            .await
            .map(|existed| api::DeregisterEndpointResponse { existed });
        self.reply("DeregisterEndpoint", out)
    }

    async fn get_endpoint(
        &self,
        req: Request<api::GetEndpointRequest>,
    ) -> Result<Response<api::Endpoint>, Status> {
        let caller = self.authorize(&req, "GetEndpoint")?;
        self.check("GetEndpoint", Checked::GetEndpoint(req.get_ref()))?;
        if req.get_ref().key.is_empty() && req.get_ref().ip.is_empty() {
            self.check_identity(&req, req.get_ref().identity.as_ref(), "GetEndpoint")?;
        }
        let r = self.ctl.get_endpoint_as(&caller, req.into_inner()).await;
        self.reply("GetEndpoint", r.map(|e| self.endpoint_api(&e)))
    }

    async fn list_endpoints(
        &self,
        req: Request<api::ListEndpointsRequest>,
    ) -> Result<Response<api::ListEndpointsResponse>, Status> {
        self.authorize(&req, "ListEndpoints")?;
        let g = self.ctl.inner.lock().await;
        let endpoints = g.state.endpoints.values().map(|e| self.endpoint_api(e));
        Ok(self.list("ListEndpoints", endpoints, |endpoints| {
            api::ListEndpointsResponse { endpoints }
        }))
    }

    async fn update_endpoint_metadata(
        &self,
        req: Request<api::UpdateEndpointMetadataRequest>,
    ) -> Result<Response<api::Endpoint>, Status> {
        let caller = self.authorize(&req, "UpdateEndpointMetadata")?;
        self.check(
            "UpdateEndpointMetadata",
            Checked::UpdateMetadata(req.get_ref()),
        )?;
        self.check_identity(
            &req,
            req.get_ref().identity.as_ref(),
            "UpdateEndpointMetadata",
        )?;
        let r = self.ctl.update_metadata_as(&caller, req.into_inner()).await;
        self.reply("UpdateEndpointMetadata", r.map(|e| self.endpoint_api(&e)))
    }

    async fn garbage_collect(
        &self,
        req: Request<api::GarbageCollectRequest>,
    ) -> Result<Response<api::GarbageCollectResponse>, Status> {
        let caller = self.authorize(&req, "GarbageCollect")?;
        self.check("GarbageCollect", Checked::GarbageCollect(req.get_ref()))?;
        let r = self
            .ctl
            .garbage_collect_as(&caller, req.into_inner())
            .await
            .map(|removed_keys| api::GarbageCollectResponse { removed_keys });
        self.reply("GarbageCollect", r)
    }

    async fn add_service(
        &self,
        req: Request<api::AddServiceRequest>,
    ) -> Result<Response<api::Service>, Status> {
        let caller = self.authorize(&req, "AddService")?;
        self.require_admin(&caller, "AddService")?;
        self.check("AddService", Checked::AddService(req.get_ref()))?;
        let r = self.ctl.add_service(req.into_inner()).await;
        self.reply("AddService", r.map(|s| s.to_api()))
    }

    async fn remove_service(
        &self,
        req: Request<api::RemoveServiceRequest>,
    ) -> Result<Response<api::RemoveServiceResponse>, Status> {
        let caller = self.authorize(&req, "RemoveService")?;
        self.require_admin(&caller, "RemoveService")?;
        self.check("RemoveService", Checked::RemoveService(req.get_ref()))?;
        let r = self
            .ctl
            .remove_service(&req.into_inner().name)
            .await
            .map(|_| api::RemoveServiceResponse {});
        self.reply("RemoveService", r)
    }

    async fn list_services(
        &self,
        req: Request<api::ListServicesRequest>,
    ) -> Result<Response<api::ListServicesResponse>, Status> {
        self.authorize(&req, "ListServices")?;
        let g = self.ctl.inner.lock().await;
        let services = g.state.services.values().map(|s| s.to_api());
        Ok(self.list("ListServices", services, |services| {
            api::ListServicesResponse { services }
        }))
    }

    async fn migration_event(
        &self,
        req: Request<api::MigrationEventRequest>,
    ) -> Result<Response<api::Migration>, Status> {
        let caller = self.authorize(&req, "MigrationEvent")?;
        self.check("MigrationEvent", Checked::MigrationEvent(req.get_ref()))?;
        self.check_identity(&req, req.get_ref().identity.as_ref(), "MigrationEvent")?;
        let r = self.ctl.migration_event_as(&caller, req.into_inner()).await;
        self.reply(
            "MigrationEvent",
            r.map(|a| api::Migration {
                endpoint: a.endpoint.as_ref().map(|e| self.endpoint_api(e)),
                ..a.migration.to_api()
            }),
        )
    }

    async fn list_migrations(
        &self,
        req: Request<api::ListMigrationsRequest>,
    ) -> Result<Response<api::ListMigrationsResponse>, Status> {
        self.authorize(&req, "ListMigrations")?;
        let g = self.ctl.inner.lock().await;
        let migrations = g.state.migrations.iter().map(|m| m.to_api());
        Ok(self.list("ListMigrations", migrations, |migrations| {
            api::ListMigrationsResponse { migrations }
        }))
    }

    async fn get_migration(
        &self,
        req: Request<api::GetMigrationRequest>,
    ) -> Result<Response<api::Migration>, Status> {
        self.authorize(&req, "GetMigration")?;
        self.check("GetMigration", Checked::GetMigration(req.get_ref()))?;
        let id = req.into_inner().id;
        let g = self.ctl.inner.lock().await;
        let r = g
            .state
            .migrations
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.to_api())
            .ok_or_else(|| Error::not_found(format!("no migration {id}")));
        drop(g);
        self.reply("GetMigration", r)
    }

    async fn status(
        &self,
        req: Request<api::StatusRequest>,
    ) -> Result<Response<api::StatusResponse>, Status> {
        self.authorize(&req, "Status")?;
        let gauges = self.ctl.gauges().await;
        let connected = self.ctl.link.is_connected();
        Ok(Response::new(api::StatusResponse {
            ready: gauges.switch_connected,
            switch_connected: connected,
            switch_address: self.ctl.link.address().to_string(),
            switch_kind: self.ctl.cfg.switch.kind.as_str().to_string(),
            endpoints: gauges.endpoints as u32,
            services: gauges.services as u32,
            active_migrations: gauges.active_migrations as u32,
            version: env!("CARGO_PKG_VERSION").to_string(),
            table_entries: (gauges.table_entries + 2 * gauges.conn_entries) as u64,
            message: if gauges.switch_connected {
                String::from("switch programmed")
            } else if connected {
                String::from("switch connected, reconciling")
            } else {
                String::from("switch not connected; state is kept and pushed on connect")
            },
        }))
    }

    async fn dump_tables(
        &self,
        req: Request<api::DumpTablesRequest>,
    ) -> Result<Response<api::DumpTablesResponse>, Status> {
        self.authorize(&req, "DumpTables")?;
        self.check("DumpTables", Checked::DumpTables(req.get_ref()))?;
        let want = req.into_inner().table;
        let rows = self.reply("DumpTables", self.ctl.dump_tables(&want).await)?;
        Ok(self.list("DumpTables", rows.into_inner(), |rows| {
            api::DumpTablesResponse { rows }
        }))
    }

    async fn list_switch_ports(
        &self,
        req: Request<api::ListPortsRequest>,
    ) -> Result<Response<api::ListPortsResponse>, Status> {
        self.authorize(&req, "ListSwitchPorts")?;
        let ports = self.reply("ListSwitchPorts", self.ctl.ports.list().await)?;
        Ok(self.list(
            "ListSwitchPorts",
            ports
                .into_inner()
                .into_iter()
                .map(|(port, iface)| api::Port {
                    port,
                    iface,
                    ..Default::default()
                }),
            |ports| api::ListPortsResponse { ports },
        ))
    }

    async fn metrics(
        &self,
        req: Request<api::MetricsRequest>,
    ) -> Result<Response<api::MetricsResponse>, Status> {
        self.authorize(&req, "Metrics")?;
        let g = self.ctl.gauges().await;
        Ok(Response::new(api::MetricsResponse {
            prometheus_text: self.ctl.metrics.render(g),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<api::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.authorize(&req, "Watch")?;
        let rx = self.ctl.events.subscribe();
        let s = tokio_stream::wrappers::BroadcastStream::new(rx);
        let s = futures::StreamExt::filter_map(s, |r| async move { r.ok().map(Ok) });
        Ok(Response::new(Box::pin(s)))
    }

    async fn register_node(
        &self,
        req: Request<api::RegisterNodeRequest>,
    ) -> Result<Response<api::Node>, Status> {
        let caller = self.authorize(&req, "RegisterNode")?;
        self.check("RegisterNode", Checked::RegisterNode(req.get_ref()))?;
        let r = self.ctl.register_node(&caller, req.into_inner()).await;
        self.reply("RegisterNode", r.map(|n| n.to_api()))
    }

    async fn list_nodes(
        &self,
        req: Request<api::ListNodesRequest>,
    ) -> Result<Response<api::ListNodesResponse>, Status> {
        self.authorize(&req, "ListNodes")?;
        let nodes = self.ctl.list_nodes().await.into_iter().map(|n| n.to_api());
        Ok(self.list("ListNodes", nodes, |nodes| api::ListNodesResponse { nodes }))
    }
}

impl Controller {
    /// Reads tables back from the switch as readable rows (`table` = full or short
    /// name; empty = all).
    pub async fn dump_tables(&self, table: &str) -> Result<Vec<api::TableRow>> {
        let tables: Vec<(u32, &str)> = p4lb_p4::tables::ALL
            .iter()
            .filter(|t| table.is_empty() || t.name == table || p4lb_p4::short_name(t.name) == table)
            .map(|t| (t.id, t.name))
            .collect();
        if tables.is_empty() {
            return Err(Error::not_found(format!("no table {table}")));
        }
        let mut rows = Vec::new();
        for (id, name) in tables {
            let mut entries = self.link.read_table(id, false).await?;
            for e in &mut entries {
                p4lb_p4::entries::canonicalize(e);
            }
            let mut r: Vec<api::TableRow> = entries
                .iter()
                .map(|e| api::TableRow {
                    table: name.to_string(),
                    r#match: format_match(e),
                    action: format_action(e),
                })
                .collect();
            r.sort_by(|a, b| a.r#match.cmp(&b.r#match));
            rows.extend(r);
        }
        Ok(rows)
    }
}
