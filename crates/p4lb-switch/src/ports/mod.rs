//! Switch ports and the data-plane thread.
//!
//! One thread owns every port socket and runs the pipeline: it waits in epoll for readable
//! ports, drains each with `recvmmsg` in batches, runs [`crate::pipeline::process`] on every
//! frame in place and sends it out of its egress port. Ports are attached and detached at
//! run time through [`PortManager`] (a command queue plus an eventfd wakes the thread).
//!
//! Each port has two receive queues ([`classify`]): TCP segments with SYN set go to the
//! handshake queue, everything else to the main queue. In every round the thread first
//! drains the ready main queues (up to [`FAIR_SHARE`] frames each), then takes at most
//! [`HANDSHAKE_SHARE`] frames from each ready handshake queue, and starts the next round.
//! Under a SYN flood larger than the thread can forward, the kernel drops the excess SYNs
//! from the handshake socket's buffer while established connections' packets keep their
//! own queue and are served first.
//!
//! Frames the pipeline sends to the hold port go into the pipeline's [`crate::hold`] buffer;
//! at the start of every round the thread runs them through the pipeline again if a
//! `backends` or `ipv4_routes` write released them, and while any are held it sleeps in epoll
//! for at most [`crate::hold::POLL_WHILE_HELD`].

pub mod afpacket;
pub mod classify;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use parking_lot::Mutex;

use crate::hold::HeldFrame;
use crate::pipeline::{self, Verdict};
use crate::program::spec::{drop_reason, CounterKind};
use crate::runtime::DataplaneSlot;
use afpacket::{PortSocket, RxBatch, VnetHdr, VIRTIO_NET_HDR_F_DATA_VALID, VNET_HDR_LEN};

/// Largest port number a port may use (9-bit ports; 510 is the hold port, 511 the drop
/// port).
pub const MAX_PORT: u32 = p4lb_p4::MAX_DATA_PORT as u32;
/// Frames received per `recvmmsg`.
const BATCH: usize = 64;
/// Frames taken from one port's main queue before looking at the others.
pub const FAIR_SHARE: usize = 512;
/// Frames taken from one port's handshake queue per round, after every main queue.
pub const HANDSHAKE_SHARE: usize = 128;
/// Marks a handshake queue's epoll key (the port number is in the low 32 bits).
const HANDSHAKE_KEY: u64 = 1 << 32;
/// The eventfd's epoll key.
const WAKE_KEY: u64 = u64::MAX;
/// How long the data-plane thread keeps polling without sleeping after the last frame.
const BUSY_POLL: std::time::Duration = std::time::Duration::from_micros(200);

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("port {0} is already attached")]
    PortInUse(u32),
    #[error("interface {0} is already attached as port {1}")]
    IfaceInUse(String, u32),
    #[error("port {0} is out of range (1..={MAX_PORT})")]
    BadPort(u32),
    #[error("port {0} is not attached")]
    NoSuchPort(u32),
    #[error("cannot open interface {iface}: {source}")]
    Open { iface: String, source: io::Error },
    #[error("data-plane thread is gone")]
    Stopped,
}

#[derive(Debug, Default)]
pub struct PortStats {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub drops: AtomicU64,
}

#[derive(Debug)]
pub struct Port {
    pub num: u32,
    pub iface: String,
    /// The main receive queue; every frame leaves through this socket.
    pub sock: PortSocket,
    /// The handshake receive queue (TCP segments with SYN set).
    pub handshake: PortSocket,
    pub stats: PortStats,
}

/// A snapshot of one port for ListPorts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    pub port: u32,
    pub iface: String,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub drops: u64,
}

impl Port {
    fn info(&self) -> PortInfo {
        let s = &self.stats;
        PortInfo {
            port: self.num,
            iface: self.iface.clone(),
            rx_packets: s.rx_packets.load(Ordering::Relaxed),
            tx_packets: s.tx_packets.load(Ordering::Relaxed),
            rx_bytes: s.rx_bytes.load(Ordering::Relaxed),
            tx_bytes: s.tx_bytes.load(Ordering::Relaxed),
            drops: s.drops.load(Ordering::Relaxed),
        }
    }
}

