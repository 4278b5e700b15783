//! Pause mode: sleeps until SIGTERM or SIGINT (a pod sandbox's init process).

use anyhow::Result;
use tokio::signal::unix::{signal, SignalKind};

/// Waits for SIGTERM or SIGINT.
pub async fn run() -> Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
