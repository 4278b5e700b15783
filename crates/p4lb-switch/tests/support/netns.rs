//! Network namespaces and veth pairs for packet tests: the switch's ends live in one netns,
//! the host ends in another, and the test injects/captures raw frames on the host ends.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn command");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Topology {
    pub sw_ns: String,
    pub host_ns: String,
    /// (port number, switch-side iface, host-side iface)
    pub ports: Vec<(u16, String, String)>,
    /// Host ends each in their own netns (see [`Topology::create_isolated`]).
    pub isolated: bool,
}

impl Topology {
    /// `n` ports numbered 1..=n.
    pub fn create(n: usize) -> Topology {
        let id = format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let sw_ns = format!("p4lbt-sw-{id}");
        let host_ns = format!("p4lbt-h-{id}");
        sh(&["ip", "netns", "add", &sw_ns]);
        sh(&["ip", "netns", "add", &host_ns]);
        for ns in [&sw_ns, &host_ns] {
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ]);
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let mut ports = Vec::new();
        for i in 1..=n {
            let s = format!("sw{i}");
            let h = format!("h{i}");
            sh(&[
                "ip", "link", "add", &s, "netns", &sw_ns, "type", "veth", "peer", "name", &h,
                "netns", &host_ns,
            ]);
            sh(&["ip", "-n", &sw_ns, "link", "set", &s, "up"]);
            sh(&["ip", "-n", &host_ns, "link", "set", &h, "up"]);
            ports.push((i as u16, s, h));
        }
        Topology {
            sw_ns,
            host_ns,
            ports,
            isolated: false,
        }
    }

    pub fn iface_args(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|(p, s, _)| format!("{p}@{s}"))
            .collect()
    }

    /// A raw socket on the host end of `port`.
    pub fn host(&self, port: u16) -> RawSock {
        let (_, _, h) = self
            .ports
            .iter()
            .find(|(p, _, _)| *p == port)
            .expect("port exists");
        let ns = format!("/run/netns/{}", self.host_ns);
        let h = h.clone();
        std::thread::spawn(move || {
            let f = std::fs::File::open(&ns).expect("open netns");
            // SAFETY: setns on this (short-lived) thread only.
            let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            RawSock::open(&h)
        })
        .join()
        .expect("socket thread")
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.delete_isolated();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.sw_ns])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.host_ns])
            .status();
    }
}

/// A plain AF_PACKET socket (no virtio-net header) bound to one interface.
pub struct RawSock {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSock {
    pub fn open(iface: &str) -> RawSock {
        let name = std::ffi::CString::new(iface).unwrap();
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        assert!(ifindex > 0, "no interface {iface}");
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket call.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        };
        assert!(raw >= 0);
        // SAFETY: fresh fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // SAFETY: valid option pointer/size (PACKET_IGNORE_OUTGOING = 23).
        unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_PACKET,
                23,
                &one as *const _ as *const libc::c_void,
                4,
            );
        }
        // SAFETY: zeroed sockaddr_ll is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        // SAFETY: valid sockaddr.
        let r = unsafe {
            libc::bind(
                raw,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        RawSock { fd, ifindex }
    }

    pub fn send(&self, frame: &[u8]) {
        // SAFETY: sending from a live buffer.
        let r = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        assert_eq!(
            r as usize,
            frame.len(),
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Next frame within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
        if r <= 0 {
            return None;
        }
        let mut buf = vec![0u8; 70000];
        // SAFETY: receiving into a live buffer.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return None;
        }
        buf.truncate(n as usize);
        Some(buf)
    }

    /// First frame within `timeout` for which `pred` holds (others are skipped).
    pub fn expect(&self, timeout: Duration, pred: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.recv(left) {
                Some(f) if pred(&f) => return Some(f),
                Some(_) => continue,
                None => return None,
            }
        }
        None
    }

    /// All IPv4/ARP frames arriving within `window`.
    pub fn collect(&self, window: Duration) -> Vec<Vec<u8>> {
        let end = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.recv(left) {
                Some(f) if f.len() >= 14 && (f[12..14] == [8, 0] || f[12..14] == [8, 6]) => {
                    out.push(f)
                }
                Some(_) => {}
                None => break,
            }
        }
        out
    }

    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }
}

impl Topology {
    /// Like [`Topology::create`], but every host end in its own netns (`host_ns` unused),
    /// so hosts can talk to each other through the switch with their own IP stacks.
    pub fn create_isolated(n: usize) -> Topology {
        let mut t = Topology::create(0);
        t.isolated = true;
        for i in 1..=n {
            let ns = format!("{}-{i}", t.host_ns);
            sh(&["ip", "netns", "add", &ns]);
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            let s = format!("sw{i}");
            let h = format!("h{i}");
            sh(&[
                "ip", "link", "add", &s, "netns", &t.sw_ns, "type", "veth", "peer", "name", &h,
                "netns", &ns,
            ]);
            sh(&["ip", "-n", &t.sw_ns, "link", "set", &s, "up"]);
            sh(&["ip", "-n", &ns, "link", "set", &h, "up"]);
            t.ports.push((i as u16, s, h));
        }
        t
    }

    fn host_ns_of(&self, port: u16) -> String {
        format!("{}-{port}", self.host_ns)
    }

    /// Address, default route and MAC for the host end of `port` (isolated topology).
    pub fn host_addr(&self, port: u16, cidr: &str, gw: &str, mac: [u8; 6]) {
        let ns = self.host_ns_of(port);
        let h = format!("h{port}");
        let mac = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        sh(&["ip", "-n", &ns, "link", "set", &h, "address", &mac]);
        sh(&["ip", "-n", &ns, "addr", "add", cidr, "dev", &h]);
        sh(&[
            "ip", "-n", &ns, "route", "add", "default", "via", gw, "dev", &h,
        ]);
    }

    /// Runs `f` on a thread inside the netns of `port`'s host end (isolated topology).
    pub fn in_host_ns<T: Send + 'static>(
        &self,
        port: u16,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let ns = format!("/run/netns/{}", self.host_ns_of(port));
        std::thread::spawn(move || {
            let file = std::fs::File::open(&ns).expect("open netns");
            // SAFETY: setns on this thread only.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }

    pub fn delete_isolated(&self) {
        if !self.isolated {
            return;
        }
        for (p, _, _) in &self.ports {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.host_ns_of(*p)])
                .status();
        }
    }
}
