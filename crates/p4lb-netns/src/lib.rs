//! Network namespaces, entered one way for all of p4lb.
//!
//! Where to look:
//! - [`NetNs`]: open a namespace by path ([`NetNs::open`]), by pid ([`NetNs::from_pid`]) or
//!   the caller's own ([`NetNs::current`]); compare two ([`NetNs::same_as`]).
//! - [`NetNs::run`] / [`NetNs::spawn`]: run code inside a namespace, on a thread of its own.
//! - [`NetNs::netlink`] (async callers) and [`NetNs::with_netlink`] (synchronous callers):
//!   rtnetlink bound inside a namespace; [`NetNs::ipv4_addrs`] and [`ipv4_addrs`] list its
//!   IPv4 addresses.
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
    pub fn ipv4_addrs(&self) -> Result<Vec<Ipv4Addr>> {
        self.with_netlink(|h| async move { ipv4_addrs(&h).await })?
            .map_err(|source| Error::Netlink {
                path: self.path.clone(),
                source,
            })
    }
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
