//! Test topologies for p4lb's crate tests: named network namespaces, veth pairs,
//! bridges, addresses and routes, all through rtnetlink and `p4lb-netns` (no `ip`
//! binary), each removed on drop, also when a test panics.
//!
//! Where to look:
//! - [`NamedNetns`]: a namespace bound at `/run/netns/<name>` (what `ip netns add`
//!   makes), with [`NamedNetns::run`]/[`NamedNetns::spawn`] for closures and
//!   [`NamedNetns::command`]/[`NamedNetns::exec`] ([`command_in`]) for programs inside
//!   it; [`pids_in`]/[`kill_all_in`] for what runs there.
//! - [`Net`]: links, veth pairs, bridges, MACs, addresses, routes, static neighbours and
//!   sysctls inside one namespace ([`Net::host`] for the test process's own), plus
//!   listings for assertions.
//! - [`Veth`]: a veth pair in the test process's namespace, deleted on drop.
//! - [`require_root`], [`unique_name`]: the usual preamble of a test that needs them.
//!
//! The bind-mount dance of [`NamedNetns::create`] is written here because it is what
//! iproute2 does (a shared `/run/netns`, an empty file, a bind mount of a fresh
//! namespace over it): namespaces made here are interchangeable with `ip netns` ones.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

use futures::TryStreamExt;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
pub use p4lb_netns::NetNs;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

