//! `BlockManager`: which KV blocks are free, who references them, and the prefix index that
//! lets a new sequence reuse the blocks of an earlier one with the same leading tokens.
//!
//! A full block is keyed by `hash(parent block's key, the block's tokens)`, so a key names the
//! whole prefix up to and including that block. Registered blocks stay in the index after
//! their last reference is released; they are evicted least-recently-used only when a fresh
//! block is needed and no never-cached block is free. Blocks are handed out lowest id first,
//! so the store's memory grows only as far as the pool is actually used.

use crate::KvError;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

/// Index of a block in the pool (and in `KvStore`).
pub type BlockId = u32;

/// Key of the (empty) prefix before the first block.
const ROOT_KEY: u64 = 0x6b69_6c6e_5f6b_7663;

/// Prefix-index counters, in blocks (multiply by the block size for tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixStats {
    /// Full blocks found in the index by `lookup`.
    pub hits: u64,
    /// Full blocks `lookup` looked for and did not find (the first miss ends a lookup; the
    /// blocks after it count as misses too, as they must be computed).
    pub misses: u64,
    /// Cached blocks dropped from the index to make room.
    pub evictions: u64,
}

#[derive(Debug, Clone)]
struct Cached {
    key: u64,
    parent: u64,
    tokens: Vec<u32>,
}

/// A sequence's blocks in position order, and the keys of those of its leading blocks that are
/// full and registered in the prefix index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockTable {
    blocks: Vec<BlockId>,
    keys: Vec<u64>,
}

impl BlockTable {
    pub fn new() -> BlockTable {
        BlockTable::default()
    }

    /// Block ids in position order.
    pub fn blocks(&self) -> &[BlockId] {
        &self.blocks
    }

