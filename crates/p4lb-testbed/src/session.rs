//! A running testbed: the hold process, and running commands inside it.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cleanup;
use crate::enter::{hold_args, Bind, HoldConfig};
use crate::error::{Context, Error, Result};
use crate::paths;
use crate::preflight;
use crate::rootfs::{self, Rootfs};
use crate::spec::RootfsSpec;

/// PATH inside the testbed.
pub const INNER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Prefix of session names (and of `p4lb-testbed cleanup`'s default).
pub const DEFAULT_PREFIX: &str = "p4lbtb";

/// How to start a testbed.
#[derive(Debug, Clone)]
pub struct TestbedOptions {
    pub spec: RootfsSpec,
    /// Session names start with this (cleanup finds leftovers by it).
    pub prefix: String,
    pub binds: Vec<Bind>,
    /// The `p4lb-testbed` binary (default: [`helper_binary`]).
    pub helper: Option<PathBuf>,
}

impl Default for TestbedOptions {
    fn default() -> Self {
        TestbedOptions {
            spec: RootfsSpec::default(),
            prefix: DEFAULT_PREFIX.to_string(),
            binds: vec![Bind {
                source: paths::target_dir(),
                target: PathBuf::from(paths::TARGET_INSIDE),
                readonly: true,
            }],
            helper: None,
        }
    }
}

/// Finds the `p4lb-testbed` binary: `P4LB_TESTBED_BIN`, the running binary,
/// or next to it / one level up (test binaries live in `target/*/deps`).
pub fn helper_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("P4LB_TESTBED_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ctx(|| "locating the running binary".into())?;
    if exe.file_name() == Some(OsStr::new("p4lb-testbed")) {
        return Ok(exe);
    }
    let mut candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("p4lb-testbed"))
        .collect();
    candidates.push(paths::target_dir().join("debug").join("p4lb-testbed"));
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        Error::Missing(
            "the p4lb-testbed binary was not found; build it with \
             `cargo build -p p4lb-testbed` or set P4LB_TESTBED_BIN"
                .into(),
        )
    })
}

static SESSIONS: AtomicUsize = AtomicUsize::new(0);

/// A running testbed. Dropping it stops every process inside and removes the
/// session's files.
#[derive(Debug)]
pub struct Testbed {
    name: String,
    rootfs: Rootfs,
    session: PathBuf,
    holder: Option<Child>,
    init_pid: i32,
}

