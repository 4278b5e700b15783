//! systemd readiness for a `Type=notify` unit: `READY=1` once the API socket is bound
//! and the switch holds the state (`Controller::wait_synced`), `STATUS=` lines on
//! the way, `STOPPING=1` at shutdown. Sent with the `sd-notify` crate; without
//! `NOTIFY_SOCKET` (not started by systemd) nothing is sent.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::controller::Controller;

/// Whether a service manager listens (`NOTIFY_SOCKET` is set).
fn supervised() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "notifying systemd");
    }
}

/// Call once the API socket `socket` is bound: reports `READY=1` when the switch is
/// in sync (in the background).
pub fn announce(ctl: Arc<Controller>, socket: &Path) {
    if !supervised() {
        return;
    }
    let socket = socket.display().to_string();
    let switch = ctl.link.address().to_string();
    send(&[NotifyState::Status(&format!(
        "API on {socket}; bringing the switch at {switch} in sync"
    ))]);
    let ctl = Arc::downgrade(&ctl);
    tokio::spawn(async move {
        loop {
            let Some(c) = ctl.upgrade() else { return };
            if c.wait_synced(Duration::from_millis(500)).await {
                break;
            }
        }
        tracing::info!("ready: API bound, switch in sync");
        send(&[
            NotifyState::Ready,
            NotifyState::Status(&format!("API on {socket}; switch at {switch} in sync")),
        ]);
    });
}

/// Call when shutting down.
pub fn stopping() {
    if supervised() {
        send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
    }
}
