//! p4lb-switch driven by finsy, a third-party P4Runtime client from PyPI
//! (docs/p4runtime-conformance.md): arbitration (primary and backup),
//! SetForwardingPipelineConfig with the P4Info and a dummy device config, `Switch.delete_all()`
//! (which reads every entity kind), table writes, wildcard reads, a batch with a per-update
//! error, a digest configured, received and acked, and `delete_all()` again. The driver is
//! `tests/finsy/drive.py`.
//!
//! The test creates a Python virtual environment in a temporary directory and installs the
//! pinned finsy version from PyPI. Without python3's venv module or PyPI it FAILS when
//! `CI=true` and skips with a loud SKIPPED line otherwise.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use p4lb_switch::pipeline;
use p4lb_switch::{serve, GrpcAddr, SwitchConfig};
use support::frames::{Flow, ACK, SYN};

/// The finsy release the driver is written against.
const FINSY: &str = "finsy==0.30.0";
const DEVICE_ID: u64 = 1;
const VIP: u32 = 0x0a60_0001;
const CLIENT: u32 = 0x0a00_0001;
/// backend 4 of drive.py (10.1.0.4, target port 8080) and its initial sequence number.
const BACKEND: u32 = 0x0a01_0004;
const SERVER_ISN: u32 = 5000;
/// The whole run (driver included) must end within this; it normally takes a few seconds.
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// Stops the test: a failure under CI, a loud skip elsewhere. Returns whether to go on.
fn unavailable(why: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("finsy conformance test cannot run under CI: {why}");
    }
    eprintln!("SKIPPED (finsy): {why} [finsy_drives_p4lb_switch]");
    false
}

/// Runs `cmd`, returning its combined output on failure.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{cmd:?} exited with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// A virtual environment with finsy in `dir`; `Err` says why there is none.
fn venv_with_finsy(dir: &Path) -> Result<std::path::PathBuf, String> {
    let venv = dir.join("venv");
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
        .map_err(|e| format!("python3 with the venv module is needed: {e}"))?;
    let python = venv.join("bin/python");
    run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        FINSY,
    ]))
    .map_err(|e| format!("pip could not install {FINSY} from PyPI: {e}"))?;
    Ok(python)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finsy_drives_p4lb_switch() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let python = match tokio::task::spawn_blocking({
        let d = dir.path().to_owned();
        move || venv_with_finsy(&d)
    })
    .await
    .expect("venv task")
    {
        Ok(p) => p,
        Err(why) => {
            unavailable(&why);
            return;
        }
    };
    let p4info = dir.path().join("p4lb.p4info.txtpb");
    std::fs::write(&p4info, p4lb_p4::P4INFO_TXTPB).expect("write the P4Info");
    // p4lb-switch keeps the device config and reports it back; it runs p4lb.p4 from the P4Info.
    let device_config = dir.path().join("device_config.json");
    std::fs::write(&device_config, b"{}").expect("write the device config");
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/finsy/drive.py");

    let h = serve(SwitchConfig {
        grpc_addr: GrpcAddr::Tcp("127.0.0.1:0".parse().unwrap()),
        device_id: DEVICE_ID,
        // Plain TCP on loopback for this test only (the default is a root-only unix socket).
        insecure_loopback: true,
        ..Default::default()
    })
    .await
    .expect("start p4lb-switch");
    let address = h.endpoint().trim_start_matches("http://").to_string();
    let device = h.device.clone();

    let (tx, rx) = mpsc::channel::<String>();
    let driver_thread = std::thread::spawn(move || {
        let mut child = Command::new(&python)
            .arg(&driver)
            .arg(&address)
            .arg(&p4info)
            .arg(&device_config)
            .arg(DEVICE_ID.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the finsy driver");
        let stdout = child.stdout.take().expect("driver stdout");
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line == "INJECT" {
                // A new connection's handshake: the pipeline learns it (conn_learn) on the
                // client's ACK of the backend's SYN-ACK.
                let dp = device
                    .installed()
                    .expect("finsy committed a pipeline")
                    .dp
                    .clone();
                let syn = Flow::tcp(CLIENT, 1000, VIP, 80);
                let synack = Flow::tcp(BACKEND, 8080, CLIENT, 1000).with(|f| {
                    f.tcp_flags = SYN | ACK;
                    f.seq = SERVER_ISN;
                    f.ack_no = syn.seq + 1;
                });
                let ack = syn.with(|f| {
                    f.tcp_flags = ACK;
                    f.seq = syn.seq + 1;
                    f.ack_no = SERVER_ISN + 1;
                });
                pipeline::process(&dp, &mut syn.frame(b""), 1, false);
                pipeline::process(&dp, &mut synack.frame(b""), 2, false);
                pipeline::process(&dp, &mut ack.frame(b""), 1, false);
            }
            let _ = tx.send(line);
        }
        let out = child.wait_with_output().expect("driver exit");
        let _ = std::io::stderr().write_all(&out.stderr);
        out.status
    });

    let mut steps = Vec::new();
    let deadline = std::time::Instant::now() + RUN_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                println!("finsy: {line}");
                steps.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the finsy driver did not finish within {RUN_LIMIT:?}; steps: {steps:?}")
            }
        }
    }
    let status = driver_thread.join().expect("driver thread");
    assert!(
        status.success(),
        "the finsy driver failed ({status}) after steps {steps:?} (traceback above)"
    );
    for want in [
        "ARBITRATION primary",
        "ARBITRATION backup",
        "DELETE_ALL empty",
        "WRITE_READ 10",
        "BATCH_ERRORS",
        "INJECT",
        "DELETE_ALL done",
        "OK",
    ] {
        assert!(
            steps.iter().any(|s| s == want),
            "step {want} missing: {steps:?}"
        );
    }
    assert!(
        steps.iter().any(|s| s.starts_with("DIGEST list_id=")),
        "no digest received: {steps:?}"
    );
    h.shutdown().await;
}
