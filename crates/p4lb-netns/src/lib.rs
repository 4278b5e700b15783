//! Network namespaces, entered one way for all of p4lb.
//!
//! Where to look:
//! - [`NetNs`]: open a namespace by path ([`NetNs::open`]), by pid ([`NetNs::from_pid`]) or
//!   the caller's own ([`NetNs::current`]); compare two ([`NetNs::same_as`]).
//! - [`NetNs::run`] / [`NetNs::spawn`]: run code inside a namespace, on a thread of its own.
//! - [`NetNs::netlink`] (async callers) and [`NetNs::with_netlink`] (synchronous callers):
//!   rtnetlink bound inside a namespace; [`NetNs::ipv4_addrs`] and [`ipv4_addrs`] list its
//!   IPv4 addresses.
//! - [`AddrSockets`]: netlink sockets kept inside namespaces an API server checks callers
//!   against, so that their addresses are read without a thread at each call.
//! - [`Error`]: what can go wrong; missing path and "not a network namespace" are distinct.
//! - [`identity`]: which namespace an API caller's pid or path stands for and whether the
//!   caller may speak for it (the controller and the node agent's relay apply it alike).
//!
//! # One strategy: a dedicated thread
//!
//! `setns(2)` with `CLONE_NEWNET` moves only the calling thread. Everything here that runs
//! "inside" a namespace does so on a new thread that joins the namespace, does its work and
//! ends. No thread is ever switched back: a thread that failed to return could otherwise
//! carry the wrong namespace into whatever ran on it next (a tokio worker, the main
//! thread), and the only safe answer to that would be aborting the process. Sockets keep
//! the namespace they were created in, so a netlink socket created on that thread keeps
//! talking to the namespace from any thread afterwards.
//!
//! This is written here rather than taken from `netns-rs`, whose `run` switches the calling
//! thread in and back, which is exactly the pattern avoided above.

use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

pub mod identity;

use futures::TryStreamExt;
use nix::sched::CloneFlags;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::RouteNetlinkMessage;

/// An rtnetlink connection: spawn it on a tokio runtime; it serves its [`rtnetlink::Handle`].
pub type Connection = rtnetlink::proto::Connection<RouteNetlinkMessage>;

