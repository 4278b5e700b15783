//! Reaching an agent: mutual TLS to `https://HOST:PORT`, with the agent's node name as
//! the name its certificate must carry (whatever the address), keep-alive so that a
//! dropped link is noticed, and bounded messages. Used by agents (to send an archive)
//! and by `p4lbctl migrate`.

use std::time::Duration;

use p4lb_proto::api::agent_client::AgentClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// How long connecting to an agent may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 keep-alive: a link that drops mid-transfer is noticed after at most
/// interval + timeout.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 flow-control windows of both ends (per stream, per connection): an archive
/// of hundreds of MiB is one stream, and HTTP/2's default 64 KiB makes the sender wait
/// for the receiver every 64 KiB.
pub const STREAM_WINDOW: u32 = 8 << 20;
pub const CONNECTION_WINDOW: u32 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("agent address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("node {node} at {address} is unreachable: {reason}")]
    Unreachable {
        node: String,
        address: String,
        reason: String,
    },
}

/// A client of the agent of node `node` at `address` (`https://HOST:PORT`).
pub async fn connect(
    address: &str,
    node: &str,
    tls: ClientTlsConfig,
) -> Result<AgentClient<Channel>, ConnectError> {
    if !address.starts_with("https://") {
        return Err(ConnectError::Address {
            address: address.into(),
            reason: "agents are reached over https:// only".into(),
        });
    }
    let endpoint = Endpoint::from_shared(address.to_string())
        .and_then(|e| e.tls_config(tls.domain_name(node.to_string())))
        .map_err(|e| ConnectError::Address {
            address: address.into(),
            reason: p4lb_api::connect::error_chain(&e),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| ConnectError::Unreachable {
            node: node.into(),
            address: address.into(),
            reason: p4lb_api::connect::error_chain(&e),
        })?;
    Ok(AgentClient::new(channel)
        .max_decoding_message_size(crate::service::MAX_MESSAGE)
        .max_encoding_message_size(crate::service::MAX_MESSAGE))
}
