//! The few IPv4 sysctls a pod routed behind its node needs, read and written through
//! `/proc/sys/net` (which shows the network namespace of the calling thread).

use std::path::PathBuf;

use crate::cni::error::{CniError, Code};

/// `/proc/sys/net/ipv4/<section>/<ifname>/<key>`; `ifname` must be a plain interface
/// name (no `/`, not `.` or `..`).
fn interface_path(section: &str, ifname: &str, key: &str) -> Result<PathBuf, CniError> {
    if ifname.is_empty() || ifname.contains('/') || ifname == "." || ifname == ".." {
        return Err(
            CniError::new(Code::Netlink, "invalid interface name").details(format!("{ifname:?}"))
        );
    }
    Ok(PathBuf::from("/proc/sys/net/ipv4")
        .join(section)
        .join(ifname)
        .join(key))
}

fn write(path: &PathBuf, value: &str) -> Result<(), CniError> {
    std::fs::write(path, value).map_err(|e| {
        CniError::new(Code::Netlink, "cannot set a sysctl")
            .details(format!("{} = {value}: {e}", path.display()))
    })
}

/// Proxy ARP on `ifname`, answered at once (`proxy_arp = 1`, `proxy_delay = 0`): the
/// node answers the pod's ARP for its gateway and for every address it routes
/// elsewhere with the MAC of the pod's veth. Without `proxy_delay = 0` the kernel
/// delays each answer to a broadcast request by up to 0.8 s.
pub fn enable_proxy_arp(ifname: &str) -> Result<(), CniError> {
    write(&interface_path("conf", ifname, "proxy_arp")?, "1")?;
    write(&interface_path("neigh", ifname, "proxy_delay")?, "0")
}

/// Whether this namespace forwards IPv4 (`net.ipv4.ip_forward = 1`).
pub fn ipv4_forwarding() -> Result<bool, CniError> {
    let p = "/proc/sys/net/ipv4/ip_forward";
    let v = std::fs::read_to_string(p).map_err(|e| {
        CniError::new(Code::Netlink, "cannot read a sysctl").details(format!("{p}: {e}"))
    })?;
    Ok(v.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_cannot_leave_the_directory() {
        assert!(interface_path("conf", "../all", "proxy_arp").is_err());
        assert!(interface_path("conf", "..", "proxy_arp").is_err());
        assert!(interface_path("conf", "", "proxy_arp").is_err());
        assert_eq!(
            interface_path("neigh", "p4lb1234", "proxy_delay").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/neigh/p4lb1234/proxy_delay")
        );
    }
}
