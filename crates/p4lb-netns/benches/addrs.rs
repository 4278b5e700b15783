//! The cost of reading a network namespace's IPv4 addresses, which the controller does
//! at every migration event to check the caller's identity (not a test; root):
//! `cargo bench -p p4lb-netns --bench addrs` (`-- --reads 2000` for more).
//!
//! In one run, against a fresh namespace with a few addresses, alternating read by read
//! so both see the same load, p50 / p99 / max of:
//! 1. the old way, kept as the baseline: a thread joins the namespace, builds a
//!    current-thread tokio runtime, opens an rtnetlink connection and dumps the
//!    addresses ([`NetNs::with_netlink`] with [`p4lb_netns::ipv4_addrs`]);
//! 2. the way [`NetNs::ipv4_addrs`] reads them: the thread only creates a plain netlink
//!    socket, and the caller dumps over it;
//!
//! and the ratio of their medians.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use p4lb_netns::NetNs;

fn main() {
    let mut reads = 1000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--reads" {
            match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => reads = n,
                _ => {
                    eprintln!("--reads takes a positive number");
                    std::process::exit(2);
                }
            }
        }
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("addrs bench: needs root (it makes a network namespace of its own)");
        std::process::exit(2);
    }
    let ns = fresh_netns();
    for args in [
        &["link", "set", "lo", "up"][..],
        &["addr", "add", "10.88.0.5/24", "dev", "lo"],
        &["addr", "add", "10.88.0.6/32", "dev", "lo"],
    ] {
        let st = std::process::Command::new("nsenter")
            .arg(format!(
                "--net=/proc/{}/fd/{}",
                std::process::id(),
                ns.as_raw_fd()
            ))
            .arg("ip")
            .args(args)
            .status()
            .expect("nsenter ip");
        assert!(st.success(), "ip {args:?}");
    }

    let old = || {
        ns.with_netlink(|h| async move { p4lb_netns::ipv4_addrs(&h).await })
            .expect("namespace")
            .expect("dump")
    };
    let new = || ns.ipv4_addrs().expect("dump");
    assert_eq!(old(), new(), "both ways must read the same addresses");

    let (mut a, mut b) = (Vec::with_capacity(reads), Vec::with_capacity(reads));
    for _ in 0..reads {
        let t = Instant::now();
        std::hint::black_box(old());
        a.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(new());
        b.push(t.elapsed());
    }
    println!("IPv4 addresses of a namespace, {reads} reads each way, alternating:");
    let pa = row("thread + runtime + rtnetlink (before)", &mut a);
    let pb = row("thread + plain netlink socket (now)", &mut b);
    println!(
        "ratio of medians, before : now = {:.2}",
        pa.as_secs_f64() / pb.as_secs_f64()
    );
}

/// Prints one row and returns its median.
fn row(what: &str, v: &mut [Duration]) -> Duration {
    v.sort();
    let q = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "  {what:<40} p50 {:>7.1} µs  p99 {:>7.1} µs  max {:>7.1} µs",
        us(q(0.5)),
        us(q(0.99)),
        us(v[v.len() - 1])
    );
    q(0.5)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A fresh network namespace, kept alive by the returned handle only.
fn fresh_netns() -> NetNs {
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        NetNs::current().expect("open the fresh namespace")
    })
    .join()
    .expect("thread")
}
