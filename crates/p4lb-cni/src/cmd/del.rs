//! DEL: best effort and repeatable. Deregisters from the controller, removes the veth
//! (found by its deterministic host name even when the pod's namespace is gone) and
//! releases the IPAM lease.
//!
//! One exception to "always succeed": when the controller cannot be reached, the
//! endpoint may still be routed to, so the IPAM lease is kept (the address must not be
//! handed to another pod yet) and DEL answers 11 (try again later). The next DEL, or
//! GC, finishes the job.

use std::path::Path;

use serde_json::Value;

use super::{host_ifname, Invocation};
use crate::api_client::Controller;
use crate::cni::error::{CniError, Code};
use crate::net::{NetNs, Netlink};
use crate::restore;

pub async fn run(inv: &Invocation) -> Result<Option<Value>, CniError> {
    let args = inv.args()?;
    // A restore hint changes what IPAM saw on ADD; DEL must send the same.
    let hint = restore::detect(&args, &inv.conf.runtime_config).unwrap_or(None);

    // 1. The controller first: it must stop routing to the pod before anything else.
    let controller_result =
        match Controller::connect(&inv.p4.controller_socket, inv.p4.controller_timeout).await {
            Ok(mut c) => c
                .deregister(&inv.env.container_id, &inv.env.ifname)
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };

    // 2. The veth: the pod end if the namespace still exists, then the host end.
    if !inv.env.netns.is_empty() {
        match NetNs::open(Path::new(&inv.env.netns)) {
            Ok(ns) => {
                let pod = Netlink::in_ns(&ns)?;
                pod.delete(&inv.env.ifname).await?;
            }
            // Gone already: so is the pod end of the veth.
            Err(e) if e.code == Code::UnknownContainer as u32 => {}
            Err(e) => return Err(e),
        }
    }
    let (host, _host_ns) = inv.host_netlink()?;
    host.delete(&host_ifname(&inv.env.container_id, &inv.env.ifname))
        .await?;

    // 3. The lease, unless the controller may still route to it.
    match controller_result {
        Ok(()) => {
            inv.ipam("DEL", inv.ipam_env(hint.as_ref()))?;
            Ok(None)
        }
        Err(e) => {
            Err(e.context("endpoint not deregistered; the IPAM lease is kept until a DEL succeeds"))
        }
    }
}
