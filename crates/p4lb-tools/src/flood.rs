//! `p4lb-tools bench-flood`: a spoofed SYN flood against a VIP while established
//! connections stream through it and one migration runs, on the default target (the
//! `p4lb-controller` binary with its embedded software switch). Needs root; runs in
//! network namespaces it creates (no Podman, no testbed):
//!
//! - `cli` namespace: the client (endpoint `flood-cli`, 10.88.50.100) holding `--conns`
//!   TCP connections to the VIP 10.96.50.1:80, each sending 64 bytes every 50 ms and
//!   reading the echo; and the SYN generator: one thread writing Ethernet frames with
//!   random source addresses and ports to the VIP through an AF_PACKET socket, as fast
//!   as it goes;
//! - `srv` namespace: the echo server (endpoint `flood-srv`, 10.88.50.10:80);
//! - two empty namespaces for the migration's source and target: the migration runs at
//!   controller API, as CRIU's action script and the CNI plugin drive it (LOCK,
//!   CHECKPOINTED, restore registration at a new address, RESTORE_STARTED, RESTORED_AT,
//!   UNLOCK), halfway through the flood.
//!
//! Sampled every second: the controller's RSS and its learned-connection count; every
//! `--switch-read-every-s` (default 5; 0 = never) the switch's conn_table occupancy (a
//! P4Runtime read of the embedded switch); every 100 ms: the latency of a cheap API call
//! (`Status`). Printed: connections kept and
//! reset, the migration, SYNs sent and their rate, occupancy over time, RSS and API
//! latency before vs during the flood, as ratios to the before-flood baseline.
//!
//! The controller binary is found next to this one (`cargo build --release -p
//! p4lb-controller -p p4lb-tools`) or named by `P4LB_CONTROLLER_BIN`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use etherparse::PacketBuilder;
use p4lb_controller::config::Config;
use p4lb_controller::southbound::session;
use p4lb_p4::entries as p;
use p4lb_proto::api;
use p4lb_testutil::{NamedNetns, Net};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 50, 1);
const PORT: u16 = 80;
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 50, 100);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 50, 10);
const GATEWAY: &str = "10.88.50.1";
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x50, 0x64];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x50, 0x0a];
const MIG_VIP: &str = "10.96.51.1";
const MIG_IP: &str = "10.88.51.10";
const MIG_NEW_IP: &str = "10.88.51.20";
const MSG: usize = 64;

/// Options of the flood benchmark.
#[derive(Debug, Clone)]
pub struct FloodOptions {
    pub duration: Duration,
    pub conns: usize,
    pub baseline: Duration,
    /// How often the switch's conn_table is read back (a wildcard Read of up to 65 536
    /// entries costs the switch, and its transient memory shows in the RSS); None = never.
    pub switch_read_every: Option<Duration>,
    /// SYNs per second; 0 = as fast as one thread goes.
    pub syn_rate: u64,
}

/// What one streaming connection saw.
#[derive(Debug, Default, Clone)]
struct StreamResult {
    round_trips: u64,
    reset: bool,
    failed: Option<String>,
    longest_stall: Duration,
}

