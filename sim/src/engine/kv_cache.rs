//! The paged KV cache: a fixed pool of blocks, reference counted, with prefix
//! caching as in vLLM V1. A full block is keyed by the chained hash of its
//! tokens (and its adapter); freed blocks keep their key and sit in an LRU
//! free queue until they are reused, so a later request with the same prefix
//! can take them back ("free but cached"). Every operation is O(1) per block
//! touched, never O(pool).

use std::collections::HashMap;

use super::hash::BuildPrehashed;

/// Index of a block in the pool.
pub type BlockId = u32;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Block {
    ref_count: u32,
    /// Prefix-cache key while the block holds a full, cached block of tokens.
    hash: Option<u64>,
    prev: u32,
    next: u32,
    in_free_queue: bool,
}

/// Block pool with an intrusive doubly-linked LRU free queue: the head is
/// evicted first, freed blocks are appended at the tail.
#[derive(Debug, Clone)]
pub struct BlockPool {
    blocks: Vec<Block>,
    head: u32,
    tail: u32,
    free_count: u32,
    cached: HashMap<u64, BlockId, BuildPrehashed>,
    caching_enabled: bool,
}

impl BlockPool {
    /// A pool of `num_blocks` free blocks.
    pub fn new(num_blocks: u32, caching_enabled: bool) -> Self {
        let mut pool = BlockPool {
            blocks: Vec::with_capacity(num_blocks as usize),
            head: NIL,
            tail: NIL,
            free_count: 0,
            cached: HashMap::default(),
            caching_enabled,
        };
        for id in 0..num_blocks {
            pool.blocks.push(Block {
                ref_count: 0,
                hash: None,
                prev: NIL,
                next: NIL,
                in_free_queue: false,
            });
            pool.push_back(id);
        }
        pool
    }

    /// Total blocks.
    pub fn capacity(&self) -> u32 {
        self.blocks.len() as u32
    }

    /// Blocks with no reference (cached or not): what can still be allocated.
    pub fn free_blocks(&self) -> u32 {
        self.free_count
    }

    /// Blocks referenced by at least one request.
    pub fn used_blocks(&self) -> u32 {
        self.capacity() - self.free_count
    }

    /// vLLM's `kv_cache_usage_perc`: share of blocks in use (free-but-cached
    /// blocks count as free, as in vLLM).
    pub fn usage(&self) -> f64 {
        if self.blocks.is_empty() {
            return 0.0;
        }
        f64::from(self.used_blocks()) / self.blocks.len() as f64
    }

    /// The block caching `hash`, if any (in use or free-but-cached).
    pub fn lookup(&self, hash: u64) -> Option<BlockId> {
        if !self.caching_enabled {
            return None;
        }
        self.cached.get(&hash).copied()
    }

    /// Takes a reference on a cached block found by [`lookup`](Self::lookup).
    pub fn touch(&mut self, id: BlockId) {
        let block = &mut self.blocks[id as usize];
        if block.ref_count == 0 {
            self.unlink(id);
        }
        self.blocks[id as usize].ref_count += 1;
    }

    /// Allocates `n` blocks, evicting least-recently-freed cached blocks;
    /// `None` (and nothing allocated) when fewer than `n` are free.
    pub fn allocate(&mut self, n: u32, out: &mut Vec<BlockId>) -> bool {
        if n > self.free_count {
            return false;
        }
        for _ in 0..n {
            let id = self.head;
            debug_assert_ne!(id, NIL);
            self.unlink(id);
            if let Some(h) = self.blocks[id as usize].hash.take() {
                if self.cached.get(&h) == Some(&id) {
                    self.cached.remove(&h);
                }
            }
            self.blocks[id as usize].ref_count = 1;
            out.push(id);
        }
        true
    }

    /// Registers a just-filled block under its prefix hash so later requests
    /// can hit it. A hash already cached by another block keeps that block.
    pub fn cache_full_block(&mut self, id: BlockId, hash: u64) {
        if !self.caching_enabled || self.blocks[id as usize].hash.is_some() {
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.cached.entry(hash) {
            e.insert(id);
            self.blocks[id as usize].hash = Some(hash);
        }
    }

    /// Drops one reference on each block. Blocks are released tail first so
    /// that the end of a sequence is evicted before its (more shareable) start.
    pub fn release(&mut self, ids: &[BlockId]) {
        for &id in ids.iter().rev() {
            let block = &mut self.blocks[id as usize];
            debug_assert!(block.ref_count > 0, "double free of block {id}");
            block.ref_count -= 1;
            if block.ref_count == 0 {
                if block.hash.is_none() {
                    // Uncached blocks are worthless: reuse them first.
                    self.push_front(id);
                } else {
                    self.push_back(id);
                }
            }
        }
    }

    /// Reference count of a block (tests and invariants).
    pub fn ref_count(&self, id: BlockId) -> u32 {
        self.blocks[id as usize].ref_count
    }

    /// Number of blocks currently holding a cached prefix.
    pub fn cached_blocks(&self) -> usize {
        self.cached.len()
    }

    fn push_back(&mut self, id: BlockId) {
        let tail = self.tail;
        {
            let b = &mut self.blocks[id as usize];
            b.prev = tail;
            b.next = NIL;
            b.in_free_queue = true;
        }
        if tail == NIL {
            self.head = id;
        } else {
            self.blocks[tail as usize].next = id;
        }
        self.tail = id;
        self.free_count += 1;
    }

    fn push_front(&mut self, id: BlockId) {
        let head = self.head;
        {
            let b = &mut self.blocks[id as usize];
            b.prev = NIL;
            b.next = head;
            b.in_free_queue = true;
        }
        if head == NIL {
            self.tail = id;
        } else {
            self.blocks[head as usize].prev = id;
        }
        self.head = id;
        self.free_count += 1;
    }

    fn unlink(&mut self, id: BlockId) {
        let (prev, next) = {
            let b = &mut self.blocks[id as usize];
            debug_assert!(b.in_free_queue);
            b.in_free_queue = false;
            (b.prev, b.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.blocks[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.blocks[next as usize].prev = prev;
        }
        self.free_count -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_fails_whole_when_short() {
        let mut pool = BlockPool::new(4, true);
        let mut got = Vec::new();
        assert!(pool.allocate(3, &mut got));
        assert!(!pool.allocate(2, &mut got));
        assert_eq!(got.len(), 3);
        assert_eq!(pool.free_blocks(), 1);
    }

    #[test]
    fn freed_cached_block_can_be_hit_until_evicted() {
        let mut pool = BlockPool::new(2, true);
        let mut got = Vec::new();
        assert!(pool.allocate(1, &mut got));
        pool.cache_full_block(got[0], 42);
        pool.release(&got);
        assert_eq!(pool.lookup(42), Some(got[0]));
        assert_eq!(pool.usage(), 0.0);
        // The uncached block is reused first; the cached one survives.
        let mut more = Vec::new();
        assert!(pool.allocate(1, &mut more));
        assert_eq!(pool.lookup(42), Some(got[0]));
        // Now it must be evicted.
        assert!(pool.allocate(1, &mut more));
        assert_eq!(pool.lookup(42), None);
    }

    #[test]
    fn touch_takes_a_cached_block_out_of_the_free_queue() {
        let mut pool = BlockPool::new(2, true);
        let mut got = Vec::new();
        assert!(pool.allocate(1, &mut got));
        pool.cache_full_block(got[0], 7);
        pool.release(&got);
        pool.touch(got[0]);
        assert_eq!(pool.free_blocks(), 1);
        assert_eq!(pool.ref_count(got[0]), 1);
    }
}
