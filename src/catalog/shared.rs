//! Tables that share their unchanged parts between snapshots. A published `Compiled` is
//! immutable and read by every query; an incremental update copies only the chunks (or shards)
//! it changes and shares the rest through `Arc`, so one changed object costs a few chunk copies,
//! not a copy of 700k names.

use std::sync::Arc;

use super::names::{NameHasher, NameMap, WireName};

/// Elements per chunk: small enough that copying one is cheap, large enough that the chunk
/// list stays short (100k records: ~700 chunks of names).
const CHUNK: usize = 1024;

/// A vector in `Arc`'d chunks: cloning it copies the chunk list, not the elements; writing an
/// element copies its chunk only while the chunk is shared.
#[derive(Debug)]
pub struct ChunkVec<T> {
    chunks: Vec<Arc<Vec<T>>>,
    len: usize,
}

impl<T> Clone for ChunkVec<T> {
    fn clone(&self) -> Self {
        ChunkVec {
            chunks: self.chunks.clone(),
            len: self.len,
        }
    }
}

impl<T> Default for ChunkVec<T> {
    fn default() -> Self {
        ChunkVec {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> ChunkVec<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    pub fn iter(&self) -> <&Self as IntoIterator>::IntoIter {
        self.into_iter()
    }

    /// Reserves room in the chunk list for `n` more elements (chunks themselves are allocated
    /// whole, never grown by doubling).
    pub fn reserve(&mut self, n: usize) {
        self.chunks.reserve(n.div_ceil(CHUNK));
    }

    pub fn shrink_to_fit(&mut self) {
        self.chunks.shrink_to_fit();
    }
}

impl<T: Clone> ChunkVec<T> {
    pub fn push(&mut self, v: T) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        if let Some(last) = self.chunks.last_mut() {
            Arc::make_mut(last).push(v);
            self.len += 1;
        }
    }

    /// The element at `i`, for writing: its chunk is copied first if another table shares it.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        let c = self.chunks.get_mut(i / CHUNK)?;
        Arc::make_mut(c).get_mut(i % CHUNK)
    }

    /// Removes element `i`, moving the last element into its place.
    pub fn swap_remove(&mut self, i: usize) -> Option<T> {
        if i >= self.len {
            return None;
        }
        let last = self.pop()?;
        if i == self.len {
            return Some(last);
        }
        self.get_mut(i).map(|slot| std::mem::replace(slot, last))
    }

    /// Removes and returns the last element.
    pub fn pop(&mut self) -> Option<T> {
        let last = self.chunks.last_mut()?;
        let v = Arc::make_mut(last).pop();
        if last.is_empty() {
            self.chunks.pop();
        }
        if v.is_some() {
            self.len -= 1;
        }
        v
    }
}

impl<T> std::ops::Index<usize> for ChunkVec<T> {
    type Output = T;
    #[inline]
    fn index(&self, i: usize) -> &T {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl<'a, T> IntoIterator for &'a ChunkVec<T> {
    type Item = &'a T;
    type IntoIter = std::iter::FlatMap<
        std::slice::Iter<'a, Arc<Vec<T>>>,
        std::slice::Iter<'a, T>,
        fn(&'a Arc<Vec<T>>) -> std::slice::Iter<'a, T>,
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.chunks.iter().flat_map(|c| c.iter())
    }
}

impl<T: Clone> FromIterator<T> for ChunkVec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(it: I) -> Self {
        let mut v = ChunkVec::default();
        for x in it {
            v.push(x);
        }
        v
    }
}

impl<T: Clone> From<Vec<T>> for ChunkVec<T> {
    fn from(v: Vec<T>) -> Self {
        v.into_iter().collect()
    }
}

/// Shards of the name table, by the top bits of the name's hash.
const SHARD_BITS: u32 = 10;

/// The name table in `Arc`'d shards: a lookup picks the shard by a few bytes of the name's first
/// label (far cheaper than hashing the name twice) and hashes the name inside it; an update
/// copies the shards it touches (~700 names each at 100k records) and shares the rest. A
/// record's names share their first label, so one record's change touches one or two shards.
#[derive(Debug, Clone)]
pub struct NameTable<V> {
    shards: Box<[Arc<NameMap<V>>]>,
    hasher: NameHasher,
}

impl<V> Default for NameTable<V> {
    fn default() -> Self {
        let hasher = NameHasher::default();
        NameTable {
            shards: (0..1usize << SHARD_BITS)
                .map(|_| Arc::new(NameMap::with_hasher(hasher.clone())))
                .collect(),
            hasher,
        }
    }
}

impl<V> NameTable<V> {
    #[inline]
    fn shard(&self, key: &[u8]) -> usize {
        // A few bytes of the first label (its length, first, middle and last byte) and the
        // name's length, mixed by one multiply: no loop, so a lookup costs about one hash, as
        // an unsharded table's does. Uneven shards only make an update copy more.
        let n = key.first().map_or(0, |l| *l as usize);
        let at = |i: usize| u32::from(key.get(i).copied().unwrap_or(0));
        let x = at(1) | at(n) << 8 | at(n.div_ceil(2)) << 16 | (n as u32) << 24;
        let h = (x ^ (key.len() as u32).rotate_left(12)).wrapping_mul(0x9e37_79b1);
        (h >> (32 - SHARD_BITS)) as usize
    }

    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.shards[self.shard(key)].get(key)
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// Names in the table (counted over the shards: for metrics, not the query path).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.is_empty())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&WireName, &V)> + '_ {
        self.shards.iter().flat_map(|s| s.iter())
    }

