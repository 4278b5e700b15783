//! Serving the controller API on a Unix socket, the same way wherever it is served (the
//! controller on its host, the node agent's relay on the other nodes): the socket is
//! created with no access for anyone and then opened to root only (0600) or to one
//! group (0660); each request's caller is the process the kernel reports at the other
//! end (SO_PEERCRED), admitted when it is root or the socket has a group (the file mode
//! already kept everyone else out).

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use tokio::net::UnixListener;
use tonic::transport::server::UdsConnectInfo;

/// Why a socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("{0} exists and is not a socket")]
    NotASocket(String),
    #[error("{0} is served already by another process (stop it first, or use another socket)")]
    InUse(String),
    #[error("group {0}: {1}")]
    Group(String, String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SocketError + 'a {
    move |source| SocketError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Resolves a group name or numeric gid; `None` for an empty name.
pub fn resolve_group(group: &str) -> Result<Option<u32>, SocketError> {
    if group.is_empty() {
        return Ok(None);
    }
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(Some(gid));
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(Some(g.gid.as_raw())),
        Ok(None) => Err(SocketError::Group(group.into(), "no such group".into())),
        Err(e) => Err(SocketError::Group(group.into(), e.to_string())),
    }
}

/// Binds the API socket at `path`: 0600 (root only), or 0660 owned by group `gid`.
/// A stale socket there (nothing answers on it) is replaced; a socket something still
/// answers on is refused ([`SocketError::InUse`]: a second controller, or a relay beside
/// the controller, must not take the socket away from the process that serves it), and
/// so is any other file, which is left alone.
pub fn bind_socket(path: &Path, gid: Option<u32>) -> Result<UnixListener, SocketError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse(path.display().to_string()));
            }
            std::fs::remove_file(path).map_err(io_err("removing stale socket", path))?;
        }
        Ok(_) => return Err(SocketError::NotASocket(path.display().to_string())),
        Err(_) => {}
    }
    // Create the socket with no access for anyone, then open it up as configured.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let l = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let l = l.map_err(io_err("binding", path))?;
    let mode = if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io_err("chown", path))?;
        0o660
    } else {
        0o600
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod", path))?;
    Ok(l)
}

/// The caller of a request on a Unix socket, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixPeer {
    pub uid: u32,
    pub gid: u32,
    /// None where the kernel does not report it.
    pub pid: Option<i32>,
}

/// Where a request came from: `None` when not over a Unix socket (TCP, in-process);
/// `Some(None)` over a Unix socket whose peer credentials are unknown.
pub fn peer<T>(req: &tonic::Request<T>) -> Option<Option<UnixPeer>> {
    let info = req.extensions().get::<UdsConnectInfo>()?;
    Some(info.peer_cred.map(|c| UnixPeer {
        uid: c.uid(),
        gid: c.gid(),
        pid: c.pid(),
    }))
}

/// PERMISSION_DENIED unless the peer is root or the socket was opened to a group
/// (`group_socket`: its mode let only that group's members connect).
pub fn admit(peer: &UnixPeer, group_socket: bool, what: &str) -> Result<(), tonic::Status> {
    if peer.uid == 0 || group_socket {
        return Ok(());
    }
    Err(tonic::Status::permission_denied(format!(
        "uid {} may not use {what} (root only)",
        peer.uid
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_socket_is_root_only_and_a_stale_one_is_replaced_but_no_live_one_or_other_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/api.sock");
        drop(bind_socket(&path, None).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Stale socket from an earlier run: replaced.
        let gid = nix::unistd::getgid().as_raw();
        drop(bind_socket(&path, Some(gid)).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // A socket that is served: refused, and it keeps being served.
        let live = bind_socket(&path, None).unwrap();
        assert!(matches!(
            bind_socket(&path, None),
            Err(SocketError::InUse(_))
        ));
        let (_accepted, _client) =
            tokio::join!(live.accept(), tokio::net::UnixStream::connect(&path));
        drop(live);
        // Anything else: refused and kept.
        let file = dir.path().join("file");
        std::fs::write(&file, b"keep").unwrap();
        assert!(matches!(
            bind_socket(&file, None),
            Err(SocketError::NotASocket(_))
        ));
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    }

    #[test]
    fn groups_resolve_by_number_or_name_and_unknown_ones_are_refused() {
        assert_eq!(resolve_group("").unwrap(), None);
        assert_eq!(resolve_group("4242").unwrap(), Some(4242));
        assert_eq!(resolve_group("root").unwrap(), Some(0));
        assert!(matches!(
            resolve_group("no-such-group-p4lb"),
            Err(SocketError::Group(..))
        ));
    }

    #[test]
    fn only_root_is_admitted_unless_the_socket_has_a_group() {
        let user = UnixPeer {
            uid: 1000,
            gid: 1000,
            pid: Some(1),
        };
        let root = UnixPeer { uid: 0, ..user };
        assert!(admit(&root, false, "x").is_ok());
        assert!(admit(&user, true, "x").is_ok());
        let e = admit(&user, false, "the p4lb controller API").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("uid 1000"), "{}", e.message());
    }
}
