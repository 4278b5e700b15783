//! Mutual TLS for every p4lb TCP surface (cargo feature `tls`): the controller's client
//! of a switch, the switch's and the controller's TCP listeners, and the callers of the
//! controller API over TCP. tonic's rustls support (`tls-ring`) does the TLS; this module
//! reads the PEM files with bounds and a key-mode check, builds both sides' configs, and
//! names the peer of a server-side request from its certificate (x509-parser).
//!
//! With TLS 1.3 a client finishes its handshake before the server checks the client's
//! certificate, so a refused client sees only a closed connection on its first call;
//! [`refusal`] runs a handshake of its own (tokio-rustls, the library under tonic's) and
//! reads the server's alert, for callers to say why.
//!
//! A server built from [`server_config`] requires a client certificate that chains to
//! its client CA: a client without one, or with one of another CA, is refused during the
//! handshake and never reaches a handler.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Largest certificate, key or CA file read (PEM).
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;
/// Longest TLS handshake a server built from [`server_config`] waits for: a client that
/// connects and sends nothing is dropped after it.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Which of the three files of one side of mutual TLS an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemFile {
    /// The CA certificate(s) the peer's certificate must chain to.
    Ca,
    /// This side's certificate (chain).
    Cert,
    /// This side's private key.
    Key,
}

impl fmt::Display for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PemFile::Ca => "CA certificate",
            PemFile::Cert => "certificate",
            PemFile::Key => "private key",
        })
    }
}

/// Why TLS material is refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {file} {path}: {source}")]
    Read {
        file: PemFile,
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the private key {path} is accessible to group or others (mode {mode:o}); chmod 600 it"
    )]
    KeyMode { path: String, mode: u32 },
}

impl TlsError {
    /// The file the error is about (callers name it by their configuration key).
    pub fn file(&self) -> PemFile {
        match self {
            TlsError::Read { file, .. } => *file,
            TlsError::KeyMode { .. } => PemFile::Key,
        }
    }
}

/// Reads one PEM file: a regular file (not a symbolic link) of at most
/// [`MAX_PEM_BYTES`]; a private key ([`PemFile::Key`]) must not be readable or writable
/// by group or others.
pub fn read_pem(file: PemFile, path: &Path) -> Result<Vec<u8>, TlsError> {
    let shown = path.display().to_string();
    let err = |source| TlsError::Read {
        file,
        path: shown.clone(),
        source,
    };
    let data = crate::read_bounded(path, MAX_PEM_BYTES).map_err(err)?;
    if file == PemFile::Key {
        let mode = std::fs::metadata(path).map_err(err)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(TlsError::KeyMode { path: shown, mode });
        }
    }
    Ok(data)
}

/// The client side of mutual TLS: trusts `ca` for the server's certificate (which must
/// name the host of the address dialled, as a DNS name or an IP address SAN) and presents
/// `cert`/`key`.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<ClientTlsConfig, TlsError> {
    let ca = read_pem(PemFile::Ca, ca)?;
    let cert = read_pem(PemFile::Cert, cert)?;
    let key = read_pem(PemFile::Key, key)?;
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key)))
}

/// The server side of mutual TLS: presents `cert`/`key` and requires every client to
/// present a certificate that chains to `ca` (rustls refuses the handshake otherwise);
/// a handshake takes at most [`HANDSHAKE_TIMEOUT`].
pub fn server_config(ca: &Path, cert: &Path, key: &Path) -> Result<ServerTlsConfig, TlsError> {
    let ca = read_pem(PemFile::Ca, ca)?;
    let cert = read_pem(PemFile::Cert, cert)?;
    let key = read_pem(PemFile::Key, key)?;
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(ca))
        .timeout(HANDSHAKE_TIMEOUT))
}

/// The identity of the peer of a request served over mutual TLS: the first DNS subject
/// alternative name of its certificate (the handshake already checked that the
/// certificate chains to the client CA). `None` without TLS (Unix socket, in-process) or
/// when the certificate names no DNS name.
pub fn peer_name<T>(req: &tonic::Request<T>) -> Option<String> {
    let certs = req.peer_certs()?;
    let leaf = certs.first()?;
    cert_name(leaf.as_ref())
}

