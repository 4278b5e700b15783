//! The controller API client: every call bounded by a call timeout, and every
//! failure sorted into "the controller is unavailable" (down, socket missing,
//! no answer in time, broken connection) or "the controller refused" (it answered
//! with a gRPC status). Short-lived callers (the CNI plugin, the CRIU action
//! script, the OCI hook) must never hang the runtime that called them.
//!
//! A controller on another host is reached over TCP with mutual TLS (cargo feature
//! `tls`): [`tls_channel`] builds the channel (also for other p4lb TCP surfaces, such as
//! node agents), [`Client::connect_tls`] the client.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use p4lb_proto::api::controller_client::ControllerClient;
use p4lb_proto::api::{
    AddServiceRequest, Attachment, DeregisterEndpointRequest, DumpTablesRequest, Endpoint,
    GarbageCollectRequest, GetEndpointRequest, GetMigrationRequest, Identity, ListEndpointsRequest,
    ListMigrationsRequest, ListNodesRequest, ListPortsRequest, ListPortsResponse,
    ListServicesRequest, MetricsRequest, Migration, MigrationEventRequest, Node,
    RegisterEndpointRequest, RegisterNodeRequest, RemoveServiceRequest, Service, StatusRequest,
    StatusResponse, TableRow, UpdateEndpointMetadataRequest,
};
use tonic::transport::Channel;

use crate::connect::{connect_unix_bounded, error_chain, ConnectError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Could not talk to the controller at all (down, socket missing, timeout).
    /// `socket` is the Unix socket, or the `https://` address of a controller over TCP.
    #[error("p4lb controller at {} is unavailable: {detail}", socket.display())]
    Unavailable { socket: PathBuf, detail: String },
    /// The controller answered with an error.
    #[error("p4lb controller refused {call} ({code:?}): {message}")]
    Refused {
        call: &'static str,
        code: tonic::Code,
        message: String,
    },
}

/// How the controller's NOT_FOUND for a migration event begins when the caller's
/// network namespace holds no registered endpoint ([`ApiError::is_no_endpoint`]).
pub const NO_ENDPOINT_FOR_CALLER: &str = "no endpoint is registered for";

impl ApiError {
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(tonic::Code::NotFound)
    }

    /// The controller refused a migration event because the caller's network namespace
    /// holds no registered endpoint (not because of an unknown migration or pid).
    pub fn is_no_endpoint(&self) -> bool {
        matches!(self, Self::Refused { code: tonic::Code::NotFound, message, .. }
            if message.contains(NO_ENDPOINT_FOR_CALLER))
    }

    /// The controller's status code of a refusal; `None` when it was unavailable.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            Self::Unavailable { .. } => None,
        }
    }
}

/// Opens a gRPC channel over TCP with mutual TLS to `address` (`https://HOST:PORT`; the
/// server's certificate must name HOST), giving up after `connect_timeout`; with
/// `request_timeout`, every request on it is bounded too. The one TCP+TLS dialer of
/// p4lb's clients: the controller API, node agents, the controller's switch client.
#[cfg(feature = "tls")]
pub async fn tls_channel(
    address: &str,
    tls: &tonic::transport::ClientTlsConfig,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
) -> Result<Channel, ConnectError> {
    let failed = |detail: String| ConnectError::Failed {
        path: PathBuf::from(address),
        detail,
    };
    if !address.starts_with("https://") {
        return Err(failed(format!(
            "{address:?} is not an https://HOST:PORT address"
        )));
    }
    let mut endpoint = tonic::transport::Endpoint::from_shared(address.to_string())
        .map_err(|e| failed(format!("bad address {address:?}: {e}")))?
        .tls_config(tls.clone())
        .map_err(|e| failed(format!("TLS for {address}: {}", error_chain(&e))))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    if let Some(t) = request_timeout {
        endpoint = endpoint.timeout(t);
    }
    match tokio::time::timeout(connect_timeout, endpoint.connect()).await {
        Err(_) => Err(ConnectError::Timeout {
            path: PathBuf::from(address),
            timeout: connect_timeout,
        }),
        Ok(Err(e)) => Err(failed(error_chain(&e))),
        Ok(Ok(c)) => Ok(c),
    }
}