/// Where named network namespaces are bound (as with `ip netns`).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// What can go wrong while building a topology.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Netns(#[from] p4lb_netns::Error),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        source: rtnetlink::Error,
    },
    #[error("no link {name:?} in {ns}")]
    NoLink { ns: PathBuf, name: String },
    #[error("bad address {0:?}: use a.b.c.d/len")]
    BadAddress(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether the test runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Fails the test unless it runs as root (namespaces and veths need it).
#[track_caller]
pub fn require_root() {
    assert!(
        is_root(),
        "this test creates network namespaces and veths: run it as root"
    );
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `<prefix><pid mod 100000>x<counter>`.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// Parses `a.b.c.d/len`.
pub fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u8)> {
    let bad = || Error::BadAddress(cidr.to_string());
    let (a, l) = cidr.split_once('/').ok_or_else(bad)?;
    let addr = a.parse().map_err(|_| bad())?;
    let len: u8 = l.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    Ok((addr, len))
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

fn nl_err(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let what = what.into();
    move |source| Error::Netlink { what, source }
}

/// The index of link `name`, or None if there is none.
async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>, rtnetlink::Error> {
    let r = h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await;
    match r {
        Ok(m) => Ok(m.map(|m| m.header.index)),
        Err(rtnetlink::Error::NetlinkError(e))
            if e.code.map(|c| -c.get()) == Some(libc::ENODEV) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Operations inside one network namespace, each over a netlink socket opened there.
#[derive(Debug)]
pub struct Net {
    ns: NetNs,
}

impl Net {
    /// The namespace of the calling thread (for a test: the host's).
    pub fn host() -> Result<Net> {
        Ok(Net {
            ns: NetNs::current()?,
        })
    }

    /// Operations inside the named namespace `/run/netns/<name>`.
    pub fn named(name: &str) -> Result<Net> {
        Ok(Net {
            ns: NetNs::open(named_path(name))?,
        })
    }

    /// Operations inside `ns`.
    pub fn of(ns: &NetNs) -> Result<Net> {
        Ok(Net {
            ns: ns.try_clone()?,
        })
    }

    pub fn netns(&self) -> &NetNs {
        &self.ns
    }

    fn nl<T, F, Fut>(&self, work: F) -> Result<T>
    where
        F: FnOnce(Handle) -> Fut + Send,
        Fut: std::future::Future<Output = Result<T>>,
        T: Send,
    {
        self.ns.with_netlink(work)?
    }

    async fn need_index(&self, h: &Handle, name: &str) -> Result<u32> {
        index_of(h, name)
            .await
            .map_err(nl_err(format!("looking up {name}")))?
            .ok_or_else(|| Error::NoLink {
                ns: self.ns.path().to_path_buf(),
                name: name.to_string(),
            })
    }

    /// The index of link `name`, if it exists.
    pub fn index(&self, name: &str) -> Result<Option<u32>> {
        self.nl(|h| async move { index_of(&h, name).await.map_err(nl_err("listing links")) })
    }

    /// Names of all links, in index order.
    pub fn links(&self) -> Result<Vec<String>> {
        self.nl(|h| async move {
            let msgs: Vec<_> = h
                .link()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(nl_err("listing links"))?;
            Ok(msgs
                .iter()
                .filter_map(|m| {
                    m.attributes.iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    })
                })
                .collect())
        })
    }

    /// IPv4 addresses of link `name` as `a.b.c.d/len`, in the kernel's order.
    pub fn ipv4_addrs(&self, name: &str) -> Result<Vec<String>> {
        self.nl(|h| async move {
            let index = self.need_index(&h, name).await?;
            let msgs: Vec<_> = h
                .address()
                .get()
                .set_link_index_filter(index)
                .execute()
                .try_collect()
                .await
                .map_err(nl_err(format!("listing addresses of {name}")))?;
            Ok(msgs
                .iter()
                .filter_map(|m| {
                    m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Local(IpAddr::V4(ip)) => {
                            Some(format!("{ip}/{}", m.header.prefix_len))
                        }
                        _ => None,
                    })
                })
                .collect())
        })
    }

    /// Sets link `name` up.
    pub fn link_up(&self, name: &str) -> Result<()> {
        self.nl(|h| async move {
            let index = self.need_index(&h, name).await?;
            h.link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(nl_err(format!("setting {name} up")))
        })
    }

    /// Sets the MAC address of link `name`.
    pub fn set_mac(&self, name: &str, mac: [u8; 6]) -> Result<()> {
        self.nl(|h| async move {
            let index = self.need_index(&h, name).await?;
            h.link()
                .set(
                    LinkUnspec::new_with_index(index)
                        .address(mac.to_vec())
                        .build(),
                )
                .execute()
                .await
                .map_err(nl_err(format!("setting the MAC of {name}")))
        })
    }

    /// Makes `name` a port of bridge `master`.
    pub fn set_master(&self, name: &str, master: &str) -> Result<()> {
        self.nl(|h| async move {
            let index = self.need_index(&h, name).await?;
            let m = self.need_index(&h, master).await?;
            h.link()
                .set(LinkUnspec::new_with_index(index).controller(m).build())
                .execute()
                .await
                .map_err(nl_err(format!("adding {name} to {master}")))
        })
    }

    /// Creates a veth pair: `name` here, `peer` in `peer_ns` (here when None). Both
    /// stay down.
    pub fn add_veth(&self, name: &str, peer: &str, peer_ns: Option<&NetNs>) -> Result<()> {
        let peer_fd = peer_ns.map(|n| n.as_fd().as_raw_fd());
        self.nl(|h| async move {
            let mut p = LinkMessageBuilder::<LinkUnspec>::new().name(peer.to_string());
            if let Some(fd) = peer_fd {
                p = p.setns_by_fd(fd);
            }
            let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
                .name(name.to_string())
                .set_info_data(InfoData::Veth(InfoVeth::Peer(p.build())))
                .build();
            h.link()
                .add(msg)
                .execute()
                .await
                .map_err(nl_err(format!("creating veth {name}/{peer}")))
        })
    }

    /// Creates a bridge called `name` (down).
    pub fn add_bridge(&self, name: &str) -> Result<()> {
        self.nl(|h| async move {
            h.link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await
                .map_err(nl_err(format!("creating bridge {name}")))
        })
    }

    /// Deletes link `name` (a veth takes its peer with it); false if there was none.
    pub fn delete_link(&self, name: &str) -> Result<bool> {
        self.nl(|h| async move {
            let Some(index) = index_of(&h, name)
                .await
                .map_err(nl_err(format!("looking up {name}")))?
            else {
                return Ok(false);
            };
            h.link()
                .del(index)
                .execute()
                .await
                .map_err(nl_err(format!("deleting {name}")))?;
            Ok(true)
        })
    }

    /// Adds `cidr` (`a.b.c.d/len`) to link `name`.
    pub fn add_addr(&self, name: &str, cidr: &str) -> Result<()> {
        let (addr, len) = parse_cidr(cidr)?;
        self.nl(|h| async move {
            let index = self.need_index(&h, name).await?;
            h.address()
                .add(index, IpAddr::V4(addr), len)
                .execute()
                .await
                .map_err(nl_err(format!("adding {cidr} to {name}")))
        })
    }

    /// Removes `cidr` (`a.b.c.d/len`) from link `name`; false if it was not there.
    pub fn del_addr(&self, name: &str, cidr: &str) -> Result<bool> {
        let (addr, len) = parse_cidr(cidr)?;
        self.nl(|h| async move {
            let index = self.need_index(&h, name).await?;
            let found: Vec<_> = h
                .address()
                .get()
                .set_link_index_filter(index)
                .set_address_filter(IpAddr::V4(addr))
                .set_prefix_length_filter(len)
                .execute()
                .try_collect()
                .await
                .map_err(nl_err(format!("looking up {cidr} on {name}")))?;
            let Some(msg) = found.into_iter().next() else {
                return Ok(false);
            };
            h.address()
                .del(msg)
                .execute()
                .await
                .map_err(nl_err(format!("removing {cidr} from {name}")))?;
            Ok(true)
        })
    }

    /// Adds a route to `dst` (`a.b.c.d/len`, or `default`) out of `dev`, via `gw` if
    /// given.
    pub fn add_route(&self, dst: &str, gw: Option<Ipv4Addr>, dev: &str) -> Result<()> {
        let (addr, len) = if dst == "default" {
            (Ipv4Addr::UNSPECIFIED, 0)
        } else {
            parse_cidr(dst)?
        };
        self.nl(|h| async move {
            let index = self.need_index(&h, dev).await?;
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(addr, len)
                .output_interface(index);
            if let Some(g) = gw {
                b = b.gateway(g);
            }
            h.route()
                .add(b.build())
                .execute()
                .await
                .map_err(nl_err(format!("adding route {dst} dev {dev}")))
        })
    }

    /// Adds (or replaces) a permanent neighbour entry: `ip` is at `mac` on link `dev`.
    pub fn set_neighbour(&self, dev: &str, ip: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
        self.nl(|h| async move {
            let index = self.need_index(&h, dev).await?;
            h.neighbours()
                .add(index, IpAddr::V4(ip))
                .link_layer_address(&mac)
                .replace()
                .execute()
                .await
                .map_err(nl_err(format!("adding neighbour {ip} on {dev}")))
        })
    }

    /// Writes a sysctl of this namespace, e.g. `net.ipv6.conf.all.disable_ipv6`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        self.ns
            .run(|| std::fs::write(&path, value))?
            .map_err(io_err(format!("writing {}", path.display())))
    }
}

