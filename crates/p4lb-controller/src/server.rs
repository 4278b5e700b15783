//! Listeners: the API on its Unix socket (0600, or 0660 with a group), optional TCP
//! with mutual TLS (`p4lb_api::tls`; callers named by their certificates, see
//! [`crate::caller`]), optional Prometheus HTTP (hyper's HTTP/1.1 server, `GET /metrics` only, with
//! bounded connections and time). Readiness goes to systemd ([`crate::readiness`]).

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::api::{Access, Api};
use crate::controller::Controller;
use crate::metrics::CONTENT_TYPE;

/// Resolves a group name or numeric gid ([`p4lb_api::unix::resolve_group`]).
pub fn resolve_group(group: &str) -> anyhow::Result<Option<u32>> {
    Ok(p4lb_api::unix::resolve_group(group)?)
}

/// Binds the API socket with the right owner and mode ([`p4lb_api::unix::bind_socket`]).
pub fn bind_socket(path: &Path, gid: Option<u32>) -> anyhow::Result<UnixListener> {
    Ok(p4lb_api::unix::bind_socket(path, gid)?)
}

/// The TLS config of the API's TCP listener; errors name the `api.*` key of the file.
pub fn api_tls(
    cfg: &crate::config::ApiConfig,
) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    use p4lb_api::tls::PemFile;
    p4lb_api::tls::server_config(&cfg.tls_client_ca, &cfg.tls_cert, &cfg.tls_key).map_err(|e| {
        let key = match e.file() {
            PemFile::Ca => "tls_client_ca",
            PemFile::Cert => "tls_cert",
            PemFile::Key => "tls_key",
        };
        anyhow::anyhow!("api.{key} = {e}")
    })
}

