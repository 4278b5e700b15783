//! The embedded software target: with no switch address configured, the controller
//! starts p4lb's software switch in its own process, listening on a Unix socket
//! under the state directory, and talks to it over P4Runtime like to any switch.
//! Cargo feature `embedded-switch` (on by default); a controller built without it
//! needs `switch.address`.

use crate::config::Config;

/// A software switch running inside the controller process.
pub struct EmbeddedSwitch {
    /// P4Runtime address ("unix:/path" or "host:port").
    pub address: String,
    #[cfg(feature = "embedded-switch")]
    handle: Option<p4lb_switch::SwitchHandle>,
}

impl EmbeddedSwitch {
    #[cfg(not(feature = "embedded-switch"))]
    pub async fn start(_cfg: &Config) -> anyhow::Result<EmbeddedSwitch> {
        anyhow::bail!(
            "no switch.address configured, and this controller was built without the \
             embedded software switch (cargo feature embedded-switch)"
        )
    }

    #[cfg(feature = "embedded-switch")]
    pub async fn start(cfg: &Config) -> anyhow::Result<EmbeddedSwitch> {
        use anyhow::Context;

        let listen = if cfg.switch.embedded_listen.is_empty() {
            format!("unix:{}", cfg.state_dir.join("switch.sock").display())
        } else {
            cfg.switch.embedded_listen.clone()
        };
        let grpc_addr: p4lb_switch::GrpcAddr = listen
            .parse()
            .map_err(|e: String| anyhow::anyhow!("switch.embedded_listen: {e}"))?;
        let handle = p4lb_switch::serve(p4lb_switch::SwitchConfig {
            grpc_addr,
            device_id: cfg.switch.device_id,
            ..Default::default()
        })
        .await
        .context("starting the embedded software switch")?;
        let address = handle.addr.to_string();
        tracing::info!(%address, "embedded software switch started");
        Ok(EmbeddedSwitch {
            address,
            handle: Some(handle),
        })
    }

    /// Stops the embedded switch.
    pub async fn shutdown(&mut self) {
        #[cfg(feature = "embedded-switch")]
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }
}
