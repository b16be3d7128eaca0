//! Gemini caching (providers.md §3). Explicit `cachedContents` (§3.2–§3.4): creating one bills
//! its tokens at the input price, reading bills them at the caching price, and storage accrues
//! per token-hour from creation until deletion or expiry. Implicit caching (§3.1, off by default
//! in the simulator because Google guarantees no saving): the longest earlier prefix ending at a
//! content-part boundary, at least the model's minimum, alive [`IMPLICIT_RETENTION`] after its
//! last use; no write fee.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::Entry;
use crate::sim::prompt::SimPrompt;

/// Google documents no lifetime for implicit caches; the simulator keeps OpenAI's in-memory
/// figure.
pub const IMPLICIT_RETENTION: Duration = Duration::from_secs(600);

pub use crate::pricing::storage_nusd;

#[derive(Default)]
pub struct Implicit {
    entries: HashMap<(u64, u64), Entry>,
}

impl Implicit {
    /// Drops every entry of `scopes`; returns how many there were.
    pub fn evict(&mut self, scopes: &std::collections::HashSet<u64>) -> u64 {
        super::drop_scopes(&mut self.entries, scopes)
    }
}

pub fn implicit_hit(
    cache: &Implicit,
    scope: u64,
    prompt: &SimPrompt,
    min_tokens: u64,
    now: SystemTime,
) -> u64 {
    prompt
        .blocks
        .iter()
        .map(|b| b.end)
        .filter(|&n| n as u64 >= min_tokens)
        .filter(|&n| {
            cache
                .entries
                .get(&(scope, prompt.prefix_hash(n)))
                .is_some_and(|e| e.live_at(now))
        })
        .max()
        .unwrap_or(0) as u64
}

pub fn implicit_commit(
    cache: &mut Implicit,
    scope: u64,
    prompt: &SimPrompt,
    min_tokens: u64,
    now: SystemTime,
    visible: SystemTime,
) {
    let fresh = Entry {
        visible,
        expires: now + IMPLICIT_RETENTION,
    };
    for n in prompt
        .blocks
        .iter()
        .map(|b| b.end)
        .filter(|&n| n as u64 >= min_tokens)
    {
        let key = (scope, prompt.prefix_hash(n));
        let renewed = Entry::renew(cache.entries.get(&key).copied(), fresh, now);
        cache.entries.insert(key, renewed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::rules::test_support::{prompt, t, text, words};

    #[test]
    fn s3_4_storage_is_billed_per_token_hour() {
        // 1M tokens for one hour at $1.00 per 1M tokens per hour = $1 = 1e9 nano-USD.
        assert_eq!(
            storage_nusd(1_000_000, t(0), t(3600), 1_000_000),
            1_000_000_000
        );
        // 10,000 tokens for 30 minutes at $4.50/M/h = $0.0225.
        assert_eq!(storage_nusd(10_000, t(0), t(1800), 4_500_000), 22_500_000);
        // An end before the start (clock skew) bills nothing rather than wrapping.
        assert_eq!(storage_nusd(10_000, t(10), t(0), 4_500_000), 0);
    }

    #[test]
    fn s3_1_implicit_hits_the_longest_part_boundary_above_the_minimum() {
        let mut cache = Implicit::default();
        let doc = words(0, 2500);
        let a = prompt(&[text(doc.clone()), text(words(1, 30))]);
        implicit_commit(&mut cache, 1, &a, 2048, t(0), t(0));
        let b = prompt(&[text(doc), text(words(2, 30))]);
        assert_eq!(
            implicit_hit(&cache, 1, &b, 2048, t(1)),
            b.blocks[0].end as u64
        );
        assert_eq!(
            implicit_hit(&cache, 1, &b, 4096, t(1)),
            0,
            "below that model's minimum"
        );
        assert_eq!(implicit_hit(&cache, 2, &b, 2048, t(1)), 0, "another key");
        assert_eq!(implicit_hit(&cache, 1, &b, 2048, t(601)), 0, "expired");
    }
}
