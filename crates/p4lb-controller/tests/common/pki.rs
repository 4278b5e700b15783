//! Certificates for the tests of the API over TCP (made by `p4lb_controller::cert`, what
//! `p4lbctl cert` runs), and an in-process controller serving its API over mutual TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use p4lb_api::{ApiError, Client};
use p4lb_controller::cert::{self, Names};
use p4lb_controller::config::Config;
use tonic::Code;

use super::{config, eventually, start_switch, Ctl};

pub const CONNECT: Duration = Duration::from_secs(5);
pub const CALL: Duration = Duration::from_secs(10);

/// Certificates of one test: the client CA (also the controller's), the controller's
/// certificate for 127.0.0.1, nodes `node-a`, `node-b`, `node-c`, the admin `ops`, and a
/// `node-a` of another CA.
pub struct Pki {
    pub ca: PathBuf,
    pub dir: PathBuf,
    pub rogue_ca: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let ca = dir.join("ca");
        cert::make_ca(&ca, "p4lb test CA").unwrap();
        let localhost = Names {
            ips: vec!["127.0.0.1".parse().unwrap()],
            ..Default::default()
        };
        cert::issue(&ca, "p4lb-controller", &localhost, 1, dir).unwrap();
        for n in ["node-a", "node-b", "node-c", "ops"] {
            cert::issue(&ca, n, &Names::default(), 1, dir).unwrap();
        }
        let rogue_ca = dir.join("rogue-ca");
        cert::make_ca(&rogue_ca, "someone else").unwrap();
        let rogue = dir.join("rogue");
        cert::issue(&rogue_ca, "node-a", &Names::default(), 1, &rogue).unwrap();
        Pki {
            ca: ca.join("ca.pem"),
            dir: dir.to_path_buf(),
            rogue_ca: rogue,
        }
    }

    pub fn cert(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}-key.pem")),
        )
    }

    pub fn tls(&self, name: &str) -> tonic::transport::ClientTlsConfig {
        let (c, k) = self.cert(name);
        p4lb_api::tls::client_config(&self.ca, &c, &k).unwrap()
    }

    /// The controller's configuration with the API on 127.0.0.1 over mutual TLS.
    pub fn configure(&self, cfg: &mut Config) {
        let (c, k) = self.cert("p4lb-controller");
        cfg.api.tcp = String::from("127.0.0.1:0");
        cfg.api.tls_cert = c;
        cfg.api.tls_key = k;
        cfg.api.tls_client_ca = self.ca.clone();
        cfg.api.admins = vec![String::from("ops")];
        cfg.node_name = String::from("ctl-host");
    }
}

/// A controller serving its API over TCP; its `https://` address.
pub async fn start(dir: &Path, pki: &Pki) -> (p4lb_switch::SwitchHandle, Ctl, String) {
    let ssock = dir.join("switch.sock");
    let sw = start_switch(&ssock).await;
    let mut cfg = config(dir, &ssock);
    pki.configure(&mut cfg);
    let ctl = Ctl::start(cfg).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            ctl.ctl.api_tcp_addr.get().is_some()
        })
        .await,
        "the TCP listener is bound"
    );
    let addr = format!("https://{}", ctl.ctl.api_tcp_addr.get().unwrap());
    (sw, ctl, addr)
}

pub async fn client(addr: &str, pki: &Pki, name: &str) -> Client {
    Client::connect_tls(addr, &pki.tls(name), CONNECT, CALL)
        .await
        .unwrap_or_else(|e| panic!("{name} connects: {e}"))
}

/// A refusal with `code`.
pub fn refused<T: std::fmt::Debug>(r: Result<T, ApiError>, code: Code, what: &str) -> String {
    match r {
        Err(ApiError::Refused {
            code: c, message, ..
        }) if c == code => message,
        other => panic!("{what}: want {code:?}, got {other:?}"),
    }
}
