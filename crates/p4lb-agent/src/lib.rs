//! The p4lb node agent: one per node, it moves containers between nodes. An
//! administrator asks the source node's agent to migrate a container
//! (`p4lbctl migrate`); the source checkpoints it, streams the archive with its size
//! and SHA-256 to the target node's agent over mutual TLS, the target checks it and
//! restores it, and a failure after the checkpoint restores the container on the
//! source. Every phase is timed.
//!
//! # Where to look
//!
//! - [`service`]: the `Agent` gRPC service (`Migrate`, `Receive`, `NodeInfo`), who may
//!   call what, the migration's steps and what happens on each failure.
//! - [`archive`]: the archive on the wire: digest, the stream a source sends, the
//!   receiving side's checks (size limit, truncation, digest) into a private file.
//! - [`runtime`]: the [`runtime::Runtime`] trait, Podman's commands behind it
//!   ([`runtime::Podman`], global options per node), the configured one
//!   ([`runtime::NodeRuntime`]) and the in-memory fake for tests.
//! - [`cri_runtime`]: containerd over its CRI socket ([`runtime::CriRuntime`]): pods
//!   moved by name, the restore spec carried in the archive's header.
//! - [`cri`]: the CRI v1 client (`proto/cri.proto`, a subset written for p4lb), also
//!   used by the testbed's scenarios in p4lb-e2e.
//! - [`relay`]: the node's controller API for its own plugins (CNI and netavark
//!   plugins, CRIU action script, OCI hook) on its local socket, relayed to a controller
//!   on another host over mutual TLS: callers identified by this node's kernel,
//!   identities turned into endpoint keys, the migration's target node named.
//! - [`client`]: connecting to an agent (TLS server name = node name, keep-alive).
//! - [`config`]: the TOML configuration (`/etc/p4lb/agent.toml`).
//! - [`serve`]: the TCP listener with mutual TLS; [`register_forever`]: the node's
//!   registration with the controller (RegisterNode over TCP); `main.rs`: the binary.
//! - Tests: `tests/migrate.rs` (two agents with the fake runtime over real TLS on
//!   127.0.0.1); end to end with Podman: `crates/p4lb-e2e/tests/multi_node.rs`, with
//!   containerd: `crates/p4lb-e2e/tests/multi_node_cri.rs`.
//! - The API: `crates/p4lb-proto/proto/p4lb/v1/agent.proto`; the model and a
//!   walkthrough: docs/multi-node.md.

pub mod archive;
pub mod client;
pub mod config;
pub mod cri;
pub mod cri_runtime;
pub mod relay;
pub mod runtime;
pub mod service;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::{ClientTlsConfig, Server, ServerTlsConfig};

pub use config::Config;
pub use runtime::Runtime;
pub use service::{AgentService, Faults, Settings};

/// Why the agent could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("TLS: {0}")]
    Tls(String),
    #[error("work directory {path}: {source}")]
    WorkDir {
        path: String,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("relay socket: {0}")]
    RelaySocket(String),
}

/// Both sides of the node's mutual TLS from its configured files (key mode checked).
pub fn tls_configs(c: &Config) -> Result<(ServerTlsConfig, ClientTlsConfig), ServeError> {
    let t = &c.tls;
    let server = p4lb_api::tls::server_config(&t.ca, &t.cert, &t.key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    let client = p4lb_api::tls::client_config(&t.ca, &t.cert, &t.key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    Ok((server, client))
}

/// Creates the work directory 0700 (archives in transit are the containers' memory)
/// and removes the incoming archives an earlier run left ([`archive::remove_stale_incoming`]).
pub fn prepare_work_dir(dir: &std::path::Path) -> Result<(), ServeError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |source| ServeError::WorkDir {
        path: dir.display().to_string(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    let n = archive::remove_stale_incoming(dir).map_err(err)?;
    if n > 0 {
        tracing::info!(dir = %dir.display(), "removed {n} incoming archive(s) an earlier run left");
    }
    Ok(())
}

/// Serves `service` on `listener` with mutual TLS `tls` until `shutdown` completes.
pub async fn serve<R: Runtime>(
    listener: TcpListener,
    tls: ServerTlsConfig,
    service: AgentService<R>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    use tokio_stream::StreamExt;
    // tonic sets TCP_NODELAY only on sockets of its own listener: set it here, so that
    // small HTTP/2 frames (the receiver's WINDOW_UPDATEs) are not held back by Nagle.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        s.inspect(|s| {
            if let Err(e) = s.set_nodelay(true) {
                tracing::warn!("setting TCP_NODELAY: {e}");
            }
        })
    });
    Server::builder()
        .tls_config(tls)?
        .initial_stream_window_size(client::STREAM_WINDOW)
        .initial_connection_window_size(client::CONNECTION_WINDOW)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// Binds the relay's socket ([`p4lb_api::unix::bind_socket`]), unless something already
