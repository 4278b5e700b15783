//! Entering the rootfs: the `p4lb-testbed hold` process.
//!
//! `hold` unshares mount, network, PID, UTS and IPC namespaces and forks the
//! testbed's init (PID 1 of the new PID namespace). The init lays the session
//! out and pivots into it:
//!
//! - overlay: the cached rootfs (read-only lower) + the session's writable layer,
//! - a fresh /proc, /sys and /dev bound from the host (cgroup2 at
//!   /sys/fs/cgroup/unified unmounted: crun refuses hybrid cgroups), a new
//!   devpts instance, tmpfs on /run, /tmp and /dev/shm,
//! - per-session state directories on the host's disk for container storage
//!   (overlay storage drivers refuse to sit on overlayfs),
//! - extra binds (the cargo target directory at [`crate::paths::TARGET_INSIDE`]),
//! - `pivot_root` and a lazy unmount of the old root (CRIU fails in a plain
//!   chroot).
//!
//! It then reports ready and reaps orphans until SIGTERM. When it exits, the
//! kernel kills every process of the PID namespace and the mounts go with the
//! mount namespace: nothing is left on the host but the session directory.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{chdir, fork, pivot_root, ForkResult, Pid};

use crate::error::{Context, Error, Result};

/// A host path bound into the testbed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub readonly: bool,
}

impl Bind {
    /// Parses `SRC:DST[:ro]`.
    pub fn parse(s: &str) -> Result<Bind> {
        let parts: Vec<&str> = s.split(':').collect();
        let (source, target, readonly) = match parts.as_slice() {
            [s, t] => (s, t, false),
            [s, t, "ro"] => (s, t, true),
            [s, t, "rw"] => (s, t, false),
            _ => {
                return Err(Error::Testbed(format!(
                    "bad bind `{s}`: expected SRC:DST or SRC:DST:ro"
                )))
            }
        };
        if !target.starts_with('/') {
            return Err(Error::Testbed(format!(
                "bad bind `{s}`: the target must be an absolute path"
            )));
        }
        Ok(Bind {
            source: PathBuf::from(source),
            target: PathBuf::from(target),
            readonly,
        })
    }

    /// The `SRC:DST[:ro]` form.
    pub fn to_arg(&self) -> String {
        format!(
            "{}:{}{}",
            self.source.display(),
            self.target.display(),
            if self.readonly { ":ro" } else { "" }
        )
    }
}

/// What `hold` needs.
#[derive(Debug, Clone)]
pub struct HoldConfig {
    pub rootfs: PathBuf,
    pub session: PathBuf,
    pub binds: Vec<Bind>,
    pub hostname: String,
}

/// Directories under /var/lib kept on the host's disk per session.
pub const STATE_DIRS: &[&str] = &[
    "var/lib/containers",
    "var/lib/containerd",
    "var/lib/docker-registry",
    "var/lib/p4lb",
];

/// Runs the hold process. Must be called while the process is single-threaded
/// (first thing in `main`). Prints `ready <init pid>` on stdout once the
/// testbed is up, then waits for the init and returns its exit code.
pub fn hold(cfg: &HoldConfig) -> Result<i32> {
    let (ready_rd, ready_wr) = nix::unistd::pipe().ctx(|| "creating the ready pipe".into())?;
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC,
    )
    .ctx(|| "unshare(mount, net, pid, uts, ipc namespaces)".into())?;
    // SAFETY: single-threaded (documented precondition); the child only runs
    // init(), which exits the process.
    match unsafe { fork() }.ctx(|| "fork of the testbed init".into())? {
        ForkResult::Child => {
            drop(ready_rd);
            let code = match init(cfg, ready_wr) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("p4lb-testbed init: {e}");
                    1
                }
            };
            std::process::exit(code);
        }
        ForkResult::Parent { child } => {
            drop(ready_wr);
            let mut buf = [0u8; 1];
            let mut f = fs::File::from(ready_rd);
            let ready = matches!(f.read(&mut buf), Ok(1));
            if ready {
                let mut out = std::io::stdout().lock();
                writeln!(out, "ready {child}").ctx(|| "writing ready line".into())?;
                out.flush().ctx(|| "flushing ready line".into())?;
            }
            let code = loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, c)) => break c,
                    Ok(WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
                    Ok(_) => continue,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e).ctx(|| "waiting for the testbed init".into()),
                }
            };
            if !ready {
                return Err(Error::Testbed(format!(
                    "the testbed init exited ({code}) before it was ready (its error is above)"
                )));
            }
            Ok(code)
        }
    }
}

fn mkdirs(p: &Path) -> Result<()> {
    fs::create_dir_all(p).ctx(|| format!("creating {}", p.display()))
}

fn do_mount(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(src, target, fstype, flags, data).ctx(|| {
        format!(
            "mount {} on {} ({})",
            src.unwrap_or("none"),
            target.display(),
            fstype.unwrap_or("bind")
        )
    })
}

fn bind(src: &Path, target: &Path, recursive: bool) -> Result<()> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(src), target, None::<&str>, flags, None::<&str>)
        .ctx(|| format!("bind {} on {}", src.display(), target.display()))
}

