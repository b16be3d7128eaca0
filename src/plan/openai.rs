//! OpenAI's `prompt_cache_key` (providers.md §2.1): "combined with the prefix hash" to pick the
//! machine a request goes to, so requests that share a long prefix meet the machine that holds
//! it. cachet derives the key from the tenant and the request's first ~256 tokens (see
//! [`stable_prefix`]); above ~15
//! requests a minute for one key OpenAI overflows to other machines, so a hot key is sharded
//! deterministically into a few keys (`-s1`, `-s2`, …): the overflow then lands on a few
//! machines that each keep the prefix warm, not on any machine at all.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::prefix::{Boundary, PrefixKey};
use crate::tenant::Tenant;

/// OpenAI's published per-key rate before overflow.
pub const RATE_PER_MINUTE: usize = 15;
/// Shards of one hot key at most.
pub const MAX_SHARDS: usize = 4;
/// OpenAI caches prompts from this many tokens on.
pub const MIN_TOKENS: u64 = 1024;
/// "The hash typically uses the first 256 tokens."
pub const ROUTING_TOKENS: u64 = 256;
/// Keys tracked at once; the oldest windows go first.
const TRACKED: usize = 10_000;

/// The prefix a request's key is derived from: the first ~256 tokens, as OpenAI's own routing
/// hashes them (none for a prompt under [`MIN_TOKENS`], which OpenAI does not cache). Requests
/// that OpenAI would put on one machine keep doing so — a conversation's turns, an agent's
/// steps, questions on one document in any layout — and a hot prefix can be sharded.
pub fn stable_prefix(boundaries: &[Boundary]) -> Option<PrefixKey> {
    if boundaries.last().is_none_or(|b| b.tokens < MIN_TOKENS) {
        return None;
    }
    boundaries
        .iter()
        .find(|b| b.tokens >= ROUTING_TOKENS)
        .map(|b| b.key)
}

/// The key for a prefix of a tenant: stable, and revealing neither.
pub fn cache_key(tenant: &Tenant, prefix: &PrefixKey, shard: usize) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"cachet prompt_cache_key v1\0");
    h.update(tenant.as_bytes());
    h.update(prefix.as_bytes());
    let hex = h.finalize().to_hex();
    match shard {
        0 => format!("cachet-{}", &hex[..24]),
        n => format!("cachet-{}-s{n}", &hex[..24]),
    }
}

/// Requests per key in the trailing minute, to shard hot keys.
#[derive(Default)]
pub struct Shards {
    recent: Mutex<HashMap<(Tenant, PrefixKey), VecDeque<SystemTime>>>,
}

impl Shards {
    /// The shard for a request at `now`, counting it: the first 15 of a minute get shard 0,
    /// the next 15 shard 1, and so on, wrapping after [`MAX_SHARDS`].
    pub fn next(&self, tenant: &Tenant, prefix: &PrefixKey, now: SystemTime) -> usize {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() >= TRACKED {
            recent.retain(|_, w| w.back().is_some_and(|&t| now < t + Duration::from_secs(60)));
            if recent.len() >= TRACKED {
                recent.clear();
            }
        }
        let window = recent.entry((*tenant, *prefix)).or_default();
        while window
            .front()
            .is_some_and(|&t| t + Duration::from_secs(60) <= now)
        {
            window.pop_front();
        }
        let shard = (window.len() / RATE_PER_MINUTE) % MAX_SHARDS;
        window.push_back(now);
        shard
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::{Credential, TenantSecret};
    use std::time::UNIX_EPOCH;

    fn tenant(key: &[u8]) -> Tenant {
        let credential = Credential {
            key: Some(key),
            ..Credential::default()
        };
        Tenant::of(&TenantSecret::from_bytes([2; 32]), "openai", &credential)
    }

    #[test]
    fn keys_are_stable_per_tenant_and_prefix() {
        let (a, b) = (tenant(b"sk-a"), tenant(b"sk-b"));
        let p = PrefixKey([9; 32]);
        assert_eq!(cache_key(&a, &p, 0), cache_key(&a, &p, 0));
        assert_ne!(cache_key(&a, &p, 0), cache_key(&b, &p, 0));
        assert_ne!(cache_key(&a, &p, 0), cache_key(&a, &PrefixKey([8; 32]), 0));
        assert!(cache_key(&a, &p, 0).starts_with("cachet-") && cache_key(&a, &p, 0).len() == 31);
        assert!(cache_key(&a, &p, 2).ends_with("-s2"));
    }

    #[test]
    fn a_hot_key_spreads_over_a_few_shards() {
        let shards = Shards::default();
        let (t, p) = (tenant(b"sk-a"), PrefixKey([1; 32]));
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s);
        let got: Vec<usize> = (0..70).map(|i| shards.next(&t, &p, at(i / 2))).collect();
        assert!(got[..15].iter().all(|&s| s == 0));
        assert!(got[15..30].iter().all(|&s| s == 1));
        assert_eq!(got[60], 0, "wraps after {MAX_SHARDS} shards");
        // A minute of quiet and it is back to one key.
        assert_eq!(shards.next(&t, &p, at(200)), 0);
        // Another prefix counts on its own.
        assert_eq!(shards.next(&t, &PrefixKey([2; 32]), at(35)), 0);
    }
}
