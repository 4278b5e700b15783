//! Server mode: answers every request with its number, the count of requests
//! seen on the connection, a checksum and the echoed payload. In stateful mode
//! the reply also carries a process-wide counter, so a client notices when the
//! server's memory did not survive a checkpoint/restore. With `touch_mib` the
//! server first writes to that much memory and keeps it for its lifetime, so that a
//! checkpoint of it carries that many MiB (for migration benchmarks).

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
    /// MiB of memory written before listening and kept until exit (0: none).
    pub touch_mib: usize,
}

/// The most memory `touch_mib` may ask for.
pub const MAX_TOUCH_MIB: usize = 16 << 10;

/// `mib` MiB of memory with every page written (non-zero), so that it is resident
/// and a checkpoint must dump it.
pub fn touch_memory(mib: usize) -> Result<Vec<u8>> {
    if mib > MAX_TOUCH_MIB {
        anyhow::bail!("refusing to touch {mib} MiB of memory: at most {MAX_TOUCH_MIB} MiB");
    }
    let mut mem = vec![0u8; mib << 20];
    for (i, page) in mem.chunks_mut(4096).enumerate() {
        page[0] = (i as u8) | 1;
    }
    Ok(std::hint::black_box(mem))
}

/// Serves until `shutdown` completes.
pub async fn run(opts: ServerOptions, shutdown: impl Future<Output = ()>) -> Result<()> {
    let touched = touch_memory(opts.touch_mib)?;
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    eprintln!(
        "p4lb-testapp server listening on {}{}{}",
        listener.local_addr()?,
        if opts.stateful { " (stateful)" } else { "" },
        if touched.is_empty() {
            String::new()
        } else {
            format!(" ({} MiB touched)", touched.len() >> 20)
        }
    );
    let state = Arc::new(AtomicU64::new(0));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                drop(std::hint::black_box(touched));
                return Ok(());
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touched_memory_has_every_page_written_and_a_limit() {
        let mem = touch_memory(2).unwrap();
        assert_eq!(mem.len(), 2 << 20);
        assert!(mem.chunks(4096).all(|p| p[0] != 0));
        assert!(touch_memory(0).unwrap().is_empty());
        let e = touch_memory(MAX_TOUCH_MIB + 1).unwrap_err().to_string();
        assert!(e.contains("at most"), "{e}");
    }
}