/// A network namespace bound at `/run/netns/<name>`; unmounted and removed on drop.
/// It holds the namespace open, so the namespace (and the links in it) lives as long
/// as this value.
#[derive(Debug)]
pub struct NamedNetns {
    name: String,
    path: PathBuf,
    net: Net,
    deleted: bool,
}

impl NamedNetns {
    /// Creates `/run/netns/<name>`, replacing a stale namespace of that name.
    pub fn create(name: &str) -> Result<NamedNetns> {
        prepare_run_dir()?;
        remove_named(name)?;
        let path = named_path(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(format!("creating {}", path.display())))?;
        let target = path.clone();
        let made = std::thread::spawn(move || -> io::Result<()> {
            // This thread ends right after, so leaving it in the new namespace is fine.
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")));
        if let Err(e) = made {
            let _ = std::fs::remove_file(&path);
            return Err(io_err(format!("making network namespace {name}"))(e));
        }
        let ns = NetNs::open(&path)?;
        Ok(NamedNetns {
            name: name.to_string(),
            path,
            net: Net { ns },
            deleted: false,
        })
    }

    /// A namespace with a fresh name from [`unique_name`]; panics if it cannot be made.
    #[track_caller]
    pub fn unique(prefix: &str) -> NamedNetns {
        let name = unique_name(prefix);
        NamedNetns::create(&name)
            .unwrap_or_else(|e| panic!("creating network namespace {name}: {e}"))
    }

    /// Wires this namespace as a pod on a switch port: a veth whose host end `host_if` is
    /// up in the host namespace (for the controller to attach) and whose peer is `eth0`
    /// here, with `mac`, `cidr` (`a.b.c.d/len`) and a default route via `gateway`.
    pub fn wire_eth0(
        &self,
        host_if: &str,
        cidr: &str,
        mac: [u8; 6],
        gateway: Ipv4Addr,
    ) -> Result<()> {
        let host = Net::host()?;
        let _ = host.delete_link(host_if);
        host.add_veth(host_if, "eth0", Some(self.netns()))?;
        host.link_up(host_if)?;
        self.link_up("lo")?;
        self.set_mac("eth0", mac)?;
        self.add_addr("eth0", cidr)?;
        self.link_up("eth0")?;
        self.add_route("default", Some(gateway), "eth0")
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn net(&self) -> &Net {
        &self.net
    }

    /// Runs `f` inside the namespace (on a thread of its own) and returns its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        Ok(self.net.ns.run(f)?)
    }

    /// Starts `f` inside the namespace on a thread of its own.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<JoinHandle<p4lb_netns::Result<T>>> {
        Ok(self.net.ns.spawn(f)?)
    }

    /// A command for `program` that runs inside the namespace (see [`command_in`]).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        command_in(&self.path, program)
    }

