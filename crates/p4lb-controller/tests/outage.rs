//! The data plane outlives the control plane: with the software switch in its own process,
//! real TCP connections through a VIP keep flowing while the controller is SIGKILLed and
//! restarted, new connections to the VIP succeed during the outage, and the restarted
//! controller reconciles without disturbing any of them.
//!
//! Topology: the switch process and the controller binary in the test's namespace; a client
//! and two backends, each in a network namespace of its own behind a veth pair whose host
//! end is the endpoint's switch port. Needs root. Prints the measurements (throughput
//! before and during the outage, the longest stall of any connection, reconcile time).

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use p4lb_p4::FiveTuple;
use p4lb_proto::api;
use p4lb_testutil::NamedNetns;

const VIP: &str = "10.96.12.1";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 88, 12, 254);
const CLIENT_IP: &str = "10.88.12.100";
/// Connections opened before the controller is killed.
const ESTABLISHED: usize = 30;
/// Connections opened while it is down.
const DURING_OUTAGE: usize = 5;
/// Each server writes CHUNK bytes every TICK on every connection.
const CHUNK: usize = 1024;
const TICK: Duration = Duration::from_millis(10);
/// Length of each observation window (before, during the outage, after the restart).
const WINDOW: Duration = Duration::from_secs(2);

/// Helper: the switch as a separate process (run by `spawn_switch_process`).
#[tokio::test]
#[ignore]
async fn switch_process() {
    switch_process_main().await;
}

/// A namespace with `eth0` (the peer of `host` in the test's namespace) addressed `ip/24`,
/// with `mac` and a default route through the switch.
struct Host {
    ns: NamedNetns,
    host_if: String,
    ip: String,
    mac: String,
}

impl Host {
    fn new(prefix: &str, host_if: &str, ip: &str, mac: [u8; 6]) -> Host {
        let ns = NamedNetns::unique(prefix);
        ns.wire_eth0(host_if, &format!("{ip}/24"), mac, GATEWAY)
            .expect("wiring the namespace to the switch port");
        Host {
            ns,
            host_if: host_if.to_string(),
            ip: ip.to_string(),
            mac: mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
        }
    }

    fn register(&self, cid: &str, backend: bool) -> api::RegisterEndpointRequest {
        let mut r = register_req(cid, &self.ip, &self.mac, &self.host_if);
        r.gateway = GATEWAY.to_string();
        if !backend {
            r.labels.clear();
        }
        r
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Ok(h) = p4lb_testutil::Net::host() {
            let _ = h.delete_link(&self.host_if);
        }
    }
}

