//! Logging of the short-lived helpers the runtimes start (the CRIU action script and
//! the OCI hook): plain lines on stderr, which CRIU copies into its own log and Podman
//! into its journal, filtered by `P4LB_LOG` (default `info`).

/// The environment variable holding the filter (`tracing_subscriber` syntax).
pub const LOG_ENV: &str = "P4LB_LOG";

/// Installs the stderr logger; a second call in the same process is a no-op.
pub fn init_stderr() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_env_filter(filter)
        .try_init();
}
