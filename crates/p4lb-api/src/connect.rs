//! gRPC over a Unix socket.
//!
//! tonic dials TCP only; a Unix socket needs a connector (`connect_with_connector`).
//! This is that connector, with a bound on how long connecting may take (the
//! tonic connect timeout plus an outer one, so a socket that accepts and then
//! never answers cannot hang a caller).

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// A Unix-socket connection that could not be made. The message names neither
/// the socket nor the call: callers put it in their own context.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no connection within {timeout:?}")]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("{detail}")]
    Failed { path: PathBuf, detail: String },
}

impl ConnectError {
    /// The socket that was dialled (the `https://` address for a TCP dial).
    pub fn path(&self) -> &Path {
        match self {
            Self::Timeout { path, .. } | Self::Failed { path, .. } => path,
        }
    }
}

/// `e` and its sources, "outer: inner: …", without repeating a source whose text
/// the outer message already contains.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg = format!("{msg}: {text}");
        }
        src = s.source();
    }
    msg
}

/// Opens a gRPC channel to the Unix socket at `path`, giving up after
/// `connect_timeout`.
pub async fn connect_unix(path: &Path, connect_timeout: Duration) -> Result<Channel, ConnectError> {
    connect(path, connect_timeout, None).await
}

/// [`connect_unix`], and every request on the channel is also bounded by
/// `request_timeout` (the server answers DEADLINE_EXCEEDED for it).
pub async fn connect_unix_bounded(
    path: &Path,
    connect_timeout: Duration,
    request_timeout: Duration,
) -> Result<Channel, ConnectError> {
    connect(path, connect_timeout, Some(request_timeout)).await
}

async fn connect(
    path: &Path,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
) -> Result<Channel, ConnectError> {
    let target = path.to_path_buf();
    let connector = tower::service_fn(move |_: Uri| {
        let target = target.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(target).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    // The authority is not used on a Unix socket; it only has to be a valid URI.
    let mut endpoint = Endpoint::from_static("http://localhost").connect_timeout(connect_timeout);
    if let Some(t) = request_timeout {
        endpoint = endpoint.timeout(t);
    }
    match tokio::time::timeout(connect_timeout, endpoint.connect_with_connector(connector)).await {
        Err(_) => Err(ConnectError::Timeout {
            path: path.to_path_buf(),
            timeout: connect_timeout,
        }),
        Ok(Err(e)) => Err(ConnectError::Failed {
            path: path.to_path_buf(),
            detail: error_chain(&e),
        }),
        Ok(Ok(channel)) => Ok(channel),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_missing_socket_fails_at_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("none.sock");
        let t0 = Instant::now();
        let e = connect_unix(&p, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(e, ConnectError::Failed { .. }), "{e:?}");
        assert_eq!(e.path(), p);
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }

    #[tokio::test]
    async fn a_silent_socket_fails_a_request_within_its_bound() {
        // A listener that accepts and never speaks HTTP/2.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("silent.sock");
        let l = tokio::net::UnixListener::bind(&p).unwrap();
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let t0 = Instant::now();
        // The connection is made (the listener accepts); the request must time out.
        let ch = connect_unix_bounded(&p, Duration::from_millis(300), Duration::from_millis(300))
            .await
            .unwrap();
        let mut c = crate::api::controller_client::ControllerClient::new(ch);
        let s = c.status(crate::api::StatusRequest {}).await.unwrap_err();
        assert!(
            matches!(
                s.code(),
                tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
            ),
            "not a timeout: {s:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    }

    #[tokio::test]
    async fn connecting_to_a_silent_socket_is_bounded() {
        // Without a request timeout, connecting still returns within its bound.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("silent.sock");
        let l = tokio::net::UnixListener::bind(&p).unwrap();
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let t0 = Instant::now();
        let r = connect_unix(&p, Duration::from_millis(300)).await;
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        // tonic makes the HTTP/2 handshake lazily: the channel comes back and the
        // first request times out (test above); should the handshake ever be
        // awaited, connecting must end in a timeout instead.
        assert!(
            matches!(r, Ok(_) | Err(ConnectError::Timeout { .. })),
            "{r:?}"
        );
    }
}
