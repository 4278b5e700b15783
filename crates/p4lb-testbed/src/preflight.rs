//! Checks of the host, each failing with what is missing and how to get it.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::paths::which;

/// The testbed needs root: namespaces, mounts and pivot_root.
pub fn require_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(Error::Missing(
            "the testbed must run as root (it creates mount/network/PID namespaces and \
             calls pivot_root); run `sudo make test`"
                .into(),
        ))
    }
}

/// A host tool, with the Debian package that provides it.
pub fn require_tool(tool: &str, package: &str) -> Result<()> {
    if which(tool).is_some() {
        Ok(())
    } else {
        Err(Error::Missing(format!(
            "`{tool}` is not installed on the host; install it with \
             `apt-get install -y {package}` (`make test` installs it itself)"
        )))
    }
}

/// The kernel features the testbed uses.
pub fn require_kernel_features() -> Result<()> {
    for ns in ["mnt", "net", "pid", "uts", "ipc"] {
        if !std::path::Path::new("/proc/self/ns").join(ns).exists() {
            return Err(Error::Missing(format!(
                "the kernel has no {ns} namespaces (/proc/self/ns/{ns} is absent); \
                 it needs CONFIG_NAMESPACES with MNT/NET/PID/UTS/IPC namespaces"
            )));
        }
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.lines().any(|l| l.trim_end().ends_with("overlay")) {
        // The module may simply not be loaded yet.
        let _ = std::process::Command::new("modprobe")
            .arg("overlay")
            .status();
        let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !fs.lines().any(|l| l.trim_end().ends_with("overlay")) {
            return Err(Error::Missing(
                "the kernel has no overlay filesystem (`modprobe overlay` failed); \
                 the testbed layers each session over the cached rootfs with it"
                    .into(),
            ));
        }
    }
    // Creating namespaces can still be forbidden (a container without
    // CAP_SYS_ADMIN, seccomp, user.max_*_namespaces = 0): try it.
    let out = std::process::Command::new("unshare")
        .args([
            "--mount", "--net", "--pid", "--fork", "--uts", "--ipc", "true",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(Error::Missing(format!(
            "the kernel refused to create namespaces ({}); the testbed needs CAP_SYS_ADMIN \
             and unrestricted mount/net/pid namespaces (run privileged, check \
             /proc/sys/user/max_*_namespaces)",
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Err(e) => Err(Error::Missing(format!(
            "cannot run `unshare` ({e}); install util-linux"
        ))),
    }
}

/// The Debian mirror must be reachable to build the rootfs (once; it is cached).
pub fn require_mirror(mirror: &str) -> Result<()> {
    let host_port = mirror
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or(mirror);
    let default_port = if mirror.starts_with("https://") {
        443
    } else {
        80
    };
    let target = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:{default_port}")
    };
    let unreachable = |why: String| {
        Error::Missing(format!(
            "cannot reach the Debian package registry {mirror} ({why}); it is needed once to \
             build the rootfs (afterwards the cache under {} is reused); set \
             P4LB_DEBIAN_MIRROR to a reachable mirror",
            crate::paths::cache_root().display()
        ))
    };
    let addrs: Vec<_> = target
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("resolving {target}: {e}")))?
        .collect();
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(unreachable(last))
}

/// Checks needed before entering a testbed (not building one).
pub fn require_enter() -> Result<()> {
    require_root()?;
    require_tool("nsenter", "util-linux")?;
    require_tool("unshare", "util-linux")?;
    require_tool("ip", "iproute2")?;
    require_kernel_features()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_message_names_the_package() {
        let e = require_tool("p4lb-no-such-tool", "p4lb-pkg").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("apt-get install -y p4lb-pkg"), "{m}");
    }

    #[test]
    fn unreachable_mirror_is_explained() {
        // Port 9 on loopback: nothing listens there.
        let e = require_mirror("http://127.0.0.1:9/debian").unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("cannot reach the Debian package registry"),
            "{m}"
        );
        assert!(m.contains("P4LB_DEBIAN_MIRROR"), "{m}");
    }
}