/// The testbed's init: sets up the mounts, pivots, then reaps until told to stop.
fn init(cfg: &HoldConfig, ready: OwnedFd) -> Result<i32> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).ctx(|| "prctl(PDEATHSIG)".into())?;
    let name = cfg
        .session
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "session".into());
    crate::cgroups::enter_session_leaf(&name)
        .ctx(|| format!("moving the testbed into its cgroup2 group {name}"))?;
    do_mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    let upper = cfg.session.join("upper");
    let work = cfg.session.join("work");
    let root = cfg.session.join("root");
    for d in [&upper, &work, &root] {
        mkdirs(d)?;
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        cfg.rootfs.display(),
        upper.display(),
        work.display()
    );
    do_mount(
        Some("overlay"),
        &root,
        Some("overlay"),
        MsFlags::empty(),
        Some(&opts),
    )?;

    let r = |p: &str| root.join(p);
    do_mount(
        Some("proc"),
        &r("proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    bind(Path::new("/sys"), &r("sys"), true)?;
    let unified = r("sys/fs/cgroup/unified");
    if unified.exists() {
        // crun refuses hybrid cgroups ("drop all controllers from cgroupv2").
        let _ = umount2(&unified, MntFlags::MNT_DETACH);
    }
    bind(Path::new("/dev"), &r("dev"), true)?;
    do_mount(
        Some("devpts"),
        &r("dev/pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    bind(&r("dev/pts/ptmx"), &r("dev/ptmx"), false)?;
    do_mount(
        Some("shm"),
        &r("dev/shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    let mqueue = r("dev/mqueue");
    if mqueue.is_dir() {
        let _ = mount(
            Some("mqueue"),
            &mqueue,
            Some("mqueue"),
            MsFlags::empty(),
            None::<&str>,
        );
    }
    do_mount(
        Some("tmpfs"),
        &r("run"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    do_mount(
        Some("tmpfs"),
        &r("tmp"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    for d in STATE_DIRS {
        let host = cfg.session.join("state").join(d.replace('/', "_"));
        mkdirs(&host)?;
        mkdirs(&r(d))?;
        bind(&host, &r(d), false)?;
    }
    for b in &cfg.binds {
        let target = root.join(b.target.strip_prefix("/").unwrap_or(&b.target));
        if b.source.is_dir() {
            mkdirs(&target)?;
        } else {
            if let Some(p) = target.parent() {
                mkdirs(p)?;
            }
            fs::write(&target, b"").ctx(|| format!("creating {}", target.display()))?;
        }
        bind(&b.source, &target, true)?;
        if b.readonly {
            do_mount(
                None,
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None,
            )?;
        }
    }
    nix::unistd::sethostname(&cfg.hostname).ctx(|| "sethostname".into())?;

    chdir(&root).ctx(|| format!("chdir {}", root.display()))?;
    pivot_root(".", ".").ctx(|| "pivot_root".into())?;
    umount2(".", MntFlags::MNT_DETACH).ctx(|| "unmounting the old root".into())?;
    chdir("/").ctx(|| "chdir /".into())?;

    // Processes started here inherit these: raise the soft file limit to the
    // hard one (the hard limit cannot be raised without CAP_SYS_RESOURCE).
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    // Clean standard input from inside the rootfs (CRIU rejects fds that
    // point outside the testbed's mounts).
    let null = fs::File::open("/dev/null").ctx(|| "opening /dev/null".into())?;
    nix::unistd::dup2_stdin(&null).ctx(|| "dup2 /dev/null".into())?;
    drop(null);

    let st = std::process::Command::new("/usr/sbin/ip")
        .args(["link", "set", "lo", "up"])
        .env_clear()
        .status()
        .ctx(|| "running ip link set lo up".into())?;
    if !st.success() {
        return Err(Error::Testbed(format!("`ip link set lo up` failed: {st}")));
    }

    let mut sigs = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        sigs.add(s);
    }
    sigs.thread_block().ctx(|| "blocking signals".into())?;
    nix::unistd::write(&ready, b"r").ctx(|| "signalling ready".into())?;
    drop(ready);

    loop {
        let sig = sigs.wait().ctx(|| "sigwait".into())?;
        match sig {
            Signal::SIGCHLD => reap(),
            _ => return Ok(0),
        }
    }
}

fn reap() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

/// Arguments of `p4lb-testbed hold` for `cfg`.
pub fn hold_args(cfg: &HoldConfig) -> Vec<String> {
    let mut a = vec![
        "hold".to_string(),
        "--rootfs".to_string(),
        cfg.rootfs.display().to_string(),
        "--session".to_string(),
        cfg.session.display().to_string(),
        "--hostname".to_string(),
        cfg.hostname.clone(),
    ];
    for b in &cfg.binds {
        a.push("--bind".into());
        a.push(b.to_arg());
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_parses_and_roundtrips() {
        let b = Bind::parse("/a/b:/p4lb/target:ro").unwrap();
        assert!(b.readonly);
        assert_eq!(b.target, PathBuf::from("/p4lb/target"));
        assert_eq!(Bind::parse(&b.to_arg()).unwrap(), b);
        assert!(!Bind::parse("/x:/y").unwrap().readonly);
        assert!(Bind::parse("/x").is_err());
        assert!(Bind::parse("/x:rel").is_err());
        assert!(Bind::parse("/x:/y:zz").is_err());
    }
}
