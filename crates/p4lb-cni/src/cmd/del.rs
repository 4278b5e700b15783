//! DEL: repeatable, and it succeeds once its work is done or cannot be done.
//!
//! 1. The controller: the endpoint is deregistered. When the controller cannot be
//!    reached (or answers "try again later"), the deregistration is recorded in
//!    [`crate::pending`] and finished by the next DEL or GC of the network that reaches
//!    it; DEL still succeeds. Reaching the controller also finishes the records left
//!    by earlier DELs.
//! 2. The veth: only p4lb's own. The host end is found by its deterministic name and
//!    deleted only if it carries the alias ADD set ([`super::host_alias`]); deleting it
//!    takes the pod end with it. An interface p4lb did not create (a foreign host link
//!    under the same name, the pod's `CNI_IFNAME` without our host end) is left alone,
//!    so DEL without a prior ADD changes nothing.
//! 3. The IPAM lease, only once the controller no longer routes to the address:
//!    released now after a deregistration, else when the record is finished.
//!
//! A container ID longer than the controller accepts
//! ([`crate::cni::env::MAX_CONTAINER_ID_LEN`]) was never added (ADD refuses it): DEL
//! only checks for a veth and succeeds.

use serde_json::Value;

use super::Invocation;
use crate::api_client::Controller;
use crate::cni::env::MAX_CONTAINER_ID_LEN;
use crate::cni::error::{CniError, Code};
use crate::pending::{self, Pending};
use crate::restore;

pub async fn run(inv: &Invocation) -> Result<Option<Value>, CniError> {
    let args = inv.args()?;
    // A restore hint changes what IPAM saw on ADD; DEL must send the same.
    let hint = restore::detect(&args, &inv.conf.runtime_config).unwrap_or(None);
    let ipam_env = inv.ipam_env(hint.as_ref());
    let registrable = inv.env.container_id.len() <= MAX_CONTAINER_ID_LEN;

    // 1. The controller first: it must stop routing to the pod before the lease goes.
    let deregistered = if registrable {
        deregister(inv).await
    } else {
        Ok(false)
    };

    // 2. The veth, if it is ours.
    crate::attach::remove_own_veth(&inv.target()).await?;
    // A refusal (not "try again later") fails DEL, and the lease is kept.
    let deregistered =
        deregistered.map_err(|e| e.context("endpoint not deregistered; the IPAM lease is kept"))?;

    // 3. The lease, unless the controller may still route to it.
    if deregistered {
        inv.ipam("DEL", ipam_env)?;
    } else if registrable {
        let ipam_args = ipam_env
            .iter()
            .find(|(k, _)| *k == "CNI_ARGS")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| inv.env.args.clone());
        pending::record(
            inv,
            Pending {
                container_id: inv.env.container_id.clone(),
                ifname: inv.env.ifname.clone(),
                ipam_args,
            },
        )?;
        eprintln!(
            "p4lb: controller unreachable: deregistration of {}/{} recorded; the IPAM \
             lease is kept until the next DEL or GC of network {} reaches the controller",
            inv.env.container_id, inv.env.ifname, inv.conf.name
        );
    }
    Ok(None)
}

/// Deregisters the attachment and finishes earlier records. `Ok(false)`: the
/// controller could not be reached (or asked to try again later); any other refusal
/// is an error.
async fn deregister(inv: &Invocation) -> Result<bool, CniError> {
    let mut c =
        match Controller::connect(&inv.p4.controller_socket, inv.p4.controller_timeout).await {
            Ok(c) => c,
            Err(e) if e.code == Code::TryAgainLater as u32 => return Ok(false),
            Err(e) => return Err(e),
        };
    match c.deregister(&inv.env.container_id, &inv.env.ifname).await {
        Ok(_) => {}
        Err(e) if e.code == Code::TryAgainLater as u32 => return Ok(false),
        Err(e) => return Err(e),
    }
    // Records of other attachments: best effort, they stay recorded on failure.
    match pending::complete(inv, &mut c, |_| false).await {
        Ok(errors) => {
            for e in errors {
                eprintln!("p4lb: warning: {e}");
            }
        }
        Err(e) => eprintln!("p4lb: warning: pending deregistrations: {e}"),
    }
    Ok(true)
}
