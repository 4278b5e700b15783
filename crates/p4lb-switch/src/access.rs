//! Who may use the switch: root, through a root-only Unix socket.
//!
//! Whoever holds the P4Runtime primary role programs every table, and the SwitchPorts API
//! attaches any interface as a port; both are root's. The socket is created 0600 in a
//! directory only root can write (created 0700 when missing), and every call is checked
//! again against the caller's kernel credentials (SO_PEERCRED, which tonic reports as
//! [`UdsConnectInfo`]), as the controller's API does: a non-root uid gets
//! PERMISSION_DENIED even if the socket's mode was loosened by hand.
//!
//! TCP carries no credentials: it is served with mutual TLS ([`crate::tls`]: only clients
//! with a certificate from the configured CA get through the handshake), or without TLS on
//! a loopback address when asked for explicitly (`insecure_loopback`, for tests), with a
//! warning that every local user can reach it.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

/// Where the `p4lb-switch` binary serves P4Runtime and SwitchPorts unless `--grpc-addr`
/// says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/p4lb-switch/switch.sock";

/// Why a listen address or socket directory is refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(
        "{0} is not a loopback address: without TLS the switch's gRPC API has no \
         authentication over TCP; serve it with --tls-cert/--tls-key/--tls-client-ca or on a \
         Unix socket (unix:/path) instead"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot create the socket directory {dir}: {source}")]
    CreateDir { dir: String, source: std::io::Error },
    #[error("cannot inspect the socket directory {dir}: {source}")]
    InspectDir { dir: String, source: std::io::Error },
    #[error(
        "the socket directory {dir} is {problem}; use a directory only root can write \
         (e.g. /run/p4lb-switch, created 0700 when missing)"
    )]
    UnsafeDir { dir: String, problem: String },
    #[error("{path} exists and is not a socket")]
    NotASocket { path: String },
}

/// For TCP without TLS: refuses an address that is not loopback; warns about one that is.
pub fn check_tcp(addr: &SocketAddr) -> Result<(), AccessError> {
    if !addr.ip().is_loopback() {
        return Err(AccessError::NotLoopback(*addr));
    }
    tracing::warn!(
        %addr,
        "P4Runtime and SwitchPorts served on loopback TCP: EVERY LOCAL USER can connect, take \
         the primary role and attach ports; serve on a Unix socket (the default) unless this \
         is a test"
    );
    Ok(())
}

/// Makes sure the socket's directory exists and only root (the switch's own uid) can
/// write it; creates it 0700 when missing.
pub fn prepare_socket_dir(socket: &Path) -> Result<(), AccessError> {
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let shown = dir.display().to_string();
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| AccessError::CreateDir {
                dir: shown.clone(),
                source,
            })?;
    }
    let m = std::fs::metadata(dir).map_err(|source| AccessError::InspectDir {
        dir: shown.clone(),
        source,
    })?;
    // SAFETY: geteuid cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    let mode = m.permissions().mode() & 0o7777;
    let problem = if !m.is_dir() {
        Some("not a directory".to_string())
    } else if m.uid() != euid && m.uid() != 0 {
        Some(format!("owned by uid {}", m.uid()))
    } else if mode & 0o022 != 0 {
        Some(format!("writable by other users (mode {mode:o})"))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(AccessError::UnsafeDir {
            dir: shown,
            problem,
        }),
        None => Ok(()),
    }
}

/// The interceptor of every gRPC call: a Unix-socket caller must be root.
#[allow(clippy::result_large_err)]
pub fn root_only(req: Request<()>) -> Result<Request<()>, Status> {
    let Some(info) = req.extensions().get::<UdsConnectInfo>() else {
        // TCP: only loopback is served, and the warning was given at start.
        return Ok(req);
    };
    match info.peer_cred {
        Some(cred) if cred.uid() == 0 => Ok(req),
        Some(cred) => {
            tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), "refused a call from a non-root caller");
            Err(Status::permission_denied(format!(
                "uid {} may not use p4lb-switch (root only)",
                cred.uid()
            )))
        }
        None => Err(Status::permission_denied(
            "the caller's credentials are unknown; p4lb-switch serves root only",
        )),
    }
}

/// Removes a socket left by an earlier run; anything else at `path` is refused.
pub fn remove_stale_socket(path: &Path) -> Result<(), AccessError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            let _ = std::fs::remove_file(path);
            Ok(())
        }
        Ok(_) => Err(AccessError::NotASocket {
            path: path.display().to_string(),
        }),
        Err(_) => Ok(()),
    }
}

/// Binds the Unix socket with mode 0600: created under a umask that leaves no access for
/// anyone else, so there is no moment at which another user could connect.
pub fn bind_private(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    // SAFETY: umask only swaps the process's file-creation mask.
    let old = unsafe { libc::umask(0o177) };
    let l = tokio::net::UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let l = l?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}
