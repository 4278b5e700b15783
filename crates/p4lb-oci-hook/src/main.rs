//! `p4lb-oci-hook`: OCI hook (hooks.d/p4lb.json). Reads the container state on
//! stdin and labels the container's p4lb endpoint with its names and annotations.
//!
//! Policy (`P4LB_HOOK_POLICY`): `best-effort` (default) never blocks a container
//! because the controller is unreachable or refuses (exit 0, logged); `strict`
//! fails the hook (exit 1) in that case. Malformed state on stdin always fails.

use std::process::ExitCode;
use std::time::Duration;

use p4lb_oci_hook::hook::{handle, HookConfig, HookError};
use p4lb_oci_hook::state::read_state;

fn main() -> ExitCode {
    p4lb_api::log::init_stderr();
    let strict = match std::env::var("P4LB_HOOK_POLICY").as_deref() {
        Err(_) | Ok("") | Ok("best-effort") => false,
        Ok("strict") => true,
        Ok(other) => {
            eprintln!(
                "p4lb-oci-hook: P4LB_HOOK_POLICY={other:?} is not valid (best-effort, strict)"
            );
            return ExitCode::FAILURE;
        }
    };
    let st = match read_state(std::io::stdin().lock()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("p4lb-oci-hook: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = HookConfig {
        socket: std::env::var_os("P4LB_CONTROLLER_SOCKET")
            .filter(|s| !s.is_empty())
            .map(Into::into)
            .unwrap_or_else(|| p4lb_api::DEFAULT_SOCKET.into()),
        connect_timeout: Duration::from_secs(2),
        call_timeout: Duration::from_secs(5),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("p4lb-oci-hook: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(handle(&st, &cfg)) {
        Ok(o) => {
            tracing::info!(container = %st.id(), "{o:?}");
            ExitCode::SUCCESS
        }
        Err(HookError::Controller(e)) if !strict => {
            tracing::warn!(container = %st.id(), "{e}; labels not updated (best-effort)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("p4lb-oci-hook: container {}: {e}", st.id());
            ExitCode::FAILURE
        }
    }
}