fn controller_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("P4LB_CONTROLLER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().context("locating this binary")?;
    let p = me
        .parent()
        .map(|d| d.join("p4lb-controller"))
        .context("this binary has no directory")?;
    if !p.exists() {
        bail!(
            "no p4lb-controller next to {} (build it: cargo build --release -p p4lb-controller \
             -p p4lb-tools, or set P4LB_CONTROLLER_BIN)",
            me.display()
        );
    }
    Ok(p)
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A namespace with `eth0` (the peer of host interface `host_if`, attached to the switch
/// by the controller), `addr`/24, a default route via the gateway and `mac`.
fn wire(ns: &NamedNetns, host_if: &str, addr: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
    Ok(ns.wire_eth0(host_if, &format!("{addr}/24"), mac, GATEWAY.parse()?)?)
}

fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    s[((s.len() as f64 - 1.0) * q).round() as usize]
}

/// Echo server: one thread per accepted connection.
fn serve(stop: Arc<AtomicBool>) -> Result<()> {
    let l = TcpListener::bind(SocketAddr::from((SERVER_IP, PORT))).context("binding the server")?;
    l.set_nonblocking(true)?;
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((mut c, _)) => {
                c.set_nonblocking(false)?;
                std::thread::spawn(move || {
                    let mut buf = [0u8; MSG];
                    loop {
                        if c.read_exact(&mut buf).is_err() || c.write_all(&buf).is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// One streaming client connection until `stop`.
fn stream(i: usize, stop: Arc<AtomicBool>) -> StreamResult {
    let mut r = StreamResult::default();
    let mut c =
        match TcpStream::connect_timeout(&SocketAddr::from((VIP, PORT)), Duration::from_secs(10)) {
            Ok(c) => c,
            Err(e) => {
                r.failed = Some(format!("connect: {e}"));
                return r;
            }
        };
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = c.set_nodelay(true);
    let mut msg = [0u8; MSG];
    msg[..8].copy_from_slice(&(i as u64).to_be_bytes());
    let mut back = [0u8; MSG];
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let res = c.write_all(&msg).and_then(|_| c.read_exact(&mut back));
        match res {
            Ok(()) if back == msg => {
                r.round_trips += 1;
                r.longest_stall = r.longest_stall.max(last.elapsed());
                last = Instant::now();
            }
            Ok(()) => {
                r.failed = Some(String::from("echo differs"));
                return r;
            }
            Err(e) => {
                if e.kind() == std::io::ErrorKind::ConnectionReset {
                    r.reset = true;
                } else {
                    r.failed = Some(e.to_string());
                }
                return r;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    r
}

/// xorshift64*: the flood needs cheap, varied header fields, not good randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Sends spoofed SYNs out of `eth0` of the calling thread's namespace until `stop`;
/// returns how many.
fn syn_flood(
    router_mac: [u8; 6],
    rate: u64,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> Result<()> {
    // SAFETY: plain libc calls with valid, owned arguments; the fd is closed below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
        )
    };
    if fd < 0 {
        bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
    }
    let name = std::ffi::CString::new("eth0")?;
    // SAFETY: a valid C string.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    // SAFETY: zeroed sockaddr_ll is a valid value of the type.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = idx as i32;
    sll.sll_halen = 6;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    let mut frame = Vec::with_capacity(64);
    let mut n = 0u64;
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Paced: every 256 frames, sleep until the rate allows the next ones.
        if rate > 0 && n.is_multiple_of(256) {
            let due = Duration::from_secs_f64(n as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let r = rng.next();
        // Any unicast source in 1.0.0.0-223.255.255.255 outside 10.0.0.0/8 (the bench's
        // own addresses).
        let mut src = ((r >> 32) as u32) % 0xdf00_0000 + 0x0100_0000;
        if src >> 24 == 10 {
            src ^= 0x8000_0000;
        }
        let src = Ipv4Addr::from(src);
        let sport = 1024 + (r as u16 % 64000);
        frame.clear();
        PacketBuilder::ethernet2(CLIENT_MAC, router_mac)
            .ipv4(src.octets(), VIP.octets(), 64)
            .tcp(sport, PORT, r as u32, 64240)
            .syn()
            .write(&mut frame, &[])?;
        // SAFETY: valid buffer and address for the duration of the call.
        let w = unsafe {
            libc::sendto(
                fd,
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if w == frame.len() as isize {
            n += 1;
            if n.is_multiple_of(1024) {
                sent.store(n, Ordering::Relaxed);
            }
        }
    }
    sent.store(n, Ordering::Relaxed);
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(fd) };
    Ok(())
}

/// One sample of the controller and the switch.
#[derive(Debug, Clone)]
struct Sample {
    t: f64,
    rss_kib: u64,
    learned: u64,
    switch_conns: Option<usize>,
    refused: u64,
    syns: u64,
}

fn metric(text: &str, name: &str) -> u64 {
    let key = format!("p4lb_controller_{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn switch_conns(sock: &Path, device_id: u64) -> Option<usize> {
    let ch = session::connect_channel(&format!("unix:{}", sock.display()), Duration::from_secs(1))
        .await
        .ok()?;
    let mut c = session::client(ch);
    let q = p4lb_proto::p4runtime::Entity {
        entity: Some(p4lb_proto::p4runtime::entity::Entity::TableEntry(p::entry(
            p4lb_p4::tables::conn_table::ID,
            Vec::new(),
            None,
        ))),
    };
    session::read_entities(&mut c, device_id, vec![q])
        .await
        .ok()
        .map(|v| v.len())
}

struct Migration {
    ok: bool,
    detail: String,
    switchover_us: u64,
    rtt_ms: f64,
}

/// The migration at the API: source endpoint in `a`, LOCK and CHECKPOINTED from `a`, the
/// target registered in `b` with a new address as the restore of the old one,
/// RESTORE_STARTED, RESTORED_AT and UNLOCK from `b`.
async fn migrate(
    c: &mut api::controller_client::ControllerClient<tonic::transport::Channel>,
    a: &str,
    b: &str,
) -> Result<Migration> {
    let id = |ns: &str| {
        Some(api::Identity {
            pid: 0,
            netns_path: ns.to_string(),
        })
    };
    let m = c
        .migration_event(api::MigrationEventRequest {
            phase: api::MigrationPhase::Lock as i32,
            identity: id(a),
            ..Default::default()
        })
        .await?
        .into_inner();
    c.migration_event(api::MigrationEventRequest {
        phase: api::MigrationPhase::Checkpointed as i32,
        identity: id(a),
        migration_id: m.id.clone(),
        ..Default::default()
    })
    .await?;
    c.register_endpoint(api::RegisterEndpointRequest {
        container_id: "mig-dst".into(),
        ifname: "eth0".into(),
        netns_path: b.to_string(),
        ip: MIG_NEW_IP.into(),
        mac: "02:00:00:00:51:0b".into(),
        restore_of_ip: MIG_IP.into(),
        ..Default::default()
    })
    .await?;
    c.migration_event(api::MigrationEventRequest {
        phase: api::MigrationPhase::RestoreStarted as i32,
        identity: id(b),
        migration_id: m.id.clone(),
        ..Default::default()
    })
    .await?;
    let t0 = Instant::now();
    let r = c
        .migration_event(api::MigrationEventRequest {
            phase: api::MigrationPhase::RestoredAt as i32,
            identity: id(b),
            migration_id: m.id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let rtt_ms = t0.elapsed().as_secs_f64() * 1e3;
    let done = c
        .migration_event(api::MigrationEventRequest {
            phase: api::MigrationPhase::Unlock as i32,
            identity: id(b),
            migration_id: m.id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(Migration {
        ok: done.state == "done",
        detail: format!("{} -> state {}", m.id, done.state),
        switchover_us: u64::try_from(r.switchover_us).unwrap_or(0),
        rtt_ms,
    })
}

/// Runs the benchmark and prints its report.
pub fn bench_flood(opts: &FloodOptions) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("bench-flood needs root (network namespaces, veth, AF_PACKET)");
    }
    let bin = controller_bin()?;
    let dir = std::env::temp_dir().join(format!("p4lb-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let state = dir.join("state");
    let api_sock = dir.join("api.sock");
    let cfg_path = dir.join("controller.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "state_dir = {:?}\n[api]\nsocket = {:?}\n[identity]\ncheck_addresses = false\n",
            state.display().to_string(),
            api_sock.display().to_string()
        ),
    )?;
    let defaults = Config::default();
    let router_mac =
        p4lb_controller::addr::parse_mac("switch.router_mac", &defaults.switch.router_mac)?;

    let cli = NamedNetns::create(&p4lb_testutil::unique_name("p4lbflood-cli"))?;
    let srv = NamedNetns::create(&p4lb_testutil::unique_name("p4lbflood-srv"))?;
    let mig_a = NamedNetns::create(&p4lb_testutil::unique_name("p4lbflood-a"))?;
    let mig_b = NamedNetns::create(&p4lb_testutil::unique_name("p4lbflood-b"))?;
    let (cli_if, srv_if) = ("p4fl-cli", "p4fl-srv");
    wire(&cli, cli_if, CLIENT_IP, CLIENT_MAC)?;
    wire(&srv, srv_if, SERVER_IP, SERVER_MAC)?;

    let mut child = std::process::Command::new(&bin)
        .args(["--config", &cfg_path.display().to_string()])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(run(
        opts,
        &api_sock,
        &state,
        pid,
        router_mac,
        &cli,
        &srv,
        &mig_a,
        &mig_b,
        cli_if,
        srv_if,
        defaults.switch.device_id,
    ));
    // Threads still blocked in the runtime's blocking pool are not waited for.
    rt.shutdown_timeout(Duration::from_secs(1));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    // A controller that does not stop within 5 s of SIGTERM is killed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if matches!(child.try_wait(), Ok(None)) {
        eprintln!("the controller did not stop within 5 s of SIGTERM: killed");
        let _ = child.kill();
    }
    let _ = child.wait();
    let _ = Net::host().and_then(|h| {
        h.delete_link(cli_if)?;
        h.delete_link(srv_if)
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[allow(clippy::too_many_arguments)]
async fn run(
    opts: &FloodOptions,
    api_sock: &Path,
    state: &Path,
    pid: u32,
    router_mac: [u8; 6],
    cli: &NamedNetns,
    srv: &NamedNetns,
    mig_a: &NamedNetns,
    mig_b: &NamedNetns,
    cli_if: &str,
    srv_if: &str,
    device_id: u64,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !api_sock.exists() {
        if Instant::now() > deadline {
            bail!("the controller did not create {}", api_sock.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client =
        p4lb_api::Client::connect(api_sock, Duration::from_secs(5), Duration::from_secs(60))
            .await?;
    let mut c = client.raw();
    let reg = |cid: &str,
               ip: Ipv4Addr,
               mac: [u8; 6],
               host_if: &str,
               ns: &NamedNetns,
               app: Option<&str>| api::RegisterEndpointRequest {
        container_id: cid.to_string(),
        ifname: "eth0".into(),
        netns_path: ns.path().display().to_string(),
        ip: ip.to_string(),
        prefix_len: 24,
        mac: p4lb_controller::addr::format_mac(&mac),
        gateway: GATEWAY.into(),
        host_ifname: host_if.to_string(),
        labels: app
            .map(|a| [("app".to_string(), a.to_string())].into_iter().collect())
            .unwrap_or_default(),
        network: "p4lb".into(),
        ..Default::default()
    };
    c.register_endpoint(reg("flood-cli", CLIENT_IP, CLIENT_MAC, cli_if, cli, None))
        .await?;
    c.register_endpoint(reg(
        "flood-srv",
        SERVER_IP,
        SERVER_MAC,
        srv_if,
        srv,
        Some("flood"),
    ))
    .await?;
    c.add_service(api::AddServiceRequest {
        service: Some(api::Service {
            name: "flood".into(),
            vip: VIP.to_string(),
            port: u32::from(PORT),
            selector: "app=flood".into(),
            ..Default::default()
        }),
        replace: false,
    })
    .await?;
    // The migrating endpoint has a service of its own (nothing streams to it).
    c.register_endpoint(api::RegisterEndpointRequest {
        container_id: "mig-src".into(),
        ifname: "eth0".into(),
        netns_path: mig_a.path().display().to_string(),
        ip: MIG_IP.into(),
        mac: "02:00:00:00:51:0a".into(),
        labels: [("app".to_string(), "mig".to_string())]
            .into_iter()
            .collect(),
        ..Default::default()
    })
    .await?;
    c.add_service(api::AddServiceRequest {
        service: Some(api::Service {
            name: "mig".into(),
            vip: MIG_VIP.into(),
            port: 80,
            selector: "app=mig".into(),
            ..Default::default()
        }),
        replace: false,
    })
    .await?;

    // Server and streams.
    let stop_srv = Arc::new(AtomicBool::new(false));
    let s2 = stop_srv.clone();
    let server = srv.spawn(move || serve(s2))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stop_streams = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<StreamResult>>> = Arc::default();
    let (n, s3, r3) = (opts.conns, stop_streams.clone(), results.clone());
    let streams = cli.spawn(move || {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let s = s3.clone();
                std::thread::spawn(move || stream(i, s))
            })
            .collect();
        for h in hs {
            let r = h.join().unwrap_or_else(|_| StreamResult {
                failed: Some("client thread panicked".into()),
                ..Default::default()
            });
            if let Ok(mut v) = r3.lock() {
                v.push(r);
            }
        }
    })?;
    println!(
        "{n} connections streaming to {VIP}:{PORT} (64 bytes echoed every 50 ms each); baseline {:.0} s, flood {:.0} s",
        opts.baseline.as_secs_f64(),
        opts.duration.as_secs_f64()
    );

    let t0 = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut lat_before = Vec::new();
    let mut lat_during = Vec::new();
    let sent = Arc::new(AtomicU64::new(0));
    let stop_flood = Arc::new(AtomicBool::new(false));
    let mut flood: Option<std::thread::JoinHandle<p4lb_netns::Result<Result<()>>>> = None;
    let mut flood_started: Option<Instant> = None;
    let mut flood_secs = 0.0;
    let mut migration: Option<Result<Migration>> = None;
    let end = opts.baseline + opts.duration + Duration::from_secs(3);
    let mut next_sample = Duration::ZERO;
    let mut next_read = Duration::ZERO;
    let sock = state.join("switch.sock");
    loop {
        let now = t0.elapsed();
        if now >= end {
            break;
        }
        if flood.is_none() && now >= opts.baseline && flood_started.is_none() {
            let (s, n, rate) = (stop_flood.clone(), sent.clone(), opts.syn_rate);
            flood = Some(cli.spawn(move || syn_flood(router_mac, rate, s, n))?);
            flood_started = Some(Instant::now());
            println!("t={:.1}s flood started", now.as_secs_f64());
        }
        let flooding = flood.is_some();
        if flooding {
            if let Some(fs) = flood_started {
                if migration.is_none() && fs.elapsed() >= opts.duration / 2 {
                    let a = mig_a.path().display().to_string();
                    let b = mig_b.path().display().to_string();
                    migration = Some(migrate(&mut c, &a, &b).await);
                    println!("t={:.1}s migration ran", t0.elapsed().as_secs_f64());
                }
                if fs.elapsed() >= opts.duration {
                    stop_flood.store(true, Ordering::Relaxed);
                    flood_secs = fs.elapsed().as_secs_f64();
                    if let Some(h) = flood.take() {
                        match h.join() {
                            Ok(Ok(Ok(()))) => {}
                            Ok(Ok(Err(e))) => println!("SYN generator failed: {e:#}"),
                            Ok(Err(e)) => println!("SYN generator: {e}"),
                            Err(_) => println!("SYN generator panicked"),
                        }
                    }
                    println!("t={:.1}s flood stopped", t0.elapsed().as_secs_f64());
                }
            }
        }
        let q = Instant::now();
        let ok = client
            .call("Status", c.status(api::StatusRequest {}))
            .await
            .is_ok();
        let ms = q.elapsed().as_secs_f64() * 1e3;
        if ok {
            if flood.is_some() {
                lat_during.push(ms);
            } else if flood_started.is_none() {
                lat_before.push(ms);
            }
        }
        if t0.elapsed() >= next_sample {
            next_sample += Duration::from_secs(1);
            let text = client
                .call("Metrics", c.metrics(api::MetricsRequest {}))
                .await
                .map(|r| r.prometheus_text)
                .unwrap_or_default();
            samples.push(Sample {
                t: t0.elapsed().as_secs_f64(),
                rss_kib: rss_kib(pid).unwrap_or(0),
                learned: metric(&text, "connection_entries"),
                switch_conns: match opts.switch_read_every {
                    Some(every) if t0.elapsed() >= next_read => {
                        next_read = t0.elapsed() + every;
                        switch_conns(&sock, device_id).await
                    }
                    _ => None,
                },
                refused: metric(&text, "connections_refused_total"),
                syns: sent.load(Ordering::Relaxed),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_streams.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || streams.join()).await;
    stop_srv.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || server.join()).await;
    let final_metrics = client
        .call("Metrics", c.metrics(api::MetricsRequest {}))
        .await
        .map(|r| r.prometheus_text)
        .unwrap_or_default();

    // Report.
    let rs = results.lock().map(|v| v.clone()).unwrap_or_default();
    let kept = rs.iter().filter(|r| !r.reset && r.failed.is_none()).count();
    let reset = rs.iter().filter(|r| r.reset).count();
    let failed: Vec<&String> = rs.iter().filter_map(|r| r.failed.as_ref()).collect();
    let stall = rs.iter().map(|r| r.longest_stall).max().unwrap_or_default();
    let trips: u64 = rs.iter().map(|r| r.round_trips).sum();
    println!("\n== flood benchmark ==");
    println!(
        "connections: {kept}/{} kept, {reset} reset, {} failed{}; {trips} round trips, longest stall {:.0} ms",
        rs.len(),
        failed.len(),
        failed
            .first()
            .map(|f| format!(" (first: {f})"))
            .unwrap_or_default(),
        stall.as_secs_f64() * 1e3
    );
    let syns = sent.load(Ordering::Relaxed);
    println!(
        "SYNs sent: {syns} in {flood_secs:.1} s = {:.0}/s (one thread, AF_PACKET)",
        syns as f64 / flood_secs.max(1e-9)
    );
    match &migration {
        Some(Ok(m)) => println!(
            "migration during the flood: {} ({}), switchover {:.1} ms, RESTORED_AT round trip {:.1} ms",
            if m.ok { "succeeded" } else { "FAILED" },
            m.detail,
            m.switchover_us as f64 / 1e3,
            m.rtt_ms
        ),
        Some(Err(e)) => println!("migration during the flood: FAILED: {e:#}"),
        None => println!("migration during the flood: not run"),
    }
    println!("occupancy over time (t, controller's learned connections, switch conn_table entries, refused total, SYNs sent, controller RSS):");
    for s in &samples {
        println!(
            "  t={:>5.1}s learned {:>6} switch {:>6} refused {:>8} syns {:>9} rss {:>7} KiB",
            s.t,
            s.learned,
            s.switch_conns
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            s.refused,
            s.syns,
            s.rss_kib
        );
    }
    let base = opts.baseline.as_secs_f64();
    let flood_end = base + flood_secs;
    let rss_of = |f: &dyn Fn(f64) -> bool| {
        samples
            .iter()
            .filter(|s| f(s.t))
            .map(|s| s.rss_kib)
            .max()
            .unwrap_or(0)
    };
    let rss_before = rss_of(&|t| t < base);
    let rss_during = rss_of(&|t| t >= base && t <= flood_end);
    println!(
        "controller RSS (max): before {rss_before} KiB, during {rss_during} KiB, ratio {:.2}",
        rss_during as f64 / rss_before.max(1) as f64
    );
    let (b50, b99) = (percentile(&lat_before, 0.5), percentile(&lat_before, 0.99));
    let (d50, d99) = (percentile(&lat_during, 0.5), percentile(&lat_during, 0.99));
    println!(
        "API Status latency: before p50 {b50:.2} ms p99 {b99:.2} ms ({} calls); during p50 {d50:.2} ms p99 {d99:.2} ms ({} calls); ratios p50 {:.2} p99 {:.2}; max during {:.2} ms",
        lat_before.len(),
        lat_during.len(),
        d50 / b50,
        d99 / b99,
        lat_during.iter().cloned().fold(0.0, f64::max)
    );
    for name in [
        "connections_learned_total",
        "connections_refused_total",
        "connection_install_errors_total",
        "digest_lists_total",
        "digest_lists_dropped_total",
        "switch_sessions_total",
        "reconciles_total",
    ] {
        println!("  {name} {}", metric(&final_metrics, name));
    }
    Ok(())
}
