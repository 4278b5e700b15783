//! The switch throughput benchmark: p4lb-switch against Linux kernel routing (and BMv2 when
//! `P4LB_P4_PREFIX` is set) over the same veth setup, measured in one run. Needs root.
//!
//! `cargo bench -p p4lb-switch --bench throughput [-- --seconds 3 --sizes 64,1514 ...]`
//! (`harness = false`: this file is the whole program; it is not shipped).
//!
//! Topology (network namespaces created and removed by the benchmark):
//!
//! ```text
//!   gen netns            sw netns                        sink netns
//!   h1 ---------------- sw1 [ p4lb-switch | kernel ] sw2 ---------------- h2
//! ```
//!
//! A generator thread in `gen` blasts UDP frames on h1 with `sendmmsg` (AF_PACKET) for a
//! fixed time; the figure is what arrives at h2 (its interface rx counter), per second.
//! Scenarios: kernel IPv4 forwarding in `sw` (ip_forward, static neighbour), p4lb-switch
//! routing (`ipv4_routes` + `port_smac`), and p4lb-switch VIP load balancing (`vip_services`,
//! `conn_table` miss, Maglev slot, DNAT, transit mark) — all with the same frames.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use etherparse::{EtherType, Ethernet2Header, IpNumber, Ipv4Header, UdpHeader};
use p4lb_p4::{actions, tables};
use p4lb_proto::p4runtime as p4;
use p4lb_proto::p4runtime::p4_runtime_client::P4RuntimeClient;

#[derive(Debug, Parser)]
#[command(
    name = "p4lb-switch-bench",
    about = "p4lb-switch vs kernel routing throughput"
)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Frame sizes in bytes (Ethernet header included, FCS excluded).
    #[arg(long, value_delimiter = ',', default_value = "64,1514")]
    sizes: Vec<usize>,
    /// Nice value for the generator thread and the switch's data-plane thread, to measure
    /// on a machine busy with other work (kernel forwarding runs in softirq context, outside
    /// the scheduler's fairness). Not set: default priority.
    #[arg(long, allow_hyphen_values = true)]
    nice: Option<i32>,
    /// Run the switch with PACKET_MMAP (TPACKET_V3) receive rings.
    #[arg(long)]
    rx_ring: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const H1_MAC: [u8; 6] = [0x02, 0xbe, 0, 0, 0, 0x01];
const H2_MAC: [u8; 6] = [0x02, 0xbe, 0, 0, 0, 0x02];
const SW1_MAC: [u8; 6] = [0x02, 0xbe, 0, 0, 1, 0x01];
const SW2_MAC: [u8; 6] = [0x02, 0xbe, 0, 0, 1, 0x02];
/// The switch's virtual router MAC (what pods resolve the gateway to through arp_proxy). It
/// is not the MAC of sw1, so the sw netns kernel stack discards the frames early
/// (PACKET_OTHERHOST), as it does in a real p4lb deployment.
const ROUTER_MAC: [u8; 6] = [0x02, 0xbe, 0, 0, 0, 0xfe];
const SRC: [u8; 4] = [10, 1, 0, 2];
const DST: [u8; 4] = [10, 2, 0, 2];
const VIP: [u8; 4] = [10, 96, 0, 1];

fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

struct Netns {
    gen: String,
    sw: String,
    sink: String,
}