/// A server in a backend namespace: every accepted connection gets CHUNK bytes every TICK
/// until `stop`.
fn serve(ns: &NamedNetns, stop: Arc<AtomicBool>) {
    let listener = ns
        .run(|| TcpListener::bind("0.0.0.0:8080"))
        .expect("entering the backend namespace")
        .expect("binding the backend's listener");
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut c, _)) => {
                    let stop = stop.clone();
                    c.set_nonblocking(false).unwrap();
                    std::thread::spawn(move || {
                        let chunk = [0x5au8; CHUNK];
                        while !stop.load(Ordering::Relaxed) {
                            if c.write_all(&chunk).is_err() {
                                return;
                            }
                            std::thread::sleep(TICK);
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
}

/// One client connection, read by a thread of its own.
struct Flow {
    local: SocketAddr,
    bytes: AtomicU64,
    /// Longest time between two reads that returned data, since `measure` was set.
    max_gap_us: AtomicU64,
    measure: AtomicBool,
    error: Mutex<Option<String>>,
}

fn open_flow(client: &NamedNetns, stop: Arc<AtomicBool>) -> Arc<Flow> {
    let vip: SocketAddr = format!("{VIP}:80").parse().unwrap();
    let c = client
        .run(move || TcpStream::connect_timeout(&vip, Duration::from_secs(3)))
        .expect("entering the client namespace")
        .unwrap_or_else(|e| panic!("connecting to the VIP {vip}: {e}"));
    c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let flow = Arc::new(Flow {
        local: c.local_addr().unwrap(),
        bytes: AtomicU64::new(0),
        max_gap_us: AtomicU64::new(0),
        measure: AtomicBool::new(false),
        error: Mutex::new(None),
    });
    let f = flow.clone();
    std::thread::spawn(move || {
        let mut c = c;
        let mut buf = vec![0u8; 64 * 1024];
        let mut last = Instant::now();
        let fail = |why: String| *f.error.lock().unwrap() = Some(why);
        while !stop.load(Ordering::Relaxed) {
            match c.read(&mut buf) {
                Ok(0) => return fail(String::from("closed by the peer")),
                Ok(n) => {
                    f.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    let now = Instant::now();
                    if f.measure.load(Ordering::Relaxed) {
                        let gap = now.duration_since(last).as_micros() as u64;
                        f.max_gap_us.fetch_max(gap, Ordering::Relaxed);
                    }
                    last = now;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return fail(format!("read: {e}")),
            }
        }
    });
    flow
}

fn bytes_of(flows: &[Arc<Flow>]) -> Vec<u64> {
    flows
        .iter()
        .map(|f| f.bytes.load(Ordering::Relaxed))
        .collect()
}

/// The TCP sockets of each namespace (`ss -tnioa`), for a failure's message: which side
/// still has the connection, and its counters.
fn sockets(hosts: &[&Host]) -> String {
    hosts
        .iter()
        .map(|h| {
            let run = |cmd: &mut std::process::Command| match cmd.output() {
                Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
                Err(e) => format!("({cmd:?}: {e})"),
            };
            let socks = run(h.ns.command("ss").args(["-tnioa"]));
            // The namespace's TCP counters that say why a handshake went nowhere.
            let counters: String = run(h.ns.command("nstat").args(["-asz"]))
                .lines()
                .filter(|l| {
                    [
                        "Syn", "Listen", "Reset", "Rst", "Drop", "Req", "Abort", "Cookie",
                    ]
                    .iter()
                    .any(|w| l.contains(w))
                        && l.split_whitespace().nth(1).is_none_or(|v| v != "0")
                })
                .map(|l| format!("{l}\n"))
                .collect();
            format!(
                "--- sockets of {} ({}):\n{socks}--- its TCP counters (non-zero):\n{counters}",
                h.host_if, h.ip
            )
        })
        .collect()
}

/// Asserts that every flow received data since `before` and none failed; returns the bytes.
/// On failure the message carries the sockets of `hosts` and `switch` (the switch's
/// connection entries, read just before).
fn assert_all_advanced(
    flows: &[Arc<Flow>],
    before: &[u64],
    when: &str,
    hosts: &[&Host],
    switch: &str,
) -> u64 {
    let now = bytes_of(flows);
    for (i, f) in flows.iter().enumerate() {
        if let Some(e) = f.error.lock().unwrap().as_ref() {
            panic!(
                "{when}: connection {} failed: {e}\n{}{switch}",
                f.local,
                sockets(hosts)
            );
        }
        assert!(
            now[i] > before[i],
            "{when}: connection {} received nothing ({} bytes in total)\n{}{switch}",
            f.local,
            now[i],
            sockets(hosts)
        );
    }
    now.iter().zip(before).map(|(a, b)| a - b).sum()
}

/// A child process SIGKILLed when the test ends, also when it fails.
struct Proc(std::process::Child);

impl Proc {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The controller binary against the switch at `address` (empty: embedded), logging to
/// `log`.
fn spawn_controller_logging(dir: &Path, address: &str, log: &Path) -> Proc {
    let log = std::fs::File::create(log).expect("controller log file");
    std::process::Command::new(env!("CARGO_BIN_EXE_p4lb-controller"))
        .args([
            "--config",
            "/dev/null",
            "--state-dir",
            dir.join("state").to_str().unwrap(),
            "--socket",
            dir.join("api.sock").to_str().unwrap(),
            "--switch-address",
            address,
            "--log-json",
        ])
        .env("RUST_LOG", "info")
        .stderr(log.try_clone().expect("controller log file"))
        .stdout(log)
        .spawn()
        .map(Proc)
        .expect("spawning p4lb-controller")
}

/// `elapsed_ms` of the controller's "switch reconciled" log line (JSON lines).
fn reconcile_ms(log: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "switch reconciled")
        .and_then(|v| v["fields"]["elapsed_ms"].as_u64())
}

/// The switch's connection entries and what the controller's log (`log`) says about its
/// switch session, for a failure's message.
async fn switch_conns(ssock: &Path, log: &Path) -> String {
    let t = read_all(ssock).await;
    let mut out = String::new();
    out.push_str(&format!(
        "--- {} (switch session, warnings, removals):\n",
        log.display()
    ));
    for l in std::fs::read_to_string(log).unwrap_or_default().lines() {
        if [
            "session", "pipeline", "reconcil", "WARN", "ERROR", "stale", "withdr", "remov",
        ]
        .iter()
        .any(|w| l.contains(w))
        {
            out.push_str(l);
            out.push('\n');
        }
    }
    for (table, entries) in &t {
        if !["conn_table", "conn_reverse"].contains(table) {
            out.push_str(&format!("--- switch {table}: {} entries\n", entries.len()));
        }
    }
    for table in ["conn_table", "conn_reverse"] {
        out.push_str(&format!("--- switch {table}:\n"));
        for r in rows(&t[table]) {
            out.push_str(&r);
            out.push('\n');
        }
    }
    out
}

fn conn_tuples(
    t: &std::collections::BTreeMap<&'static str, Vec<p4lb_proto::p4runtime::TableEntry>>,
) -> Vec<FiveTuple> {
    t["conn_table"]
        .iter()
        .filter_map(|e| FiveTuple::from_matches(&e.r#match))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_keep_flowing_while_the_controller_is_killed_and_restarted() {
    if !p4lb_testutil::is_root() {
        eprintln!(
            "SKIPPED: connections_keep_flowing_while_the_controller_is_killed_and_restarted \
             needs root (network namespaces, veth)"
        );
        return;
    }
    outage().await;
}

async fn outage() {
    let (_d, dir) = tempdir();
    // The switch in a process of its own. (The same scenario with the switch embedded in
    // the controller, i.e. an empty address, fails at "during the outage": every
    // connection stalls until the controller is back.)
    let ssock = dir.join("switch.sock");
    let mut sw = Proc(spawn_switch_process(&ssock).await);
    let address = format!("unix:{}", ssock.display());
    let log1 = dir.join("controller-1.log");
    let mut ctl = spawn_controller_logging(&dir, &address, &log1);
    let mut c = client_ready(&dir).await;

    // Host-side interface names carry the process id: two runs at once (another test
    // binary, another checkout) must not take each other's links.
    let link = p4lb_testutil::unique_name;
    let client = Host::new("p4o-cl", &link("p4oc"), CLIENT_IP, [2, 0, 0, 0, 0x12, 0x64]);
    let b1 = Host::new("p4o-b1", &link("p4oa"), "10.88.12.1", [2, 0, 0, 0, 0x12, 1]);
    let b2 = Host::new("p4o-b2", &link("p4ob"), "10.88.12.2", [2, 0, 0, 0, 0x12, 2]);
    c.register_endpoint(client.register("client", false))
        .await
        .unwrap();
    c.register_endpoint(b1.register("b1", true)).await.unwrap();
    c.register_endpoint(b2.register("b2", true)).await.unwrap();
    c.add_service(api::AddServiceRequest {
        service: Some(api::Service {
            name: "stream".into(),
            vip: VIP.into(),
            port: 80,
            target_port: 8080,
            selector: "app=web".into(),
            ..Default::default()
        }),
        replace: false,
    })
    .await
    .unwrap();
    let hosts = [&client, &b1, &b2];
    let stop = Arc::new(AtomicBool::new(false));
    serve(&b1.ns, stop.clone());
    serve(&b2.ns, stop.clone());

    let mut flows: Vec<Arc<Flow>> = (0..ESTABLISHED)
        .map(|_| open_flow(&client.ns, stop.clone()))
        .collect();
    // Every connection is learned (pinned on the switch) before the kill.
    assert!(
        eventually(Duration::from_secs(10), || {
            let s = ssock.clone();
            async move { read_all(&s).await["conn_table"].len() == ESTABLISHED }
        })
        .await,
        "the {ESTABLISHED} connections were not learned"
    );
    let spread: std::collections::BTreeSet<u64> = read_all(&ssock).await["conn_table"]
        .iter()
        .filter_map(|e| p4lb_p4::entries::action_of(e).map(|(_, p)| p[0]))
        .collect();
    assert_eq!(spread.len(), 2, "connections on one backend only");
    // The baseline: the same gaps measured while nothing happens.
    for f in &flows {
        f.measure.store(true, Ordering::Relaxed);
    }
    let t0 = bytes_of(&flows);
    tokio::time::sleep(WINDOW).await;
    let before_bytes = assert_all_advanced(
        &flows,
        &t0,
        "before the kill",
        &hosts,
        &switch_conns(&ssock, &log1).await,
    );
    let baseline_gap = flows
        .iter()
        .map(|f| f.max_gap_us.swap(0, Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let before = read_all(&ssock).await;

    // SIGKILL the controller; the switch is on its own.
    ctl.kill();
    let killed = Instant::now();
    let t1 = bytes_of(&flows);
    tokio::time::sleep(WINDOW / 2).await;
    assert_all_advanced(
        &flows,
        &t1,
        "during the outage",
        &hosts,
        &switch_conns(&ssock, &log1).await,
    );
    // New connections to the VIP work while the controller is down.
    let new_flows: Vec<Arc<Flow>> = (0..DURING_OUTAGE)
        .map(|_| {
            let f = open_flow(&client.ns, stop.clone());
            f.measure.store(true, Ordering::Relaxed);
            f
        })
        .collect();
    tokio::time::sleep(WINDOW.saturating_sub(killed.elapsed())).await;
    let outage = killed.elapsed();
    let outage_bytes = assert_all_advanced(
        &flows,
        &t1,
        "during the outage",
        &hosts,
        &switch_conns(&ssock, &log1).await,
    );
    assert_all_advanced(
        &new_flows,
        &[0; DURING_OUTAGE],
        "new connection, outage",
        &hosts,
        &switch_conns(&ssock, &log1).await,
    );
    // Nothing was written to the switch meanwhile.
    assert_eq!(read_all(&ssock).await, before);

    // The controller comes back and reconciles.
    let log2 = dir.join("controller-2.log");
    let restarted = Instant::now();
    let mut ctl = spawn_controller_logging(&dir, &address, &log2);
    let mut c = client_ready(&dir).await;
    let ready_after = restarted.elapsed();
    flows.extend(new_flows);
    let t2 = bytes_of(&flows);
    tokio::time::sleep(WINDOW).await;
    let after_bytes = assert_all_advanced(
        &flows,
        &t2,
        "after the restart",
        &hosts,
        &switch_conns(&ssock, &log2).await,
    );
    // Connections opened during the outage are learned too, once the controller is back.
    let all: Vec<SocketAddr> = flows.iter().map(|f| f.local).collect();
    assert!(
        eventually(Duration::from_secs(5), || {
            let s = ssock.clone();
            let all = all.clone();
            async move {
                let have = conn_tuples(&read_all(&s).await);
                all.iter().all(|a| {
                    have.iter()
                        .any(|t| SocketAddr::from((t.src, t.sport)) == *a)
                })
            }
        })
        .await,
        "connections opened during the outage were not learned after the restart"
    );
    // No entry lost: the state-derived tables are as before and every learned connection
    // is still pinned where it was.
    let after = read_all(&ssock).await;
    for (table, entries) in &before {
        if *table == "conn_table" || *table == "conn_reverse" {
            for e in entries {
                assert!(
                    after[table].contains(e),
                    "{table}: {} lost across the restart",
                    rows(std::slice::from_ref(e))[0]
                );
            }
        } else {
            assert_eq!(&after[table], entries, "{table} changed across the restart");
        }
    }
    let status = c.status(api::StatusRequest {}).await.unwrap().into_inner();
    assert!(status.ready);
    let max_gap = flows
        .iter()
        .map(|f| f.max_gap_us.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let rate = |b: u64, d: Duration| b as f64 / d.as_secs_f64() / 1e6;
    println!(
        "outage: {} connections; before {:.2} MB/s; during the outage {:.2} MB/s ({:.0}% of before); \
         after the restart {:.2} MB/s; longest stall of any connection across kill and restart {:.1} ms \
         (baseline: {:.1} ms in the {:?} before the kill); controller ready {:.0} ms after its restart \
         (reconcile {} ms)",
        flows.len(),
        rate(before_bytes, WINDOW),
        rate(outage_bytes, outage),
        100.0 * rate(outage_bytes, outage) / rate(before_bytes, WINDOW),
        rate(after_bytes, WINDOW),
        max_gap as f64 / 1000.0,
        baseline_gap as f64 / 1000.0,
        WINDOW,
        ready_after.as_secs_f64() * 1000.0,
        reconcile_ms(&log2).map_or(String::from("?"), |v| v.to_string()),
    );
    stop.store(true, Ordering::Relaxed);
    ctl.kill();
    sw.kill();
}
