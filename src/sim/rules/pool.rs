//! A vLLM-like replica (providers.md §6): automatic prefix caching over full 16-token blocks,
//! chained so a block is reusable only behind the same prefix, evicted least recently used
//! with a request's tail blocks going first ("freed blocks are queued in reverse order"), sized
//! in tokens (`kv_capacity_tokens`). No TTL, no pricing; a hit saves prefill time.

use std::collections::{BTreeMap, HashMap};

use crate::sim::prompt::SimPrompt;

pub const BLOCK: usize = 16;

/// An LRU set of block hashes holding at most `capacity_tokens / 16` blocks.
pub struct Lru {
    capacity_blocks: usize,
    stamps: HashMap<u64, u64>,
    order: BTreeMap<u64, u64>,
    clock: u64,
}

impl Lru {
    pub fn new(capacity_tokens: u64) -> Self {
        Lru {
            capacity_blocks: usize::try_from(capacity_tokens / BLOCK as u64).unwrap_or(usize::MAX),
            stamps: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
        }
    }

    /// Tokens of the longest cached run of full blocks from the start of the prompt.
    pub fn cached_tokens(&self, prompt: &SimPrompt) -> u64 {
        let blocks = (1..=prompt.len() / BLOCK)
            .take_while(|&i| self.stamps.contains_key(&prompt.prefix_hash(i * BLOCK)))
            .count();
        (blocks * BLOCK) as u64
    }

    /// Caches every full block of the prompt. Blocks are stamped last to first, so the first
    /// block is the most recently used and eviction takes tails before heads.
    pub fn admit(&mut self, prompt: &SimPrompt) {
        for i in (1..=prompt.len() / BLOCK).rev() {
            let hash = prompt.prefix_hash(i * BLOCK);
            self.clock += 1;
            if let Some(old) = self.stamps.insert(hash, self.clock) {
                self.order.remove(&old);
            }
            self.order.insert(self.clock, hash);
        }
        while self.stamps.len() > self.capacity_blocks {
            let Some((_, hash)) = self.order.pop_first() else {
                break;
            };
            self.stamps.remove(&hash);
        }
    }

    /// Empties the cache (a restarted server); returns how many blocks it held.
    pub fn clear(&mut self) -> u64 {
        let blocks = self.stamps.len() as u64;
        self.stamps.clear();
        self.order.clear();
        blocks
    }

    pub fn tokens(&self) -> u64 {
        (self.stamps.len() * BLOCK) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::rules::test_support::{prompt, text, words};

    #[test]
    fn s6_only_full_blocks_are_cached() {
        let mut lru = Lru::new(1 << 20);
        let p = prompt(&[text(words(0, 40))]);
        lru.admit(&p);
        assert_eq!(lru.cached_tokens(&p), (p.len() / 16 * 16) as u64);
        assert_eq!(lru.tokens(), (p.len() / 16 * 16) as u64);
    }

    #[test]
    fn s6_blocks_are_chained_on_their_prefix() {
        let mut lru = Lru::new(1 << 20);
        lru.admit(&prompt(&[text(words(0, 64)), text(words(1, 64))]));
        // Same second block behind another first block: nothing reusable.
        let other = prompt(&[text(words(2, 64)), text(words(1, 64))]);
        assert_eq!(lru.cached_tokens(&other), 0);
    }

    #[test]
    fn s6_lru_evicts_the_oldest_and_tails_first() {
        let a = prompt(&[text(words(0, 160))]);
        let b = prompt(&[text(words(1, 160))]);
        let a_blocks = a.len() / 16;
        let mut lru = Lru::new((a_blocks * 16) as u64 + 32);
        lru.admit(&a);
        assert_eq!(lru.cached_tokens(&a), (a_blocks * 16) as u64);
        lru.admit(&b);
        // b displaced a's blocks, tail first: whatever of `a` is left is a head.
        let left = lru.cached_tokens(&a);
        assert!(left < (a_blocks * 16) as u64);
        assert_eq!(lru.cached_tokens(&b), (b.len() / 16 * 16) as u64);
        assert!(lru.tokens() <= (a_blocks * 16) as u64 + 32);
    }
}