enum Cmd {
    Add(Arc<Port>),
    Remove(u32),
}

/// Owns the data-plane thread and the set of ports.
pub struct PortManager {
    ports: Mutex<BTreeMap<u32, Arc<Port>>>,
    tx: Mutex<mpsc::Sender<Cmd>>,
    wake: RawFd,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    rx_ring: bool,
}

impl std::fmt::Debug for PortManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortManager")
            .field("ports", &self.ports.lock().len())
            .finish()
    }
}

fn wake(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writing 8 bytes from a live u64 to our eventfd.
    unsafe {
        libc::write(fd, &one as *const u64 as *const libc::c_void, 8);
    }
}

impl PortManager {
    /// Starts the data-plane thread; `nice` sets its scheduling priority (e.g. -10).
    /// `rx_ring` makes ports receive through a TPACKET_V3 ring instead of `recvmmsg`.
    pub fn start(
        slot: Arc<DataplaneSlot>,
        nice: Option<i32>,
        rx_ring: bool,
    ) -> io::Result<PortManager> {
        // SAFETY: plain eventfd(2) call.
        let wake_fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if wake_fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain epoll_create1(2) call.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: WAKE_KEY,
        };
        // SAFETY: registering a valid fd with a valid epoll instance.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, wake_fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("p4lb-dataplane".into())
            .spawn(move || {
                let mut dp = DataPlaneLoop {
                    ep,
                    wake_fd,
                    rx,
                    ports: HashMap::new(),
                    slot,
                    stop: stop2,
                    nice,
                };
                dp.run();
                // SAFETY: closing descriptors this thread owns.
                unsafe {
                    libc::close(ep);
                }
            })?;
        Ok(PortManager {
            ports: Mutex::new(BTreeMap::new()),
            tx: Mutex::new(tx),
            wake: wake_fd,
            stop,
            thread: Mutex::new(Some(thread)),
            rx_ring,
        })
    }

    pub fn add(&self, port: u32, iface: &str) -> Result<PortInfo, PortError> {
        if port == 0 || port > MAX_PORT {
            return Err(PortError::BadPort(port));
        }
        let mut ports = self.ports.lock();
        if ports.contains_key(&port) {
            return Err(PortError::PortInUse(port));
        }
        if let Some(p) = ports.values().find(|p| p.iface == iface) {
            return Err(PortError::IfaceInUse(iface.to_string(), p.num));
        }
        let open = |queue| {
            PortSocket::open(iface, queue, self.rx_ring).map_err(|source| PortError::Open {
                iface: iface.to_string(),
                source,
            })
        };
        let sock = open(classify::Queue::Main)?;
        let handshake = open(classify::Queue::Handshake)?;
        let p = Arc::new(Port {
            num: port,
            iface: iface.to_string(),
            sock,
            handshake,
            stats: PortStats::default(),
        });
        self.tx
            .lock()
            .send(Cmd::Add(p.clone()))
            .map_err(|_| PortError::Stopped)?;
        wake(self.wake);
        ports.insert(port, p.clone());
        tracing::info!(port, iface, "port attached");
        Ok(p.info())
    }

    pub fn remove(&self, port: u32) -> Result<(), PortError> {
        let mut ports = self.ports.lock();
        if ports.remove(&port).is_none() {
            return Err(PortError::NoSuchPort(port));
        }
        self.tx
            .lock()
            .send(Cmd::Remove(port))
            .map_err(|_| PortError::Stopped)?;
        wake(self.wake);
        tracing::info!(port, "port detached");
        Ok(())
    }

    pub fn list(&self) -> Vec<PortInfo> {
        self.ports.lock().values().map(|p| p.info()).collect()
    }

    /// Stops the data-plane thread (ports are closed with it).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        wake(self.wake);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for PortManager {
    fn drop(&mut self) {
        self.shutdown();
        // SAFETY: closing our eventfd once, after the thread is gone.
        unsafe {
            libc::close(self.wake);
        }
    }
}

