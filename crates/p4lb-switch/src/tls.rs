//! TLS for the switch's TCP listener: mutual TLS through [`p4lb_api::tls`] (the one TLS
//! module of p4lb's TCP surfaces; tonic's rustls support). A TCP listener is served only
//! with a certificate, its key and the CA that signs the clients' certificates (a client
//! without a certificate from that CA is refused during the handshake); the one exception
//! is an explicit `--insecure-loopback` on a loopback address, for tests. Key files
//! readable or writable by group or others are refused at start.

use std::path::PathBuf;

use tonic::transport::ServerTlsConfig;

pub use p4lb_api::tls::{TlsError, MAX_PEM_BYTES};

/// The files of the switch's TLS identity and the CA of its clients (all PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// The server side: the switch's identity and the CA its clients' certificates must
/// chain to.
pub fn server_config(files: &TlsFiles) -> Result<ServerTlsConfig, TlsError> {
    p4lb_api::tls::server_config(&files.client_ca, &files.cert, &files.key)
}
