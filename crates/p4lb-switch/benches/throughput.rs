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
//! `conn_table` miss, Maglev slot, DNAT, transit slot) — all with the same frames.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use etherparse::{EtherType, Ethernet2Header, IpNumber, Ipv4Header, UdpHeader};
use p4lb_controller::addr::mac_u64;
use p4lb_controller::southbound::forwarding::pipeline_config;
use p4lb_controller::southbound::programmer::table_update;
use p4lb_controller::southbound::session;
use p4lb_p4::entries;
use p4lb_proto::p4runtime::set_forwarding_pipeline_config_request::Action as SetAction;
use p4lb_proto::p4runtime::update;
use p4lb_testutil::{unique_name, NamedNetns};

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
const SRC: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const DST: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// The P4Runtime device and election ID the benchmark programs the switches with.
const DEVICE_ID: u64 = 0;
const ELECTION: u128 = 1;

/// The three namespaces and two veth pairs of the topology; removed on drop.
struct Topology {
    gen: NamedNetns,
    sw: NamedNetns,
    sink: NamedNetns,
}

impl Topology {
    fn create() -> Result<Topology> {
        let n = Topology {
            gen: NamedNetns::create(&unique_name("p4lbb-gen-"))?,
            sw: NamedNetns::create(&unique_name("p4lbb-sw-"))?,
            sink: NamedNetns::create(&unique_name("p4lbb-sink-"))?,
        };
        for ns in [&n.gen, &n.sw, &n.sink] {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
            ns.link_up("lo")?;
        }
        n.gen.add_veth("h1", "sw1", Some(n.sw.netns()))?;
        n.sink.add_veth("h2", "sw2", Some(n.sw.netns()))?;
        for (ns, dev, mac) in [
            (&n.gen, "h1", H1_MAC),
            (&n.sink, "h2", H2_MAC),
            (&n.sw, "sw1", SW1_MAC),
            (&n.sw, "sw2", SW2_MAC),
        ] {
            ns.set_mac(dev, mac)?;
            ns.link_up(dev)?;
        }
        Ok(n)
    }

    fn kernel_routing(&self, on: bool) -> Result<()> {
        let sw = &self.sw;
        if on {
            sw.sysctl("net.ipv4.ip_forward", "1")?;
            sw.add_addr("sw1", "10.1.0.1/24")?;
            sw.add_addr("sw2", "10.2.0.1/24")?;
            sw.set_neighbour("sw2", DST, H2_MAC)?;
        } else {
            sw.sysctl("net.ipv4.ip_forward", "0")?;
            sw.del_addr("sw1", "10.1.0.1/24")?;
            sw.del_addr("sw2", "10.2.0.1/24")?;
        }
        Ok(())
    }

    /// h2's receive counters (packets, bytes), from the sink namespace's /proc/net/dev.
    fn sink_rx(&self) -> Result<(u64, u64)> {
        let dev = self
            .sink
            .run(|| std::fs::read_to_string("/proc/thread-self/net/dev"))??;
        // "  h2: rx_bytes rx_packets ..."
        for l in dev.lines() {
            if let Some(("h2", rest)) = l.trim_start().split_once(':') {
                let nums: Vec<u64> = rest
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if nums.len() >= 2 {
                    return Ok((nums[1], nums[0]));
                }
            }
        }
        bail!("cannot read h2 counters from /proc/net/dev of the sink namespace")
    }
}

/// A UDP frame of `size` bytes from SRC to `dst`, to `dmac`, built with etherparse. UDP
/// checksum 0 (none): the switch keeps it.
fn frame(size: usize, dmac: [u8; 6], dst: Ipv4Addr) -> Result<Vec<u8>> {
    let size = size.max(Ethernet2Header::LEN + Ipv4Header::MIN_LEN + UdpHeader::LEN);
    let payload = vec![0u8; size - Ethernet2Header::LEN - Ipv4Header::MIN_LEN - UdpHeader::LEN];
    let udp = UdpHeader::without_ipv4_checksum(5000, 6000, payload.len())?;
    let mut ip = Ipv4Header::new(udp.length, 64, IpNumber::UDP, SRC.octets(), dst.octets())?;
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
    frame: Vec<u8>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    nice: Option<i32>,
) -> impl FnOnce() -> Result<()> + Send + 'static {
    move || {
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
    }
}

