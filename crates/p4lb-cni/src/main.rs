//! `p4lb`: the CNI plugin binary. Reads `CNI_*` and stdin, prints a result or a CNI
//! error on stdout, logs (when `P4LB_CNI_LOG` is set, e.g. `debug`) to stderr.

use std::io::{Read, Write};
use std::process::ExitCode;

use p4lb_cni::cni::env::Command;
use p4lb_cni::cni::error::{CniError, Code};
use p4lb_cni::cni::netconf::sniff_version;
use p4lb_cni::cni::version::{CURRENT, SUPPORTED};

fn main() -> ExitCode {
    if let Ok(filter) = std::env::var("P4LB_CNI_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let command_text = std::env::var("CNI_COMMAND").unwrap_or_default();
    if command_text.is_empty() {
        eprintln!(
            "p4lb CNI plugin {}\nCNI protocol versions supported: {}",
            env!("CARGO_PKG_VERSION"),
            SUPPORTED.join(", ")
        );
        return ExitCode::SUCCESS;
    }
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Err(e) => Err(CniError::new(Code::IoFailure, "cannot read stdin").details(e.to_string())),
        Ok(_) => Command::parse(&command_text).and_then(|command| {
            let version = sniff_version(&stdin);
            tracing::debug!(command = command.as_str(), ?version, "invoked");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .map_err(|e| {
                    CniError::new(Code::IoFailure, "tokio runtime").details(e.to_string())
                })?;
            rt.block_on(p4lb_cni::run(
                command,
                |k| std::env::var(k).ok(),
                stdin.clone(),
            ))
        }),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(v)) => {
            if writeln!(out, "{v}").is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::debug!(code = e.code, msg = %e.msg, details = %e.details, "failed");
            let version = sniff_version(&stdin).unwrap_or_else(|| CURRENT.to_string());
            let _ = writeln!(out, "{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}
