//! Everything the data path reads and the runtime writes for one committed pipeline config:
//! tables, indirect counters, the transit registers, the digest sink and the hold buffer.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::program::bind::{CounterInfo, Program, RegisterInfo};
use crate::program::spec::{CounterKind, RegisterKind, TableKind};
use crate::program::Act;
use crate::tables::{DefaultEntry, Table};

/// An indirect packets-and-bytes counter array.
#[derive(Debug)]
pub struct Counter {
    pub info: CounterInfo,
    packets: Vec<AtomicU64>,
    bytes: Vec<AtomicU64>,
}

impl Counter {
    fn new(info: CounterInfo) -> Counter {
        let n = info.size as usize;
        Counter {
            info,
            packets: (0..n).map(|_| AtomicU64::new(0)).collect(),
            bytes: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Counts one packet of `len` bytes at `index`; out-of-range indexes are ignored
    /// (the P4 program guards every index it uses).
    #[inline]
    pub fn count(&self, index: usize, len: usize) {
        if let (Some(p), Some(b)) = (self.packets.get(index), self.bytes.get(index)) {
            p.fetch_add(1, Ordering::Relaxed);
            b.fetch_add(len as u64, Ordering::Relaxed);
        }
    }

    pub fn get(&self, index: usize) -> Option<(u64, u64)> {
        Some((
            self.packets.get(index)?.load(Ordering::Relaxed),
            self.bytes.get(index)?.load(Ordering::Relaxed),
        ))
    }

    pub fn set(&self, index: usize, packets: u64, bytes: u64) -> bool {
        match (self.packets.get(index), self.bytes.get(index)) {
            (Some(p), Some(b)) => {
                p.store(packets, Ordering::Relaxed);
                b.store(bytes, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    pub fn size(&self) -> usize {
        self.packets.len()
    }
}

/// `register<bit<W>>` with W <= 32 (the transit registers). Cells are separate atomics: the
/// one data-plane thread reads and writes them; a P4Runtime register write from another
/// thread lands cell by cell, like BMv2's.
#[derive(Debug)]
pub struct Register {
    pub id: u32,
    pub bits: u32,
    cells: Vec<AtomicU32>,
}

impl Register {
    fn new(info: &RegisterInfo) -> Register {
        Register {
            id: info.id,
            bits: info.bits,
            cells: (0..info.size).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    #[inline]
    pub fn read(&self, index: usize) -> u32 {
        self.cells
            .get(index)
            .map(|c| c.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Writes `v` cut to the register's width (as a P4 assignment to `bit<W>` does).
    #[inline]
    pub fn write(&self, index: usize, v: u32) {
        let mask = if self.bits >= 32 {
            u32::MAX
        } else {
            (1u32 << self.bits) - 1
        };
        if let Some(c) = self.cells.get(index) {
            c.store(v & mask, Ordering::Relaxed);
        }
    }

    pub fn size(&self) -> usize {
        self.cells.len()
    }
}

/// One `conn_learn` digest message (the client's 5-tuple, the backend, the event); its
/// layout on the wire is p4lb-p4's.
pub use p4lb_p4::ConnLearn as LearnMsg;

/// Where the data path drops digest messages; the digest engine (runtime::digest) drains it.
#[derive(Debug)]
pub struct DigestSink {
    pub enabled: AtomicBool,
    tx: tokio::sync::mpsc::Sender<LearnMsg>,
    pub overflows: AtomicU64,
}

impl DigestSink {
    #[inline]
    pub fn send(&self, m: LearnMsg) {
        if self.enabled.load(Ordering::Relaxed) && self.tx.try_send(m).is_err() {
            self.overflows.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The state of one committed pipeline.
#[derive(Debug)]
pub struct Dataplane {
    pub program: Arc<Program>,
    /// In the order of [`Program::tables`]: those the data path applies first, indexed by
    /// [`TableKind::index`].
    pub tables: Vec<Table>,
    /// Indexed by [`CounterKind`] as usize.
    pub counters: Vec<Counter>,
    /// Indexed by [`RegisterKind`] as usize (the transit slots, pipeline::transit).
    pub registers: Vec<Register>,
    pub digests: DigestSink,
    /// Frames sent to the hold port (crate::hold).
    pub hold: crate::hold::Hold,
    pub epoch: Instant,
}

impl Dataplane {
    /// Fresh state (empty tables, zero counters) for `program`; returns the receiving end of
    /// the digest channel.
    pub fn new(
        program: Arc<Program>,
        epoch: Instant,
    ) -> (Dataplane, tokio::sync::mpsc::Receiver<LearnMsg>) {
        let tables = program
            .tables
            .iter()
            .map(|info| {
                let (id, vals) = &info.default_action;
                let kind = program
                    .actions
                    .get(id)
                    .map(|a| a.kind)
                    .unwrap_or(crate::program::ActionKind::Nop);
                let params: Vec<Option<u64>> = program
                    .actions
                    .get(id)
                    .map(|a| {
                        a.params
                            .iter()
                            .zip(vals.iter())
                            .map(|(p, v)| p.as_ref().map(|_| *v))
                            .collect()
                    })
                    .unwrap_or_default();
                let default = DefaultEntry {
                    act: Act::build(kind, &params),
                    action_id: *id,
                    params,
                };
                Table::new(info.clone(), default)
            })
            .collect();
        let counters = program.counters.iter().cloned().map(Counter::new).collect();
        let registers = program.registers.iter().map(Register::new).collect();
        let (tx, rx) = tokio::sync::mpsc::channel(65536);
        let digests = DigestSink {
            enabled: AtomicBool::new(false),
            tx,
            overflows: AtomicU64::new(0),
        };
        (
            Dataplane {
                program,
                tables,
                counters,
                registers,
                digests,
                hold: crate::hold::Hold::default(),
                epoch,
            },
            rx,
        )
    }

    #[inline]
    pub fn table(&self, kind: TableKind) -> &Table {
        &self.tables[kind.index()]
    }

    #[inline]
    pub fn counter(&self, kind: CounterKind) -> &Counter {
        &self.counters[kind as usize]
    }

    #[inline]
    pub fn register(&self, kind: RegisterKind) -> &Register {
        &self.registers[kind as usize]
    }

    pub fn register_by_id(&self, id: u32) -> Option<&Register> {
        self.registers.iter().find(|r| r.id == id)
    }

    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}
