//! CRI in the testbed: the client is p4lb-agent's ([`p4lb_agent::cri`], one source for
//! the agent's CRI runtime and the scenarios); here are starting containerd in a
//! testbed and the pod and container settings the scenarios use.

use std::path::{Path, PathBuf};

use p4lb_testbed::containerd;
use p4lb_testbed::session::Testbed;

pub use p4lb_agent::cri::{container_linux, pb, Cri, CriError};

use crate::error::{Error, Result};

impl From<CriError> for Error {
    fn from(e: CriError) -> Error {
        let call = match &e {
            CriError::Call { call, .. } => call.to_string(),
            CriError::Connect { .. } => "connect".into(),
            CriError::Local(_) => "client".into(),
        };
        Error::Cri {
            call,
            message: e.to_string(),
        }
    }
}

/// Starts containerd in `tb` and waits until its CRI service answers
/// `Version`. Returns the socket's host path.
pub fn start_containerd(tb: &Testbed) -> Result<PathBuf> {
    let socket = containerd::start_with(tb, ready)?;
    Ok(socket)
}

/// Does the CRI service at `socket` answer `Version`?
pub fn ready(socket: &Path) -> std::result::Result<(), String> {
    Cri::connect(socket)
        .and_then(|mut c| c.version())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A pod sandbox config with the defaults the testbed uses: namespace `default`,
/// host PID/IPC namespaces off, pod network on (CNI).
pub fn pod_config(name: &str, uid: &str) -> pb::PodSandboxConfig {
    p4lb_agent::cri::pod_config_in("default", name, uid)
}
