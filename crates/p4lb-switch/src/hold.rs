//! The hold port ([`p4lb_p4::HOLD_PORT`]): frames that `backend_locked` or `route_locked`
//! send there wait in a [`Hold`] buffer instead of being dropped, and are run through the
//! pipeline again, as if they had just arrived on their ingress port, once the `backends` or
//! `ipv4_routes` table changes (the unlock is such a change). A client whose segments met the
//! lock thus reaches the unlocked (possibly new) backend right away, whose ACK and reply end
//! the client's backed-off retransmission timeout (docs/migration.md, "At unlock"). The
//! switch acknowledges nothing itself: only the backend's own TCP does.
//!
//! A TCP segment that repeats one held already (the same connection and sequence number,
//! with data, SYN or FIN: a retransmission) is not held twice: it replaces the held one when
//! it carries more data (a retransmission that collapsed later segments into it), else it is
//! dropped and counted in `duplicates_total` (the held one goes to the backend at the
//! unlock, so nothing is lost). A client backing off through a long lock thus holds one
//! frame per outstanding segment, not one per retransmission: 10 000 waiting connections fit.
//!
//! Bounded: at most [`MAX_HELD_PER_PORT`] frames per ingress port, [`MAX_HELD`] in all and
//! [`MAX_HELD_BYTES`] bytes in all; a frame over a bound is dropped and counted in
//! `drops[HOLD_FULL]`. A frame run again into a lock that is still on is held (and counted
//! under `drops[LOCKED]`) again. The buffer belongs to one committed pipeline: a new
//! pipeline config starts with an empty one.
//!
//! The data-plane thread ([`crate::ports`]) owns the replay: it looks at [`Hold::take_release`]
//! in every round and, while frames are held, never sleeps in epoll for longer than
//! [`POLL_WHILE_HELD`], so a release reaches the wire within about a millisecond of the
//! table write.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Most frames held for one ingress port (a client host's port may carry thousands of
/// connections, each with a segment waiting).
pub const MAX_HELD_PER_PORT: usize = 16384;
/// Most frames held in all.
pub const MAX_HELD: usize = 65536;
/// Most bytes held in all (GSO frames can be 64 KiB each).
pub const MAX_HELD_BYTES: usize = 32 << 20;
/// Longest epoll sleep of the data-plane thread while frames are held.
pub const POLL_WHILE_HELD: Duration = Duration::from_millis(1);

/// Length of the virtio-net header kept with each frame (`ports::afpacket::VNET_HDR_LEN`).
pub const VNET_LEN: usize = 10;

/// One frame as it left the pipeline for the hold port, with what it arrived with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldFrame {
    pub ingress_port: u16,
    /// The virtio-net header it was received with (checksum and GSO state).
    pub vnet: [u8; VNET_LEN],
    pub frame: Vec<u8>,
    /// The release count when it was held: a later release runs it again, an earlier one
    /// had already changed the tables it met.
    pub generation: u64,
}

/// A TCP segment's identity: addresses, ports and sequence number.
type SegmentKey = [u8; 16];

#[derive(Debug, Default)]
struct Inner {
    frames: VecDeque<(HeldFrame, Option<SegmentKey>)>,
    /// How many frames were ever taken from the front: frame `n` (counted from the first
    /// ever held) is at `frames[n - taken]`.
    taken: u64,
    /// Held TCP segments with data, SYN or FIN, by key: their number `n`.
    segments: HashMap<SegmentKey, u64>,
    /// Frames held per ingress port (index = port number).
    per_port: Vec<usize>,
    bytes: usize,
}

/// The key and data length of a TCP segment that a retransmission would repeat (data,
/// SYN or FIN); None for any other frame.
fn segment_of(frame: &[u8]) -> Option<(SegmentKey, usize)> {
    use crate::pipeline::parse::{self, be16, Parsed, L4};
    let Ok(Parsed::Ipv4(ip)) = parse::parse(frame) else {
        return None;
    };
    let L4::Tcp(tcp) = ip.l4 else {
        return None;
    };
    let ip_end = parse::IP + usize::from(be16(frame, parse::IP + 2));
    let data_off = usize::from(frame[tcp + 12] >> 4) * 4;
    let len = ip_end.saturating_sub(tcp + data_off);
    const SYN_FIN: u8 = 0x03;
    if len == 0 && ip.tcp_flags & SYN_FIN == 0 {
        return None;
    }
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&ip.src.to_be_bytes());
    k[4..8].copy_from_slice(&ip.dst.to_be_bytes());
    k[8..10].copy_from_slice(&ip.l4_sport.to_be_bytes());
    k[10..12].copy_from_slice(&ip.l4_dport.to_be_bytes());
    k[12..].copy_from_slice(&ip.tcp_seq.to_be_bytes());
    Some((k, len))
}