impl Netns {
    fn create() -> Result<Netns> {
        let id = std::process::id();
        let n = Netns {
            gen: format!("p4lbb-gen-{id}"),
            sw: format!("p4lbb-sw-{id}"),
            sink: format!("p4lbb-sink-{id}"),
        };
        for ns in [&n.gen, &n.sw, &n.sink] {
            sh(&["ip", "netns", "add", ns])?;
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ])?;
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.default.disable_ipv6=1",
            ])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        sh(&[
            "ip", "link", "add", "h1", "netns", &n.gen, "type", "veth", "peer", "name", "sw1",
            "netns", &n.sw,
        ])?;
        sh(&[
            "ip", "link", "add", "h2", "netns", &n.sink, "type", "veth", "peer", "name", "sw2",
            "netns", &n.sw,
        ])?;
        for (ns, dev, mac) in [
            (&n.gen, "h1", H1_MAC),
            (&n.sink, "h2", H2_MAC),
            (&n.sw, "sw1", SW1_MAC),
            (&n.sw, "sw2", SW2_MAC),
        ] {
            sh(&["ip", "-n", ns, "link", "set", dev, "address", &mac_str(mac)])?;
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(n)
    }

    fn kernel_routing(&self, on: bool) -> Result<()> {
        let sw = &self.sw;
        if on {
            sh(&[
                "ip",
                "netns",
                "exec",
                sw,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])?;
            sh(&["ip", "-n", sw, "addr", "add", "10.1.0.1/24", "dev", "sw1"])?;
            sh(&["ip", "-n", sw, "addr", "add", "10.2.0.1/24", "dev", "sw2"])?;
            sh(&[
                "ip",
                "-n",
                sw,
                "neigh",
                "replace",
                "10.2.0.2",
                "lladdr",
                &mac_str(H2_MAC),
                "dev",
                "sw2",
                "nud",
                "permanent",
            ])?;
        } else {
            sh(&[
                "ip",
                "netns",
                "exec",
                sw,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=0",
            ])?;
            sh(&["ip", "-n", sw, "addr", "flush", "dev", "sw1"])?;
            sh(&["ip", "-n", sw, "addr", "flush", "dev", "sw2"])?;
        }
        Ok(())
    }

    fn sink_rx(&self) -> Result<(u64, u64)> {
        let out = sh(&["ip", "-n", &self.sink, "-s", "-s", "link", "show", "h2"])?;
        // "RX: bytes packets ..." followed by a line of numbers
        let mut lines = out.lines();
        while let Some(l) = lines.next() {
            if l.trim_start().starts_with("RX:") {
                let nums: Vec<u64> = lines
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if nums.len() >= 2 {
                    return Ok((nums[1], nums[0]));
                }
            }
        }
        bail!("cannot read h2 counters from `ip -s link`")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.gen, &self.sw, &self.sink] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn enter_netns(name: &str) -> Result<()> {
    let f = std::fs::File::open(format!("/run/netns/{name}")).context("opening netns")?;
    // SAFETY: setns affects only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {name}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// A UDP frame of `size` bytes from SRC to `dst`, to `dmac`, built with etherparse. UDP
/// checksum 0 (none): the switch keeps it.
fn frame(size: usize, dmac: [u8; 6], dst: [u8; 4]) -> Result<Vec<u8>> {
    let size = size.max(Ethernet2Header::LEN + Ipv4Header::MIN_LEN + UdpHeader::LEN);
    let payload = vec![0u8; size - Ethernet2Header::LEN - Ipv4Header::MIN_LEN - UdpHeader::LEN];
    let udp = UdpHeader::without_ipv4_checksum(5000, 6000, payload.len())?;
    let mut ip = Ipv4Header::new(udp.length, 64, IpNumber::UDP, SRC, dst)?;
    ip.dont_fragment = false;
    let mut f = Vec::with_capacity(size);
    Ethernet2Header {
        source: H1_MAC,
        destination: dmac,
        ether_type: EtherType::IPV4,
    }
    .write(&mut f)?;
    ip.write(&mut f)?;
    udp.write(&mut f)?;
    f.extend_from_slice(&payload);
    Ok(f)
}

fn raw_socket(iface: &str) -> Result<OwnedFd> {
    let ifindex = p4lb_switch::ports::afpacket::ifindex(iface)?;
    // SAFETY: plain socket call.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: zeroed sockaddr_ll is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    // Protocol 0: this socket only sends (it receives nothing).
    sll.sll_ifindex = ifindex;
    // SAFETY: valid sockaddr.
    let r = unsafe {
        libc::bind(
            raw,
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r != 0 {
        bail!("bind: {}", std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Blasts `frame` on h1 (in the gen netns) until `stop`; returns frames handed to the kernel.
fn generator(
    ns: String,
    frame: Vec<u8>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    nice: Option<i32>,
) -> std::thread::JoinHandle<Result<()>> {
    std::thread::spawn(move || {
        enter_netns(&ns)?;
        if let Some(nice) = nice {
            // SAFETY: setpriority on this thread's own tid.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice);
            }
        }
        let fd = raw_socket("h1")?;
        const BATCH: usize = 256;
        let mut iov = libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        };
        let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
            .map(|_| {
                // SAFETY: zeroed mmsghdr is valid; iov outlives every call below.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = &mut iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: msgs are initialised and point at a live buffer.
            let r = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
            if r > 0 {
                sent.fetch_add(r as u64, Ordering::Relaxed);
            } else if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ENOBUFS)
                    && e.kind() != std::io::ErrorKind::WouldBlock
                {
                    bail!("sendmmsg: {e}");
                }
            }
        }
        Ok(())
    })
}

struct Measurement {
    pps: f64,
    mbps: f64,
    offered_pps: f64,
    /// CPU share (1.0 = one core) the switch's data-plane thread got, if it ran.
    dataplane_cpu: Option<f64>,
}

/// utime + stime (seconds) of this process's thread named `p4lb-dataplane`, if any.
fn dataplane_cpu_seconds() -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != "p4lb-dataplane" {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
        // fields after the ")" of the comm: state is field 3; utime 14, stime 15
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ut: f64 = f.get(11)?.parse().ok()?;
        let st: f64 = f.get(12)?.parse().ok()?;
        return Some((ut + st) / hz);
    }
    None
}

fn measure(n: &Netns, frame: &[u8], seconds: f64, nice: Option<i32>) -> Result<Measurement> {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let g = generator(
        n.gen.clone(),
        frame.to_vec(),
        stop.clone(),
        sent.clone(),
        nice,
    );
    // warm-up
    std::thread::sleep(Duration::from_millis(300));
    let (p0, _) = n.sink_rx()?;
    let s0 = sent.load(Ordering::Relaxed);
    let c0 = dataplane_cpu_seconds();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (p1, _) = n.sink_rx()?;
    let s1 = sent.load(Ordering::Relaxed);
    let c1 = dataplane_cpu_seconds();
    let dt = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    g.join()
        .map_err(|_| anyhow::anyhow!("generator panicked"))??;
    let pps = (p1 - p0) as f64 / dt;
    Ok(Measurement {
        pps,
        mbps: pps * frame.len() as f64 * 8.0 / 1e6,
        offered_pps: (s1 - s0) as f64 / dt,
        dataplane_cpu: c0.zip(c1).map(|(a, b)| (b - a) / dt),
    })
}

fn bs(v: u64) -> Vec<u8> {
    let b = v.to_be_bytes();
    let first = b.iter().position(|x| *x != 0).unwrap_or(7);
    b[first..].to_vec()
}

fn mac_u64(m: [u8; 6]) -> u64 {
    m.iter().fold(0, |a, b| (a << 8) | u64::from(*b))
}

fn entry(
    table_id: u32,
    m: Vec<(u32, u64, Option<i32>)>,
    action_id: u32,
    params: &[u64],
) -> p4::Update {
    let r#match = m
        .into_iter()
        .map(|(id, v, plen)| p4::FieldMatch {
            field_id: id,
            field_match_type: Some(match plen {
                None => {
                    p4::field_match::FieldMatchType::Exact(p4::field_match::Exact { value: bs(v) })
                }
                Some(prefix_len) => p4::field_match::FieldMatchType::Lpm(p4::field_match::Lpm {
                    value: bs(v),
                    prefix_len,
                }),
            }),
        })
        .collect();
    let te = p4::TableEntry {
        table_id,
        r#match,
        action: Some(p4::TableAction {
            r#type: Some(p4::table_action::Type::Action(p4::Action {
                action_id,
                params: params
                    .iter()
                    .enumerate()
                    .map(|(i, v)| p4::action::Param {
                        param_id: i as u32 + 1,
                        value: bs(*v),
                    })
                    .collect(),
            })),
        }),
        ..Default::default()
    };
    p4::Update {
        r#type: p4::update::Type::Insert as i32,
        entity: Some(p4::Entity {
            entity: Some(p4::entity::Entity::TableEntry(te)),
        }),
    }
}