/// What can go wrong with a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing exists at the path (for a pid: the process is gone).
    #[error("network namespace {path} does not exist")]
    NotFound { path: PathBuf },
    /// The path exists but cannot be opened.
    #[error("opening network namespace {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    /// The path is not a network namespace (a plain file, a FIFO, another namespace type).
    #[error("{path} is not a network namespace")]
    NotNetns { path: PathBuf },
    /// The opened file could not be inspected (fstatfs, fstat, the namespace-type ioctl).
    #[error("inspecting {path}: {source}")]
    Inspect { path: PathBuf, source: io::Error },
    /// A thread could not join the namespace.
    #[error("entering network namespace {path}: {source}")]
    Enter { path: PathBuf, source: io::Error },
    /// No thread or runtime could be started for the work.
    #[error("starting work in network namespace {path}: {source}")]
    Thread { path: PathBuf, source: io::Error },
    /// [`NetNs::netlink`] was called outside a tokio runtime.
    #[error("netlink for {path} needs a tokio runtime")]
    NoRuntime { path: PathBuf },
    /// The netlink socket could not be created inside the namespace.
    #[error("netlink socket in {path}: {source}")]
    Socket { path: PathBuf, source: io::Error },
    /// Reading a netlink dump failed (the socket, or a reply that does not decode).
    #[error("netlink dump in {path}: {source}")]
    Dump { path: PathBuf, source: io::Error },
    /// A netlink request failed.
    #[error("netlink in {path}: {source}")]
    Netlink {
        path: PathBuf,
        source: rtnetlink::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An open network namespace. The file stays open, so the namespace lives at least as
/// long as this value, even if its bind mount or process goes away.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl NetNs {
    /// Opens `path` and checks that it is a network namespace: a file of the namespace
    /// filesystem (nsfs) whose namespace type is `CLONE_NEWNET`.
    ///
    /// The file is opened non-blocking, so a FIFO at `path` is an error, not a hang.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(&path)
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => Error::NotFound { path: path.clone() },
                _ => Error::Open {
                    path: path.clone(),
                    source,
                },
            })?;
        let inspect = |source: io::Error| Error::Inspect {
            path: path.clone(),
            source,
        };
        let fs = nix::sys::statfs::fstatfs(file.as_fd()).map_err(|e| inspect(e.into()))?;
        if fs.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
            return Err(Error::NotNetns { path });
        }
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the open descriptor.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) };
        if kind < 0 {
            return Err(inspect(io::Error::last_os_error()));
        }
        if kind != libc::CLONE_NEWNET {
            return Err(Error::NotNetns { path });
        }
        let meta = file.metadata().map_err(inspect)?;
        Ok(NetNs {
            dev: meta.dev(),
            ino: meta.ino(),
            file,
            path,
        })
    }

    /// The network namespace of the calling thread.
    pub fn current() -> Result<Self> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// The network namespace of process `pid`.
    pub fn from_pid(pid: u32) -> Result<Self> {
        Self::open(format!("/proc/{pid}/ns/net"))
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's inode number (what `ls -i /proc/PID/ns/net` and `lsns` show).
    pub fn inode(&self) -> u64 {
        self.ino
    }

    /// Whether both stand for the same namespace (same device and inode).
    pub fn same_as(&self, other: &NetNs) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }

    /// A second handle to the same namespace.
    pub fn try_clone(&self) -> Result<Self> {
        let file = self.file.try_clone().map_err(|source| Error::Inspect {
            path: self.path.clone(),
            source,
        })?;
        Ok(NetNs {
            file,
            path: self.path.clone(),
            dev: self.dev,
            ino: self.ino,
        })
    }

    /// Moves the calling thread into this namespace. Private: only threads made for the
    /// purpose (and ending after it) are ever moved.
    fn enter_this_thread(&self) -> Result<()> {
        nix::sched::setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| Error::Enter {
            path: self.path.clone(),
            source: e.into(),
        })
    }

    fn thread_error(&self, source: io::Error) -> Error {
        Error::Thread {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `f` inside this namespace on a thread made for it, and waits for it. The
    /// calling thread's namespace never changes. A panic in `f` is passed on to the
    /// caller as if `f` had run here.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        std::thread::scope(|s| {
            let worker = std::thread::Builder::new()
                .name("p4lb-netns".into())
                .spawn_scoped(s, || {
                    self.enter_this_thread()?;
                    Ok(f())
                })
                .map_err(|e| self.thread_error(e))?;
            match worker.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Starts `f` inside this namespace on a thread of its own and returns at once; the
    /// thread's result is `Err` if it could not join the namespace.
    pub fn spawn<T, F>(&self, f: F) -> Result<JoinHandle<Result<T>>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let ns = self.try_clone()?;
        std::thread::Builder::new()
            .name("p4lb-netns".into())
            .spawn(move || {
                ns.enter_this_thread()?;
                Ok(f())
            })
            .map_err(|e| self.thread_error(e))
    }

    /// An rtnetlink connection whose socket lives in this namespace, registered with the
    /// caller's tokio runtime: spawn the [`Connection`], then use the handle from any task.
    pub fn netlink(&self) -> Result<(Connection, rtnetlink::Handle)> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime {
            path: self.path.clone(),
        })?;
        let (conn, handle, _) = self
            .run(move || {
                let _in_runtime = rt.enter();
                rtnetlink::new_connection()
            })?
            .map_err(|source| Error::Socket {
                path: self.path.clone(),
                source,
            })?;
        Ok((conn, handle))
    }

    /// Runs `work` with an rtnetlink handle inside this namespace and waits for its
    /// result, for callers without a tokio runtime of their own (the work runs on a
    /// current-thread runtime on the namespace's thread).
    pub fn with_netlink<T, F, Fut>(&self, work: F) -> Result<T>
    where
        F: FnOnce(rtnetlink::Handle) -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        self.run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(|e| self.thread_error(e))?;
            rt.block_on(async {
                // Created now, on this thread, so inside the namespace.
                let (conn, handle, _) =
                    rtnetlink::new_connection().map_err(|source| Error::Socket {
                        path: self.path.clone(),
                        source,
                    })?;
                let task = tokio::spawn(conn);
                let out = work(handle).await;
                task.abort();
                Ok(out)
            })
        })?
    }

    /// The IPv4 addresses configured in this namespace (on any interface, loopback
    /// included), each once, in the kernel's order.
    ///
    /// The controller reads them at every migration event to check a caller's identity,
    /// so this is the short way: the namespace's thread only creates a plain netlink
    /// socket, and the calling thread dumps the addresses over it, with no runtime and
    /// no rtnetlink connection (`cargo bench -p p4lb-netns --bench addrs` compares the
    /// two).
    pub fn ipv4_addrs(&self) -> Result<Vec<Ipv4Addr>> {
        dump_ipv4_addrs(&self.route_socket()?, 1).map_err(|source| Error::Dump {
            path: self.path.clone(),
            source,
        })
    }

    /// A plain (blocking) rtnetlink socket created inside this namespace.
    fn route_socket(&self) -> Result<rtnetlink::sys::Socket> {
        self.run(|| rtnetlink::sys::Socket::new(rtnetlink::sys::protocols::NETLINK_ROUTE))?
            .map_err(|source| Error::Socket {
                path: self.path.clone(),
                source,
            })
    }
}