/// The hold buffer of one pipeline.
#[derive(Debug, Default)]
pub struct Hold {
    inner: Mutex<Inner>,
    /// Frames held now (read without the lock by the data-plane thread).
    len: AtomicUsize,
    /// Bumped by every write to `backends` or `ipv4_routes`.
    release: AtomicU64,
    /// The last `release` the data-plane thread acted on.
    released: AtomicU64,
    /// Frames taken into the buffer, and frames run again from it (monotonic).
    pub held_total: AtomicU64,
    pub replayed_total: AtomicU64,
    /// Retransmissions of a held segment, not held again (monotonic).
    pub duplicates_total: AtomicU64,
}

/// Why a frame was not held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HoldFull {
    #[error("{MAX_HELD_PER_PORT} frames are held for ingress port {0}")]
    Port(u16),
    #[error("{MAX_HELD} frames or {MAX_HELD_BYTES} bytes are held")]
    Total,
}

impl Hold {
    /// Keeps `frame` (received on `ingress_port` with virtio-net header `vnet`), unless a
    /// bound is reached.
    pub fn push(&self, ingress_port: u16, vnet: &[u8], frame: &[u8]) -> Result<(), HoldFull> {
        let segment = segment_of(frame);
        let mut g = self.inner.lock();
        let mut h = [0u8; VNET_LEN];
        let n = vnet.len().min(VNET_LEN);
        h[..n].copy_from_slice(&vnet[..n]);
        if let Some((key, len)) = segment {
            if let Some(&at) = g.segments.get(&key) {
                // A retransmission of a held segment.
                self.duplicates_total.fetch_add(1, Ordering::Relaxed);
                let i = usize::try_from(at - g.taken).unwrap_or(usize::MAX);
                let held_len = g
                    .frames
                    .get(i)
                    .and_then(|(f, _)| segment_of(&f.frame))
                    .map_or(usize::MAX, |(_, l)| l);
                if len > held_len {
                    let grown = frame.len().saturating_sub(g.frames[i].0.frame.len());
                    if g.bytes + grown > MAX_HELD_BYTES {
                        return Err(HoldFull::Total);
                    }
                    let old = std::mem::replace(&mut g.frames[i].0.frame, frame.to_vec());
                    g.frames[i].0.vnet = h;
                    g.bytes = g.bytes + frame.len() - old.len();
                }
                return Ok(());
            }
        }
        let port = usize::from(ingress_port);
        if g.per_port.len() <= port {
            g.per_port.resize(port + 1, 0);
        }
        if g.per_port[port] >= MAX_HELD_PER_PORT {
            return Err(HoldFull::Port(ingress_port));
        }
        if g.frames.len() >= MAX_HELD || g.bytes + frame.len() > MAX_HELD_BYTES {
            return Err(HoldFull::Total);
        }
        let key = segment.map(|(k, _)| k);
        if let Some(k) = key {
            let at = g.taken + g.frames.len() as u64;
            g.segments.insert(k, at);
        }
        g.frames.push_back((
            HeldFrame {
                ingress_port,
                vnet: h,
                frame: frame.to_vec(),
                generation: self.release.load(Ordering::Acquire),
            },
            key,
        ));
        g.per_port[port] += 1;
        g.bytes += frame.len();
        self.len.store(g.frames.len(), Ordering::Release);
        self.held_total.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Frames held now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A lock may have been lifted: the held frames are to be run again.
    pub fn release(&self) {
        self.release.fetch_add(1, Ordering::AcqRel);
    }

    /// If a release happened since the last call: the frames held before it, oldest first
    /// (frames held after it met the released tables already and stay). The data-plane
    /// thread's side of [`Hold::release`].
    pub fn take_release(&self) -> Option<Vec<HeldFrame>> {
        let r = self.release.load(Ordering::Acquire);
        if self.released.load(Ordering::Relaxed) == r {
            return None;
        }
        self.released.store(r, Ordering::Relaxed);
        let mut g = self.inner.lock();
        // Generations never decrease in push order: the frames to run are a prefix.
        let n = g
            .frames
            .iter()
            .take_while(|(f, _)| f.generation < r)
            .count();
        let taken: Vec<(HeldFrame, Option<SegmentKey>)> = g.frames.drain(..n).collect();
        g.taken += n as u64;
        let mut frames = Vec::with_capacity(taken.len());
        for (f, key) in taken {
            let port = usize::from(f.ingress_port);
            g.per_port[port] -= 1;
            g.bytes -= f.frame.len();
            if let Some(k) = key {
                g.segments.remove(&k);
            }
            frames.push(f);
        }
        self.len.store(g.frames.len(), Ordering::Release);
        self.replayed_total
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        Some(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + TCP frame of client port `sport` with sequence number `seq`,
    /// TCP flags `flags` and `data`.
    fn tcp(sport: u16, seq: u32, flags: u8, data: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        let total = (20 + 20 + data.len()) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 96, 0, 1]);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f[38..42].copy_from_slice(&seq.to_be_bytes());
        f[46] = 5 << 4;
        f[47] = flags;
        f.extend_from_slice(data);
        f
    }

    const ACK: u8 = 0x10;
    const PSH_ACK: u8 = 0x18;

    #[test]
    fn a_retransmission_of_a_held_segment_is_not_held_twice() {
        let h = Hold::default();
        let req = tcp(1000, 7, PSH_ACK, b"request");
        h.push(1, &[], &req).unwrap();
        for _ in 0..5 {
            h.push(1, &[], &req).unwrap();
        }
        assert_eq!(h.len(), 1, "five retransmissions, one frame");
        assert_eq!(h.duplicates_total.load(Ordering::Relaxed), 5);
        // Another connection, another segment of the same one, pure ACKs: each held.
        h.push(1, &[], &tcp(1001, 7, PSH_ACK, b"request")).unwrap();
        h.push(1, &[], &tcp(1000, 14, PSH_ACK, b"more")).unwrap();
        h.push(1, &[], &tcp(1000, 18, ACK, b"")).unwrap();
        h.push(1, &[], &tcp(1000, 18, ACK, b"")).unwrap();
        assert_eq!(h.len(), 5);
        h.release();
        let got = h.take_release().expect("released");
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].frame, req);
        // Taken: the same segment may be held again (a lock still on holds it again).
        h.push(1, &[], &req).unwrap();
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn a_longer_retransmission_replaces_the_held_segment() {
        let h = Hold::default();
        let first = tcp(1000, 7, PSH_ACK, b"one");
        let collapsed = tcp(1000, 7, PSH_ACK, b"one+two");
        h.push(2, &[1; VNET_LEN], &first).unwrap();
        h.push(2, &[2; VNET_LEN], &collapsed).unwrap();
        h.push(2, &[3; VNET_LEN], &first).unwrap();
        assert_eq!(h.len(), 1);
        h.release();
        let got = h.take_release().expect("released");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].frame, collapsed, "the longer one is kept");
        assert_eq!(got[0].vnet, [2; VNET_LEN], "with its own header");
        assert!(h.is_empty());
    }

    #[test]
    fn frames_wait_until_a_release_and_come_back_in_order_with_their_header() {
        let h = Hold::default();
        assert_eq!(h.take_release(), None);
        h.push(3, &[1; VNET_LEN], b"one").unwrap();
        h.push(4, &[], b"two").unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h.take_release(), None, "nothing released yet");
        h.release();
        let got = h.take_release().expect("released");
        assert_eq!(
            got,
            vec![
                HeldFrame {
                    ingress_port: 3,
                    vnet: [1; VNET_LEN],
                    frame: b"one".to_vec(),
                    generation: 0,
                },
                HeldFrame {
                    ingress_port: 4,
                    vnet: [0; VNET_LEN],
                    frame: b"two".to_vec(),
                    generation: 0,
                },
            ]
        );
        assert!(h.is_empty());
        assert_eq!(h.take_release(), None, "one release, one replay");
        assert_eq!(h.held_total.load(Ordering::Relaxed), 2);
        assert_eq!(h.replayed_total.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_frame_held_after_a_release_waits_for_the_next_one() {
        let h = Hold::default();
        h.push(1, &[], b"before").unwrap();
        h.release();
        // The data-plane thread holds a frame after the write but before its next round:
        // that frame met the new tables already.
        h.push(1, &[], b"after").unwrap();
        let got = h.take_release().expect("released");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].frame, b"before");
        assert_eq!(h.len(), 1);
        assert_eq!(h.take_release(), None);
        h.release();
        assert_eq!(h.take_release().map(|v| v.len()), Some(1));
        assert!(h.is_empty());
    }

    #[test]
    fn the_bounds_per_port_and_in_all_refuse_and_a_release_frees_them() {
        let h = Hold::default();
        for _ in 0..MAX_HELD_PER_PORT {
            h.push(1, &[], b"x").unwrap();
        }
        assert_eq!(h.push(1, &[], b"x"), Err(HoldFull::Port(1)));
        let mut port = 2;
        while h.len() < MAX_HELD {
            for _ in 0..MAX_HELD_PER_PORT.min(MAX_HELD - h.len()) {
                h.push(port, &[], b"x").unwrap();
            }
            port += 1;
        }
        assert_eq!(h.push(port, &[], b"x"), Err(HoldFull::Total));
        h.release();
        assert_eq!(h.take_release().map(|v| v.len()), Some(MAX_HELD));
        h.push(1, &[], b"x").expect("room again after the release");
        let big = vec![0u8; MAX_HELD_BYTES];
        assert_eq!(h.push(2, &[], &big), Err(HoldFull::Total), "bytes bound");
    }
}