/// The name of the first certificate of a PEM file's contents (as [`cert_name`]): what a
/// holder of that certificate is called by the servers it calls.
pub fn pem_name(pem: &[u8]) -> Option<String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    cert_name(&block.contents)
}

/// The first DNS subject alternative name of a DER certificate.
pub fn cert_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
        _ => None,
    })
}

/// Why the server at `address` (`https://HOST:PORT`, its certificate naming
/// `server_name`) refuses a mutual-TLS connection with `cert`/`key` (trusting `ca` for
/// the server), if it does: a handshake of its own followed by one read, which gets the
/// server's alert (e.g. "received fatal alert: UnknownCA": the server does not trust the
/// client certificate's CA) when the server refused the client's certificate, or the end
/// of the connection when the server closed it before its alert left. `None`
/// when the server took the handshake, did not answer within `within`, or could not be
/// reached at all (the caller's own error says that).
pub async fn refusal(
    address: &str,
    server_name: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
    within: std::time::Duration,
) -> Option<String> {
    use pki_types::pem::PemObject;
    use tokio::io::AsyncReadExt;
    use tokio_rustls::rustls::{self, pki_types};

    let authority = address
        .strip_prefix("https://")?
        .split('/')
        .next()?
        .to_string();
    let ca = read_pem(PemFile::Ca, ca).ok()?;
    let cert = read_pem(PemFile::Cert, cert).ok()?;
    let key = read_pem(PemFile::Key, key).ok()?;
    let mut roots = rustls::RootCertStore::empty();
    for c in pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.ok()?).ok()?;
    }
    let chain: Vec<_> = pki_types::CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<_, _>>()
        .ok()?;
    let key = pki_types::PrivateKeyDer::from_pem_slice(&key).ok()?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .ok()?;
    let name = pki_types::ServerName::try_from(server_name.to_string()).ok()?;
    let probe = async {
        let tcp = tokio::net::TcpStream::connect(&authority).await.ok()?;
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let mut tls = match connector.connect(name, tcp).await {
            Ok(t) => t,
            Err(e) => return Some(format!("the TLS handshake with {authority} failed: {e}")),
        };
        let mut b = [0u8; 1];
        match tls.read(&mut b).await {
            Err(e) => Some(format!(
                "{authority} refused this client's certificate in the TLS handshake: {e}"
            )),
            // A gRPC server sends its HTTP/2 settings first; one that closes before any
            // byte dropped the connection after checking the certificate, sometimes
            // before its alert left.
            Ok(0) => Some(format!(
                "{authority} refused this client's certificate in the TLS handshake: it \
                 closed the connection without a reply"
            )),
            Ok(_) => None,
        }
    };
    tokio::time::timeout(within, probe).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_others_can_read_is_refused_with_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("k.pem");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        for mode in [0o640, 0o604, 0o660] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_pem(PemFile::Key, &key).expect_err("readable by others");
            assert_eq!(e.file(), PemFile::Key);
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_pem(PemFile::Key, &key).is_ok());
        // A certificate may be world-readable.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_pem(PemFile::Cert, &key).is_ok());
    }

    #[test]
    fn oversized_and_missing_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let big = d.path().join("big.pem");
        std::fs::write(&big, vec![b'a'; MAX_PEM_BYTES as usize + 1]).unwrap();
        let e = read_pem(PemFile::Ca, &big).expect_err("too large");
        assert_eq!(e.file(), PemFile::Ca);
        let e = read_pem(PemFile::Cert, &d.path().join("none")).expect_err("missing");
        assert!(e.to_string().contains("certificate"), "{e}");
    }

    #[test]
    fn the_name_is_the_first_dns_subject_alternative_name() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![
            "10.0.0.7".to_string(),
            "node-a".to_string(),
            "node-a.example".to_string(),
        ])
        .unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(cert_name(cert.der()).as_deref(), Some("node-a"));
        assert_eq!(pem_name(cert.pem().as_bytes()).as_deref(), Some("node-a"));
        // Only an IP address: no name.
        let params = rcgen::CertificateParams::new(vec!["10.0.0.7".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(cert_name(cert.der()), None);
    }

    #[test]
    fn garbage_is_no_name() {
        assert_eq!(cert_name(b"not a certificate"), None);
    }
}
