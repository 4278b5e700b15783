//! Mutual TLS to a switch served over TCP (`switch.address = "https://HOST:PORT"`): the
//! controller trusts the CA in `switch.tls_ca` for the switch's certificate and presents
//! `switch.tls_cert`/`switch.tls_key` as its own. The files are read and checked by
//! [`p4lb_api::tls`] (the one TLS module of p4lb's TCP surfaces); this module names the
//! configuration key in its errors. The switch's certificate must name the address's host
//! (a DNS name, or an IP address SAN for an IP).

use std::path::Path;

use p4lb_api::tls::{PemFile, TlsError as FileError};
use tonic::transport::ClientTlsConfig;

/// Why the switch's TLS files are refused: the configuration key and the reason.
#[derive(Debug, thiserror::Error)]
#[error("switch.{key} = {source}")]
pub struct TlsError {
    pub key: &'static str,
    #[source]
    pub source: FileError,
}

impl From<FileError> for TlsError {
    fn from(source: FileError) -> Self {
        let key = match source.file() {
            PemFile::Ca => "tls_ca",
            PemFile::Cert => "tls_cert",
            PemFile::Key => "tls_key",
        };
        TlsError { key, source }
    }
}

/// The client side of mutual TLS from the three configured files.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<ClientTlsConfig, TlsError> {
    Ok(p4lb_api::tls::client_config(ca, cert, key)?)
}