/// Waits for a thread started inside a namespace (`NamedNetns::spawn`) and returns what
/// it returned, or why it could not join the namespace.
fn join<T, E: Into<anyhow::Error>>(
    t: std::thread::JoinHandle<std::result::Result<Result<T>, E>>,
    what: &str,
) -> Result<T> {
    t.join()
        .map_err(|_| anyhow::anyhow!("{what} thread panicked"))?
        .map_err(Into::into)?
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

fn measure(n: &Topology, frame: &[u8], seconds: f64, nice: Option<i32>) -> Result<Measurement> {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let g = n
        .gen
        .spawn(generator(frame.to_vec(), stop.clone(), sent.clone(), nice))?;
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
    join(g, "generator")?;
    let pps = (p1 - p0) as f64 / dt;
    Ok(Measurement {
        pps,
        mbps: pps * frame.len() as f64 * 8.0 / 1e6,
        offered_pps: (s1 - s0) as f64 / dt,
        dataplane_cpu: c0.zip(c1).map(|(a, b)| (b - a) / dt),
    })
}

/// Installs the benchmark's routes and VIP service over P4Runtime, as the primary
/// controller of the switch at `address`.
async fn program(address: &str, device_config: Vec<u8>) -> Result<()> {
    let channel = session::connect_channel(address, Duration::from_secs(5))
        .await
        .map_err(anyhow::Error::msg)?;
    let mut c = session::client(channel);
    // The stream stays open (and this client primary) until the entries are written.
    let (_stream, _inbound, answer) =
        session::arbitrate(&mut c, DEVICE_ID, ELECTION, Duration::from_secs(5))
            .await
            .map_err(anyhow::Error::msg)?;
    let code = answer.status.map(|s| s.code).unwrap_or(-1);
    if code != tonic::Code::Ok as i32 {
        bail!("not the primary controller of {address} (arbitration status {code})");
    }
    c.set_forwarding_pipeline_config(session::set_pipeline_request(
        DEVICE_ID,
        ELECTION,
        SetAction::VerifyAndCommit,
        Some(pipeline_config(p4lb_p4::p4info()?, device_config)),
    ))
    .await?;
    let mut es = vec![
        entries::route_to_port(DST, 32, 2, mac_u64(&H2_MAC)),
        entries::port_smac(2, mac_u64(&ROUTER_MAC)),
        entries::vip_service(VIP, 17, 6000, 1, 1021, 6000),
        entries::backend_forward(1, DST, mac_u64(&H2_MAC), 2),
    ];
    es.extend((0..1021).map(|slot| entries::maglev_slot(1, slot, 1)));
    let updates = es
        .into_iter()
        .map(|e| table_update(update::Type::Insert, e))
        .collect();
    c.write(session::write_request(DEVICE_ID, ELECTION, updates))
        .await?;
    Ok(())
}

/// Starts p4lb-switch inside the sw netns (its own thread and runtime) and programs it.
/// Returns what stops it again.
fn start_switch(
    sw_ns: &NamedNetns,
    nice: Option<i32>,
    rx_ring: bool,
) -> Result<impl FnOnce() -> Result<()>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let t = sw_ns.spawn(move || -> Result<()> {
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
                    insecure_loopback: true,
                    ..Default::default()
                })
                .await?;
                program(&handle.endpoint(), Vec::new()).await?;
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
    })?;
    ready_rx.recv().context("switch thread died")??;
    Ok(move || {
        let _ = stop_tx.send(());
        join(t, "switch")
    })
}

/// Starts BMv2's simple_switch_grpc in the sw netns with the p4lb program and the same
/// entries. Returns the child (killed by the caller).
fn start_bmv2(
    sw_ns: &NamedNetns,
    prefix: &std::path::Path,
    json: Vec<u8>,
) -> Result<std::process::Child> {
    let mut child = sw_ns
        .command(prefix.join("bin/simple_switch_grpc"))
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
    let programmed = sw_ns.run(move || -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let start = Instant::now();
            // simple_switch_grpc takes a moment to listen.
            loop {
                match program("127.0.0.1:9559", json.clone()).await {
                    Ok(()) => return Ok(()),
                    Err(e) if start.elapsed() > Duration::from_secs(20) => {
                        bail!("BMv2 gRPC: {e:#}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
    });
    match programmed.map_err(anyhow::Error::from).and_then(|r| r) {
        Ok(()) => Ok(child),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
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
    let n = Topology::create()?;
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
        let stop = start_switch(&n.sw, args.nice, args.rx_ring)?;
        let r = measure(&n, &frame(size, ROUTER_MAC, DST)?, args.seconds, args.nice)?;
        let v = measure(&n, &frame(size, ROUTER_MAC, VIP)?, args.seconds, args.nice)?;
        stop()?;
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
