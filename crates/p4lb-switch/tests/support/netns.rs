//! Network namespaces and veth pairs for packet tests: the switch's ends live in one netns,
//! the host ends in another, and the test injects/captures raw frames on the host ends.
//! The namespaces and links come from `p4lb-testutil` (rtnetlink, no `ip` binary).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use p4lb_testutil::NamedNetns;

static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn is_root() -> bool {
    p4lb_testutil::is_root()
}

/// Whether `test` may go on: without root it prints a loud SKIPPED line (network
/// namespaces and veth pairs need root) and says no.
pub fn root_or_skip(test: &str) -> bool {
    if !is_root() {
        super::target::loud(&format!(
            "SKIPPED: {test} needs root (network namespaces, veth)"
        ));
        return false;
    }
    true
}

/// A namespace for a topology: IPv6 off (no router solicitations in the captures), lo up.
fn quiet_netns(name: &str, default_too: bool) -> NamedNetns {
    let ns = NamedNetns::create(name)
        .unwrap_or_else(|e| panic!("creating network namespace {name}: {e}"));
    ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")
        .expect("disabling IPv6");
    if default_too {
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
            .expect("disabling IPv6");
    }
    ns.link_up("lo").expect("lo up");
    ns
}

/// A veth `s` (in `sw`) / `h` (in `host`), both up.
fn wire(sw: &NamedNetns, s: &str, host: &NamedNetns, h: &str) {
    sw.add_veth(s, h, Some(host.netns()))
        .unwrap_or_else(|e| panic!("creating veth {s}/{h}: {e}"));
    sw.link_up(s).expect("switch end up");
    host.link_up(h).expect("host end up");
}

pub struct Topology {
    pub sw_ns: String,
    pub host_ns: String,
    /// (port number, switch-side iface, host-side iface)
    pub ports: Vec<(u16, String, String)>,
    /// Host ends each in their own netns (see [`Topology::create_isolated`]).
    pub isolated: bool,
    sw: NamedNetns,
    host: NamedNetns,
    /// The per-port host namespaces of an isolated topology, by port order.
    isolated_ns: Vec<NamedNetns>,
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
        let sw = quiet_netns(&sw_ns, true);
        let host = quiet_netns(&host_ns, true);
        let mut ports = Vec::new();
        for i in 1..=n {
            let s = format!("sw{i}");
            let h = format!("h{i}");
            wire(&sw, &s, &host, &h);
            ports.push((i as u16, s, h));
        }
        Topology {
            sw_ns,
            host_ns,
            ports,
            isolated: false,
            sw,
            host,
            isolated_ns: Vec::new(),
        }
    }

    pub fn iface_args(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|(p, s, _)| format!("{p}@{s}"))
            .collect()
    }

    /// A command for `program` that runs in the switch's namespace.
    pub fn sw_command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        self.sw.command(program)
    }

    /// A raw socket on the host end of `port`.
    pub fn host(&self, port: u16) -> RawSock {
        let (_, _, h) = self
            .ports
            .iter()
            .find(|(p, _, _)| *p == port)
            .expect("port exists");
        self.host
            .run(|| RawSock::open(h))
            .expect("entering the host namespace")
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.delete_isolated();
        // The switch and host namespaces go when their fields are dropped.
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

    /// A receive buffer of `bytes` (SO_RCVBUFFORCE, root), for tests that take bursts.
    pub fn grow_rcvbuf(&self, bytes: i32) {
        // SAFETY: valid option pointer/size on our own socket.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &bytes as *const _ as *const libc::c_void,
                4,
            )
        };
        assert_eq!(r, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
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
            let ns = quiet_netns(&format!("{}-{i}", t.host_ns), false);
            let s = format!("sw{i}");
            let h = format!("h{i}");
            wire(&t.sw, &s, &ns, &h);
            t.ports.push((i as u16, s, h));
            t.isolated_ns.push(ns);
        }
        t
    }

    fn host_ns_of(&self, port: u16) -> &NamedNetns {
        let i = self
            .ports
            .iter()
            .position(|(p, _, _)| *p == port)
            .expect("port exists");
        &self.isolated_ns[i]
    }

    /// Address, default route and MAC for the host end of `port` (isolated topology).
    pub fn host_addr(&self, port: u16, cidr: &str, gw: &str, mac: [u8; 6]) {
        let ns = self.host_ns_of(port);
        let h = format!("h{port}");
        ns.set_mac(&h, mac).expect("setting the MAC");
        ns.add_addr(&h, cidr).expect("adding the address");
        let gw = gw.parse().expect("gateway is an IPv4 address");
        ns.add_route("default", Some(gw), &h)
            .expect("adding the default route");
    }

    /// Runs `f` on a thread inside the netns of `port`'s host end (isolated topology).
    pub fn in_host_ns<T: Send + 'static>(
        &self,
        port: u16,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let inner = self
            .host_ns_of(port)
            .spawn(f)
            .expect("starting a thread in the host namespace");
        std::thread::spawn(move || {
            inner
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
                .expect("entering the host namespace")
        })
    }

    /// Removes the per-port host namespaces of an isolated topology (also done on drop).
    pub fn delete_isolated(&self) {
        if !self.isolated {
            return;
        }
        for ns in &self.isolated_ns {
            let _ = p4lb_testutil::remove_named(ns.name());
        }
    }
}
