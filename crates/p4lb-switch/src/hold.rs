//! The hold port ([`p4lb_p4::HOLD_PORT`]): frames that `backend_locked` or `route_locked`
//! send there wait in a [`Hold`] buffer instead of being dropped, and are run through the
//! pipeline again, as if they had just arrived on their ingress port, once the `backends` or
//! `ipv4_routes` table changes (the unlock is such a change). A client whose segments met the
//! lock thus reaches the unlocked (possibly new) backend right away, whose ACK and reply end
//! the client's backed-off retransmission timeout (docs/migration.md, "At unlock"). The
//! switch acknowledges nothing itself: only the backend's own TCP does.
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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Most frames held for one ingress port.
pub const MAX_HELD_PER_PORT: usize = 1024;
/// Most frames held in all.
pub const MAX_HELD: usize = 8192;
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

#[derive(Debug, Default)]
struct Inner {
    frames: VecDeque<HeldFrame>,
    /// Frames held per ingress port (index = port number).
    per_port: Vec<usize>,
    bytes: usize,
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
        let mut g = self.inner.lock();
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
        let mut h = [0u8; VNET_LEN];
        let n = vnet.len().min(VNET_LEN);
        h[..n].copy_from_slice(&vnet[..n]);
        g.frames.push_back(HeldFrame {
            ingress_port,
            vnet: h,
            frame: frame.to_vec(),
            generation: self.release.load(Ordering::Acquire),
        });
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
        let n = g.frames.iter().take_while(|f| f.generation < r).count();
        let frames: Vec<HeldFrame> = g.frames.drain(..n).collect();
        for f in &frames {
            let port = usize::from(f.ingress_port);
            g.per_port[port] -= 1;
            g.bytes -= f.frame.len();
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
