//! The embedded software target: with no switch address configured, the controller
//! starts p4lb's software switch in its own process, listening on a root-only Unix
//! socket under the state directory (mode 0600, callers' uids checked by the switch;
//! `switch.embedded_listen` may name a loopback TCP address instead), and talks to it
//! over P4Runtime like to any switch, calling its services in process
//! ([`crate::southbound::channel`]); the socket serves everything else (`p4lbctl`, tools).
//! Cargo feature `embedded-switch` (on by default); a controller built without it
//! needs `switch.address`.

use crate::config::Config;
use crate::southbound::channel::SwitchChannel;

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
            // `switch.embedded_listen` over TCP is for tests: loopback only, no TLS.
            insecure_loopback: true,
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

    /// The switch's services, called in this process (the controller's session uses them);
    /// `None` once the switch has stopped.
    pub fn in_process(&self) -> Option<SwitchChannel> {
        #[cfg(feature = "embedded-switch")]
        if let Some(h) = &self.handle {
            return Some(SwitchChannel::in_process(h.in_process()));
        }
        None
    }

    /// Stops the embedded switch.
    pub async fn shutdown(&mut self) {
        #[cfg(feature = "embedded-switch")]
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }
}

#[cfg(all(test, feature = "embedded-switch"))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A configuration whose state directory is as the controller's store leaves it.
    fn config_in(dir: &tempfile::TempDir) -> Config {
        let cfg = Config {
            state_dir: dir.path().join("state"),
            ..Config::default()
        };
        std::fs::create_dir(&cfg.state_dir).unwrap();
        std::fs::set_permissions(&cfg.state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        cfg
    }

    #[tokio::test]
    async fn the_embedded_switch_listens_on_a_root_only_socket() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config_in(&dir);
        let mut sw = EmbeddedSwitch::start(&cfg).await.expect("embedded switch");
        let sock = cfg.state_dir.join("switch.sock");
        assert_eq!(sw.address, format!("unix:{}", sock.display()));
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode(&sock) & 0o777, 0o600);
        sw.shutdown().await;
    }

    /// The session reaches the embedded switch through its services in process: with an
    /// address nobody listens on it still becomes primary, pushes the pipeline, writes and
    /// reads back, and gets the switch's per-update errors as over a socket.
    #[tokio::test]
    async fn the_session_calls_the_embedded_switch_in_process() {
        use crate::southbound::forwarding;
        use crate::southbound::session::{SwitchEvent, SwitchSession, Target};
        use p4lb_proto::p4runtime::{entity, update, Entity, Update};

        let dir = tempfile::tempdir().unwrap();
        let cfg = config_in(&dir);
        let mut sw = EmbeddedSwitch::start(&cfg).await.expect("embedded switch");
        let in_process = sw.in_process().expect("a running switch");
        assert!(in_process.is_in_process());
        let (info, ids) =
            forwarding::load_text(p4lb_p4::P4INFO_TXTPB, "built-in P4Info").expect("P4Info");
        let (link, mut events) = SwitchSession::spawn(Target {
            address: format!("unix:{}", dir.path().join("nobody-listens.sock").display()),
            device_id: 0,
            election_id: 1,
            pipeline: forwarding::pipeline_config(info, Vec::new()),
            digest_id: ids.conn_learn_digest,
            digest_config: Default::default(),
            reconnect_max: std::time::Duration::from_millis(100),
            tls: None,
            in_process: Some(in_process),
        });
        let up = tokio::time::timeout(std::time::Duration::from_secs(5), events.recv())
            .await
            .expect("session up in time");
        assert!(
            matches!(up, Some(SwitchEvent::Up { fresh: true, .. })),
            "{up:?}"
        );
        let insert = |e| Update {
            r#type: update::Type::Insert as i32,
            entity: Some(Entity {
                entity: Some(entity::Entity::TableEntry(e)),
            }),
        };
        link.write(vec![insert(p4lb_p4::entries::backend_locked(7))])
            .await
            .expect("write in process");
        let rows = link
            .read_table(p4lb_p4::tables::backends::ID, false)
            .await
            .expect("read in process");
        assert_eq!(rows.len(), 1, "{rows:?}");
        // The same entry again: the switch's per-update error comes back as over a socket.
        let again = link
            .write(vec![insert(p4lb_p4::entries::backend_locked(7))])
            .await
            .unwrap_err();
        assert!(
            again.only(6),
            "ALREADY_EXISTS expected: {}",
            again.summary()
        );
        link.close();
        sw.shutdown().await;
    }

    #[tokio::test]
    async fn an_embedded_listen_address_off_loopback_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config {
            state_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        cfg.switch.embedded_listen = "0.0.0.0:0".into();
        let e = match EmbeddedSwitch::start(&cfg).await {
            Ok(_) => panic!("an embedded switch on 0.0.0.0"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains("not a loopback address"), "{e}");
    }
}
