//! TLS for the switch's TCP listener: mutual TLS with tonic's rustls support (cargo
//! feature `tls-ring`). A TCP listener is served only with a certificate, its key and the
//! CA that signs the clients' certificates (a client without a certificate from that CA
//! is refused during the handshake); the one exception is an explicit
//! `--insecure-loopback` on a loopback address, for tests. Key files readable or writable
//! by group or others are refused at start.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// Largest certificate, key or CA file read (PEM).
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The files of the switch's TLS identity and the CA of its clients (all PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// Why TLS material is refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what} {path} is not a regular file")]
    NotAFile { what: &'static str, path: String },
    #[error("{what} {path} is larger than {MAX_PEM_BYTES} bytes")]
    TooLarge { what: &'static str, path: String },
    #[error(
        "the private key {path} is accessible to group or others (mode {mode:o}); \
         chmod 600 it"
    )]
    KeyMode { path: String, mode: u32 },
}

/// Reads a PEM file (regular file, at most [`MAX_PEM_BYTES`]); a private key must not
/// be readable or writable by group or others.
pub fn read_pem(what: &'static str, path: &Path, private: bool) -> Result<Vec<u8>, TlsError> {
    let shown = path.display().to_string();
    let read_err = |source| TlsError::Read {
        what,
        path: shown.clone(),
        source,
    };
    let m = std::fs::metadata(path).map_err(read_err)?;
    if !m.is_file() {
        return Err(TlsError::NotAFile { what, path: shown });
    }
    if m.len() > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge { what, path: shown });
    }
    let mode = m.permissions().mode() & 0o7777;
    if private && mode & 0o077 != 0 {
        return Err(TlsError::KeyMode { path: shown, mode });
    }
    std::fs::read(path).map_err(read_err)
}

/// The server side: the switch's identity and the CA its clients' certificates must
/// chain to.
pub fn server_config(files: &TlsFiles) -> Result<ServerTlsConfig, TlsError> {
    let cert = read_pem("certificate", &files.cert, false)?;
    let key = read_pem("private key", &files.key, true)?;
    let ca = read_pem("client CA", &files.client_ca, false)?;
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(ca)))
}
