//! The software switch over TCP: mutual TLS with certificates made at test time (rcgen).
//! A client with a certificate from the switch's client CA gets through, one without a
//! certificate or with a certificate from another CA is refused, and so is a client that
//! does not trust the switch's CA; the controller programs a switch over `https://`.
//! A switch on TCP without TLS, or with a key others can read, does not start.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use p4lb_controller::southbound::session::{self, connect_channel_tls};
use p4lb_controller::southbound::tls::client_config;
use p4lb_proto::p4runtime::GetForwardingPipelineConfigRequest;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA that can sign leaf certificates.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate for `names` (DNS names or IP addresses): (cert PEM, key PEM).
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `dir/name` with `mode`; returns the path.
fn file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// The PKI of one test: a switch CA (signs the switch's certificate), a client CA (signs
/// the controller's), and a rogue CA (signs nothing the switch trusts).
struct Pki {
    switch_ca: PathBuf,
    switch_cert: PathBuf,
    switch_key: PathBuf,
    client_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    rogue_cert: PathBuf,
    rogue_key: PathBuf,
    rogue_ca: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let switch_ca = Ca::new("p4lb switch CA");
    let client_ca = Ca::new("p4lb controller CA");
    let rogue = Ca::new("someone else");
    let (sc, sk) = switch_ca.leaf(&["127.0.0.1", "localhost"]);
    let (cc, ck) = client_ca.leaf(&["p4lb-controller"]);
    let (rc, rk) = rogue.leaf(&["p4lb-controller"]);
    Pki {
        switch_ca: file(dir, "switch-ca.pem", &switch_ca.pem, 0o644),
        switch_cert: file(dir, "switch.pem", &sc, 0o644),
        switch_key: file(dir, "switch.key", &sk, 0o600),
        client_ca: file(dir, "client-ca.pem", &client_ca.pem, 0o644),
        client_cert: file(dir, "controller.pem", &cc, 0o644),
        client_key: file(dir, "controller.key", &ck, 0o600),
        rogue_cert: file(dir, "rogue.pem", &rc, 0o644),
        rogue_key: file(dir, "rogue.key", &rk, 0o600),
        rogue_ca: file(dir, "rogue-ca.pem", &rogue.pem, 0o644),
    }
}

async fn start_tls_switch(p: &Pki) -> p4lb_switch::SwitchHandle {
    p4lb_switch::serve(p4lb_switch::SwitchConfig {
        grpc_addr: p4lb_switch::GrpcAddr::Tcp("127.0.0.1:0".parse().unwrap()),
        tls: Some(p4lb_switch::TlsFiles {
            cert: p.switch_cert.clone(),
            key: p.switch_key.clone(),
            client_ca: p.client_ca.clone(),
        }),
        ..Default::default()
    })
    .await
    .expect("starting the switch with TLS")
}

fn https(h: &p4lb_switch::SwitchHandle) -> String {
    match &h.addr {
        p4lb_switch::GrpcAddr::Tcp(a) => format!("https://{a}"),
        other => panic!("not TCP: {other}"),
    }
}