/// Installs the benchmark's routes and VIP service over P4Runtime.
async fn program(
    c: &mut P4RuntimeClient<tonic::transport::Channel>,
    device_config: Vec<u8>,
) -> Result<()> {
    c.set_forwarding_pipeline_config(p4::SetForwardingPipelineConfigRequest {
        device_id: 0,
        action: p4::set_forwarding_pipeline_config_request::Action::VerifyAndCommit as i32,
        config: Some(p4::ForwardingPipelineConfig {
            p4info: Some(p4lb_p4::p4info()?),
            p4_device_config: device_config,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await?;
    let dst = u64::from(u32::from_be_bytes(DST));
    let vip = u64::from(u32::from_be_bytes(VIP));
    let mut updates = vec![
        entry(
            tables::ipv4_routes::ID,
            vec![(tables::ipv4_routes::DST_ADDR.id, dst, Some(32))],
            actions::route_to_port::ID,
            &[2, mac_u64(H2_MAC)],
        ),
        entry(
            tables::port_smac::ID,
            vec![(tables::port_smac::EGRESS_PORT.id, 2, None)],
            actions::set_smac::ID,
            &[mac_u64(ROUTER_MAC)],
        ),
        entry(
            tables::vip_services::ID,
            vec![
                (tables::vip_services::DST_ADDR.id, vip, None),
                (tables::vip_services::PROTOCOL.id, 17, None),
                (tables::vip_services::L4_DPORT.id, 6000, None),
            ],
            actions::set_service::ID,
            &[1, 1021, 6000],
        ),
        entry(
            tables::backends::ID,
            vec![(tables::backends::BACKEND_ID.id, 1, None)],
            actions::backend_forward::ID,
            &[dst, mac_u64(H2_MAC), 2],
        ),
    ];
    for slot in 0..1021 {
        updates.push(entry(
            tables::maglev_slots::ID,
            vec![
                (tables::maglev_slots::SERVICE_ID.id, 1, None),
                (tables::maglev_slots::SLOT.id, slot, None),
            ],
            actions::set_backend::ID,
            &[1],
        ));
    }
    c.write(p4::WriteRequest {
        device_id: 0,
        updates,
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// Starts p4lb-switch inside the sw netns (its own thread and runtime) and programs it.
fn start_switch(
    sw_ns: String,
    nice: Option<i32>,
    rx_ring: bool,
) -> Result<(
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<Result<()>>,
)> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || -> Result<()> {
        enter_netns(&sw_ns)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let setup = async {
                let handle = p4lb_switch::serve(p4lb_switch::SwitchConfig {
                    grpc_addr: p4lb_switch::GrpcAddr::Tcp("127.0.0.1:0".parse()?),
                    ports: vec![(1, "sw1".into()), (2, "sw2".into())],
                    dataplane_nice: nice,
                    rx_ring,
                    ..Default::default()
                })
                .await?;
                let mut c = P4RuntimeClient::connect(handle.endpoint()).await?;
                program(&mut c, Vec::new()).await?;
                Ok::<_, anyhow::Error>(handle)
            };
            match setup.await {
                Ok(handle) => {
                    let _ = ready_tx.send(Ok(()));
                    let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                    handle.shutdown().await;
                    Ok(())
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("{e:#}")));
                    Err(e)
                }
            }
        })
    });
    ready_rx.recv().context("switch thread died")??;
    Ok((stop_tx, t))
}

/// Starts BMv2's simple_switch_grpc in the sw netns with the p4lb program and the same
/// entries. Returns the child (killed by the caller).
fn start_bmv2(sw_ns: &str, prefix: &std::path::Path, json: Vec<u8>) -> Result<std::process::Child> {
    let child = Command::new("ip")
        .args(["netns", "exec", sw_ns])
        .arg(prefix.join("bin/simple_switch_grpc"))
        .args([
            "--no-p4",
            "--device-id",
            "0",
            "-i",
            "1@sw1",
            "-i",
            "2@sw2",
            "--thrift-port",
            "9090",
        ])
        .args([
            "--",
            "--grpc-server-addr",
            "127.0.0.1:9559",
            "--cpu-port",
            "255",
        ])
        .env("LD_LIBRARY_PATH", prefix.join("lib"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting simple_switch_grpc")?;
    let ns = sw_ns.to_string();
    std::thread::spawn(move || -> Result<()> {
        enter_netns(&ns)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let start = Instant::now();
            let mut c = loop {
                match P4RuntimeClient::connect("http://127.0.0.1:9559").await {
                    Ok(c) => break c,
                    Err(e) if start.elapsed() > Duration::from_secs(20) => bail!("BMv2 gRPC: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            program(&mut c, json).await
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("BMv2 setup thread panicked"))??;
    Ok(child)
}

/// BMv2 JSON of p4lb.p4: $P4LB_BMV2_JSON, or compiled with the prefix's p4c-bm2-ss.
fn bmv2_json(prefix: &std::path::Path) -> Result<Vec<u8>> {
    if let Some(p) = std::env::var_os("P4LB_BMV2_JSON") {
        return std::fs::read(&p).context("reading $P4LB_BMV2_JSON");
    }
    let dir = std::env::temp_dir().join(format!("p4lb-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let src = dir.join("p4lb.p4");
    std::fs::write(&src, p4lb_p4::P4_SOURCE)?;
    let out = dir.join("p4lb.json");
    let st = Command::new(prefix.join("bin/p4c-bm2-ss"))
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .env("LD_LIBRARY_PATH", prefix.join("lib"))
        .status()
        .context("running p4c-bm2-ss")?;
    if !st.success() {
        bail!("p4c-bm2-ss failed");
    }
    let json = std::fs::read(&out)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json)
}

fn main() -> Result<()> {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("p4lb-switch-bench needs root (network namespaces, veth, AF_PACKET)");
    }
    let n = Netns::create()?;
    println!(
        "p4lb-switch-bench: {} s per run, UDP frames, 1 generator thread (sendmmsg), {} CPUs",
        args.seconds,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let bmv2 = match std::env::var_os("P4LB_P4_PREFIX") {
        Some(p) => {
            let prefix = std::path::PathBuf::from(p);
            let json = bmv2_json(&prefix)?;
            Some((prefix, json))
        }
        None => {
            println!("SKIPPED (BMv2): P4LB_P4_PREFIX not set, no BMv2 figures");
            None
        }
    };
    let mut results = Vec::new();
    for &size in &args.sizes {
        n.kernel_routing(true)?;
        let k = measure(&n, &frame(size, SW1_MAC, DST)?, args.seconds, args.nice)?;
        n.kernel_routing(false)?;
        let (stop, t) = start_switch(n.sw.clone(), args.nice, args.rx_ring)?;
        let r = measure(&n, &frame(size, ROUTER_MAC, DST)?, args.seconds, args.nice)?;
        let v = measure(&n, &frame(size, ROUTER_MAC, VIP)?, args.seconds, args.nice)?;
        let _ = stop.send(());
        t.join()
            .map_err(|_| anyhow::anyhow!("switch thread panicked"))??;
        let b = match &bmv2 {
            Some((prefix, json)) => {
                let mut child = start_bmv2(&n.sw, prefix, json.clone())?;
                let m = measure(&n, &frame(size, ROUTER_MAC, DST)?, args.seconds, args.nice);
                let _ = child.kill();
                let _ = child.wait();
                Some(m?)
            }
            None => None,
        };
        results.push((size, k, r, v, b));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average during the run: {}", load.trim());
    println!();
    println!("dp CPU = share of one core the switch's data-plane thread got; pps/dp-core = pps it");
    println!(
        "forwards per fully used core (the machine is shared; kernel forwarding runs in softirq)."
    );
    println!(
        "{:>6}  {:<30} {:>10} {:>9} {:>12} {:>9} {:>9} {:>14}",
        "frame", "path", "pps", "Mbit/s", "offered pps", "vs kernel", "dp CPU", "pps/dp-core"
    );
    for (size, k, r, v, b) in &results {
        let mut rows = vec![
            ("kernel IPv4 forwarding", k),
            ("p4lb-switch ipv4_routes", r),
            ("p4lb-switch VIP (Maglev+DNAT)", v),
        ];
        if let Some(b) = b {
            rows.push(("BMv2 ipv4_routes", b));
        }
        for (name, m) in rows {
            let (cpu, per_core) = match m.dataplane_cpu {
                Some(c) if c > 0.0 => (format!("{:.0}%", c * 100.0), format!("{:.0}", m.pps / c)),
                _ => ("-".to_string(), "-".to_string()),
            };
            println!(
                "{:>6}  {:<30} {:>10.0} {:>9.1} {:>12.0} {:>8.2}x {:>9} {:>14}",
                size,
                name,
                m.pps,
                m.mbps,
                m.offered_pps,
                m.pps / k.pps.max(1.0),
                cpu,
                per_core
            );
        }
    }
    Ok(())
}
