//! `p4lbctl cert`: a certificate authority and the certificates it issues, for the
//! mutual TLS of p4lb's TCP surfaces (the controller API over TCP, the switch over TCP,
//! the node agents). rcgen makes the keys (ECDSA P-256) and certificates; `openssl` makes
//! equivalent ones (docs/controller.md shows both).
//!
//! A certificate's first DNS subject alternative name is its holder's name: the node or
//! admin name the controller authorises by ([`p4lb_api::tls::peer_name`]). Files are
//! written once: an existing file is never replaced, keys get mode 0600.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The CA's certificate in a CA directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key in a CA directory.
pub const CA_KEY: &str = "ca-key.pem";
/// How long a CA is valid, in days.
pub const CA_DAYS: i64 = 3650;
/// How long an issued certificate is valid by default, in days.
pub const LEAF_DAYS: i64 = 825;

/// Why a certificate was not made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "{path} exists; p4lbctl cert never replaces a file (remove it or choose another --out)"
    )]
    Exists { path: String },
    #[error("{0}")]
    Name(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("reading the CA in {dir}: {source}")]
    Ca {
        dir: String,
        source: p4lb_api::tls::TlsError,
    },
    #[error("{what}: {source}")]
    Rcgen {
        what: &'static str,
        source: rcgen::Error,
    },
}

/// The files of one issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What to put in a certificate besides its name.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Further DNS names (after the holder's name, which is always the first).
    pub dns: Vec<String>,
    /// IP addresses (a server dialled by address needs its address here).
    pub ips: Vec<IpAddr>,
}

/// A holder name: a DNS name (the rule of node names,
/// [`crate::nodes::check_node_name`]), which also names its files.
pub fn check_name(name: &str) -> Result<(), CertError> {
    crate::nodes::check_node_name("name", name).map_err(|e| CertError::Name(e.to_string()))
}

fn rcgen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> CertError {
    move |source| CertError::Rcgen { what, source }
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks of other machines that are behind.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(days);
}

/// Refuses if any of `paths` exists (before anything is written).
fn none_exists(paths: &[&Path]) -> Result<(), CertError> {
    for p in paths {
        if std::fs::symlink_metadata(p).is_ok() {
            return Err(CertError::Exists {
                path: p.display().to_string(),
            });
        }
    }
    Ok(())
}

/// Writes a new file (never an existing one) with `mode`, synced.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), CertError> {
    let err = |what| {
        move |source| CertError::Io {
            what,
            path: path.display().to_string(),
            source,
        }
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CertError::Exists {
                    path: path.display().to_string(),
                }
            } else {
                err("creating")(e)
            }
        })?;
    f.write_all(text.as_bytes()).map_err(err("writing"))?;
    f.sync_all().map_err(err("syncing"))
}

fn out_dir(dir: &Path) -> Result<(), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        what: "creating",
        path: dir.display().to_string(),
        source,
    })
}

