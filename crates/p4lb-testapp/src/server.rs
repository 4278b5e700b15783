//! Server mode: answers every request with its number, the count of requests
//! seen on the connection, a checksum and the echoed payload. In stateful mode
//! the reply also carries a process-wide counter, so a client notices when the
//! server's memory did not survive a checkpoint/restore.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::protocol::{self, ReplyHeader};

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    pub stateful: bool,
}

/// Serves until `shutdown` completes.
pub async fn run(opts: ServerOptions, shutdown: impl Future<Output = ()>) -> Result<()> {
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    eprintln!(
        "p4lb-testapp server listening on {}{}",
        listener.local_addr()?,
        if opts.stateful { " (stateful)" } else { "" }
    );
    let state = Arc::new(AtomicU64::new(0));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        eprintln!("accept: {e}");
                        continue;
                    }
                };
                let state = opts.stateful.then(|| state.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, state).await {
                        eprintln!("connection from {peer}: {e:#}");
                    }
                });
            }
        }
    }
}

/// Answers requests on one connection until the client closes it.
pub async fn serve(mut stream: TcpStream, state: Option<Arc<AtomicU64>>) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut count = 0u64;
    let mut header = [0u8; protocol::REQUEST_HEADER_LEN];
    loop {
        match stream.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e).context("reading request"),
        }
        let h = protocol::decode_request_header(&header)?;
        let mut payload = vec![0u8; h.len as usize];
        stream
            .read_exact(&mut payload)
            .await
            .context("reading payload")?;
        count += 1;
        let reply = ReplyHeader {
            seq: h.seq,
            server_count: count,
            checksum: protocol::checksum(&payload),
            state: state
                .as_ref()
                .map(|s| s.fetch_add(1, Ordering::SeqCst) + 1)
                .unwrap_or(0),
            len: h.len,
        };
        stream
            .write_all(&protocol::encode_reply(&reply, &payload))
            .await
            .context("writing reply")?;
    }
}