    /// Runs `args` inside the namespace and waits for it.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        let (program, rest) = args
            .split_first()
            .ok_or_else(|| io_err("running nothing")(io::ErrorKind::InvalidInput.into()))?;
        self.command(program)
            .args(rest)
            .output()
            .map_err(io_err(format!("running {args:?} in {}", self.name)))
    }

    /// Leaves the namespace bound at its path after this value is gone (its owner
    /// removes it later with [`remove_named`]); returns the path.
    pub fn keep(mut self) -> PathBuf {
        self.deleted = true;
        std::mem::take(&mut self.path)
    }

    /// Unmounts and removes the namespace (also done on drop). The namespace ends once
    /// nothing else holds it (no process inside, no open handle).
    pub fn delete(mut self) -> Result<()> {
        self.deleted = true;
        remove_named(&self.name)
    }
}

impl Deref for NamedNetns {
    type Target = Net;
    fn deref(&self) -> &Net {
        &self.net
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        if let Err(e) = remove_named(&self.name) {
            eprintln!(
                "p4lb-testutil: removing network namespace {}: {e}",
                self.name
            );
        }
    }
}

/// `/run/netns/<name>`.
pub fn named_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// A command for `program` that runs inside the network namespace at `path`, the way
/// `ip netns exec` runs it: between fork and exec the child joins the namespace, takes a
/// mount namespace of its own and mounts a `/sys` that shows the namespace's links.
pub fn command_in(path: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    // Prepared before fork: the child must not allocate.
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok();
    let root = c"/";
    let sys = c"/sys";
    let sysfs = c"sysfs";
    let none = c"none";
    // SAFETY: the closure makes only async-signal-safe system calls (open, setns, close,
    // unshare, mount, umount2) on strings prepared above.
    unsafe {
        c.pre_exec(move || {
            let Some(p) = &cpath else {
                return Err(io::Error::from(io::ErrorKind::InvalidInput));
            };
            let check = |r: libc::c_int| {
                if r < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(r)
                }
            };
            let fd = check(libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC))?;
            let entered = check(libc::setns(fd, libc::CLONE_NEWNET));
            libc::close(fd);
            entered?;
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                none.as_ptr(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_SLAVE | libc::MS_REC,
                std::ptr::null(),
            ))?;
            libc::umount2(sys.as_ptr(), libc::MNT_DETACH);
            check(libc::mount(
                sysfs.as_ptr(),
                sys.as_ptr(),
                sysfs.as_ptr(),
                0,
                std::ptr::null(),
            ))?;
            Ok(())
        });
    }
    c
}