/// One P4Runtime call over a fresh channel with `tls`: Ok when the switch answered.
async fn call(address: &str, tls: tonic::transport::ClientTlsConfig) -> Result<(), String> {
    let ch = connect_channel_tls(address, Duration::from_secs(2), Some(&tls)).await?;
    let mut c = session::client(ch);
    match c
        .get_forwarding_pipeline_config(GetForwardingPipelineConfigRequest {
            device_id: 0,
            response_type: 0,
        })
        .await
    {
        Ok(_) => Ok(()),
        // No pipeline yet: the switch answered, the call got through TLS.
        Err(s) if s.code() == tonic::Code::FailedPrecondition => Ok(()),
        Err(s) => Err(format!("{s:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_clients_with_a_certificate_from_the_client_ca_get_through() {
    let (_d, dir) = tempdir();
    let p = pki(&dir);
    let sw = start_tls_switch(&p).await;
    let addr = https(&sw);

    // The right client certificate.
    let good = client_config(&p.switch_ca, &p.client_cert, &p.client_key).unwrap();
    call(&addr, good)
        .await
        .expect("the controller's certificate");

    // No client certificate at all.
    let none = tonic::transport::ClientTlsConfig::new().ca_certificate(
        tonic::transport::Certificate::from_pem(std::fs::read(&p.switch_ca).unwrap()),
    );
    let e = call(&addr, none).await.expect_err("no client certificate");
    println!("without a client certificate: {e}");

    // A certificate from a CA the switch does not trust.
    let rogue = client_config(&p.switch_ca, &p.rogue_cert, &p.rogue_key).unwrap();
    let e = call(&addr, rogue)
        .await
        .expect_err("a rogue client certificate");
    println!("with a certificate of another CA: {e}");

    // A client that does not trust the switch's CA refuses the switch.
    let distrust = client_config(&p.rogue_ca, &p.client_cert, &p.client_key).unwrap();
    let e = call(&addr, distrust)
        .await
        .expect_err("a switch certificate from an unknown CA");
    println!("trusting another CA: {e}");
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_programs_a_switch_over_mutual_tls() {
    let (_d, dir) = tempdir();
    let p = pki(&dir);
    let sw = start_tls_switch(&p).await;
    let mut cfg = config(&dir, Path::new("/nonexistent"));
    cfg.switch.address = https(&sw);
    cfg.switch.tls_ca = p.switch_ca.clone();
    cfg.switch.tls_cert = p.client_cert.clone();
    cfg.switch.tls_key = p.client_key.clone();
    let c = Ctl::start(cfg).await;
    assert!(c.ctl.link.is_connected());
    c.stop().await;
    sw.shutdown().await;
}

#[tokio::test]
async fn keys_others_can_read_and_tcp_without_tls_are_refused() {
    let (_d, dir) = tempdir();
    let p = pki(&dir);
    // The switch's key readable by group and others.
    std::fs::set_permissions(&p.switch_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = p4lb_switch::serve(p4lb_switch::SwitchConfig {
        grpc_addr: p4lb_switch::GrpcAddr::Tcp("127.0.0.1:0".parse().unwrap()),
        tls: Some(p4lb_switch::TlsFiles {
            cert: p.switch_cert.clone(),
            key: p.switch_key.clone(),
            client_ca: p.client_ca.clone(),
        }),
        ..Default::default()
    })
    .await
    .expect_err("a world-readable key");
    assert!(e.to_string().contains("chmod 600"), "{e}");
    // The controller's key too.
    std::fs::set_permissions(&p.client_key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = client_config(&p.switch_ca, &p.client_cert, &p.client_key).expect_err("0640 key");
    assert!(e.to_string().contains("chmod 600"), "{e}");
    // TCP without TLS.
    let e = p4lb_switch::serve(p4lb_switch::SwitchConfig {
        grpc_addr: p4lb_switch::GrpcAddr::Tcp("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    })
    .await
    .expect_err("TCP without TLS");
    assert!(e.to_string().contains("without TLS"), "{e}");
    // An https:// switch address without the files is a configuration error.
    let mut cfg = config(&dir, Path::new("/nonexistent"));
    cfg.switch.address = "https://127.0.0.1:9559".into();
    let e = cfg.validate().expect_err("https without TLS files");
    assert!(e.to_string().contains("switch.tls_ca"), "{e}");
}

/// Runs `p4lbctl cert ARGS`; its output names the files written.
fn p4lbctl_cert(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_p4lbctl"))
        .arg("cert")
        .args(args)
        .output()
        .expect("running p4lbctl");
    assert!(
        out.status.success(),
        "p4lbctl cert {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_made_by_p4lbctl_cert_carry_a_mutual_tls_handshake() {
    let (_d, dir) = tempdir();
    let ca = dir.join("ca");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let written = p4lbctl_cert(&["ca", "--out", &s(&ca)]);
    assert!(written.contains("ca-key.pem"), "{written}");
    p4lbctl_cert(&[
        "issue",
        "--ca",
        &s(&ca),
        "--name",
        "switch",
        "--ip",
        "127.0.0.1",
        "--out",
        &s(&dir),
    ]);
    p4lbctl_cert(&[
        "issue",
        "--ca",
        &s(&ca),
        "--name",
        "p4lb-controller",
        "--out",
        &s(&dir),
    ]);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&ca.join("ca-key.pem")), 0o600);
    assert_eq!(mode(&dir.join("switch-key.pem")), 0o600);
    // Issuing the same name again replaces nothing.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_p4lbctl"))
        .args(["cert", "issue", "--ca", &s(&ca), "--name", "switch"])
        .args(["--out", &s(&dir)])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never replaces"));

    let sw = p4lb_switch::serve(p4lb_switch::SwitchConfig {
        grpc_addr: p4lb_switch::GrpcAddr::Tcp("127.0.0.1:0".parse().unwrap()),
        tls: Some(p4lb_switch::TlsFiles {
            cert: dir.join("switch.pem"),
            key: dir.join("switch-key.pem"),
            client_ca: ca.join("ca.pem"),
        }),
        ..Default::default()
    })
    .await
    .expect("a switch with p4lbctl's certificates");
    let tls = client_config(
        &ca.join("ca.pem"),
        &dir.join("p4lb-controller.pem"),
        &dir.join("p4lb-controller-key.pem"),
    )
    .unwrap();
    call(&https(&sw), tls)
        .await
        .expect("the handshake with p4lbctl's certificates");
    sw.shutdown().await;
}
