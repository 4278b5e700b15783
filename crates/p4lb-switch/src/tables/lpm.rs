//! Longest-prefix match over 32-bit keys: one hash map per prefix length present, probed
//! from the longest length down. With the handful of distinct lengths a p4lb switch uses
//! (/32 pods, a few subnets, a default route) this is a few hash probes per lookup.

use std::collections::HashMap;

use super::FxBuild;

#[derive(Debug)]
pub struct Lpm<V> {
    /// (prefix length, masked prefix -> value), sorted by prefix length, longest first.
    levels: Vec<(u32, HashMap<u32, V, FxBuild>)>,
    len: usize,
}

impl<V> Default for Lpm<V> {
    fn default() -> Self {
        Lpm {
            levels: Vec::new(),
            len: 0,
        }
    }
}

#[inline]
pub fn mask(len: u32) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32))
    }
}

impl<V> Lpm<V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn lookup(&self, addr: u32) -> Option<&V> {
        for (plen, map) in &self.levels {
            if let Some(v) = map.get(&(addr & mask(*plen))) {
                return Some(v);
            }
        }
        None
    }

    pub fn get(&self, prefix: u32, plen: u32) -> Option<&V> {
        self.levels
            .iter()
            .find(|(l, _)| *l == plen)
            .and_then(|(_, m)| m.get(&(prefix & mask(plen))))
    }

    pub fn get_mut(&mut self, prefix: u32, plen: u32) -> Option<&mut V> {
        self.levels
            .iter_mut()
            .find(|(l, _)| *l == plen)
            .and_then(|(_, m)| m.get_mut(&(prefix & mask(plen))))
    }

    /// Inserts or replaces; returns the previous value.
    pub fn insert(&mut self, prefix: u32, plen: u32, v: V) -> Option<V> {
        let key = prefix & mask(plen);
        let pos = match self.levels.iter().position(|(l, _)| *l <= plen) {
            Some(p) if self.levels[p].0 == plen => p,
            Some(p) => {
                self.levels.insert(p, (plen, HashMap::with_hasher(FxBuild)));
                p
            }
            None => {
                self.levels.push((plen, HashMap::with_hasher(FxBuild)));
                self.levels.len() - 1
            }
        };
        let old = self.levels[pos].1.insert(key, v);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove(&mut self, prefix: u32, plen: u32) -> Option<V> {
        let pos = self.levels.iter().position(|(l, _)| *l == plen)?;
        let old = self.levels[pos].1.remove(&(prefix & mask(plen)));
        if old.is_some() {
            self.len -= 1;
        }
        if self.levels[pos].1.is_empty() {
            self.levels.remove(pos);
        }
        old
    }

    pub fn iter(&self) -> impl Iterator<Item = &V> {
        self.levels.iter().flat_map(|(_, m)| m.values())
    }

    pub fn clear(&mut self) {
        self.levels.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let mut t = Lpm::default();
        t.insert(0, 0, "default");
        t.insert(0x0a00_0000, 8, "ten");
        t.insert(0x0a01_0200, 24, "ten-one-two");
        t.insert(0x0a01_0203, 32, "host");
        assert_eq!(t.lookup(0x0a01_0203), Some(&"host"));
        assert_eq!(t.lookup(0x0a01_0204), Some(&"ten-one-two"));
        assert_eq!(t.lookup(0x0a09_0000), Some(&"ten"));
        assert_eq!(t.lookup(0x0b00_0000), Some(&"default"));
        assert_eq!(t.len(), 4);
        assert_eq!(t.remove(0x0a01_0200, 24), Some("ten-one-two"));
        assert_eq!(t.lookup(0x0a01_0204), Some(&"ten"));
        assert_eq!(t.remove(0x0a01_0200, 24), None);
        assert_eq!(t.len(), 3);
    }
}
