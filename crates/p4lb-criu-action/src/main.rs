//! `p4lb-criu-action`: CRIU action script (see docs/migration.md).
//!
//! Exit status: 0 when the action succeeded or had nothing to do; 1 when it failed
//! (CRIU then aborts the checkpoint/restore); 2 when not run by CRIU.

use std::collections::HashMap;
use std::process::ExitCode;

use p4lb_criu_action::config::{Config, Policy};
use p4lb_criu_action::env::ActionEnv;

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    // An action p4lb has no work at costs CRIU only the exec.
    if std::env::var("CRTOOLS_SCRIPT_ACTION")
        .is_ok_and(|a| !p4lb_criu_action::action::CriuAction::parse(&a).has_work())
    {
        return ExitCode::SUCCESS;
    }
    p4lb_api::log::init_stderr();
    let vars: HashMap<String, String> = std::env::vars().collect();
    let env = match ActionEnv::from_map(&vars) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("p4lb-criu-action: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = match Config::load(&vars) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("p4lb-criu-action: {}: configuration: {e}", env.action_name);
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("p4lb-criu-action: {}: runtime: {e}", env.action_name);
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(p4lb_criu_action::runner::run(&env, &cfg)) {
        Ok(done) => {
            // elapsed_us: the script's own time, which CRIU waits for.
            tracing::info!(
                action = %env.action_name,
                elapsed_us = started.elapsed().as_micros() as u64,
                "{done}"
            );
            ExitCode::SUCCESS
        }
        Err(e) if e.is_controller() && cfg.policy == Policy::IgnoreController => {
            tracing::warn!(
                action = %env.action_name,
                elapsed_us = started.elapsed().as_micros() as u64,
                "{e}; going on because policy is ignore-controller (clients may see resets)"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(
                action = %env.action_name,
                elapsed_us = started.elapsed().as_micros() as u64,
                "{e}; failing so that CRIU aborts"
            );
            eprintln!("p4lb-criu-action: {}: {e}", env.action_name);
            ExitCode::FAILURE
        }
    }
}