struct DataPlaneLoop {
    ep: RawFd,
    wake_fd: RawFd,
    rx: mpsc::Receiver<Cmd>,
    ports: HashMap<u32, Arc<Port>>,
    slot: Arc<DataplaneSlot>,
    stop: Arc<AtomicBool>,
    nice: Option<i32>,
}

impl DataPlaneLoop {
    fn commands(&mut self) {
        let mut buf = 0u64;
        // SAFETY: reading 8 bytes into a live u64 from our nonblocking eventfd.
        unsafe {
            libc::read(self.wake_fd, &mut buf as *mut u64 as *mut libc::c_void, 8);
        }
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Cmd::Add(p) => {
                    let key = u64::from(p.num);
                    let queues = [(p.sock.fd(), key), (p.handshake.fd(), key | HANDSHAKE_KEY)];
                    let mut failed = None;
                    for (fd, key) in queues {
                        let mut ev = libc::epoll_event {
                            events: libc::EPOLLIN as u32,
                            u64: key,
                        };
                        // SAFETY: registering the port's live socket.
                        if unsafe { libc::epoll_ctl(self.ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0
                        {
                            failed = Some(io::Error::last_os_error());
                            break;
                        }
                    }
                    if let Some(e) = failed {
                        tracing::error!(port = p.num, error = %e, "epoll_ctl failed");
                        self.unregister(&p);
                        continue;
                    }
                    self.ports.insert(p.num, p);
                }
                Cmd::Remove(n) => {
                    if let Some(p) = self.ports.remove(&n) {
                        self.unregister(&p);
                    }
                }
            }
        }
    }

    /// Takes both of a port's sockets out of epoll (a socket that was never added is
    /// refused by the kernel, which is harmless here).
    fn unregister(&self, p: &Port) {
        for fd in [p.sock.fd(), p.handshake.fd()] {
            // SAFETY: deregistering a live socket of ours.
            unsafe {
                libc::epoll_ctl(self.ep, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut());
            }
        }
    }