/// Serves the API (and the optional listeners) until `shutdown` turns true.
pub async fn serve(ctl: Arc<Controller>, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let cfg = ctl.cfg.api.clone();
    // Files first: a key others can read stops the controller before it serves.
    let tls = if cfg.tcp.is_empty() {
        None
    } else {
        if [&cfg.tls_cert, &cfg.tls_key, &cfg.tls_client_ca]
            .iter()
            .any(|p| p.as_os_str().is_empty())
        {
            anyhow::bail!(
                "refusing to serve the API on TCP {} without TLS: set api.tls_cert, \
                 api.tls_key and api.tls_client_ca",
                cfg.tcp
            );
        }
        Some(api_tls(&cfg)?)
    };
    let gid = resolve_group(&cfg.group)?;
    let uds = bind_socket(&cfg.socket, gid)?;
    tracing::info!(socket = %cfg.socket.display(), group = ?gid, "API listening");
    crate::readiness::announce(ctl.clone(), &cfg.socket);
    let api = Api::new(
        ctl.clone(),
        Access {
            group: gid,
            admins: cfg.admins.clone(),
        },
    );
    let wait = |mut rx: watch::Receiver<bool>| async move {
        while !*rx.borrow() {
            if rx.changed().await.is_err() {
                break;
            }
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    {
        let api = api.clone();
        let rx = shutdown.clone();
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(api.into_server())
                .serve_with_incoming_shutdown(UnixListenerStream::new(uds), wait(rx))
                .await
                .context("API server (unix)")
        });
    }
    if let Some(tls) = tls {
        let l = TcpListener::bind(&cfg.tcp)
            .await
            .with_context(|| format!("binding API TCP {}", cfg.tcp))?;
        let bound = l.local_addr().context("API TCP listener address")?;
        let _ = ctl.api_tcp_addr.set(bound);
        tracing::info!(addr = %bound, admins = ?cfg.admins, node = %ctl.node_name, "API also listening on TCP with mutual TLS");
        let api = api.clone();
        let rx = shutdown.clone();
        let max = cfg.tcp_max_connections;
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .tls_config(tls)
                .context("API TLS config")?
                .add_service(api.into_server())
                .serve_with_incoming_shutdown(bounded_incoming(l, max), wait(rx))
                .await
                .context("API server (tcp)")
        });
    }
    if !ctl.cfg.metrics.http.is_empty() {
        let l = TcpListener::bind(&ctl.cfg.metrics.http)
            .await
            .with_context(|| format!("binding metrics {}", ctl.cfg.metrics.http))?;
        tracing::info!(addr = %ctl.cfg.metrics.http, "Prometheus metrics over HTTP");
        let ctl = ctl.clone();
        let rx = shutdown.clone();
        let render = move || {
            let ctl = ctl.clone();
            async move { ctl.metrics.render(ctl.gauges().await) }
        };
        tasks.spawn(async move {
            tokio::select! {
                _ = serve_metrics(l, HttpLimits::default(), render) => {}
                _ = wait(rx) => {}
            }
            Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("listener task")??;
    }
    let _ = std::fs::remove_file(&cfg.socket);
    Ok(())
}

/// A TCP connection of the API that holds one of the listener's slots until it closes.
pub struct SlotStream {
    io: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Connected for SlotStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for SlotStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for SlotStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The connections of the API's TCP listener, at most `max` at once (`api.tcp_max_connections`,
/// handshakes in progress included): one more is closed at once, so that clients that
/// connect and stall cannot take the controller's descriptors or memory.
pub fn bounded_incoming(
    l: TcpListener,
    max: usize,
) -> impl futures::Stream<Item = std::io::Result<SlotStream>> {
    let slots = Arc::new(Semaphore::new(max));
    futures::stream::unfold((l, slots), |(l, slots)| async move {
        loop {
            match l.accept().await {
                Ok((io, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let _ = io.set_nodelay(true);
                        return Some((Ok(SlotStream { io, _slot: slot }), (l, slots)));
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "API over TCP: too many connections, closing one");
                    }
                },
                Err(e) => {
                    // Out of descriptors or similar: do not spin.
                    tracing::warn!(error = %e, "API over TCP: accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// Bounds of the metrics listener: a scraper that stalls or floods is cut off.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Time to send the request head.
    pub header_read: Duration,
    /// Time for a whole connection (one request: no keep-alive).
    pub connection: Duration,
    /// Connections served at once; more are closed at once.
    pub connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read: Duration::from_secs(5),
            connection: Duration::from_secs(10),
            connections: 16,
        }
    }
}

/// Serves `GET /metrics` on `l` (anything else: 404) until dropped; `render`
/// makes the body of each scrape.
pub async fn serve_metrics<F, Fut>(l: TcpListener, limits: HttpLimits, render: F)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = String> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.connections));
    loop {
        let s = match l.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors or similar: do not spin.
                tracing::warn!(error = %e, "metrics listener: accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("metrics listener: too many connections, closing one");
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let render = render.clone();
                async move { Ok::<_, Infallible>(respond(req, render).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read)
                .keep_alive(false)
                .serve_connection(TokioIo::new(s), service);
            match tokio::time::timeout(limits.connection, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics connection"),
                Err(_) => tracing::debug!("metrics connection timed out"),
            }
            drop(slot);
        });
    }
}

async fn respond<F, Fut>(req: Request<Incoming>, render: F) -> Response<Full<Bytes>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = String>,
{
    let (status, body) = if req.method() == Method::GET && req.uri().path() == "/metrics" {
        (StatusCode::OK, render().await)
    } else {
        (StatusCode::NOT_FOUND, String::from("see /metrics\n"))
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn listener(limits: HttpLimits) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve_metrics(l, limits, || async {
            String::from("p4lb_controller_endpoints 3\n")
        }));
        addr
    }

    /// Sends `request` and reads the answer until the server closes (a reset
    /// ends it too: what arrived before it counts).
    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .expect("the server answers and closes");
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn get_metrics_is_served_and_nothing_else() {
        let addr = listener(HttpLimits::default()).await;
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{ok}"
        );
        assert!(
            ok.ends_with("\r\n\r\np4lb_controller_endpoints 3\n"),
            "{ok}"
        );
        for req in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            b"GET /metricsx HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let r = exchange(addr, req).await;
            assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
            assert!(r.ends_with("see /metrics\n"), "{r}");
        }
        let bad = exchange(addr, b"NOT HTTP\r\n\r\n").await;
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    }

    #[tokio::test]
    async fn a_client_that_sends_no_request_is_cut_off() {
        let addr = listener(HttpLimits {
            header_read: Duration::from_millis(200),
            connection: Duration::from_secs(1),
            connections: 2,
        })
        .await;
        let started = std::time::Instant::now();
        let silent = exchange(addr, b"").await;
        assert!(!silent.contains("200 OK"), "{silent}");
        assert!(started.elapsed() < Duration::from_secs(3));
        // The listener still serves afterwards.
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed() {
        let addr = listener(HttpLimits {
            header_read: Duration::from_secs(3),
            connection: Duration::from_secs(4),
            connections: 1,
        })
        .await;
        // The one slot, held by a client that has not sent its request yet.
        let mut held = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = exchange(addr, b"").await;
        assert_eq!(refused, "");
        held.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        held.read_to_end(&mut out).await.unwrap();
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200 OK\r\n"));
    }
}