/// Netlink replies larger than this are not expected for an address dump (the kernel
/// sends at most a page's worth of messages per datagram); it bounds the buffer.
const DUMP_BUFFER: usize = 64 * 1024;

/// RTM_GETADDR (IPv4) dumped over `socket`, which talks to the namespace it was created
/// in: the local and peer addresses of every interface, each once. Replies to another
/// sequence number (what an earlier, failed dump left unread) are skipped.
fn dump_ipv4_addrs(socket: &rtnetlink::sys::Socket, seq: u32) -> io::Result<Vec<Ipv4Addr>> {
    use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
    use rtnetlink::packet_route::address::AddressMessage;
    use rtnetlink::packet_route::AddressFamily;

    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetAddress(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.header.sequence_number = seq;
    req.finalize();
    let mut out_buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut out_buf);
    socket.send_to(&out_buf, &rtnetlink::sys::SocketAddr::new(0, 0), 0)?;

    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut out = Vec::new();
    let mut buf = vec![0u8; DUMP_BUFFER];
    loop {
        let n = socket.recv(&mut &mut buf[..], 0)?;
        let mut data = &buf[..n.min(buf.len())];
        while !data.is_empty() {
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(data)
                .map_err(|e| bad(format!("undecodable address dump: {e}")))?;
            let len = m.header.length as usize;
            if len == 0 || len > data.len() {
                return Err(bad(format!(
                    "netlink message of length {len} in {} bytes",
                    data.len()
                )));
            }
            data = &data[netlink_align(len).min(data.len())..];
            if m.header.sequence_number != seq {
                continue;
            }
            match m.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(match e.code {
                        Some(code) => io::Error::from_raw_os_error(-code.get()),
                        None => bad("address dump ended with an acknowledgement".into()),
                    })
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) => {
                    for attr in a.attributes {
                        if let AddressAttribute::Local(IpAddr::V4(v4))
                        | AddressAttribute::Address(IpAddr::V4(v4)) = attr
                        {
                            if !out.contains(&v4) {
                                out.push(v4);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// How long a kept socket's dump may wait for the kernel's reply, s (SO_RCVTIMEO).
const KEPT_SOCKET_TIMEOUT_S: i64 = 1;

/// Netlink sockets kept open inside the network namespaces an API server checks
/// callers against (the controller: its own node's endpoints), so that reading a
/// namespace's addresses at every migration event needs no thread at all: a socket
/// keeps talking to the namespace it was made in, from any thread.
///
/// Keyed by the namespace's inode. A kept socket holds its namespace alive, so no other
/// namespace can have that inode while the entry exists: the key cannot be reused under
/// it. The owner drops the entries of namespaces it no longer needs
/// ([`AddrSockets::retain`]); at most `capacity` are kept, beyond that callers read
/// the slow way ([`NetNs::ipv4_addrs`]).
#[derive(Debug)]
pub struct AddrSockets {
    capacity: usize,
    kept: std::sync::Mutex<KeptSockets>,
}

/// Namespace inode → its kept socket.
type KeptSockets = std::collections::HashMap<u64, std::sync::Arc<std::sync::Mutex<KeptSocket>>>;

#[derive(Debug)]
struct KeptSocket {
    socket: rtnetlink::sys::Socket,
    seq: u32,
}

impl AddrSockets {
    /// Keeps up to `capacity` sockets (one file descriptor each).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            kept: Default::default(),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, KeptSockets> {
        // A panic while holding the map left it whole (every change is one call).
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a socket inside `ns` (one thread, once per namespace). Returns whether
    /// one is kept for it now: false when `capacity` sockets are kept already.
    pub fn keep(&self, ns: &NetNs) -> Result<bool> {
        let room = |map: &KeptSockets| {
            if map.contains_key(&ns.inode()) {
                Some(true)
            } else if map.len() >= self.capacity {
                Some(false)
            } else {
                None
            }
        };
        if let Some(kept) = room(&self.map()) {
            return Ok(kept);
        }
        // Made without the map's lock (it takes a thread); checked again after.
        let socket = ns.route_socket()?;
        let timeout = nix::sys::time::TimeVal::new(KEPT_SOCKET_TIMEOUT_S, 0);
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| Error::Socket {
                path: ns.path.clone(),
                source: e.into(),
            })?;
        let mut map = self.map();
        if let Some(kept) = room(&map) {
            return Ok(kept);
        }
        map.entry(ns.inode()).or_insert_with(|| {
            std::sync::Arc::new(std::sync::Mutex::new(KeptSocket { socket, seq: 1 }))
        });
        Ok(true)
    }

    /// The IPv4 addresses of the namespace with inode `inode` ([`NetNs::ipv4_addrs`]),
    /// read over its kept socket; `None` when none is kept for it.
    pub fn ipv4_addrs(&self, inode: u64) -> Option<io::Result<Vec<Ipv4Addr>>> {
        let kept = self.map().get(&inode).cloned()?;
        let mut k = kept.lock().unwrap_or_else(|p| p.into_inner());
        k.seq = k.seq.wrapping_add(1).max(1);
        let seq = k.seq;
        Some(dump_ipv4_addrs(&k.socket, seq))
    }

    /// Drops the sockets of the namespaces for which `wanted` is false.
    pub fn retain(&self, wanted: impl Fn(u64) -> bool) {
        self.map().retain(|inode, _| wanted(*inode));
    }

    /// Whether a socket is kept in the namespace with inode `inode`.
    pub fn has(&self, inode: u64) -> bool {
        self.map().contains_key(&inode)
    }

    /// How many sockets are kept.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Netlink messages start on 4-byte boundaries.
fn netlink_align(len: usize) -> usize {
    (len + 3) & !3
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for NetNs {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// The IPv4 addresses of the namespace `handle` talks to (local and peer addresses of
/// every interface), each once.
pub async fn ipv4_addrs(handle: &rtnetlink::Handle) -> Result<Vec<Ipv4Addr>, rtnetlink::Error> {
    let mut out = Vec::new();
    let mut s = handle.address().get().execute();
    while let Some(msg) = s.try_next().await? {
        for attr in msg.attributes {
            if let AddressAttribute::Local(IpAddr::V4(a))
            | AddressAttribute::Address(IpAddr::V4(a)) = attr
            {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// A fresh network namespace, made by a short-lived thread and kept alive only by
    /// the returned handle (no bind mount needed).
    fn fresh_netns() -> NetNs {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            tx.send(NetNs::current()).expect("send");
        });
        rx.recv().expect("thread").expect("open fresh netns")
    }

    /// `ip` inside `ns` (through the open file, so a namespace without a bind mount
    /// works too).
    fn ip_cmd(ns: &NetNs) -> std::process::Command {
        let mut c = std::process::Command::new("nsenter");
        c.arg(format!(
            "--net=/proc/{}/fd/{}",
            std::process::id(),
            ns.as_raw_fd()
        ))
        .arg("ip");
        c
    }

    /// Runs `ip` with `args` inside `ns`.
    fn ip_in(ns: &NetNs, args: &[&str]) {
        let st = ip_cmd(ns).args(args).status().expect("nsenter ip");
        assert!(st.success(), "ip {args:?}");
    }

    #[test]
    fn the_plain_socket_dump_reads_what_rtnetlink_reads_across_many_replies() {
        assert!(
            is_root(),
            "this test creates a network namespace: run as root"
        );
        let ns = fresh_netns();
        ip_in(&ns, &["link", "set", "lo", "up"]);
        ip_in(&ns, &["addr", "add", "10.1.2.3/24", "dev", "lo"]);
        ip_in(
            &ns,
            &[
                "addr",
                "add",
                "10.9.9.1",
                "peer",
                "10.9.9.2/32",
                "dev",
                "lo",
            ],
        );
        ip_in(&ns, &["addr", "add", "fd00::1/64", "dev", "lo"]);
        // Enough addresses that the dump needs several datagrams.
        let batch: String = (0..600)
            .map(|i| format!("addr add 10.20.{}.{}/32 dev lo\n", i / 200, i % 200 + 1))
            .collect();
        let mut child = ip_cmd(&ns)
            .args(["-batch", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), batch.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "ip -batch");

        let plain = ns.ipv4_addrs().unwrap();
        let via_rtnetlink = ns
            .with_netlink(|h| async move { ipv4_addrs(&h).await })
            .unwrap()
            .unwrap();
        assert_eq!(plain, via_rtnetlink);
        assert_eq!(plain.len(), 1 + 1 + 2 + 600, "{plain:?}");
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "10.9.9.1",
            "10.9.9.2",
            "10.20.2.200",
        ] {
            assert!(plain.contains(&a.parse().unwrap()), "{a} missing");
        }
    }

    #[test]
    fn a_kept_socket_reads_the_namespace_live_until_it_is_dropped() {
        assert!(
            is_root(),
            "this test creates a network namespace: run as root"
        );
        let (a, b) = (fresh_netns(), fresh_netns());
        ip_in(&a, &["addr", "add", "10.61.0.1/24", "dev", "lo"]);
        let kept = AddrSockets::new(1);
        assert!(kept.ipv4_addrs(a.inode()).is_none(), "nothing kept yet");
        assert!(kept.keep(&a).unwrap());
        assert!(kept.keep(&a).unwrap(), "keeping twice is keeping once");
        assert_eq!(kept.len(), 1);
        assert_eq!(
            kept.ipv4_addrs(a.inode()).unwrap().unwrap(),
            a.ipv4_addrs().unwrap()
        );
        // Read at each call, not remembered: a new address shows at once.
        ip_in(&a, &["addr", "add", "10.61.0.2/32", "dev", "lo"]);
        let now = kept.ipv4_addrs(a.inode()).unwrap().unwrap();
        assert!(now.contains(&Ipv4Addr::new(10, 61, 0, 2)), "{now:?}");
        // Full: another namespace is not kept, and has no reading.
        assert!(!kept.keep(&b).unwrap());
        assert!(kept.ipv4_addrs(b.inode()).is_none());
        // The socket outlives every handle on the namespace it was made in.
        let inode = a.inode();
        drop(a);
        assert!(kept.ipv4_addrs(inode).unwrap().unwrap().len() >= 2);
        kept.retain(|i| i != inode);
        assert!(kept.is_empty());
        assert!(kept.ipv4_addrs(inode).is_none());
        assert!(kept.keep(&b).unwrap(), "room again");
    }

    #[test]
    fn an_identity_reads_over_the_kept_socket_and_keeps_none_itself() {
        assert!(
            is_root(),
            "this test creates a network namespace: run as root"
        );
        let ns = fresh_netns();
        ip_in(&ns, &["addr", "add", "10.62.0.1/24", "dev", "lo"]);
        let path = format!("/proc/{}/fd/{}", std::process::id(), ns.as_raw_fd());
        let kept = AddrSockets::new(4);
        let slow = identity::resolve_with(0, &path, true, Some(&kept)).unwrap();
        assert_eq!(slow.inode, ns.inode());
        assert!(kept.is_empty(), "reading keeps nothing");
        assert!(kept.keep(&ns).unwrap());
        // Taken away behind the kept socket's back: the next read sees it gone.
        ip_in(&ns, &["addr", "del", "10.62.0.1/24", "dev", "lo"]);
        let fast = identity::resolve_with(0, &path, true, Some(&kept)).unwrap();
        let want = Ipv4Addr::new(10, 62, 0, 1);
        assert!(slow.addrs.unwrap().contains(&want));
        assert!(!fast.addrs.unwrap().contains(&want));
        // Without asking for addresses nothing is read.
        assert!(identity::resolve_with(0, &path, false, Some(&kept))
            .unwrap()
            .addrs
            .is_none());
    }

    #[test]
    fn missing_path_is_not_found() {
        let e = NetNs::open("/nonexistent/p4lb/netns").unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    }

    #[test]
    fn a_regular_file_is_not_a_netns() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = NetNs::open(f.path()).unwrap_err();
        assert!(matches!(e, Error::NotNetns { .. }), "{e:?}");
        assert!(e.to_string().contains("is not a network namespace"), "{e}");
    }

    #[test]
    fn a_fifo_is_an_error_without_hanging() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fifo");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p2 = p.clone();
        std::thread::spawn(move || {
            let _ = tx.send(NetNs::open(&p2).map(|_| ()));
        });
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("opening a FIFO must not block");
        assert!(matches!(r, Err(Error::NotNetns { .. })), "{r:?}");
    }

    #[test]
    fn another_namespace_type_is_not_a_netns() {
        let e = NetNs::open("/proc/self/ns/uts").unwrap_err();
        assert!(matches!(e, Error::NotNetns { .. }), "{e:?}");
    }

    #[test]
    fn own_namespace_by_pid_and_thread_is_the_same() {
        let a = NetNs::current().unwrap();
        let b = NetNs::from_pid(std::process::id()).unwrap();
        assert!(a.same_as(&b));
        assert_eq!(a.inode(), b.inode());
        assert_eq!(
            a.inode(),
            std::fs::metadata("/proc/self/ns/net").unwrap().ino()
        );
        assert!(a.same_as(&a.try_clone().unwrap()));
    }

    #[test]
    fn run_in_a_fresh_netns_sees_only_loopback_and_leaves_the_caller_alone() {
        assert!(
            is_root(),
            "this test creates a network namespace: run as root"
        );
        let before = NetNs::current().unwrap();
        let ns = fresh_netns();
        assert!(!ns.same_as(&before));
        // Inside: the thread is in `ns`.
        let inside = ns.run(|| NetNs::current().unwrap()).unwrap();
        assert!(inside.same_as(&ns));
        // A fresh namespace has only lo, and lo is down without addresses until set up;
        // the kernel still lists 127.0.0.1 once lo has it. Bring lo up and look.
        let addrs = ns
            .with_netlink(|h| async move {
                let lo = h
                    .link()
                    .get()
                    .match_name("lo")
                    .execute()
                    .try_next()
                    .await?
                    .expect("lo exists");
                h.link()
                    .set(
                        rtnetlink::LinkUnspec::new_with_index(lo.header.index)
                            .up()
                            .build(),
                    )
                    .execute()
                    .await?;
                ipv4_addrs(&h).await
            })
            .unwrap()
            .unwrap();
        assert_eq!(addrs, vec![Ipv4Addr::LOCALHOST]);
        assert_eq!(ns.ipv4_addrs().unwrap(), vec![Ipv4Addr::LOCALHOST]);
        // The calling thread never moved.
        assert!(NetNs::current().unwrap().same_as(&before));
    }

    #[test]
    fn spawn_runs_inside_and_a_panic_in_run_reaches_the_caller() {
        assert!(
            is_root(),
            "this test creates a network namespace: run as root"
        );
        let ns = fresh_netns();
        let t = ns.spawn(|| NetNs::current().unwrap().inode()).unwrap();
        assert_eq!(t.join().unwrap().unwrap(), ns.inode());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ns.run(|| panic!("inside")).unwrap()
        }));
        assert!(r.is_err());
        assert!(!NetNs::current().unwrap().same_as(&ns));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn netlink_handle_talks_to_the_namespace() {
        assert!(
            is_root(),
            "this test creates a network namespace: run as root"
        );
        let ns = fresh_netns();
        let (conn, h) = ns.netlink().unwrap();
        tokio::spawn(conn);
        let links: Vec<_> = h.link().get().execute().try_collect().await.unwrap();
        assert_eq!(links.len(), 1, "a fresh namespace has only lo");
        assert!(!NetNs::current().unwrap().same_as(&ns));
    }

    #[test]
    fn netlink_outside_a_runtime_is_a_typed_error() {
        let ns = NetNs::current().unwrap();
        assert!(matches!(ns.netlink(), Err(Error::NoRuntime { .. })));
    }
}
