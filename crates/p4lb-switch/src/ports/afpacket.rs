//! A switch port's AF_PACKET sockets, bound to a Linux interface (SOCK_RAW, ETH_P_ALL,
//! promiscuous, PACKET_IGNORE_OUTGOING so the switch never reads back what it sent). A port
//! has two, each receiving one class of frames ([`super::classify`]); frames leave through
//! the main one.
//!
//! Offloads: the socket uses PACKET_VNET_HDR, so every frame comes with a virtio-net header
//! telling whether its TCP/UDP checksum is still partial (`NEEDS_CSUM`, the usual case for
//! traffic of a local stack behind a veth) and whether it is a GSO super-frame larger than
//! the MTU. Both are forwarded as they are: the header goes back out with the frame, so the
//! kernel completes the checksum or segments the frame on the way out, exactly like it does
//! for a Linux bridge. Interfaces therefore need no `ethtool -K ... off` for p4lb-switch.
//! (The CNI plugin still turns tx checksum offload off on both veth ends: BMv2, which reads
//! its ports through libpcap without this header, needs that; see crates/p4lb-cni/README.md.)

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::classify::Queue;

pub const VNET_HDR_LEN: usize = 10;
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
/// Largest frame accepted (a GSO super-frame can be 64 KiB plus headers).
pub const MAX_FRAME: usize = 65536 + 128;

const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_MR_PROMISC: libc::c_int = 1;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// The virtio-net header (host byte order, as AF_PACKET uses it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> VnetHdr {
        if b.len() < VNET_HDR_LEN {
            return VnetHdr::default();
        }
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }

    pub fn write(&self, b: &mut [u8]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }

    pub fn needs_csum(&self) -> bool {
        self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
    }
}

pub struct PortSocket {
    fd: OwnedFd,
    pub ifindex: i32,
    /// Receive ring, when one could be set up (otherwise `recvmmsg` is used).
    pub ring: Option<parking_lot::Mutex<RxRing>>,
}