/// Makes a new CA in `dir`: `ca.pem` (0644) and `ca-key.pem` (0600), `cn` as its
/// common name.
pub fn make_ca(dir: &Path, cn: &str) -> Result<Issued, CertError> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    out_dir(dir)?;
    none_exists(&[&cert_path, &key_path])?;
    let key = KeyPair::generate().map_err(rcgen_err("generating the CA key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_DAYS);
    let cert = params
        .self_signed(&key)
        .map_err(rcgen_err("signing the CA certificate"))?;
    write_new(&key_path, &key.serialize_pem(), 0o600)?;
    write_new(&cert_path, &cert.pem(), 0o644)?;
    Ok(Issued {
        cert: cert_path,
        key: key_path,
    })
}

/// Issues a certificate for `name` (its first DNS name, then `names`) signed by the CA in
/// `ca_dir`, valid for `days`, usable as a client and as a server: writes `NAME.pem`
/// (0644) and `NAME-key.pem` (0600) in `out`.
pub fn issue(
    ca_dir: &Path,
    name: &str,
    names: &Names,
    days: i64,
    out: &Path,
) -> Result<Issued, CertError> {
    use p4lb_api::tls::{read_pem, PemFile};
    check_name(name)?;
    for d in &names.dns {
        check_name(d)?;
    }
    let ca_err = |source| CertError::Ca {
        dir: ca_dir.display().to_string(),
        source,
    };
    let ca_pem = read_pem(PemFile::Ca, &ca_dir.join(CA_CERT)).map_err(ca_err)?;
    let ca_key = read_pem(PemFile::Key, &ca_dir.join(CA_KEY)).map_err(ca_err)?;
    let ca_key = KeyPair::from_pem(&String::from_utf8_lossy(&ca_key))
        .map_err(rcgen_err("parsing the CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&String::from_utf8_lossy(&ca_pem), ca_key)
        .map_err(rcgen_err("parsing the CA certificate"))?;

    let cert_path = out.join(format!("{name}.pem"));
    let key_path = out.join(format!("{name}-key.pem"));
    out_dir(out)?;
    none_exists(&[&cert_path, &key_path])?;

    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    let mut sans = Vec::new();
    for d in std::iter::once(name).chain(names.dns.iter().map(String::as_str)) {
        let d = d
            .to_string()
            .try_into()
            .map_err(rcgen_err("a DNS name of the certificate"))?;
        sans.push(SanType::DnsName(d));
    }
    sans.extend(names.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key = KeyPair::generate().map_err(rcgen_err("generating the key"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(rcgen_err("signing the certificate"))?;
    write_new(&key_path, &key.serialize_pem(), 0o600)?;
    write_new(&cert_path, &cert.pem(), 0o644)?;
    Ok(Issued {
        cert: cert_path,
        key: key_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_ca_and_a_certificate_with_modes_and_names() {
        let d = tempfile::tempdir().unwrap();
        let ca = make_ca(&d.path().join("ca"), "p4lb test CA").unwrap();
        assert_eq!(mode(&ca.key), 0o600);
        assert_eq!(mode(&ca.cert), 0o644);
        let names = Names {
            dns: vec!["node-a.example".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
        };
        let leaf = issue(&d.path().join("ca"), "node-a", &names, 30, d.path()).unwrap();
        assert_eq!(leaf.cert, d.path().join("node-a.pem"));
        assert_eq!(leaf.key, d.path().join("node-a-key.pem"));
        assert_eq!(mode(&leaf.key), 0o600);
        let pem = std::fs::read_to_string(&leaf.cert).unwrap();
        assert_eq!(
            p4lb_api::tls::pem_name(pem.as_bytes()).as_deref(),
            Some("node-a")
        );
    }

    #[test]
    fn nothing_is_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let ca = make_ca(d.path(), "one").unwrap();
        let before = std::fs::read(&ca.key).unwrap();
        let e = make_ca(d.path(), "two").expect_err("a second CA in the same place");
        assert!(matches!(e, CertError::Exists { .. }), "{e}");
        assert_eq!(std::fs::read(&ca.key).unwrap(), before);
        issue(d.path(), "ops", &Names::default(), 1, d.path()).unwrap();
        let e = issue(d.path(), "ops", &Names::default(), 1, d.path()).expect_err("again");
        assert!(e.to_string().contains("never replaces"), "{e}");
    }

    #[test]
    fn bad_names_and_readable_ca_keys_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let ca = make_ca(d.path(), "ca").unwrap();
        for bad in ["", "../x", "a/b", "-a", "a..b", "a b"] {
            let e = issue(d.path(), bad, &Names::default(), 1, d.path()).expect_err(bad);
            assert!(matches!(e, CertError::Name(_)), "{bad}: {e}");
        }
        std::fs::set_permissions(&ca.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = issue(d.path(), "n", &Names::default(), 1, d.path()).expect_err("0644 CA key");
        assert!(format!("{e}").contains("chmod 600"), "{e}");
    }
}