/// The controller's key of an attachment, "<container_id>/<ifname>".
pub fn endpoint_key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

/// A connection to the controller API. Cloning is cheap (one shared channel).
#[derive(Debug, Clone)]
pub struct Client {
    inner: ControllerClient<Channel>,
    call_timeout: Duration,
    socket: PathBuf,
}

impl Client {
    /// Connects to the API socket; connecting takes at most `connect_timeout`,
    /// each call at most `call_timeout`.
    pub async fn connect(
        socket: &Path,
        connect_timeout: Duration,
        call_timeout: Duration,
    ) -> Result<Self, ApiError> {
        let channel = connect_unix_bounded(socket, connect_timeout, call_timeout)
            .await
            .map_err(|e| ApiError::Unavailable {
                socket: socket.to_path_buf(),
                detail: match e {
                    ConnectError::Timeout { timeout, .. } => {
                        format!("no connection within {timeout:?}")
                    }
                    ConnectError::Failed { detail, .. } => detail,
                },
            })?;
        Ok(Self {
            inner: ControllerClient::new(channel),
            call_timeout,
            socket: socket.to_path_buf(),
        })
    }

    /// Connects to a controller over TCP with mutual TLS (`address` =
    /// `https://HOST:PORT`, `tls` from [`crate::tls::client_config`]); bounded like
    /// [`Client::connect`].
    #[cfg(feature = "tls")]
    pub async fn connect_tls(
        address: &str,
        tls: &tonic::transport::ClientTlsConfig,
        connect_timeout: Duration,
        call_timeout: Duration,
    ) -> Result<Self, ApiError> {
        let channel = tls_channel(address, tls, connect_timeout, Some(call_timeout))
            .await
            .map_err(|e| ApiError::Unavailable {
                socket: PathBuf::from(address),
                detail: e.to_string(),
            })?;
        Ok(Self {
            inner: ControllerClient::new(channel),
            call_timeout,
            socket: PathBuf::from(address),
        })
    }

    /// The socket this client talks to (the `https://` address over TCP).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The generated client on the same channel, for calls without a method here
    /// (e.g. the `Watch` stream); those calls are bounded only by the channel's
    /// request timeout.
    pub fn raw(&self) -> ControllerClient<Channel> {
        self.inner.clone()
    }