impl std::fmt::Debug for PortSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortSocket")
            .field("ifindex", &self.ifindex)
            .field("ring", &self.ring.is_some())
            .finish()
    }
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setopt(fd: RawFd, level: libc::c_int, name: libc::c_int, val: libc::c_int) -> io::Result<()> {
    // SAFETY: passing a pointer to a live c_int and its size.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &val as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

pub fn ifindex(iface: &str) -> io::Result<i32> {
    let name = CString::new(iface)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name contains NUL"))?;
    // SAFETY: name is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(idx as i32)
}

impl PortSocket {
    /// Opens one of the port's two sockets (`queue`: which frames it receives, see
    /// [`super::classify`]); `ring` asks for a TPACKET_V3 receive ring (falls back to
    /// `recvmmsg` if the kernel refuses it).
    pub fn open(iface: &str, queue: Queue, ring: bool) -> io::Result<PortSocket> {
        let ifindex = ifindex(iface)?;
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // Protocol 0: the socket receives nothing until bind() below gives it ETH_P_ALL
        // on this interface. Created with ETH_P_ALL it would first be hooked on every
        // interface, and bind() would unhook it after an RCU grace period (~10 ms).
        // SAFETY: plain socket(2) call.
        let raw = check(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: raw is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setopt(raw, libc::SOL_PACKET, PACKET_VNET_HDR, 1)?;
        setopt(raw, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
        super::classify::attach(raw, queue)?;
        let ring = if ring {
            match RxRing::setup(raw) {
                Ok(r) => Some(parking_lot::Mutex::new(r)),
                Err(e) => {
                    tracing::warn!(iface, error = %e, "no TPACKET_V3 ring, using recvmmsg");
                    None
                }
            }
        } else {
            None
        };
        let _ = setopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20)
            .or_else(|_| setopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, 8 << 20));
        let _ = setopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 8 << 20)
            .or_else(|_| setopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, 8 << 20));
        // SAFETY: zeroed sockaddr_ll is a valid value; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        // SAFETY: sll is a valid sockaddr_ll of the given size.
        check(unsafe {
            libc::bind(
                raw,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        // SAFETY: zeroed packet_mreq is valid; fields set below.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = ifindex;
        mreq.mr_type = PACKET_MR_PROMISC as u16;
        // SAFETY: mreq is a valid packet_mreq.
        check(unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_PACKET,
                PACKET_ADD_MEMBERSHIP,
                &mreq as *const libc::packet_mreq as *const libc::c_void,
                std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        })?;
        Ok(PortSocket { fd, ifindex, ring })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Sends frames (each with its virtio-net header) with one `sendmmsg`; returns how many
    /// the kernel took (the rest did not fit in the socket buffer).
    pub fn send_batch(&self, frames: &[(&[u8; VNET_HDR_LEN], &[u8])]) -> io::Result<usize> {
        if frames.is_empty() {
            return Ok(0);
        }
        let mut iovs: Vec<[libc::iovec; 2]> = frames
            .iter()
            .map(|(h, f)| {
                [
                    libc::iovec {
                        iov_base: h.as_ptr() as *mut libc::c_void,
                        iov_len: VNET_HDR_LEN,
                    },
                    libc::iovec {
                        iov_base: f.as_ptr() as *mut libc::c_void,
                        iov_len: f.len(),
                    },
                ]
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: zeroed mmsghdr is valid; iov lives until after the call.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = iov.as_mut_ptr();
                m.msg_hdr.msg_iovlen = 2;
                m
            })
            .collect();
        let mut sent = 0usize;
        while sent < msgs.len() {
            // SAFETY: msgs[sent..] are initialised and point at live buffers.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd(),
                    msgs[sent..].as_mut_ptr(),
                    (msgs.len() - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
                if sent == 0 {
                    return Err(e);
                }
                break;
            }
            if r == 0 {
                break;
            }
            sent += r as usize;
        }
        Ok(sent)
    }
}

/// Receive buffers for `recvmmsg` with a virtio-net header per frame.
pub struct RxBatch {
    pub hdrs: Vec<[u8; VNET_HDR_LEN]>,
    pub bufs: Vec<Vec<u8>>,
    pub lens: Vec<usize>,
    iovs: Vec<[libc::iovec; 2]>,
    msgs: Vec<libc::mmsghdr>,
}

// The raw pointers inside only ever point into the batch's own buffers.
unsafe impl Send for RxBatch {}

impl RxBatch {
    pub fn new(n: usize) -> RxBatch {
        let mut b = RxBatch {
            hdrs: vec![[0u8; VNET_HDR_LEN]; n],
            bufs: (0..n).map(|_| vec![0u8; MAX_FRAME]).collect(),
            lens: vec![0; n],
            iovs: Vec::with_capacity(n),
            // SAFETY: zeroed mmsghdr is a valid value.
            msgs: (0..n).map(|_| unsafe { std::mem::zeroed() }).collect(),
        };
        for i in 0..n {
            b.iovs.push([
                libc::iovec {
                    iov_base: b.hdrs[i].as_mut_ptr() as *mut libc::c_void,
                    iov_len: VNET_HDR_LEN,
                },
                libc::iovec {
                    iov_base: b.bufs[i].as_mut_ptr() as *mut libc::c_void,
                    iov_len: MAX_FRAME,
                },
            ]);
        }
        b
    }

    /// Receives up to the batch size without blocking; returns how many frames arrived.
    pub fn recv(&mut self, sock: &PortSocket) -> io::Result<usize> {
        let n = self.msgs.len();
        for i in 0..n {
            // SAFETY: zeroed mmsghdr is valid; iov pointers refer to self's buffers, which
            // live (and do not move: Vec heap storage) as long as self.
            self.msgs[i] = unsafe { std::mem::zeroed() };
            self.msgs[i].msg_hdr.msg_iov = self.iovs[i].as_mut_ptr();
            self.msgs[i].msg_hdr.msg_iovlen = 2;
        }
        // SAFETY: msgs holds n initialised headers pointing into live buffers.
        let r = unsafe {
            libc::recvmmsg(
                sock.fd(),
                self.msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(0);
            }
            return Err(e);
        }
        let r = r as usize;
        for i in 0..r {
            let total = self.msgs[i].msg_len as usize;
            self.lens[i] = total.saturating_sub(VNET_HDR_LEN);
            if self.msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                // Larger than MAX_FRAME: mark as unusable.
                self.lens[i] = usize::MAX;
            }
        }
        Ok(r)
    }
}

/// A TPACKET_V3 receive ring (PACKET_MMAP): the kernel writes frames into shared memory
/// blocks, so receiving needs no copy and no system call per batch.
pub struct RxRing {
    map: *mut u8,
    size: usize,
    block_size: usize,
    block_nr: usize,
    cur: usize,
}

// The mapping is owned by the ring and only touched by the thread holding it.
unsafe impl Send for RxRing {}

const TPACKET_V3: libc::c_int = 2;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_RX_RING: libc::c_int = 5;
const TP_STATUS_USER: u32 = 1;
const RING_BLOCK_SIZE: usize = 1 << 20;
const RING_BLOCK_NR: usize = 8;
const RING_FRAME_SIZE: usize = 1 << 11;

#[repr(C)]
struct TpacketReq3 {
    tp_block_size: libc::c_uint,
    tp_block_nr: libc::c_uint,
    tp_frame_size: libc::c_uint,
    tp_frame_nr: libc::c_uint,
    tp_retire_blk_tov: libc::c_uint,
    tp_sizeof_priv: libc::c_uint,
    tp_feature_req_word: libc::c_uint,
}

/// One frame found in the ring: its virtio-net header and the frame itself.
pub struct RingFrame {
    pub vnet: *mut u8,
    pub frame: *mut u8,
    pub len: usize,
    /// The frame was cut short by the ring (larger than a ring block).
    pub truncated: bool,
}

impl RxRing {
    /// Sets up the ring on a socket that has PACKET_VNET_HDR but is not bound yet.
    pub fn setup(fd: RawFd) -> io::Result<RxRing> {
        setopt(fd, libc::SOL_PACKET, PACKET_VERSION, TPACKET_V3)?;
        let req = TpacketReq3 {
            tp_block_size: RING_BLOCK_SIZE as u32,
            tp_block_nr: RING_BLOCK_NR as u32,
            tp_frame_size: RING_FRAME_SIZE as u32,
            tp_frame_nr: (RING_BLOCK_SIZE * RING_BLOCK_NR / RING_FRAME_SIZE) as u32,
            tp_retire_blk_tov: 1,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        // SAFETY: req is a valid tpacket_req3 of the given size.
        check(unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                PACKET_RX_RING,
                &req as *const TpacketReq3 as *const libc::c_void,
                std::mem::size_of::<TpacketReq3>() as libc::socklen_t,
            )
        })?;
        let size = RING_BLOCK_SIZE * RING_BLOCK_NR;
        // SAFETY: mapping the ring the kernel just allocated for fd.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(RxRing {
            map: map as *mut u8,
            size,
            block_size: RING_BLOCK_SIZE,
            block_nr: RING_BLOCK_NR,
            cur: 0,
        })
    }

    fn block(&self, i: usize) -> *mut u8 {
        // SAFETY: i < block_nr, inside the mapping.
        unsafe { self.map.add(i * self.block_size) }
    }

    fn status(&self, b: *mut u8) -> *mut u32 {
        // block_status is at offset 8 of tpacket_block_desc.
        // SAFETY: inside the block header.
        unsafe { b.add(8) as *mut u32 }
    }

    /// The frames of the next block the kernel handed over, if any. Call
    /// [`RxRing::release`] once done with them.
    pub fn next_block(&mut self, out: &mut Vec<RingFrame>) -> bool {
        out.clear();
        let b = self.block(self.cur);
        // SAFETY: reading the block header inside the mapping; the kernel publishes the
        // status with release semantics, matched by the acquire fence.
        let st = unsafe { std::ptr::read_volatile(self.status(b)) };
        if st & TP_STATUS_USER == 0 {
            return false;
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        // SAFETY: header fields inside the block (num_pkts @12, offset_to_first_pkt @16).
        let (num, first) = unsafe {
            (
                std::ptr::read_unaligned(b.add(12) as *const u32) as usize,
                std::ptr::read_unaligned(b.add(16) as *const u32) as usize,
            )
        };
        let mut off = first;
        for _ in 0..num {
            if off == 0 || off + 28 > self.block_size {
                break;
            }
            // SAFETY: tpacket3_hdr fields inside the block.
            unsafe {
                let h = b.add(off);
                let next = std::ptr::read_unaligned(h as *const u32) as usize;
                let snaplen = std::ptr::read_unaligned(h.add(12) as *const u32) as usize;
                let len = std::ptr::read_unaligned(h.add(16) as *const u32) as usize;
                let mac = std::ptr::read_unaligned(h.add(24) as *const u16) as usize;
                if mac >= VNET_HDR_LEN && off + mac + snaplen <= self.block_size {
                    out.push(RingFrame {
                        vnet: h.add(mac - VNET_HDR_LEN),
                        frame: h.add(mac),
                        len: snaplen,
                        truncated: snaplen < len,
                    });
                }
                if next == 0 {
                    break;
                }
                off += next;
            }
        }
        true
    }

    /// Gives the current block back to the kernel and moves on.
    pub fn release(&mut self) {
        let b = self.block(self.cur);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        // SAFETY: writing the block status inside the mapping.
        unsafe { std::ptr::write_volatile(self.status(b), 0) };
        self.cur = (self.cur + 1) % self.block_nr;
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping once.
        unsafe {
            libc::munmap(self.map as *mut libc::c_void, self.size);
        }
    }
}
