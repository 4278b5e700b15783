//! The cached Debian rootfs: built once per [`RootfsSpec`] hash, atomically
//! (into a temporary directory renamed into place when complete), reused after.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Context, Error, Result};
use crate::paths::cache_root;
use crate::preflight;
use crate::spec::RootfsSpec;

/// A complete rootfs in the cache.
#[derive(Debug, Clone)]
pub struct Rootfs {
    pub path: PathBuf,
    pub hash: String,
    /// True when this call built it, false when it was reused.
    pub built: bool,
    pub elapsed: Duration,
}

/// Marker written last by the build script; its presence means "complete".
const MARKER: &str = "etc/p4lb-testbed.packages";
const TMP_PREFIX: &str = ".tmp-";

/// Where the rootfs for `spec` lives (whether or not it is built).
pub fn path_for(spec: &RootfsSpec) -> PathBuf {
    cache_root().join(spec.hash())
}

fn complete(dir: &Path) -> bool {
    dir.join(MARKER).is_file()
}

/// Returns the cached rootfs for `spec`, building it first if needed.
pub fn ensure(spec: &RootfsSpec) -> Result<Rootfs> {
    let start = Instant::now();
    let hash = spec.hash();
    let dir = path_for(spec);
    if complete(&dir) {
        return Ok(reused(dir, hash, start));
    }
    preflight::require_root()?;
    let root = cache_root();
    fs::create_dir_all(&root).ctx(|| format!("creating the cache {}", root.display()))?;
    let lock_path = root.join(".build.lock");
    let lock_file =
        fs::File::create(&lock_path).ctx(|| format!("creating {}", lock_path.display()))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .ctx(|| format!("locking {}", lock_path.display()))?;
    if complete(&dir) {
        // Built by someone else while we waited for the lock.
        return Ok(reused(dir, hash, start));
    }
    preflight::require_tool("debootstrap", "debootstrap")?;
    preflight::require_tool("chroot", "coreutils")?;
    preflight::require_mirror(&spec.mirror)?;
    remove_stale_builds(&root)?;

    let tmp = root.join(format!("{TMP_PREFIX}{hash}-{}", std::process::id()));
    let config = root.join(format!("{TMP_PREFIX}{hash}-{}.config", std::process::id()));
    let result = build_into(spec, &tmp, &config);
    let _ = fs::remove_dir_all(&config);
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        // An incomplete directory of that name (not made by this code): replace it.
        fs::remove_dir_all(&dir).ctx(|| format!("removing incomplete {}", dir.display()))?;
    }
    fs::rename(&tmp, &dir).ctx(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    let elapsed = start.elapsed();
    eprintln!(
        "p4lb-testbed: rootfs {hash} built in {:.1} s at {}",
        elapsed.as_secs_f64(),
        dir.display()
    );
    Ok(Rootfs {
        path: dir,
        hash,
        built: true,
        elapsed,
    })
}

fn reused(path: PathBuf, hash: String, start: Instant) -> Rootfs {
    let elapsed = start.elapsed();
    eprintln!(
        "p4lb-testbed: rootfs {hash} reused in {:.1} ms from {}",
        elapsed.as_secs_f64() * 1000.0,
        path.display()
    );
    Rootfs {
        path,
        hash,
        built: false,
        elapsed,
    }
}

fn build_into(spec: &RootfsSpec, tmp: &Path, config: &Path) -> Result<()> {
    fs::create_dir_all(tmp).ctx(|| format!("creating {}", tmp.display()))?;
    for f in &spec.files {
        let dest = config.join(f.path.trim_start_matches('/'));
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&dest, f.content).ctx(|| format!("writing {}", dest.display()))?;
    }
    let script = config.join("build-rootfs.sh");
    fs::write(&script, crate::spec::BUILD_SCRIPT)
        .ctx(|| format!("writing {}", script.display()))?;
    eprintln!(
        "p4lb-testbed: building the rootfs ({} {}, {} packages from sid) in {}",
        spec.suite,
        spec.mirror,
        spec.packages.len(),
        tmp.display()
    );
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .arg(tmp)
        .env("P4LB_SUITE", &spec.suite)
        .env("P4LB_MIRROR", &spec.mirror)
        .env("P4LB_PACKAGES", spec.packages.join(" "))
        .env("P4LB_CONFIG_DIR", config);
    // The script mounts /proc in the tree: keep that mount in a private mount
    // namespace so an interrupted build leaves nothing mounted on the host.
    unsafe {
        cmd.pre_exec(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            Ok(())
        });
    }
    let status = cmd
        .status()
        .ctx(|| "running the rootfs build script".into())?;
    if !status.success() {
        return Err(Error::Build {
            dir: tmp.to_path_buf(),
            reason: format!("build script exited with {status} (its log tail is above)"),
        });
    }
    if !complete(tmp) {
        return Err(Error::Build {
            dir: tmp.to_path_buf(),
            reason: format!("the build finished without writing /{MARKER}"),
        });
    }
    Ok(())
}

/// Removes leftovers of interrupted builds (called with the build lock held).
fn remove_stale_builds(root: &Path) -> Result<()> {
    let entries = fs::read_dir(root).ctx(|| format!("listing {}", root.display()))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(TMP_PREFIX) {
            let p = e.path();
            eprintln!("p4lb-testbed: removing interrupted build {}", p.display());
            if p.is_dir() {
                fs::remove_dir_all(&p).ctx(|| format!("removing {}", p.display()))?;
            } else {
                fs::remove_file(&p).ctx(|| format!("removing {}", p.display()))?;
            }
        }
    }
    Ok(())
}

/// Lists cached rootfs builds: (hash, path).
pub fn cached() -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(cache_root()) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .flatten()
        .filter(|e| complete(&e.path()))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    out.sort();
    out
}

/// The packages `p4lb-testbed info` and the tools show the versions of.
pub const KEY_PACKAGES: &[&str] = &[
    "criu",
    "podman",
    "crun",
    "runc",
    "containerd",
    "netavark",
    "containernetworking-plugins",
    "docker-registry",
];

/// (package, version) of the [`KEY_PACKAGES`] installed in the rootfs at
/// `rootfs`, read from the list the build script wrote; empty when it is not
/// built.
pub fn key_package_versions(rootfs: &Path) -> Vec<(String, String)> {
    let list = fs::read_to_string(rootfs.join(MARKER)).unwrap_or_default();
    list.lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(name, _)| KEY_PACKAGES.contains(name))
        .map(|(name, version)| (name.to_string(), version.to_string()))
        .collect()
}

/// Prints the versions of the [`KEY_PACKAGES`] in the rootfs at `rootfs`.
pub fn print_key_package_versions(rootfs: &Path) {
    for (name, version) in key_package_versions(rootfs) {
        println!("  {name:<30} {version}");
    }
}
