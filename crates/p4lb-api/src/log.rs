//! Logging of the short-lived helpers the runtimes start (the CRIU action script and
//! the OCI hook): plain lines on stderr, which CRIU copies into its own log and Podman
//! into its journal, filtered by `P4LB_LOG` (default `info`).

/// The environment variable holding the filter (`tracing_subscriber` syntax).
pub const LOG_ENV: &str = "P4LB_LOG";

/// Installs the stderr logger; a second call in the same process is a no-op.
/// Without `P4LB_LOG` the filter is the plain level `info`: building an `EnvFilter`
/// (directive parsing) is a measurable part of a helper that CRIU starts ten times
/// per migration.
pub fn init_stderr() {
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let _ = match std::env::var_os(LOG_ENV) {
        Some(_) => fmt
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .try_init(),
        None => fmt
            .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
            .try_init(),
    };
}
