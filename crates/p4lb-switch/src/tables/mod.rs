//! Table storage. Exact-match tables are hash maps keyed by the concatenated key fields
//! (packed into a `u128`, enough for every p4lb key); LPM tables use [`lpm::Lpm`].
//!
//! Concurrency: every table sits behind its own `parking_lot::RwLock`. The data path takes
//! the read lock for a single lookup (tens of nanoseconds); a P4Runtime write takes the
//! write lock for one insert/remove. Hit timestamps for idle timeout are atomics inside the
//! entry, so the data path never needs the write lock.

pub mod fxhash;
pub mod lpm;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::program::bind::TableInfo;
use crate::program::Act;

pub use fxhash::FxBuild;
use lpm::Lpm;

/// One installed table entry.
#[derive(Debug)]
pub struct Entry {
    pub act: Act,
    pub action_id: u32,
    /// Parameter values in contract order.
    pub params: Vec<Option<u64>>,
    /// Match values in contract order (the LPM value is already masked).
    pub match_vals: Vec<u64>,
    /// Prefix length of the LPM field (tables without LPM: 0).
    pub prefix_len: u32,
    pub metadata: Vec<u8>,
    pub idle_timeout_ns: i64,
    /// Nanoseconds since the switch's epoch at the last hit (or insertion).
    pub last_hit: AtomicU64,
    /// Set once an idle-timeout notification went out; cleared by the next hit.
    pub idle_notified: AtomicBool,
}

impl Entry {
    #[inline]
    fn touch(&self, now_ns: u64) {
        if self.idle_timeout_ns > 0 {
            self.last_hit.store(now_ns, Ordering::Relaxed);
            if self.idle_notified.load(Ordering::Relaxed) {
                self.idle_notified.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// The default (miss) action of a table.
#[derive(Debug, Clone)]
pub struct DefaultEntry {
    pub act: Act,
    pub action_id: u32,
    pub params: Vec<Option<u64>>,
}

#[derive(Debug)]
pub struct TableData {
    pub exact: HashMap<u128, Entry, FxBuild>,
    pub lpm: Lpm<Entry>,
    pub default: DefaultEntry,
}

impl TableData {
    pub fn len(&self) -> usize {
        self.exact.len() + self.lpm.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A table with its P4Info binding.
#[derive(Debug)]
pub struct Table {
    pub info: TableInfo,
    pub data: RwLock<TableData>,
}

/// Packs exact match values (contract order) into the map key.
#[inline]
pub fn pack_key(info: &TableInfo, vals: &[u64]) -> u128 {
    let mut k: u128 = 0;
    for (f, v) in info.fields.iter().zip(vals) {
        k = (k << f.bits) | u128::from(*v);
    }
    k
}

impl Table {
    pub fn new(info: TableInfo, default: DefaultEntry) -> Table {
        Table {
            info,
            data: RwLock::new(TableData {
                exact: HashMap::with_hasher(FxBuild),
                lpm: Lpm::default(),
                default,
            }),
        }
    }

    /// Exact lookup; returns (hit, action). Misses return the default action.
    #[inline]
    pub fn lookup_exact(&self, key: u128, now_ns: u64) -> (bool, Act) {
        let d = self.data.read();
        match d.exact.get(&key) {
            Some(e) => {
                e.touch(now_ns);
                (true, e.act)
            }
            None => (false, d.default.act),
        }
    }

    /// Longest-prefix lookup of a 32-bit key.
    #[inline]
    pub fn lookup_lpm(&self, addr: u32, now_ns: u64) -> (bool, Act) {
        let d = self.data.read();
        match d.lpm.lookup(addr) {
            Some(e) => {
                e.touch(now_ns);
                (true, e.act)
            }
            None => (false, d.default.act),
        }
    }
}
