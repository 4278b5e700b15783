//! Running the switch: the gRPC server (P4Runtime + SwitchPorts) and the data plane, either
//! from the `p4lb-switch` binary or embedded in another process ([`serve`]). Who may connect
//! is [`crate::access`]'s; how large a message may be, [`crate::limits`]'. The process that
//! embeds the switch may also call the same services without the listener
//! ([`SwitchHandle::in_process`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use p4lb_proto::api::switch_ports_server::SwitchPortsServer;
use p4lb_proto::p4runtime::p4_runtime_server::P4RuntimeServer;
use tokio::sync::oneshot;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

use crate::access;
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::ports::{PortError, PortManager};
use crate::ports_service::SwitchPortsService;
use crate::runtime::{DataplaneSlot, Device, P4RuntimeService};
use crate::tls::TlsFiles;

/// Where the gRPC server listens: `unix:/path` (root only), or `HOST:PORT` (also written
/// `tcp://HOST:PORT`) with mutual TLS ([`crate::tls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for GrpcAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(p) = s.strip_prefix("unix:") {
            let p = p.trim_start_matches("//");
            if p.is_empty() {
                return Err("unix: address needs a path".into());
            }
            return Ok(GrpcAddr::Unix(PathBuf::from(p)));
        }
        s.strip_prefix("tcp://")
            .unwrap_or(s)
            .parse::<SocketAddr>()
            .map(GrpcAddr::Tcp)
            .map_err(|e| format!("invalid gRPC address `{s}` (tcp://HOST:PORT or unix:/path): {e}"))
    }
}

impl std::fmt::Display for GrpcAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrpcAddr::Tcp(a) => write!(f, "{a}"),
            GrpcAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SwitchConfig {
    pub grpc_addr: GrpcAddr,
    pub device_id: u64,
    /// (port number, interface) attached at start.
    pub ports: Vec<(u32, String)>,
    /// Accepted for command-line compatibility with simple_switch_grpc; the p4lb program
    /// never sends to or receives from the CPU port.
    pub cpu_port: Option<u32>,
    /// Scheduling priority (nice value) of the data-plane thread; `None` leaves it alone.
    pub dataplane_nice: Option<i32>,
    /// Receive through PACKET_MMAP (TPACKET_V3) rings instead of `recvmmsg`.
    pub rx_ring: bool,
    /// Mutual TLS on a TCP listener (required for TCP unless `insecure_loopback`).
    pub tls: Option<TlsFiles>,
    /// Serve TCP without TLS, on a loopback address only (tests; every local user can
    /// connect).
    pub insecure_loopback: bool,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            grpc_addr: GrpcAddr::Unix(PathBuf::from(crate::access::DEFAULT_SOCKET)),
            device_id: 0,
            ports: Vec::new(),
            cpu_port: None,
            dataplane_nice: None,
            rx_ring: false,
            tls: None,
            insecure_loopback: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("refusing to listen on {addr}: {source}")]
    Refused {
        addr: String,
        source: crate::access::AccessError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error(
        "refusing to serve {addr} over TCP without TLS: give --tls-cert, --tls-key and \
         --tls-client-ca (or, for a test on a loopback address, --insecure-loopback)"
    )]
    NoTls { addr: String },
    #[error("TLS for {addr}: {source}")]
    Tls {
        addr: String,
        source: crate::tls::TlsError,
    },
    #[error("TLS for {addr}: {source}")]
    TlsSetup {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("cannot start the data plane: {0}")]
    Dataplane(std::io::Error),
    #[error(transparent)]
    Port(#[from] PortError),
}