    /// Leading full blocks registered in the prefix index.
    pub fn n_registered(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

/// Reference counts, free list and prefix index over a pool of `n_blocks` blocks.
#[derive(Debug, Clone)]
pub struct BlockManager {
    block_size: usize,
    refs: Vec<u32>,
    /// Unreferenced blocks holding nothing worth keeping, lowest id first.
    free: BTreeSet<BlockId>,
    /// Unreferenced registered blocks by last use (oldest first): evictable.
    lru: BTreeMap<u64, BlockId>,
    /// The `lru` stamp of each unreferenced registered block.
    stamp: Vec<u64>,
    cached: Vec<Option<Cached>>,
    index: HashMap<u64, BlockId>,
    clock: u64,
    stats: PrefixStats,
}

fn block_key(parent: u64, tokens: &[u32]) -> u64 {
    // SipHash with fixed keys: deterministic, and the stored tokens are compared on every hit,
    // so a collision can cost a cache miss but never a wrong reuse.
    let mut h = DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

impl BlockManager {
    pub fn new(n_blocks: usize, block_size: usize) -> Result<BlockManager, KvError> {
        if block_size == 0 {
            return Err(KvError::ZeroBlockSize);
        }
        if n_blocks > BlockId::MAX as usize {
            return Err(KvError::TooLarge {
                n_layers: 1,
                n_positions: n_blocks.saturating_mul(block_size),
                kv_dim: 1,
            });
        }
        Ok(BlockManager {
            block_size,
            refs: vec![0; n_blocks],
            free: (0..n_blocks as BlockId).collect(),
            lru: BTreeMap::new(),
            stamp: vec![0; n_blocks],
            cached: vec![None; n_blocks],
            index: HashMap::new(),
            clock: 0,
            stats: PrefixStats::default(),
        })
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn n_blocks(&self) -> usize {
        self.refs.len()
    }

    /// Blocks that `allocate` can hand out now (free plus evictable cached ones).
    pub fn available(&self) -> usize {
        self.free.len() + self.lru.len()
    }

    /// Blocks referenced by at least one sequence.
    pub fn in_use(&self) -> usize {
        self.n_blocks() - self.available()
    }

    /// Unreferenced blocks kept for prefix reuse.
    pub fn n_cached_idle(&self) -> usize {
        self.lru.len()
    }

    pub fn ref_count(&self, id: BlockId) -> u32 {
        self.refs.get(id as usize).copied().unwrap_or(0)
    }

    /// The prefix key of `id` if it is registered in the index.
    pub fn cached_key(&self, id: BlockId) -> Option<u64> {
        self.cached.get(id as usize)?.as_ref().map(|c| c.key)
    }

    pub fn stats(&self) -> PrefixStats {
        self.stats
    }

    /// Positions needed → blocks needed.
    pub fn blocks_for(&self, positions: usize) -> usize {
        positions.div_ceil(self.block_size)
    }

    /// A block with reference count 1: the lowest free one, else the least recently used
    /// cached one (dropped from the index).
    pub fn allocate(&mut self) -> Result<BlockId, KvError> {
        let id = if let Some(id) = self.free.pop_first() {
            id
        } else if let Some((_, id)) = self.lru.pop_first() {
            if let Some(c) = self.cached[id as usize].take() {
                self.index.remove(&c.key);
            }
            self.stats.evictions += 1;
            id
        } else {
            return Err(KvError::OutOfBlocks {
                n_blocks: self.n_blocks(),
            });
        };
        self.refs[id as usize] = 1;
        Ok(id)
    }

    fn retain(&mut self, id: BlockId) {
        let i = id as usize;
        if self.refs[i] == 0 {
            self.lru.remove(&self.stamp[i]);
        }
        self.refs[i] += 1;
    }

    fn release(&mut self, id: BlockId) {
        let i = id as usize;
        debug_assert!(
            self.refs[i] > 0,
            "block {id} released more often than taken"
        );
        self.refs[i] = self.refs[i].saturating_sub(1);
        if self.refs[i] == 0 {
            if self.cached[i].is_some() {
                self.clock += 1;
                self.stamp[i] = self.clock;
                self.lru.insert(self.clock, id);
            } else {
                self.free.insert(id);
            }
        }
    }

    /// How many leading tokens of `tokens` the index holds, in whole blocks, looking at no
    /// more than `max_tokens` tokens; changes nothing (no counters, no recency).
    pub fn cached_prefix_len(&self, tokens: &[u32], max_tokens: usize) -> usize {
        let mut parent = ROOT_KEY;
        let mut n = 0;
        for chunk in tokens[..max_tokens.min(tokens.len())].chunks_exact(self.block_size) {
            match self.find(parent, chunk) {
                Some((key, _)) => {
                    parent = key;
                    n += chunk.len();
                }
                None => break,
            }
        }
        n
    }

    fn find(&self, parent: u64, chunk: &[u32]) -> Option<(u64, BlockId)> {
        let key = block_key(parent, chunk);
        let &id = self.index.get(&key)?;
        let c = self.cached[id as usize].as_ref()?;
        (c.parent == parent && c.tokens == chunk).then_some((key, id))
    }

    /// A table holding the longest cached run of full blocks that starts `tokens` (at most
    /// `max_tokens` tokens), each block retained for the caller. Counts hits and misses over
    /// the full blocks of `tokens[..max_tokens]`.
    pub fn lookup(&mut self, tokens: &[u32], max_tokens: usize) -> BlockTable {
        let tokens = &tokens[..max_tokens.min(tokens.len())];
        let mut table = BlockTable::new();
        let mut parent = ROOT_KEY;
        let full = tokens.len() / self.block_size;
        for chunk in tokens.chunks_exact(self.block_size) {
            let Some((key, id)) = self.find(parent, chunk) else {
                break;
            };
            self.retain(id);
            table.blocks.push(id);
            table.keys.push(key);
            parent = key;
        }
        self.stats.hits += table.blocks.len() as u64;
        self.stats.misses += (full - table.blocks.len()) as u64;
        table
    }

    /// Grows `table` to at least `positions` positions with fresh blocks. On failure the table
    /// keeps the blocks it had (and those added so far).
    pub fn reserve(&mut self, table: &mut BlockTable, positions: usize) -> Result<(), KvError> {
        while table.blocks.len() * self.block_size < positions {
            let id = self.allocate()?;
            table.blocks.push(id);
        }
        Ok(())
    }

    /// Registers every full block of `table` not yet registered, given the tokens whose keys
    /// and values are now written (`tokens[p]` at position `p`). A block whose key another
    /// block already holds stays unregistered (it is freed, not cached, when released).
    pub fn commit(&mut self, table: &mut BlockTable, tokens: &[u32]) {
        let bs = self.block_size;
        while table.keys.len() < table.blocks.len() && (table.keys.len() + 1) * bs <= tokens.len() {
            let i = table.keys.len();
            let parent = table.keys.last().copied().unwrap_or(ROOT_KEY);
            let chunk = &tokens[i * bs..(i + 1) * bs];
            let key = block_key(parent, chunk);
            let id = table.blocks[i];
            if !self.index.contains_key(&key) && self.cached[id as usize].is_none() {
                self.index.insert(key, id);
                self.cached[id as usize] = Some(Cached {
                    key,
                    parent,
                    tokens: chunk.to_vec(),
                });
            }
            table.keys.push(key);
        }
    }

    /// Releases every block of `table` and empties it.
    pub fn free(&mut self, table: &mut BlockTable) {
        for id in std::mem::take(&mut table.blocks) {
            self.release(id);
        }
        table.keys.clear();
    }

    /// Shrinks `table` to at most `positions` positions, releasing the blocks past them, and
    /// returns how many positions remain valid. A block cut in the middle is kept only if the
    /// table owns it alone and it is not registered (later writes into it must not change
    /// what another sequence or the index sees); otherwise the cut falls back to its start.
    pub fn truncate(&mut self, table: &mut BlockTable, positions: usize) -> usize {
        let bs = self.block_size;
        let full = positions / bs;
        let mut keep = positions.min(table.blocks.len() * bs);
        if !keep.is_multiple_of(bs) {
            let id = table.blocks[full] as usize;
            if self.refs[id] > 1 || self.cached[id].is_some() {
                keep = full * bs;
            }
        }
        while table.blocks.len() > self.blocks_for(keep) {
            if let Some(id) = table.blocks.pop() {
                self.release(id);
            }
        }
        table.keys.truncate(keep / bs);
        keep
    }

    /// Checks the internal invariants (tests call this after every operation): every block is
    /// in exactly one of {referenced, free, evictable}, evictable blocks are registered, and
    /// the index points at registered blocks with the same key.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (i, &r) in self.refs.iter().enumerate() {
            let id = i as BlockId;
            let in_free = self.free.contains(&id);
            let in_lru = self.cached[i].is_some() && self.lru.get(&self.stamp[i]) == Some(&id);
            let places = usize::from(r > 0) + usize::from(in_free) + usize::from(in_lru);
            if places != 1 {
                return Err(format!(
                    "block {i}: refs {r}, free {in_free}, evictable {in_lru}"
                ));
            }
            if in_free && self.cached[i].is_some() {
                return Err(format!("block {i} is free but still registered"));
            }
        }
        if self.free.len() + self.lru.len() + self.refs.iter().filter(|&&r| r > 0).count()
            != self.refs.len()
        {
            return Err("block accounting does not add up".into());
        }
        for (&key, &id) in &self.index {
            match &self.cached[id as usize] {
                Some(c) if c.key == key => {}
                _ => return Err(format!("index key {key:x} points at block {id} without it")),
            }
        }
        let registered = self.cached.iter().filter(|c| c.is_some()).count();
        if registered != self.index.len() {
            return Err("registered blocks and index size differ".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_sequence_reuses_the_first_ones_full_blocks() {
        let mut m = BlockManager::new(8, 4).unwrap();
        let tokens: Vec<u32> = (0..10).collect();
        let mut a = m.lookup(&tokens, tokens.len());
        assert!(a.is_empty());
        m.reserve(&mut a, tokens.len()).unwrap();
        m.commit(&mut a, &tokens);
        assert_eq!(a.n_registered(), 2);
        let mut b = m.lookup(&tokens, tokens.len());
        assert_eq!(b.blocks(), &a.blocks()[..2]);
        assert_eq!(m.ref_count(a.blocks()[0]), 2);
        assert_eq!(m.stats().hits, 2);
        m.free(&mut a);
        m.free(&mut b);
        assert_eq!(m.in_use(), 0);
        assert_eq!(m.n_cached_idle(), 2);
        // Cached blocks survive until the pool needs them.
        assert_eq!(m.cached_prefix_len(&tokens, 10), 8);
        let mut c = BlockTable::new();
        m.reserve(&mut c, 8 * 4).unwrap();
        assert_eq!(m.stats().evictions, 2);
        assert_eq!(m.cached_prefix_len(&tokens, 10), 0);
        assert!(m.reserve(&mut c, 8 * 4 + 1).is_err());
        m.check_invariants().unwrap();
    }
}