/// Processes whose network namespace is `ns` (what `ip netns pids` lists).
pub fn pids_in(ns: &NetNs) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m) == ns.inode())
                .unwrap_or(false)
        })
        .collect()
}

/// Kills (SIGKILL) every process in `ns`.
pub fn kill_all_in(ns: &NetNs) {
    for pid in pids_in(ns) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Whether `/run/netns/<name>` exists.
pub fn named_exists(name: &str) -> bool {
    named_path(name).exists()
}

/// Unmounts and removes `/run/netns/<name>`; a missing one is not an error.
pub fn remove_named(name: &str) -> Result<()> {
    let path = named_path(name);
    if !path.exists() {
        return Ok(());
    }
    // Not mounted (EINVAL) is fine: the file is removed either way.
    let _ = umount2(&path, MntFlags::MNT_DETACH);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(io_err(format!("removing {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

/// Makes `/run/netns` exist and be a shared mount, as iproute2 does, so that bind
/// mounts below it reach mount namespaces made later.
fn prepare_run_dir() -> Result<()> {
    std::fs::create_dir_all(NETNS_RUN_DIR).map_err(io_err(format!("creating {NETNS_RUN_DIR}")))?;
    let shared = || {
        mount(
            None::<&str>,
            NETNS_RUN_DIR,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    if shared().is_ok() {
        return Ok(());
    }
    // Not a mount point yet: bind it onto itself, then share it.
    mount(
        Some(NETNS_RUN_DIR),
        NETNS_RUN_DIR,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .and_then(|_| shared())
    .map_err(|e| io_err(format!("sharing {NETNS_RUN_DIR}"))(e.into()))
}

/// A veth pair in the test process's namespace, both ends up; deleted on drop.
#[derive(Debug)]
pub struct Veth {
    net: Net,
    pub name: String,
    pub peer: String,
}

impl Veth {
    /// Creates `name`/`peer` (removing a stale `name` first) and sets both up.
    pub fn new(name: &str, peer: &str) -> Result<Veth> {
        let net = Net::host()?;
        net.delete_link(name)?;
        let v = Veth {
            net,
            name: name.to_string(),
            peer: peer.to_string(),
        };
        v.net.add_veth(name, peer, None)?;
        v.net.link_up(name)?;
        v.net.link_up(peer)?;
        Ok(v)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = self.net.delete_link(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_or_fail_typed() {
        assert_eq!(
            parse_cidr("10.1.2.3/24").unwrap(),
            (Ipv4Addr::new(10, 1, 2, 3), 24)
        );
        for bad in ["10.1.2.3", "10.1.2/24", "10.1.2.3/33", "x/1"] {
            assert!(
                matches!(parse_cidr(bad), Err(Error::BadAddress(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_named_netns_is_wired_and_removed_on_drop() {
        require_root();
        let a = NamedNetns::unique("p4tu");
        let b = NamedNetns::unique("p4tu");
        let name = a.name().to_string();
        assert!(named_exists(&name));
        assert!(!a.netns().same_as(&NetNs::current().unwrap()));
        assert_eq!(a.links().unwrap(), vec!["lo"]);

        a.add_veth("x0", "y0", Some(b.netns())).unwrap();
        a.set_mac("x0", [2, 0, 0, 0, 0, 1]).unwrap();
        a.link_up("x0").unwrap();
        a.link_up("lo").unwrap();
        b.link_up("y0").unwrap();
        a.add_addr("x0", "10.99.0.1/24").unwrap();
        b.add_addr("y0", "10.99.0.2/24").unwrap();
        b.add_route("default", Some(Ipv4Addr::new(10, 99, 0, 1)), "y0")
            .unwrap();
        a.sysctl("net.ipv4.ip_forward", "1").unwrap();
        a.add_bridge("br0").unwrap();
        a.set_master("x0", "br0").unwrap();

        assert_eq!(a.links().unwrap(), vec!["lo", "x0", "br0"]);
        assert_eq!(b.links().unwrap(), vec!["lo", "y0"]);
        assert_eq!(a.ipv4_addrs("x0").unwrap(), vec!["10.99.0.1/24"]);
        a.add_addr("x0", "10.98.0.1/32").unwrap();
        assert!(a.del_addr("x0", "10.98.0.1/32").unwrap());
        assert!(!a.del_addr("x0", "10.98.0.1/32").unwrap());
        assert_eq!(a.ipv4_addrs("x0").unwrap(), vec!["10.99.0.1/24"]);
        assert_eq!(
            b.netns().ipv4_addrs().unwrap(),
            vec![Ipv4Addr::new(10, 99, 0, 2)]
        );
        let fwd = a
            .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap())
            .unwrap();
        assert_eq!(fwd.trim(), "1");
        let out = b.exec(&["cat", "/proc/net/route"]).unwrap();
        assert!(out.status.success());
        let routes = String::from_utf8_lossy(&out.stdout);
        assert!(
            routes.lines().any(|l| l.starts_with("y0\t00000000")),
            "default route in b: {routes}"
        );
        a.set_neighbour("x0", Ipv4Addr::new(10, 99, 0, 2), [2, 0, 0, 0, 0, 9])
            .unwrap();
        // Again: an existing entry is replaced.
        a.set_neighbour("x0", Ipv4Addr::new(10, 99, 0, 2), [2, 0, 0, 0, 0, 9])
            .unwrap();
        let arp = a.exec(&["cat", "/proc/net/arp"]).unwrap();
        let arp = String::from_utf8_lossy(&arp.stdout);
        assert!(
            arp.lines().any(|l| l.starts_with("10.99.0.2 ")
                && l.contains("02:00:00:00:00:09")
                && l.ends_with("x0")),
            "static neighbour in a: {arp}"
        );
        let sys = b.exec(&["ls", "/sys/class/net"]).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&sys.stdout)
                .split_whitespace()
                .collect::<Vec<_>>(),
            vec!["lo", "y0"],
            "/sys shows the namespace's links"
        );
        assert!(matches!(a.link_up("nope"), Err(Error::NoLink { .. })));
        assert!(a.delete_link("x0").unwrap());
        assert!(!a.delete_link("x0").unwrap());
        assert_eq!(b.links().unwrap(), vec!["lo"], "the peer went with it");

        drop(a);
        assert!(!named_exists(&name));
        // A stale name is replaced.
        let again = NamedNetns::create(b.name()).unwrap();
        assert_eq!(again.links().unwrap(), vec!["lo"]);
    }

    #[test]
    fn processes_inside_are_found_and_killed_and_a_kept_namespace_stays() {
        require_root();
        let ns = NamedNetns::unique("p4tk");
        let name = ns.name().to_string();
        let mut child = ns.command("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let held = NetNs::open(ns.keep()).unwrap();
        assert!(named_exists(&name), "kept");
        assert_eq!(Net::named(&name).unwrap().links().unwrap(), vec!["lo"]);
        assert_eq!(pids_in(&held), vec![pid]);
        kill_all_in(&held);
        let st = child.wait().unwrap();
        assert!(!st.success());
        assert!(pids_in(&held).is_empty());
        remove_named(&name).unwrap();
        assert!(!named_exists(&name));
    }

    #[test]
    fn a_host_veth_is_deleted_on_drop() {
        require_root();
        let name = unique_name("p4tv");
        let peer = format!("{name}p");
        let v = Veth::new(&name, &peer).unwrap();
        let host = Net::host().unwrap();
        assert!(host.index(&v.name).unwrap().is_some());
        assert!(host.index(&v.peer).unwrap().is_some());
        drop(v);
        assert!(host.index(&name).unwrap().is_none());
        assert!(host.index(&peer).unwrap().is_none());
    }
}
