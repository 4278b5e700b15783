//! Listeners: the API on its Unix socket (0600, or 0660 with a group), optional TCP,
//! optional Prometheus HTTP.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

use crate::api::{Access, Api};
use crate::controller::Controller;

/// Resolves a group name or numeric gid.
pub fn resolve_group(group: &str) -> anyhow::Result<Option<u32>> {
    if group.is_empty() {
        return Ok(None);
    }
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(Some(gid));
    }
    let g = nix::unistd::Group::from_name(group)
        .with_context(|| format!("looking up group {group}"))?
        .with_context(|| format!("group {group} does not exist"))?;
    Ok(Some(g.gid.as_raw()))
}

/// Binds the API socket with the right owner and mode.
pub fn bind_socket(path: &Path, gid: Option<u32>) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        Ok(_) => anyhow::bail!("{} exists and is not a socket", path.display()),
        Err(_) => {}
    }
    // Create the socket with no access for anyone, then open it up as configured.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let l = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let l = l.with_context(|| format!("binding {}", path.display()))?;
    let mode = if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .with_context(|| format!("chown {}", path.display()))?;
        0o660
    } else {
        0o600
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(l)
}

/// Serves the API (and the optional listeners) until `shutdown` turns true.
pub async fn serve(ctl: Arc<Controller>, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let cfg = ctl.cfg.api.clone();
    let gid = resolve_group(&cfg.group)?;
    let uds = bind_socket(&cfg.socket, gid)?;
    tracing::info!(socket = %cfg.socket.display(), group = ?gid, "API listening");
    let api = Api::new(ctl.clone(), Access { group: gid });
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
    if !cfg.tcp.is_empty() {
        let l = TcpListener::bind(&cfg.tcp)
            .await
            .with_context(|| format!("binding API TCP {}", cfg.tcp))?;
        tracing::warn!(addr = %cfg.tcp, "API also listening on TCP (configured)");
        let api = api.clone();
        let rx = shutdown.clone();
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(api.into_server())
                .serve_with_incoming_shutdown(TcpListenerStream::new(l), wait(rx))
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
        tasks.spawn(async move {
            tokio::select! {
                _ = metrics_http(l, ctl) => {}
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

async fn metrics_http(l: TcpListener, ctl: Arc<Controller>) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        let ctl = ctl.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            while n < buf.len() {
                match s.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if head.starts_with("GET /metrics") {
                let g = ctl.gauges().await;
                ("200 OK", ctl.metrics.render(g))
            } else {
                ("404 Not Found", String::from("see /metrics\n"))
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}
