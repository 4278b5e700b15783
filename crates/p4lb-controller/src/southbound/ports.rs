//! Attaching endpoints' host-side interfaces to switch ports: the software switch's
//! SwitchPorts gRPC service, or BMv2's Thrift runtime API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p4lb_proto::api::{
    switch_ports_client::SwitchPortsClient, AddPortRequest, ListPortsRequest, RemovePortRequest,
};

use crate::error::{Error, Result};
use crate::southbound::channel::SwitchChannel;
use crate::southbound::session::SwitchSession;
use crate::southbound::thrift::Bmv2Thrift;

/// How ports are managed on the configured switch.
#[derive(Clone)]
pub enum PortAttacher {
    /// SwitchPorts served next to P4Runtime on the switch's gRPC address.
    Software(Arc<SwitchSession>),
    /// BMv2's Thrift API, the egress queue depth set before ports are attached, and the
    /// ports of departed endpoints, left attached (see [`PortAttacher::remove`]).
    Bmv2 {
        thrift: Bmv2Thrift,
        queue_depth: u32,
        retired: Arc<Mutex<BTreeSet<u32>>>,
    },
}

impl PortAttacher {
    pub fn bmv2(addr: &str, queue_depth: u32) -> PortAttacher {
        PortAttacher::Bmv2 {
            thrift: Bmv2Thrift {
                addr: addr.to_string(),
                timeout: Duration::from_secs(2),
            },
            queue_depth,
            retired: Arc::default(),
        }
    }

    /// Port numbers that must not be given to a new endpoint: on BMv2, the ports of
    /// departed endpoints, which stay attached until BMv2 restarts.
    pub fn retired(&self) -> BTreeSet<u32> {
        match self {
            PortAttacher::Software(_) => BTreeSet::new(),
            PortAttacher::Bmv2 { retired, .. } => {
                retired.lock().map(|r| r.clone()).unwrap_or_default()
            }
        }
    }

    /// What the switch needs before ports are attached: on BMv2, egress queues deeper
    /// than its default of 64 packets (a burst of more towards one port is dropped).
    /// Idempotent; a failure is logged and ports are attached anyway.
    pub async fn prepare(&self) {
        if let PortAttacher::Bmv2 {
            thrift,
            queue_depth,
            ..
        } = self
        {
            match thrift.set_all_egress_queue_depths(*queue_depth).await {
                Ok(()) => tracing::debug!(queue_depth, "BMv2 egress queue depth set"),
                Err(e) => tracing::warn!(
                    queue_depth,
                    error = %e,
                    "cannot set BMv2's egress queue depth (switch.bmv2_queue_depth); bursts \
                     beyond its default of 64 packets per port will be dropped"
                ),
            }
        }
    }

    fn soft(link: &SwitchSession) -> Result<SwitchPortsClient<SwitchChannel>> {
        Ok(SwitchPortsClient::new(link.channel()?))
    }

    /// Attaches `iface` as data-plane port `port`.
    pub async fn add(&self, port: u32, iface: &str) -> Result<()> {
        match self {
            PortAttacher::Software(link) => {
                Self::soft(link)?
                    .add_port(AddPortRequest {
                        port,
                        iface: iface.to_string(),
                    })
                    .await
                    .map_err(|s| port_error("attach", port, iface, s))?;
            }
            PortAttacher::Bmv2 { thrift: t, .. } => t.add_port(iface, port).await.map_err(|e| {
                Error::precondition(format!("attaching {iface} as BMv2 port {port}: {e}"))
            })?,
        }
        Ok(())
    }

    /// Detaches port `port`. On BMv2 the port stays attached and its number is retired
    /// instead: BMv2's `bm_dev_mgr_remove_port` takes the port manager's write lock and then
    /// waits for its packet thread to acknowledge, while that thread waits for the same
    /// lock whenever it is not blocked in `select` (that is, whenever packets are flowing):
    /// removing a port under traffic deadlocks BMv2's whole data plane (seen with BMv2
    /// 1.15.5 during a migration). The departed pod's interface is gone, so the port
    /// carries nothing; its number is used again only after BMv2 restarts.
    pub async fn remove(&self, port: u32) -> Result<()> {
        match self {
            PortAttacher::Software(link) => {
                Self::soft(link)?
                    .remove_port(RemovePortRequest { port })
                    .await
                    .map_err(|s| port_error("detach", port, "", s))?;
            }
            PortAttacher::Bmv2 { retired, .. } => {
                if let Ok(mut r) = retired.lock() {
                    r.insert(port);
                }
                tracing::info!(
                    port,
                    "BMv2 port left attached and retired (removing a port under traffic \
                     deadlocks BMv2); its number is free again after BMv2 restarts"
                );
            }
        }
        Ok(())
    }

    /// Ports the switch has: number → interface.
    pub async fn list(&self) -> Result<BTreeMap<u32, String>> {
        match self {
            PortAttacher::Software(link) => {
                let r = Self::soft(link)?
                    .list_ports(ListPortsRequest {})
                    .await
                    .map_err(|s| Error::Unavailable(format!("listing switch ports: {s}")))?;
                Ok(r.into_inner()
                    .ports
                    .into_iter()
                    .map(|p| (p.port, p.iface))
                    .collect())
            }
            PortAttacher::Bmv2 { thrift: t, .. } => Ok(t
                .show_ports()
                .await
                .map_err(|e| Error::Unavailable(format!("listing BMv2 ports: {e}")))?
                .into_iter()
                .map(|p| (p.port as u32, p.iface))
                .collect()),
        }
    }
}

fn port_error(what: &str, port: u32, iface: &str, s: tonic::Status) -> Error {
    let msg = format!("{what} switch port {port} {iface}: {}", s.message());
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled => Error::Unavailable(msg),
        tonic::Code::InvalidArgument | tonic::Code::NotFound => Error::InvalidArgument(msg),
        tonic::Code::AlreadyExists => Error::AlreadyExists(msg),
        _ => Error::FailedPrecondition(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bmv2_ports_are_retired_not_removed() {
        // Nothing listens on port 1: any Thrift call would fail.
        let p = PortAttacher::bmv2("127.0.0.1:1", 1024);
        p.remove(7).await.unwrap();
        p.remove(9).await.unwrap();
        assert_eq!(p.retired(), BTreeSet::from([7, 9]));
    }
}
