//! Turning transmit checksum offload off (`ethtool -K dev tx off`) with the
//! `SIOCETHTOOL` ioctl, and on the switch's end also segmentation and receive offloads
//! (`ethtool -K dev tx off tso off gso off gro off`).
//!
//! Why: a veth with tx checksum offload on hands frames to its peer with
//! `CHECKSUM_PARTIAL` (the TCP/UDP checksum field holds only the pseudo-header sum) and,
//! with TSO, as GSO super-frames larger than the MTU. BMv2 reads its ports through libpcap
//! without the virtio-net header that marks such frames, so it cannot forward them; with
//! tx checksum offload off (which also drops TSO) every frame crossing the veth is
//! MTU-sized with a complete checksum. p4lb-switch does not need this (it forwards partial
//! checksums and super-frames with the virtio-net header, see `p4lb_switch::ports::afpacket`),
//! but the plugin does not know which target serves the network, so both ends are always
//! turned off (crates/p4lb-cni/README.md, "Why transmit checksum offload is turned off").
//!
//! On the host end, which the switch reads, TSO, GSO and GRO go off as well: libpcap sizes
//! each slot of its receive ring for a 64 KiB frame when any of them is on, so BMv2's
//! default 2 MiB ring then holds about 30 frames and a burst of new connections (a client
//! opening 200 at once) loses most of its SYNs before BMv2 reads them. With them off the
//! slots are MTU-sized and the same ring holds over a thousand frames.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use crate::cni::error::{CniError, Code};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_SGSO: u32 = 0x24;
const ETHTOOL_SGRO: u32 = 0x2c;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// A datagram socket to address ethtool requests to (in the namespace it was made in).
pub struct Ethtool {
    sock: OwnedFd,
}

impl Ethtool {
    /// Creates the socket in the calling thread's current network namespace.
    pub fn new() -> Result<Self, CniError> {
        let sock = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| CniError::new(Code::Netlink, "ethtool socket").details(e.to_string()))?;
        Ok(Ethtool { sock })
    }

    fn request(&self, ifname: &str, value: &mut EthtoolValue) -> Result<(), CniError> {
        // SAFETY: ifreq is plain data; zeroed is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        let name = ifname.as_bytes();
        if name.len() >= ifr.ifr_name.len() {
            return Err(CniError::new(Code::Netlink, "interface name too long").details(ifname));
        }
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name) {
            *dst = *src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_data = (value as *mut EthtoolValue).cast();
        // SAFETY: SIOCETHTOOL reads/writes the EthtoolValue `ifr` points to, which
        // outlives the call.
        let rc = unsafe { libc::ioctl(self.sock.as_raw_fd(), SIOCETHTOOL as _, &mut ifr) };
        if rc < 0 {
            return Err(
                CniError::new(Code::Netlink, "SIOCETHTOOL failed").details(format!(
                    "{ifname} cmd {:#x}: {}",
                    value.cmd,
                    std::io::Error::last_os_error()
                )),
            );
        }
        Ok(())
    }

    /// Sets transmit checksum offload on or off.
    pub fn set_tx_checksum(&self, ifname: &str, on: bool) -> Result<(), CniError> {
        let mut v = EthtoolValue {
            cmd: ETHTOOL_STXCSUM,
            data: on as u32,
        };
        self.request(ifname, &mut v)
    }

    /// Prepares the switch's end of a pod's veth: transmit checksum, TSO, GSO and GRO off.
    pub fn prepare_switch_end(&self, ifname: &str) -> Result<(), CniError> {
        self.set_tx_checksum(ifname, false)?;
        for cmd in [ETHTOOL_STSO, ETHTOOL_SGSO, ETHTOOL_SGRO] {
            let mut v = EthtoolValue { cmd, data: 0 };
            self.request(ifname, &mut v)?;
        }
        Ok(())
    }

    /// Reads transmit checksum offload.
    pub fn tx_checksum(&self, ifname: &str) -> Result<bool, CniError> {
        let mut v = EthtoolValue {
            cmd: ETHTOOL_GTXCSUM,
            data: 0,
        };
        self.request(ifname, &mut v)?;
        Ok(v.data != 0)
    }
}