    /// Sends the frames in `out` (grouped per egress port, one `sendmmsg` per port).
    fn transmit(&self, ingress: &Port, out: &mut [(u32, [u8; VNET_HDR_LEN], &[u8])]) {
        out.sort_by_key(|(p, _, _)| *p);
        let mut start = 0;
        while start < out.len() {
            let egress = out[start].0;
            let end = start
                + out[start..]
                    .iter()
                    .take_while(|(p, _, _)| *p == egress)
                    .count();
            let group = &out[start..end];
            start = end;
            let Some(op) = self.ports.get(&egress) else {
                ingress
                    .stats
                    .drops
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                continue;
            };
            let frames: Vec<(&[u8; VNET_HDR_LEN], &[u8])> =
                group.iter().map(|(_, h, f)| (h, *f)).collect();
            let sent = match op.sock.send_batch(&frames) {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(port = egress, error = %e, "send failed");
                    0
                }
            };
            let bytes: usize = frames[..sent].iter().map(|(_, f)| f.len()).sum();
            op.stats
                .tx_packets
                .fetch_add(sent as u64, Ordering::Relaxed);
            op.stats.tx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            op.stats
                .drops
                .fetch_add((frames.len() - sent) as u64, Ordering::Relaxed);
        }
    }

    /// One frame through the pipeline; `Some((egress, header))` when it leaves.
    fn forward_one(
        &self,
        dp: Option<&Arc<crate::state::Dataplane>>,
        port: &Port,
        vnet: &[u8],
        frame: &mut [u8],
    ) -> Option<(u32, [u8; VNET_HDR_LEN])> {
        port.stats.rx_packets.fetch_add(1, Ordering::Relaxed);
        port.stats
            .rx_bytes
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        let Some(dp) = dp else {
            port.stats.drops.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        Self::pipeline_one(dp, port, vnet, frame)
    }

    /// [`Self::forward_one`] without the receive statistics (also the replay of held frames).
    fn pipeline_one(
        dp: &crate::state::Dataplane,
        port: &Port,
        vnet: &[u8],
        frame: &mut [u8],
    ) -> Option<(u32, [u8; VNET_HDR_LEN])> {
        let mut hdr = VnetHdr::parse(vnet);
        match pipeline::process(dp, frame, port.num as u16, hdr.needs_csum()) {
            Verdict::Drop => {
                port.stats.drops.fetch_add(1, Ordering::Relaxed);
                None
            }
            Verdict::Hold => {
                if let Err(e) = dp.hold.push(port.num as u16, vnet, frame) {
                    dp.counter(CounterKind::Drops)
                        .count(drop_reason::HOLD_FULL, frame.len());
                    port.stats.drops.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(port = port.num, error = %e, "held frame dropped");
                }
                None
            }
            Verdict::Forward(egress) => {
                hdr.flags &= !VIRTIO_NET_HDR_F_DATA_VALID;
                let mut hb = [0u8; VNET_HDR_LEN];
                hdr.write(&mut hb);
                Some((u32::from(egress), hb))
            }
        }
    }

    /// Drains one of a port's TPACKET_V3 rings block by block, up to `share` frames (a
    /// block is taken whole).
    fn drain_ring(
        &self,
        port: &Port,
        ring: &parking_lot::Mutex<afpacket::RxRing>,
        frames: &mut Vec<afpacket::RingFrame>,
        share: usize,
    ) {
        let dp = self.slot.get();
        let mut ring = ring.lock();
        let mut taken = 0;
        while taken < share && ring.next_block(frames) {
            let mut out: Vec<(u32, [u8; VNET_HDR_LEN], &[u8])> = Vec::with_capacity(frames.len());
            for rf in frames.iter() {
                taken += 1;
                if rf.truncated {
                    port.stats.drops.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                // SAFETY: the ring frame lies inside the mapped block, which the kernel does
                // not touch until the block is released below.
                let (vnet, frame) = unsafe {
                    (
                        std::slice::from_raw_parts(rf.vnet as *const u8, VNET_HDR_LEN),
                        std::slice::from_raw_parts_mut(rf.frame, rf.len),
                    )
                };
                if let Some((egress, hb)) = self.forward_one(dp.as_ref(), port, vnet, frame) {
                    out.push((egress, hb, frame));
                }
            }
            self.transmit(port, &mut out);
            drop(out);
            ring.release();
        }
    }

    /// Runs the held frames through the pipeline again if a table write released them;
    /// frames of one ingress port keep their order. Returns whether frames are held now.
    fn replay(&self) -> bool {
        let Some(dp) = self.slot.get() else {
            return false;
        };
        let Some(mut frames) = dp.hold.take_release() else {
            return !dp.hold.is_empty();
        };
        if frames.is_empty() {
            return false;
        }
        let count = frames.len();
        frames.sort_by_key(|f| f.ingress_port);
        let mut rest: &mut [HeldFrame] = &mut frames;
        while let Some(first) = rest.first() {
            let ingress = first.ingress_port;
            let n = rest
                .iter()
                .take_while(|f| f.ingress_port == ingress)
                .count();
            let (group, tail) = rest.split_at_mut(n);
            rest = tail;
            let Some(port) = self.ports.get(&u32::from(ingress)).cloned() else {
                tracing::debug!(
                    port = ingress,
                    frames = n,
                    "held frames of a detached port dropped"
                );
                continue;
            };
            let mut leaving: Vec<(u32, [u8; VNET_HDR_LEN], usize)> = Vec::with_capacity(n);
            for (i, hf) in group.iter_mut().enumerate() {
                let vnet = hf.vnet;
                if let Some((egress, hb)) = Self::pipeline_one(&dp, &port, &vnet, &mut hf.frame) {
                    leaving.push((egress, hb, i));
                }
            }
            let mut out: Vec<(u32, [u8; VNET_HDR_LEN], &[u8])> = leaving
                .iter()
                .map(|(e, h, i)| (*e, *h, group[*i].frame.as_slice()))
                .collect();
            self.transmit(&port, &mut out);
        }
        tracing::debug!(
            frames = count,
            still_held = dp.hold.len(),
            "held frames run again"
        );
        !dp.hold.is_empty()
    }

    fn run(&mut self) {
        if let Some(nice) = self.nice {
            // SAFETY: setpriority on this thread's own tid.
            let r = unsafe {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice)
            };
            if r != 0 {
                tracing::warn!(nice, error = %io::Error::last_os_error(), "cannot set data-plane priority");
            }
        }
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
        let mut batch = RxBatch::new(BATCH);
        let mut ring_frames = Vec::with_capacity(1024);
        let mut last_busy = std::time::Instant::now() - BUSY_POLL;
        while !self.stop.load(Ordering::Relaxed) {
            // Busy-poll (timeout 0) while traffic flows, sleep in epoll once idle (briefly
            // while frames are held: their release is seen at the top of the next round).
            let held = self.replay();
            let timeout = if last_busy.elapsed() < BUSY_POLL {
                0
            } else if held {
                crate::hold::POLL_WHILE_HELD.as_millis() as i32
            } else {
                200
            };
            // SAFETY: events has room for events.len() entries.
            let n = unsafe {
                libc::epoll_wait(self.ep, events.as_mut_ptr(), events.len() as i32, timeout)
            };
            if n > 0 {
                last_busy = std::time::Instant::now();
            }
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "epoll_wait failed");
                }
                continue;
            }
            let mut ready: Vec<u64> = events[..n as usize].iter().map(|e| e.u64).collect();
            // Main queues (and the wake key) first, handshake queues last.
            ready.sort_by_key(|k| *k != WAKE_KEY && k & HANDSHAKE_KEY != 0);
            for key in ready {
                if key == WAKE_KEY {
                    self.commands();
                    continue;
                }
                let Some(port) = self.ports.get(&(key as u32)).cloned() else {
                    continue;
                };
                let (sock, share) = if key & HANDSHAKE_KEY != 0 {
                    (&port.handshake, HANDSHAKE_SHARE)
                } else {
                    (&port.sock, FAIR_SHARE)
                };
                match sock.ring.as_ref() {
                    Some(ring) => self.drain_ring(&port, ring, &mut ring_frames, share),
                    None => self.drain(&port, sock, &mut batch, share),
                }
            }
        }
    }

    /// Receives from one of a port's sockets with `recvmmsg`, up to about `share` frames.
    fn drain(&self, port: &Port, sock: &PortSocket, batch: &mut RxBatch, share: usize) {
        let dp = self.slot.get();
        let mut taken = 0;
        while taken < share {
            let n = match batch.recv(sock) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(port = port.num, error = %e, "receive failed");
                    return;
                }
            };
            taken += n;
            let mut leaving: Vec<(u32, [u8; VNET_HDR_LEN], usize)> = Vec::with_capacity(n);
            for i in 0..n {
                let len = batch.lens[i];
                if len == usize::MAX {
                    port.stats.drops.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let vnet = batch.hdrs[i];
                if let Some((egress, hb)) =
                    self.forward_one(dp.as_ref(), port, &vnet, &mut batch.bufs[i][..len])
                {
                    leaving.push((egress, hb, i));
                }
            }
            let mut out: Vec<(u32, [u8; VNET_HDR_LEN], &[u8])> = leaving
                .iter()
                .map(|(e, h, i)| (*e, *h, &batch.bufs[*i][..batch.lens[*i]]))
                .collect();
            self.transmit(port, &mut out);
            if n < BATCH {
                return;
            }
        }
    }
}