/// answers there: on the controller's own host that is the controller, whose socket the
/// relay must not take over.
pub fn bind_relay_socket(
    path: &std::path::Path,
    gid: Option<u32>,
) -> Result<tokio::net::UnixListener, ServeError> {
    p4lb_api::unix::bind_socket(path, gid).map_err(|e| {
        ServeError::RelaySocket(match e {
            p4lb_api::unix::SocketError::InUse(_) => format!(
                "{} is served already (a controller on this host, or another agent): a \
                 node with a controller needs no [relay]",
                path.display()
            ),
            e => e.to_string(),
        })
    })
}

/// Serves the node's relay ([`relay::Relay`]) on `listener` (bound with
/// [`bind_relay_socket`]) until the process ends.
pub async fn serve_relay(
    relay: relay::Relay,
    listener: tokio::net::UnixListener,
) -> Result<(), ServeError> {
    Server::builder()
        .add_service(relay.into_server())
        .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
        .await?;
    Ok(())
}

/// How often the agent registers its node again once registered (the controller keeps
/// the latest address), and how soon it retries while the controller is unreachable.
pub const REGISTER_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
pub const REGISTER_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Registers this node's agent (`c.advertise`) with the controller at `c.address` over
/// mutual TLS (`tls`: the node's certificate names the node), until it is reachable,
/// then again every [`REGISTER_EVERY`]. Runs until dropped.
pub async fn register_forever(c: config::ControllerConfig, tls: ClientTlsConfig) {
    let timeout = std::time::Duration::from_secs(5);
    let mut registered = false;
    loop {
        let r = match p4lb_api::Client::connect_tls(&c.address, &tls, timeout, timeout).await {
            Ok(client) => client.register_node(&c.advertise).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(n) => {
                if !registered {
                    tracing::info!(node = %n.name, controller = %c.address, agent = %n.agent_address, "registered with the controller");
                }
                registered = true;
                tokio::time::sleep(REGISTER_EVERY).await;
            }
            Err(e) => {
                tracing::warn!(controller = %c.address, "registering with the controller: {e}; retrying");
                registered = false;
                tokio::time::sleep(REGISTER_RETRY).await;
            }
        }
    }
}

/// The settings and runtime of an agent from its configuration.
pub fn from_config(
    c: &Config,
    client_tls: ClientTlsConfig,
    faults: Faults,
) -> (Settings, Arc<runtime::NodeRuntime>) {
    (
        Settings {
            node: c.node.clone(),
            work_dir: c.work_dir.clone(),
            max_archive_bytes: c.max_archive_bytes,
            transfer_timeout: std::time::Duration::from_secs(c.transfer_timeout_secs),
            admins: c.admins.clone(),
            peers: c.peers.clone(),
            client_tls,
            faults,
        },
        Arc::new(c.node_runtime()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_relay_never_takes_over_a_socket_that_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.sock");
        let live = bind_relay_socket(&path, None).unwrap();
        let e = bind_relay_socket(&path, None).unwrap_err();
        assert!(e.to_string().contains("is served already"), "{e}");
        // Once nothing answers, the stale socket is replaced.
        drop(live);
        drop(bind_relay_socket(&path, None).unwrap());
    }
}
