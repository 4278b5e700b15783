//! Maglev slot tables (Eisenbud et al., NSDI 2016): every backend gets a permutation
//! of the slots from two hashes (offset, skip), and backends take turns claiming
//! their next preferred free slot until the table is full.
//!
//! [`rebalance`] keeps the previous table where it can: when a backend leaves, only
//! its slots are handed out (to the owners a fresh table would give them); when one
//! joins, it takes exactly the slots a fresh table gives it. No other slot moves, so
//! connections that have not been pinned yet keep their backend.

use std::collections::HashSet;

/// Default slot count: a prime, as the permutation needs.
pub const DEFAULT_SLOTS: u16 = 1021;

/// Whether `n` is prime (slot counts must be).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

fn fnv1a(seed: u64, data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final avalanche (splitmix64) so that close ids spread well.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A fresh Maglev table over `backends` (backend ids, any order; 0 is not a backend)
/// with `m` slots (prime). Each slot holds a backend id; an empty input gives an
/// empty vector.
pub fn populate(backends: &[u16], m: u16) -> Vec<u16> {
    let mut ids: Vec<u16> = backends.iter().copied().filter(|b| *b != 0).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() || m == 0 {
        return Vec::new();
    }
    let m64 = u64::from(m);
    let perms: Vec<(u64, u64)> = ids
        .iter()
        .map(|id| {
            let key = id.to_be_bytes();
            let offset = fnv1a(0x5151, &key) % m64;
            let skip = if m > 1 {
                fnv1a(0xa3a3, &key) % (m64 - 1) + 1
            } else {
                1
            };
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; ids.len()];
    let mut table = vec![0u16; usize::from(m)];
    let mut filled = 0usize;
    'outer: loop {
        for (i, id) in ids.iter().enumerate() {
            let (offset, skip) = perms[i];
            let mut c = (offset + next[i] * skip) % m64;
            while table[c as usize] != 0 {
                next[i] += 1;
                c = (offset + next[i] * skip) % m64;
            }
            table[c as usize] = *id;
            next[i] += 1;
            filled += 1;
            if filled == usize::from(m) {
                break 'outer;
            }
        }
    }
    table
}

/// The table for `backends`, moving as few slots as possible from `prev`.
pub fn rebalance(prev: &[u16], backends: &[u16], m: u16) -> Vec<u16> {
    let now: HashSet<u16> = backends.iter().copied().collect();
    if !now.is_empty()
        && prev.len() == usize::from(m)
        && !prev.contains(&0)
        && prev.iter().all(|b| now.contains(b))
        && now.iter().all(|b| prev.contains(b))
    {
        // The same backends: every slot keeps its backend (what the merge below
        // gives), without building the fresh table.
        return prev.to_vec();
    }
    merge(prev, populate(backends, m), &now)
}

/// `prev` moved towards `fresh`: slots of added backends take them, the others keep a
/// backend that is still there.
fn merge(prev: &[u16], fresh: Vec<u16>, now: &HashSet<u16>) -> Vec<u16> {
    if fresh.is_empty() || prev.len() != fresh.len() {
        return fresh;
    }
    let before: HashSet<u16> = prev.iter().copied().filter(|b| *b != 0).collect();
    let added: HashSet<u16> = now.difference(&before).copied().collect();
    prev.iter()
        .zip(fresh.iter())
        .map(|(old, new)| {
            if added.contains(new) {
                *new
            } else if now.contains(old) {
                *old
            } else {
                *new
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The shortcut for unchanged backends gives what the merge gives.
    #[test]
    fn unchanged_backends_keep_the_merged_table() {
        for n in 1..=6u16 {
            let ids: Vec<u16> = (1..=n).collect();
            let mut prev = populate(&ids, 13);
            // A table that went through changes (not the fresh one).
            prev = rebalance(&prev, &ids[..ids.len().saturating_sub(1).max(1)], 13);
            prev = rebalance(&prev, &ids, 13);
            let mut reordered = ids.clone();
            reordered.reverse();
            let now: HashSet<u16> = ids.iter().copied().collect();
            assert_eq!(
                rebalance(&prev, &reordered, 13),
                merge(&prev, populate(&reordered, 13), &now),
                "{n} backends"
            );
        }
    }

    fn counts(t: &[u16]) -> HashMap<u16, usize> {
        let mut c = HashMap::new();
        for b in t {
            *c.entry(*b).or_insert(0) += 1;
        }
        c
    }

    #[test]
    fn fills_every_slot_with_an_even_spread() {
        for n in [1u16, 2, 3, 5, 10] {
            let backends: Vec<u16> = (1..=n).collect();
            let t = populate(&backends, DEFAULT_SLOTS);
            assert_eq!(t.len(), 1021);
            assert!(t.iter().all(|b| backends.contains(b)));
            let c = counts(&t);
            assert_eq!(c.len(), usize::from(n));
            let ideal = 1021.0 / f64::from(n);
            for (b, k) in c {
                let dev = (k as f64 - ideal).abs() / ideal;
                assert!(dev < 0.02, "backend {b}: {k} slots vs ideal {ideal:.1}");
            }
        }
    }

    #[test]
    fn deterministic_and_order_independent() {
        assert_eq!(populate(&[3, 1, 2], 1021), populate(&[1, 2, 3], 1021));
        assert!(populate(&[], 1021).is_empty());
    }

    #[test]
    fn removing_a_backend_moves_only_its_slots() {
        let t3 = populate(&[1, 2, 3], DEFAULT_SLOTS);
        let t2 = rebalance(&t3, &[1, 3], DEFAULT_SLOTS);
        let mut moved_to = HashMap::new();
        for (a, b) in t3.iter().zip(&t2) {
            if *a != 2 {
                assert_eq!(a, b, "a slot of a remaining backend moved");
            } else {
                assert_ne!(*b, 2);
                *moved_to.entry(*b).or_insert(0usize) += 1;
            }
        }
        // The freed slots are spread over the remaining backends.
        let c = counts(&t2);
        for k in c.values() {
            let dev = (*k as f64 - 510.5).abs() / 510.5;
            assert!(dev < 0.05, "uneven after removal: {c:?}");
        }
        assert_eq!(moved_to.len(), 2);
    }

    #[test]
    fn adding_a_backend_takes_slots_only_for_itself() {
        let t2 = populate(&[1, 3], DEFAULT_SLOTS);
        let t3 = rebalance(&t2, &[1, 3, 7], DEFAULT_SLOTS);
        for (a, b) in t2.iter().zip(&t3) {
            assert!(a == b || *b == 7);
        }
        let c = counts(&t3);
        let k7 = c[&7] as f64;
        assert!((k7 - 340.3).abs() / 340.3 < 0.03, "{c:?}");
    }

    #[test]
    fn primes() {
        assert!(is_prime(1021));
        assert!(is_prime(65521));
        assert!(!is_prime(1020));
        assert!(!is_prime(1));
    }
}
