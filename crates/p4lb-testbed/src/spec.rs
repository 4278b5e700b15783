//! What goes into the rootfs: Debian suite, mirror, packages, configuration
//! files, and the hash that names the cached build.

use sha2::{Digest, Sha256};

/// Base suite bootstrapped with debootstrap.
pub const SUITE: &str = "trixie";
/// Default Debian mirror (override with `P4LB_DEBIAN_MIRROR`).
pub const MIRROR: &str = "http://deb.debian.org/debian";
/// Bumped whenever the way the rootfs is built changes.
const FORMAT: &str = "p4lb-testbed-rootfs-1";

/// Packages installed from sid (CRIU 4.2 and what containers need).
pub const PACKAGES: &[&str] = &[
    "criu",
    "libcriu2",
    "podman",
    "crun",
    "runc",
    "conmon",
    "netavark",
    "aardvark-dns",
    "catatonit",
    "containerd",
    "containernetworking-plugins",
    "iproute2",
    "nftables",
    "iptables",
    "busybox-static",
    "docker-registry",
    "procps",
    "util-linux",
    "tcpdump",
];

/// The script that builds the rootfs (run by [`crate::rootfs`]).
pub const BUILD_SCRIPT: &str = include_str!("../scripts/build-rootfs.sh");

/// A file copied into the rootfs after the packages are installed.
#[derive(Debug, Clone, Copy)]
pub struct ConfigFile {
    pub path: &'static str,
    pub content: &'static str,
}

macro_rules! config_files {
    ($($path:literal),* $(,)?) => {
        &[$(ConfigFile { path: $path, content: include_str!(concat!("../rootfs", $path)) }),*]
    };
}

/// Configuration this machine needs (see the README's "Testbed" section).
pub const CONFIG_FILES: &[ConfigFile] = config_files!(
    "/etc/containers/containers.conf",
    "/etc/containers/storage.conf",
    "/etc/containers/registries.conf.d/50-p4lb-local.conf",
    "/etc/containerd/config.toml",
    "/etc/containerd/certs.d/127.0.0.1:5000/hosts.toml",
    "/etc/cni/net.d/10-p4lb-cri.conflist",
    "/etc/criu/runc.conf",
    "/etc/docker/registry/config.yml",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/hostname",
);

/// Everything that determines a rootfs build.
#[derive(Debug, Clone)]
pub struct RootfsSpec {
    pub suite: String,
    pub mirror: String,
    pub packages: Vec<String>,
    pub files: Vec<ConfigFile>,
}

impl Default for RootfsSpec {
    fn default() -> Self {
        RootfsSpec {
            suite: SUITE.to_string(),
            mirror: std::env::var("P4LB_DEBIAN_MIRROR").unwrap_or_else(|_| MIRROR.to_string()),
            packages: PACKAGES.iter().map(|p| p.to_string()).collect(),
            files: CONFIG_FILES.to_vec(),
        }
    }
}

impl RootfsSpec {
    /// Hash naming the cached build: changes with any package, file or the
    /// build script.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |b: &[u8]| {
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        };
        field(FORMAT.as_bytes());
        field(self.suite.as_bytes());
        field(self.mirror.as_bytes());
        let mut pkgs = self.packages.clone();
        pkgs.sort();
        pkgs.dedup();
        for p in &pkgs {
            field(p.as_bytes());
        }
        field(BUILD_SCRIPT.as_bytes());
        for f in &self.files {
            field(f.path.as_bytes());
            field(f.content.as_bytes());
        }
        let digest = h.finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_sensitive() {
        let a = RootfsSpec::default();
        assert_eq!(a.hash(), a.clone().hash());
        assert_eq!(a.hash().len(), 16);
        let mut b = a.clone();
        b.packages.reverse();
        assert_eq!(a.hash(), b.hash(), "package order must not matter");
        b.packages.push("strace".into());
        assert_ne!(a.hash(), b.hash());
        let mut c = a.clone();
        c.files[0].content = "changed";
        assert_ne!(a.hash(), c.hash());
        let mut d = a.clone();
        d.mirror = "http://example.invalid/debian".into();
        assert_ne!(a.hash(), d.hash());
    }

    #[test]
    fn required_tools_are_listed() {
        for p in [
            "criu",
            "libcriu2",
            "podman",
            "containerd",
            "docker-registry",
        ] {
            assert!(PACKAGES.contains(&p), "{p}");
        }
        assert!(CONFIG_FILES
            .iter()
            .any(|f| f.path == "/etc/criu/runc.conf" && f.content.contains("tcp-established")));
        assert!(CONFIG_FILES
            .iter()
            .any(|f| f.content.contains("restrict_oom_score_adj = true")));
    }
}
