//! Mutual TLS to a switch served over TCP (`switch.address = "https://HOST:PORT"`): the
//! controller trusts the CA in `switch.tls_ca` for the switch's certificate and presents
//! `switch.tls_cert`/`switch.tls_key` as its own (tonic's rustls support, cargo feature
//! `tls-ring`). The switch's certificate must name the address's host (a DNS name, or an
//! IP address SAN for an IP).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// Largest certificate, key or CA file read (PEM).
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Why the TLS files are refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("switch.{key} = {path}: {source}")]
    Read {
        key: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(
        "switch.tls_key = {path} is accessible to group or others (mode {mode:o}); chmod 600 it"
    )]
    KeyMode { path: String, mode: u32 },
}

/// Reads one PEM file: a regular file of at most [`MAX_PEM_BYTES`]; the private key must
/// not be readable or writable by group or others.
fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let shown = path.display().to_string();
    let err = |source| TlsError::Read {
        key,
        path: shown.clone(),
        source,
    };
    let data = p4lb_api::read_bounded(path, MAX_PEM_BYTES).map_err(err)?;
    if key == "tls_key" {
        let mode = std::fs::metadata(path).map_err(err)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(TlsError::KeyMode { path: shown, mode });
        }
    }
    Ok(data)
}

/// The client side of mutual TLS from the three configured files.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<ClientTlsConfig, TlsError> {
    let ca = read("tls_ca", ca)?;
    let cert = read("tls_cert", cert)?;
    let key = read("tls_key", key)?;
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key)))
}
