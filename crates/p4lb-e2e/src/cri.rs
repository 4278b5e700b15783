//! CRI in the testbed: the client is p4lb-agent's ([`p4lb_agent::cri`], one source for
//! the agent's CRI runtime and the scenarios); here are starting containerd in a
//! testbed and the pod and container settings the scenarios use.

use std::path::{Path, PathBuf};

use p4lb_testbed::containerd;
use p4lb_testbed::session::Testbed;

pub use p4lb_agent::cri::{container_linux, pb, Cri, CriError};

use crate::error::{Error, Result};
use crate::scenario::{World, SOCKET};

/// The pods' network of [`use_p4lb_cni`] (host-local's range).
pub const POD_SUBNET: &str = "10.88.0.0/24";

/// containerd's CNI configuration in the testbed: the p4lb plugin (with the pod
/// annotations capability, so a pod's `p4lb.io/restore-from` reaches it), host-local
/// IPAM on 10.88.0.0/24, every endpoint labelled `app=web`.
pub fn use_p4lb_cni(w: &World) -> Result<()> {
    use_p4lb_cni_with(w, false)
}

/// [`use_p4lb_cni`], with the pods routed behind their node when `routed`
/// (`"routed": true`, for [`crate::nodes::Nodes::start_cri_routed`]).
pub fn use_p4lb_cni_with(w: &World, routed: bool) -> Result<()> {
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"pods","plugins":[{{"type":"p4lb","controllerSocket":"{SOCKET}","addRestoredIp":false,"routed":{routed},"labels":{{"app":"web"}},"capabilities":{{"io.kubernetes.cri.pod-annotations":true}},"ipam":{{"type":"host-local","subnet":"{POD_SUBNET}","routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"/var/lib/cni/pods"}}}}]}}"#
    );
    w.sh(&format!(
        "rm -f /etc/cni/net.d/*; mkdir -p /opt/cni/bin; cp {} /opt/cni/bin/p4lb; \
         cat > /etc/cni/net.d/10-p4lb.conflist <<'EOF'\n{conf}\nEOF\n",
        w.cni
    ))?;
    Ok(())
}

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
