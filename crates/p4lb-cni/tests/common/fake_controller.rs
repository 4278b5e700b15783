//! A stand-in for p4lb-controller's endpoint API, served on a Unix socket inside the
//! test process. Used only while the real controller is not available to the tests
//! (see `Controller::start` in mod.rs); it implements the calls the plugin makes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use p4lb_proto::api::controller_server::{Controller, ControllerServer};
use p4lb_proto::api::*;
use tonic::{Request, Response, Status};

#[derive(Default)]
pub struct State {
    pub endpoints: BTreeMap<String, Endpoint>,
    pub registered: Vec<RegisterEndpointRequest>,
    pub next_port: u32,
    pub ready: bool,
    pub switch_connected: bool,
    pub router_mac: String,
}

#[derive(Clone)]
pub struct Fake {
    pub state: Arc<Mutex<State>>,
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Controller for Fake {
    async fn register_endpoint(&self, r: Request<RegisterEndpointRequest>) -> R<Endpoint> {
        let r = r.into_inner();
        let mut s = self.state.lock().unwrap();
        let key = format!("{}/{}", r.container_id, r.ifname);
        if r.ip.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(Status::invalid_argument(format!("bad ip {:?}", r.ip)));
        }
        if s.endpoints.contains_key(&key) {
            return Err(Status::already_exists(key));
        }
        if s.endpoints.values().any(|e| e.ip == r.ip) {
            return Err(Status::already_exists(format!("ip {}", r.ip)));
        }
        s.next_port += 1;
        let ep = Endpoint {
            key: key.clone(),
            container_id: r.container_id.clone(),
            ifname: r.ifname.clone(),
            netns_path: r.netns_path.clone(),
            ip: r.ip.clone(),
            prefix_len: r.prefix_len,
            mac: r.mac.clone(),
            gateway: r.gateway.clone(),
            host_ifname: r.host_ifname.clone(),
            switch_port: s.next_port,
            backend_id: s.next_port,
            locked: r.locked,
            labels: r.labels.clone(),
            network: r.network.clone(),
            state: if r.locked { "locked" } else { "ready" }.into(),
            router_mac: s.router_mac.clone(),
            restore_of_ip: r.restore_of_ip.clone(),
            ..Default::default()
        };
        s.endpoints.insert(key, ep.clone());
        s.registered.push(r);
        Ok(Response::new(ep))
    }
    async fn deregister_endpoint(
        &self,
        r: Request<DeregisterEndpointRequest>,
    ) -> R<DeregisterEndpointResponse> {
        let r = r.into_inner();
        let key = format!("{}/{}", r.container_id, r.ifname);
        let existed = self.state.lock().unwrap().endpoints.remove(&key).is_some();
        Ok(Response::new(DeregisterEndpointResponse { existed }))
    }
    async fn get_endpoint(&self, r: Request<GetEndpointRequest>) -> R<Endpoint> {
        let r = r.into_inner();
        let s = self.state.lock().unwrap();
        s.endpoints
            .get(&r.key)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(r.key))
    }
    async fn list_endpoints(&self, _: Request<ListEndpointsRequest>) -> R<ListEndpointsResponse> {
        let s = self.state.lock().unwrap();
        Ok(Response::new(ListEndpointsResponse {
            endpoints: s.endpoints.values().cloned().collect(),
        }))
    }
    async fn update_endpoint_metadata(
        &self,
        _: Request<UpdateEndpointMetadataRequest>,
    ) -> R<Endpoint> {
        Err(Status::unimplemented("fake"))
    }
    async fn garbage_collect(
        &self,
        r: Request<GarbageCollectRequest>,
    ) -> R<GarbageCollectResponse> {
        let r = r.into_inner();
        let valid: Vec<String> = r
            .valid_attachments
            .iter()
            .map(|a| format!("{}/{}", a.container_id, a.ifname))
            .collect();
        let mut s = self.state.lock().unwrap();
        let stale: Vec<String> = s
            .endpoints
            .values()
            .filter(|e| e.network == r.network && !valid.contains(&e.key))
            .map(|e| e.key.clone())
            .collect();
        for k in &stale {
            s.endpoints.remove(k);
        }
        Ok(Response::new(GarbageCollectResponse {
            removed_keys: stale,
        }))
    }
    async fn add_service(&self, _: Request<AddServiceRequest>) -> R<Service> {
        Err(Status::unimplemented("fake"))
    }
    async fn remove_service(&self, _: Request<RemoveServiceRequest>) -> R<RemoveServiceResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_services(&self, _: Request<ListServicesRequest>) -> R<ListServicesResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn migration_event(&self, _: Request<MigrationEventRequest>) -> R<Migration> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_migrations(
        &self,
        _: Request<ListMigrationsRequest>,
    ) -> R<ListMigrationsResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_migration(&self, _: Request<GetMigrationRequest>) -> R<Migration> {
        Err(Status::unimplemented("fake"))
    }
    async fn status(&self, _: Request<StatusRequest>) -> R<StatusResponse> {
        let s = self.state.lock().unwrap();
        Ok(Response::new(StatusResponse {
            ready: s.ready,
            switch_connected: s.switch_connected,
            switch_kind: "fake".into(),
            endpoints: s.endpoints.len() as u32,
            message: if s.ready { "ok" } else { "starting" }.into(),
            ..Default::default()
        }))
    }
    async fn dump_tables(&self, _: Request<DumpTablesRequest>) -> R<DumpTablesResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_switch_ports(
        &self,
        _: Request<p4lb_proto::api::ListPortsRequest>,
    ) -> R<p4lb_proto::api::ListPortsResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn metrics(&self, _: Request<MetricsRequest>) -> R<MetricsResponse> {
        Err(Status::unimplemented("fake"))
    }
    type WatchStream = tokio_stream::Empty<Result<Event, Status>>;
    async fn watch(&self, _: Request<WatchRequest>) -> R<Self::WatchStream> {
        Err(Status::unimplemented("fake"))
    }
    async fn register_node(&self, _: Request<RegisterNodeRequest>) -> R<Node> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_nodes(&self, _: Request<ListNodesRequest>) -> R<ListNodesResponse> {
        Err(Status::unimplemented("fake"))
    }
}

/// Serves a fake on `socket` from a background thread; returns its state.
pub fn serve(
    socket: &Path,
    router_mac: &str,
) -> (
    Arc<Mutex<State>>,
    std::thread::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let state = Arc::new(Mutex::new(State {
        ready: true,
        switch_connected: true,
        router_mac: router_mac.to_string(),
        ..Default::default()
    }));
    let fake = Fake {
        state: state.clone(),
    };
    let _ = std::fs::remove_file(socket);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let socket = socket.to_path_buf();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::UnixListener::bind(&socket).unwrap();
            ready_tx.send(()).unwrap();
            tonic::transport::Server::builder()
                .add_service(ControllerServer::new(fake))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    async {
                        let _ = rx.await;
                    },
                )
                .await
                .unwrap();
        });
    });
    ready_rx.recv().unwrap();
    (state, handle, tx)
}
