//! The providers' caching rules as small pure functions over [`SimPrompt`]s, cache state and
//! times passed in: the HTTP simulator and the replay's oracle both call them, so what the
//! oracle calls optimal is judged by exactly the rules that bill.
//!
//! Every rule takes `now` (and `visible`, the moment a write becomes readable) from its caller,
//! who reads them from the one [`crate::clock::Clock`]; nothing here reads the time itself.
//!
//! [`SimPrompt`]: super::prompt::SimPrompt

pub mod anthropic;
pub mod deepseek;
pub mod gemini;
pub mod openai;
pub mod pool;

use std::time::{Duration, SystemTime};

/// Simulated prefill speed: uncached prompt tokens per second (issue: vLLM-like replicas; the
/// same figure dates the "response has begun" moment for every provider).
pub const PREFILL_TOKENS_PER_SEC: u64 = 20_000;
/// Simulated decode speed, output tokens per second.
pub const DECODE_TOKENS_PER_SEC: u64 = 50;

/// When the response to a request starting at `start` begins: after prefilling its uncached
/// tokens, and never at the very instant it was sent. A cache entry it writes is readable from
/// then on ("a cache entry only becomes available after the first response begins").
pub fn first_byte(start: SystemTime, uncached_tokens: u64) -> SystemTime {
    let micros = (uncached_tokens * 1_000_000 / PREFILL_TOKENS_PER_SEC).max(1_000);
    start + Duration::from_micros(micros)
}

/// How long a request occupies its server: prefill of the uncached tokens, then decoding.
pub fn service_time(uncached_tokens: u64, output_tokens: u64) -> Duration {
    Duration::from_micros(
        uncached_tokens * 1_000_000 / PREFILL_TOKENS_PER_SEC
            + output_tokens * 1_000_000 / DECODE_TOKENS_PER_SEC,
    )
}

/// When a request started and when its response began (its writes are readable from then).
#[derive(Clone, Copy, Debug)]
pub struct Times {
    pub start: SystemTime,
    pub visible: SystemTime,
}

/// A cache entry: readable in `[visible, expires)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub visible: SystemTime,
    pub expires: SystemTime,
}

impl Entry {
    pub fn live_at(&self, now: SystemTime) -> bool {
        self.visible <= now && now < self.expires
    }

    /// Merges a fresh write or refresh into an existing entry: the earliest visibility among
    /// writes still alive, the latest expiry.
    pub fn renew(existing: Option<Entry>, fresh: Entry, now: SystemTime) -> Entry {
        match existing {
            Some(old) if now < old.expires => Entry {
                visible: old.visible.min(fresh.visible),
                expires: old.expires.max(fresh.expires),
            },
            _ => fresh,
        }
    }
}

/// Removes the entries of `map` in any of `scopes` (the fault "caches evicted early");
/// returns how many there were.
pub fn drop_scopes<V>(
    map: &mut std::collections::HashMap<(u64, u64), V>,
    scopes: &std::collections::HashSet<u64>,
) -> u64 {
    let before = map.len();
    map.retain(|(scope, _), _| !scopes.contains(scope));
    (before - map.len()) as u64
}

/// Identity of a cache partition: the provider's isolation unit (API key) and the model.
pub fn scope(api_key: &str, model: &str) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(api_key.as_bytes());
    hasher.update(&[0]);
    hasher.update(model.as_bytes());
    let bytes = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use crate::sim::prompt::{Content, Kind, Piece, SimPrompt, Ttl};

    pub fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    /// `n` words that are one token each, distinct per `seed`, so a block's token count is known.
    pub fn words(seed: usize, n: usize) -> String {
        const WORDS: [&str; 8] = [
            "apple", "river", "stone", "cloud", "green", "table", "music", "light",
        ];
        (0..n)
            .map(|i| {
                let z = crate::mix::splitmix64((seed as u64) << 32 | i as u64);
                WORDS[(z % WORDS.len() as u64) as usize]
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub struct B {
        pub text: String,
        pub kind: Kind,
        pub mark: Option<Ttl>,
        pub turn_end: bool,
    }

    pub fn text(s: String) -> B {
        B {
            text: s,
            kind: Kind::Text,
            mark: None,
            turn_end: false,
        }
    }

    pub fn marked(s: String, ttl: Ttl) -> B {
        B {
            text: s,
            kind: Kind::Text,
            mark: Some(ttl),
            turn_end: false,
        }
    }

    pub fn prompt(blocks: &[B]) -> SimPrompt {
        SimPrompt::build(blocks.iter().map(|b| Piece {
            role: None,
            content: Content::Text(&b.text),
            kind: b.kind,
            mark: b.mark,
            turn_end: b.turn_end,
        }))
    }
}