impl Testbed {
    /// Builds or reuses the rootfs and enters it.
    pub fn start(opts: TestbedOptions) -> Result<Testbed> {
        preflight::require_enter()?;
        let rootfs = rootfs::ensure(&opts.spec)?;
        cleanup::remove_dead_sessions();
        // Also what a killed run left: each dump copies the groups below the
        // container's, so leftovers make every later CRIU run slower (4 000 empty
        // groups took a dump and a restore from 75 ms to 2.5 s each).
        crate::cgroups::prune_empty(Duration::from_secs(60));
        let name = format!(
            "{}-{}-{}",
            opts.prefix,
            std::process::id(),
            SESSIONS.fetch_add(1, Ordering::SeqCst)
        );
        let session = paths::sessions_dir().join(&name);
        if session.exists() {
            std::fs::remove_dir_all(&session).ctx(|| format!("removing {}", session.display()))?;
        }
        std::fs::create_dir_all(&session).ctx(|| format!("creating {}", session.display()))?;
        for b in &opts.binds {
            if !b.source.exists() {
                std::fs::create_dir_all(&b.source)
                    .ctx(|| format!("creating bind source {}", b.source.display()))?;
            }
        }
        let helper = match opts.helper {
            Some(h) => h,
            None => helper_binary()?,
        };
        let cfg = HoldConfig {
            rootfs: rootfs.path.clone(),
            session: session.clone(),
            binds: opts.binds.clone(),
            hostname: "p4lb-testbed".into(),
        };
        let started = Instant::now();
        let mut cmd = Command::new(&helper);
        cmd.args(hold_args(&cfg))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // If this process dies without tearing down, the testbed dies with it
        // (PDEATHSIG follows the spawning thread: keep a Testbed in the thread
        // that started it).
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                Ok(())
            });
        }
        let mut holder = cmd
            .spawn()
            .ctx(|| format!("starting {} hold", helper.display()))?;
        let stdout = holder
            .stdout
            .take()
            .ok_or_else(|| Error::Testbed("hold has no stdout".into()))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = holder.kill();
                let _ = holder.wait();
                return Err(Error::Timeout {
                    what: "the testbed to come up".into(),
                    secs: 60,
                });
            }
        };
        let init_pid = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|p| p.parse::<i32>().ok());
        let Some(init_pid) = init_pid else {
            let status = holder.wait().ok();
            let _ = std::fs::remove_dir_all(&session);
            return Err(Error::Testbed(format!(
                "entering the rootfs failed (hold said {:?}, exit {:?}); see the error above",
                line.trim(),
                status
            )));
        };
        std::fs::write(session.join("holder.pid"), holder.id().to_string())
            .ctx(|| "writing holder.pid".into())?;
        eprintln!(
            "p4lb-testbed: session {name} up in {:.0} ms (init pid {init_pid})",
            started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(Testbed {
            name,
            rootfs,
            session,
            holder: Some(holder),
            init_pid,
        })
    }

    /// The session's name (`<prefix>-<pid>-<n>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rootfs this testbed runs on.
    pub fn rootfs(&self) -> &Rootfs {
        &self.rootfs
    }

    /// PID (in the host's PID namespace) of the testbed's init.
    pub fn init_pid(&self) -> i32 {
        self.init_pid
    }

    /// A host path that reaches `inner` (a path inside the testbed), through
    /// `/proc/<init>/root`. Works for reading files and connecting to sockets.
    pub fn host_path(&self, inner: &str) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.init_pid)).join(inner.trim_start_matches('/'))
    }

    /// A command that runs `args` inside the testbed with a clean environment
    /// and standard input from the testbed's own /dev/null (CRIU rejects
    /// descriptors that point outside the testbed's mounts).
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = self.interactive_command(&[] as &[&str]);
        c.args(["/bin/sh", "-c", "exec \"$@\" </dev/null", "p4lb"])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Like [`Testbed::command`] but keeps the caller's standard input (for
    /// an interactive shell).
    pub fn interactive_command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--target={}", self.init_pid))
            .args(["--mount", "--net", "--pid", "--uts", "--ipc", "--"])
            .args(["/usr/bin/env", "-i"])
            .arg(format!("PATH={INNER_PATH}"))
            .args([
                "HOME=/root",
                "LC_ALL=C",
                "TERM=dumb",
                "PODMAN_IGNORE_CGROUPSV1_WARNING=1",
            ])
            .args(args);
        c
    }

    /// Runs `args` inside and returns its output, whatever its exit status.
    pub fn output<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Output> {
        self.command(args)
            .output()
            .ctx(|| format!("running {} in the testbed", show(args)))
    }

    /// Runs `args` inside; fails with its stderr unless it exits 0. Returns stdout.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        let out = self.output(args)?;
        check(show(args), out)
    }

    /// Runs a shell script inside (`sh -c`); fails unless it exits 0.
    pub fn sh(&self, script: &str) -> Result<String> {
        self.run(&["/bin/sh", "-c", script])
    }

    /// Starts `args` inside in the background with piped stdout and stderr.
    pub fn spawn<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Child> {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ctx(|| format!("starting {} in the testbed", show(args)))
    }

    /// Stops everything inside and removes the session (also done on drop).
    pub fn stop(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        let Some(mut holder) = self.holder.take() else {
            return Ok(());
        };
        // The init exits on SIGTERM; the kernel then kills the whole PID namespace.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.init_pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match holder.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    // The init dies with its parent (PDEATHSIG).
                    let _ = holder.kill();
                    let _ = holder.wait();
                    break;
                }
            }
        }
        crate::cgroups::remove_session_leaf(&self.name);
        crate::cgroups::prune_empty(Duration::from_secs(60));
        std::fs::remove_dir_all(&self.session)
            .ctx(|| format!("removing session {}", self.session.display()))
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("p4lb-testbed: teardown of {}: {e}", self.name);
        }
    }
}

/// A printable form of a command line.
pub(crate) fn show<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Turns a finished command into its stdout or an error with its stderr.
pub(crate) fn check(command: String, out: Output) -> Result<String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.is_empty() {
            stderr = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        Err(Error::Command {
            command,
            status: out.status.to_string(),
            stderr,
        })
    }
}