    /// Runs one call of the generated client, bounded by the call timeout.
    /// `call` names it in errors.
    pub async fn call<T>(
        &self,
        call: &'static str,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(self.call_timeout, fut).await {
            Err(_) => Err(ApiError::Unavailable {
                socket: self.socket.clone(),
                detail: format!("{call}: no answer within {:?}", self.call_timeout),
            }),
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => match s.code() {
                // Produced by the client itself (timeouts, broken connection);
                // the controller never answers these on purpose.
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                    Err(ApiError::Unavailable {
                        socket: self.socket.clone(),
                        detail: format!("{call}: {}", s.message()),
                    })
                }
                // A transport failure of this side (a status carrying a local error
                // as its source: a broken connection, a TLS handshake the server
                // refused), never an answer of the controller.
                tonic::Code::Unavailable | tonic::Code::Unknown
                    if std::error::Error::source(&s).is_some() =>
                {
                    Err(ApiError::Unavailable {
                        socket: self.socket.clone(),
                        detail: format!("{call}: {}", error_chain(&s)),
                    })
                }
                code => Err(ApiError::Refused {
                    call,
                    code,
                    message: s.message().to_owned(),
                }),
            },
        }
    }

    pub async fn register_endpoint(
        &self,
        req: RegisterEndpointRequest,
    ) -> Result<Endpoint, ApiError> {
        let mut c = self.raw();
        self.call("RegisterEndpoint", c.register_endpoint(req))
            .await
    }

    /// Removes the endpoint; `Ok(false)` when the controller did not know it.
    pub async fn deregister_endpoint(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<bool, ApiError> {
        let mut c = self.raw();
        let req = DeregisterEndpointRequest {
            container_id: container_id.to_owned(),
            ifname: ifname.to_owned(),
        };
        match self
            .call("DeregisterEndpoint", c.deregister_endpoint(req))
            .await
        {
            Ok(r) => Ok(r.existed),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The endpoint with key `key`; `Ok(None)` when there is none.
    pub async fn get_endpoint(&self, key: &str) -> Result<Option<Endpoint>, ApiError> {
        self.get_endpoint_by(GetEndpointRequest {
            key: key.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// The endpoint whose network namespace `pid` is in; `Ok(None)` when p4lb
    /// manages no endpoint there.
    pub async fn endpoint_of_pid(&self, pid: u32) -> Result<Option<Endpoint>, ApiError> {
        self.get_endpoint_by(GetEndpointRequest {
            identity: Some(Identity {
                pid,
                netns_path: String::new(),
            }),
            ..Default::default()
        })
        .await
    }

    async fn get_endpoint_by(&self, req: GetEndpointRequest) -> Result<Option<Endpoint>, ApiError> {
        let mut c = self.raw();
        match self.call("GetEndpoint", c.get_endpoint(req)).await {
            Ok(e) => Ok(Some(e)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn list_endpoints(&self) -> Result<Vec<Endpoint>, ApiError> {
        let mut c = self.raw();
        self.call("ListEndpoints", c.list_endpoints(ListEndpointsRequest {}))
            .await
            .map(|r| r.endpoints)
    }

    pub async fn update_endpoint_metadata(
        &self,
        req: UpdateEndpointMetadataRequest,
    ) -> Result<Endpoint, ApiError> {
        let mut c = self.raw();
        self.call("UpdateEndpointMetadata", c.update_endpoint_metadata(req))
            .await
    }

    /// Removes the endpoints of `network` that are not in `valid`; returns their keys.
    pub async fn garbage_collect(
        &self,
        network: &str,
        valid: Vec<Attachment>,
    ) -> Result<Vec<String>, ApiError> {
        let mut c = self.raw();
        let req = GarbageCollectRequest {
            network: network.to_owned(),
            valid_attachments: valid,
        };
        self.call("GarbageCollect", c.garbage_collect(req))
            .await
            .map(|r| r.removed_keys)
    }

    pub async fn add_service(&self, req: AddServiceRequest) -> Result<Service, ApiError> {
        let mut c = self.raw();
        self.call("AddService", c.add_service(req)).await
    }

    pub async fn remove_service(&self, name: &str) -> Result<(), ApiError> {
        let mut c = self.raw();
        let req = RemoveServiceRequest {
            name: name.to_owned(),
        };
        self.call("RemoveService", c.remove_service(req))
            .await
            .map(|_| ())
    }

    pub async fn list_services(&self) -> Result<Vec<Service>, ApiError> {
        let mut c = self.raw();
        self.call("ListServices", c.list_services(ListServicesRequest {}))
            .await
            .map(|r| r.services)
    }

    pub async fn migration_event(&self, req: MigrationEventRequest) -> Result<Migration, ApiError> {
        let mut c = self.raw();
        self.call("MigrationEvent", c.migration_event(req)).await
    }

    pub async fn list_migrations(&self) -> Result<Vec<Migration>, ApiError> {
        let mut c = self.raw();
        self.call(
            "ListMigrations",
            c.list_migrations(ListMigrationsRequest {}),
        )
        .await
        .map(|r| r.migrations)
    }

    /// Registers the calling node (named by its certificate; on the Unix socket the
    /// controller's own node) with its agent's `https://` address.
    pub async fn register_node(&self, agent_address: &str) -> Result<Node, ApiError> {
        let mut c = self.raw();
        let req = RegisterNodeRequest {
            agent_address: agent_address.to_owned(),
        };
        self.call("RegisterNode", c.register_node(req)).await
    }

    pub async fn list_nodes(&self) -> Result<Vec<Node>, ApiError> {
        let mut c = self.raw();
        self.call("ListNodes", c.list_nodes(ListNodesRequest {}))
            .await
            .map(|r| r.nodes)
    }

    pub async fn get_migration(&self, id: &str) -> Result<Migration, ApiError> {
        let mut c = self.raw();
        let req = GetMigrationRequest { id: id.to_owned() };
        self.call("GetMigration", c.get_migration(req)).await
    }

    pub async fn status(&self) -> Result<StatusResponse, ApiError> {
        let mut c = self.raw();
        self.call("Status", c.status(StatusRequest {})).await
    }

    /// Table entries read back from the switch; `table` empty means all tables.
    pub async fn dump_tables(&self, table: &str) -> Result<Vec<TableRow>, ApiError> {
        let mut c = self.raw();
        let req = DumpTablesRequest {
            table: table.to_owned(),
        };
        self.call("DumpTables", c.dump_tables(req))
            .await
            .map(|r| r.rows)
    }

    /// The switch's data-plane ports as the controller lists them (any switch kind).
    pub async fn list_switch_ports(&self) -> Result<ListPortsResponse, ApiError> {
        let mut c = self.raw();
        self.call("ListSwitchPorts", c.list_switch_ports(ListPortsRequest {}))
            .await
    }

    /// The Prometheus text of the controller's metrics.
    pub async fn metrics(&self) -> Result<String, ApiError> {
        let mut c = self.raw();
        self.call("Metrics", c.metrics(MetricsRequest {}))
            .await
            .map(|r| r.prometheus_text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_not_found_for_a_caller_without_endpoint_is_no_endpoint() {
        let refused = |code, message: &str| ApiError::Refused {
            call: "MigrationEvent",
            code,
            message: message.into(),
        };
        let no_ep = format!("{NO_ENDPOINT_FOR_CALLER} pid 7");
        assert!(refused(tonic::Code::NotFound, &no_ep).is_no_endpoint());
        assert!(!refused(tonic::Code::NotFound, "no migration \"mig-1\"").is_no_endpoint());
        assert!(!refused(tonic::Code::PermissionDenied, &no_ep).is_no_endpoint());
        let down = ApiError::Unavailable {
            socket: PathBuf::from("/run/p4lb/controller.sock"),
            detail: no_ep,
        };
        assert!(!down.is_no_endpoint());
    }
    use std::time::Instant;

    #[tokio::test]
    async fn a_missing_socket_is_unavailable_quickly() {
        let d = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let r = Client::connect(
            &d.path().join("none.sock"),
            Duration::from_millis(500),
            Duration::from_millis(500),
        )
        .await;
        assert!(matches!(r, Err(ApiError::Unavailable { .. })), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_silent_socket_times_out_as_unavailable() {
        // A listener that accepts but never speaks HTTP/2: connect or the call
        // must give up within the configured bounds.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("silent.sock");
        let l = tokio::net::UnixListener::bind(&p).unwrap();
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let t0 = Instant::now();
        let r = async {
            let c =
                Client::connect(&p, Duration::from_millis(300), Duration::from_millis(300)).await?;
            c.endpoint_of_pid(1).await
        }
        .await;
        assert!(matches!(r, Err(ApiError::Unavailable { .. })), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    }

    #[test]
    fn refusals_carry_their_code() {
        let e = ApiError::Refused {
            call: "GetEndpoint",
            code: tonic::Code::NotFound,
            message: "no such endpoint".into(),
        };
        assert!(e.is_not_found());
        assert_eq!(
            e.to_string(),
            "p4lb controller refused GetEndpoint (NotFound): no such endpoint"
        );
        let e = ApiError::Unavailable {
            socket: PathBuf::from("/run/x.sock"),
            detail: "gone".into(),
        };
        assert!(!e.is_not_found());
        assert_eq!(e.code(), None);
        assert_eq!(
            e.to_string(),
            "p4lb controller at /run/x.sock is unavailable: gone"
        );
    }

    #[test]
    fn keys_are_container_slash_ifname() {
        assert_eq!(endpoint_key("abc", "eth0"), "abc/eth0");
    }
}