    /// Builds a table from a map in one pass (a full compile): every shard is new.
    pub fn from_map(map: NameMap<V>) -> Self {
        let mut t = NameTable::<V>::default();
        let mut shards: Vec<NameMap<V>> = (0..1usize << SHARD_BITS)
            .map(|_| NameMap::with_hasher(t.hasher.clone()))
            .collect();
        let per = map.len() >> SHARD_BITS;
        for s in &mut shards {
            s.reserve(per + per / 4 + 1);
        }
        for (k, v) in map {
            let i = t.shard(&k);
            shards[i].insert(k, v);
        }
        t.shards = shards.into_iter().map(Arc::new).collect();
        t
    }
}

impl<V: Clone> NameTable<V> {
    /// Room for `n` names in all, spread over the shards.
    pub fn reserve(&mut self, n: usize) {
        let per = (n >> SHARD_BITS) + 1;
        for s in self.shards.iter_mut() {
            Arc::make_mut(s).reserve(per + per / 8);
        }
    }

    /// The value at `key`, inserted as the default if absent.
    pub fn entry_or_default(&mut self, key: WireName) -> &mut V
    where
        V: Default,
    {
        let i = self.shard(&key);
        Arc::make_mut(&mut self.shards[i]).entry(key).or_default()
    }

    /// The value at `key`, for writing: its shard is copied first if another table shares it.
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let i = self.shard(key);
        Arc::make_mut(&mut self.shards[i]).get_mut(key)
    }

    pub fn insert(&mut self, key: WireName, v: V) -> Option<V> {
        let i = self.shard(&key);
        Arc::make_mut(&mut self.shards[i]).insert(key, v)
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        let i = self.shard(key);
        if !self.shards[i].contains_key(key) {
            return None;
        }
        Arc::make_mut(&mut self.shards[i]).remove(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_shared_until_written() {
        let mut a: ChunkVec<u32> = (0..3000).collect();
        let b = a.clone();
        *a.get_mut(5).expect("in range") = 7;
        assert_eq!((a[5], b[5]), (7, 5));
        assert!(Arc::ptr_eq(&a.chunks[1], &b.chunks[1]));
        assert!(!Arc::ptr_eq(&a.chunks[0], &b.chunks[0]));
        assert_eq!(a.pop(), Some(2999));
        assert_eq!((a.len(), b.len()), (2999, 3000));
        assert_eq!(a.iter().count(), 2999);
    }

    #[test]
    fn name_table_copies_the_touched_shard_only() {
        let key = |i: u32| -> WireName { format!("\x04n{i:03}\x00").into_bytes().into() };
        let mut map = NameMap::default();
        for i in 0..500 {
            map.insert(key(i), i);
        }
        let a = NameTable::from_map(map);
        let mut b = a.clone();
        b.insert(key(999), 999);
        b.remove(&key(3));
        assert_eq!((a.len(), b.len()), (500, 500));
        assert_eq!(a.get(&key(3)), Some(&3));
        assert_eq!(b.get(&key(3)), None);
        assert_eq!(b.get(&key(999)), Some(&999));
        let shared = a
            .shards
            .iter()
            .zip(b.shards.iter())
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count();
        assert!(shared >= a.shards.len() - 2);
    }
}
