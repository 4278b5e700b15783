//! Running containerd (CRI) inside a testbed.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::session::Testbed;

/// containerd's socket inside the testbed.
pub const SOCKET: &str = "/run/containerd/containerd.sock";
/// containerd's log inside the testbed.
pub const LOG: &str = "/tmp/containerd.log";

/// Starts containerd with /etc/containerd/config.toml and waits until it
/// answers `ctr version` on its socket. Returns the socket's host path. Tests
/// that talk CRI wait for the CRI service itself with [`start_with`].
pub fn start(tb: &Testbed) -> Result<PathBuf> {
    start_with(tb, |_| {
        tb.sh(&format!("ctr --address {SOCKET} version"))
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

/// Starts containerd with /etc/containerd/config.toml and waits until
/// `ready` (given the socket's host path) succeeds; its last error goes into
/// the timeout's message. Returns the socket's host path.
pub fn start_with(
    tb: &Testbed,
    ready: impl FnMut(&Path) -> std::result::Result<(), String>,
) -> Result<PathBuf> {
    start_config(tb, "/etc/containerd/config.toml", SOCKET, LOG, ready)
}

/// [`start_with`] for a containerd of its own: its configuration file `config` (its
/// own root, state and address), its socket `socket` and its log `log` (all inside the
/// testbed), as a second node beside the default one.
pub fn start_config(
    tb: &Testbed,
    config: &str,
    socket: &str,
    log: &str,
    ready: impl FnMut(&Path) -> std::result::Result<(), String>,
) -> Result<PathBuf> {
    start_config_via(tb, "", config, socket, log, ready)
}

/// [`start_config`] with containerd started through `launcher` (a command prefix, e.g.
/// `nsenter --mount=…` to run it in a node's mount namespace; empty: none).
pub fn start_config_via(
    tb: &Testbed,
    launcher: &str,
    config: &str,
    socket: &str,
    log: &str,
    mut ready: impl FnMut(&Path) -> std::result::Result<(), String>,
) -> Result<PathBuf> {
    tb.sh(&format!(
        "{launcher} setsid containerd --config {config} >{log} 2>&1 &"
    ))?;
    let socket = tb.host_path(socket);
    let mut last = String::new();
    let ok = crate::wait::until(30, "containerd's CRI socket", || {
        if !socket.exists() {
            return false;
        }
        match ready(&socket) {
            Ok(()) => true,
            Err(e) => {
                last = e;
                false
            }
        }
    });
    if let Err(e) = ok {
        let log = tb.sh(&format!("tail -n 30 {log}")).unwrap_or_default();
        return Err(Error::Testbed(format!(
            "{e} (last error: {last}); containerd log:\n{log}"
        )));
    }
    Ok(socket)
}

/// The tail of containerd's log (for failure messages).
pub fn log_tail(tb: &Testbed, lines: usize) -> String {
    tb.sh(&format!("tail -n {lines} {LOG}")).unwrap_or_default()
}
