//! STATUS: ready when the controller answers and reports itself and its switch ready.

use serde_json::Value;

use super::Invocation;
use crate::api_client::Controller;
use crate::cni::error::{CniError, Code};

pub async fn run(inv: &Invocation) -> Result<Option<Value>, CniError> {
    let not_available = |details: String| {
        CniError::new(Code::NotAvailable, "p4lb is not available").details(details)
    };
    let mut c = Controller::connect(&inv.p4.controller_socket, inv.p4.controller_timeout)
        .await
        .map_err(|e| not_available(e.to_string()))?;
    let s = c.status().await.map_err(|e| not_available(e.to_string()))?;
    if !s.switch_connected {
        return Err(not_available(format!(
            "controller has no switch connection ({} {}): {}",
            s.switch_kind, s.switch_address, s.message
        )));
    }
    if !s.ready {
        return Err(not_available(format!(
            "controller not ready: {}",
            s.message
        )));
    }
    if inv.conf.ipam_type.is_some() && !inv.env.path.is_empty() {
        inv.ipam("STATUS", Vec::new())?;
    }
    Ok(None)
}