/// A running switch.
#[derive(Debug)]
pub struct SwitchHandle {
    /// The address actually bound (a TCP port 0 request is resolved).
    pub addr: GrpcAddr,
    pub device: Arc<Device>,
    pub ports: Arc<PortManager>,
    routes: tonic::service::Routes,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl SwitchHandle {
    /// URI a tonic client can connect to (`http://HOST:PORT`; for Unix sockets use
    /// [`GrpcAddr::Unix`] with a custom connector).
    pub fn endpoint(&self) -> String {
        match &self.addr {
            GrpcAddr::Tcp(a) => format!("http://{a}"),
            GrpcAddr::Unix(p) => format!("unix:{}", p.display()),
        }
    }

    /// The switch's gRPC services (P4Runtime and SwitchPorts) for the process that runs
    /// it, as a tower service: a client built on it sends the same messages as over the
    /// listener, with the same size limits, but no socket, HTTP/2 framing or connection
    /// task carries them, and the listener's access check (the caller's uid) does not
    /// apply, the caller being this process.
    pub fn in_process(&self) -> tonic::service::Routes {
        self.routes.clone()
    }

    /// Stops serving and the data plane.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut t) = self.task.take() {
            // Graceful shutdown waits for open streams (a controller's StreamChannel never
            // ends by itself): give them a moment, then stop serving regardless.
            if tokio::time::timeout(std::time::Duration::from_secs(1), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
        let ports = self.ports.clone();
        let _ = tokio::task::spawn_blocking(move || ports.shutdown()).await;
        if let GrpcAddr::Unix(p) = &self.addr {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Waits until the server stops (error or shutdown).
    pub async fn wait(mut self) -> Result<(), tonic::transport::Error> {
        match self.task.take() {
            Some(t) => t.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

/// Starts the switch inside the current tokio runtime.
pub async fn serve(config: SwitchConfig) -> Result<SwitchHandle, ServeError> {
    let slot = Arc::new(DataplaneSlot::default());
    let device = Arc::new(Device::new(config.device_id, slot.clone()));
    let ports = Arc::new(
        PortManager::start(slot, config.dataplane_nice, config.rx_ring)
            .map_err(ServeError::Dataplane)?,
    );
    for (num, iface) in &config.ports {
        ports.add(*num, iface)?;
    }
    let p4rt = P4RuntimeServer::new(P4RuntimeService {
        device: device.clone(),
    })
    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let sp = SwitchPortsServer::new(SwitchPortsService {
        ports: ports.clone(),
    })
    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let routes = tonic::service::Routes::new(p4rt).add_service(sp).prepare();
    let mut builder = tonic::transport::Server::builder();
    if let GrpcAddr::Tcp(a) = &config.grpc_addr {
        match &config.tls {
            Some(files) => {
                let addr = a.to_string();
                let tls = crate::tls::server_config(files).map_err(|source| ServeError::Tls {
                    addr: addr.clone(),
                    source,
                })?;
                builder = builder
                    .tls_config(tls)
                    .map_err(|source| ServeError::TlsSetup { addr, source })?;
            }
            None if config.insecure_loopback => {
                access::check_tcp(a).map_err(|source| ServeError::Refused {
                    addr: a.to_string(),
                    source,
                })?;
            }
            None => {
                return Err(ServeError::NoTls {
                    addr: a.to_string(),
                })
            }
        }
    }
    let router = builder
        .layer(tonic::service::InterceptorLayer::new(access::root_only))
        .add_routes(routes.clone());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let stop = async move {
        let _ = stop_rx.await;
    };
    let (addr, task) = match &config.grpc_addr {
        GrpcAddr::Tcp(a) => {
            let l =
                tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|source| ServeError::Listen {
                        addr: a.to_string(),
                        source,
                    })?;
            let bound = l.local_addr().map_err(|source| ServeError::Listen {
                addr: a.to_string(),
                source,
            })?;
            let inc = TcpListenerStream::new(l);
            (
                GrpcAddr::Tcp(bound),
                tokio::spawn(router.serve_with_incoming_shutdown(inc, stop)),
            )
        }
        GrpcAddr::Unix(p) => {
            let listen_err = |source| ServeError::Listen {
                addr: format!("unix:{}", p.display()),
                source,
            };
            let refused = |source| ServeError::Refused {
                addr: format!("unix:{}", p.display()),
                source,
            };
            access::prepare_socket_dir(p).map_err(refused)?;
            access::remove_stale_socket(p).map_err(refused)?;
            let l = access::bind_private(p).map_err(listen_err)?;
            let inc = UnixListenerStream::new(l);
            (
                GrpcAddr::Unix(p.clone()),
                tokio::spawn(router.serve_with_incoming_shutdown(inc, stop)),
            )
        }
    };
    tracing::info!(addr = %addr, device_id = config.device_id, "p4lb-switch serving P4Runtime");
    Ok(SwitchHandle {
        addr,
        device,
        ports,
        routes,
        shutdown: Some(stop_tx),
        task: Some(task),
    })
}
