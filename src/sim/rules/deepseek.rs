//! DeepSeek context caching on disk (providers.md §4): "cache prefix units" are persisted at
//! the end of each user input and of each model output, and at the common prefix of two
//! requests once a second request shares it; a request hits only a whole unit, the longest one
//! that is a prefix of it. Common prefixes are found at the 64-token storage unit of the 2024
//! rule (the current page leaves the interval undocumented). Units live [`RETENTION`] after
//! their last use ("a few hours to a few days"); caches are per API key and model.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::Entry;
use crate::sim::prompt::SimPrompt;

/// Granularity of common-prefix detection.
pub const UNIT: usize = 64;
pub const RETENTION: Duration = Duration::from_secs(4 * 3600);

#[derive(Default)]
pub struct Cache {
    /// Persisted units: (scope, prefix hash) → length and lifetime.
    units: HashMap<(u64, u64), (usize, Entry)>,
    /// 64-token prefixes of earlier requests, for common-prefix detection.
    seen: HashMap<(u64, u64), SystemTime>,
}

/// Tokens read: the longest live unit that is a prefix of the prompt. Units end at block ends
/// (turn ends) or at multiples of [`UNIT`], so only those positions are probed.
pub fn hit_tokens(cache: &Cache, scope: u64, prompt: &SimPrompt, now: SystemTime) -> u64 {
    candidates(prompt)
        .filter(|&n| {
            cache
                .units
                .get(&(scope, prompt.prefix_hash(n)))
                .is_some_and(|(len, e)| *len == n && e.live_at(now))
        })
        .max()
        .unwrap_or(0) as u64
}

fn candidates(prompt: &SimPrompt) -> impl Iterator<Item = usize> + '_ {
    prompt
        .blocks
        .iter()
        .map(|b| b.end)
        .chain((1..=prompt.len() / UNIT).map(|i| i * UNIT))
}

/// After the request: refresh the unit read, persist units at the prompt's turn ends, at the end
/// of the model's output (`with_output`: the prompt followed by the reply as the next request
/// would carry it), and at the longest 64-token prefix an earlier request also had.
pub fn commit(
    cache: &mut Cache,
    scope: u64,
    prompt: &SimPrompt,
    with_output: Option<&SimPrompt>,
    now: SystemTime,
    visible: SystemTime,
) {
    let fresh = Entry {
        visible,
        expires: now + RETENTION,
    };
    let common = (1..=prompt.len() / UNIT)
        .map(|i| i * UNIT)
        .take_while(|&n| {
            cache
                .seen
                .get(&(scope, prompt.prefix_hash(n)))
                .is_some_and(|&until| now < until)
        })
        .last();
    let mut persist = |p: &SimPrompt, n: usize| {
        let key = (scope, p.prefix_hash(n));
        let existing = cache.units.get(&key).map(|(_, e)| *e);
        cache
            .units
            .insert(key, (n, Entry::renew(existing, fresh, now)));
    };
    for n in prompt.blocks.iter().filter(|b| b.turn_end).map(|b| b.end) {
        persist(prompt, n);
    }
    if let Some(n) = common {
        persist(prompt, n);
    }
    if let Some(full) = with_output {
        persist(full, full.len());
    }
    for i in 1..=prompt.len() / UNIT {
        cache
            .seen
            .insert((scope, prompt.prefix_hash(i * UNIT)), now + RETENTION);
    }
}

/// Refreshes the unit a request read (its lifetime counts from its last use).
pub fn touch(cache: &mut Cache, scope: u64, prompt: &SimPrompt, read: u64, now: SystemTime) {
    let n = usize::try_from(read).unwrap_or(usize::MAX);
    if n == 0 {
        return;
    }
    if let Some((_, entry)) = cache.units.get_mut(&(scope, prompt.prefix_hash(n))) {
        entry.expires = entry.expires.max(now + RETENTION);
    }
}

impl Cache {
    /// Drops every unit of `scopes`, and what was seen of them; returns how many units there
    /// were.
    pub fn evict(&mut self, scopes: &std::collections::HashSet<u64>) -> u64 {
        super::drop_scopes(&mut self.seen, scopes);
        super::drop_scopes(&mut self.units, scopes)
    }

    pub fn live_entries(&self, now: SystemTime) -> u64 {
        self.units.values().filter(|(_, e)| now < e.expires).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::rules::test_support::{B, prompt, t, text, words};

    fn user(s: String) -> B {
        B {
            turn_end: true,
            ..text(s)
        }
    }

    fn send(cache: &mut Cache, p: &SimPrompt, at: SystemTime) -> u64 {
        let read = hit_tokens(cache, 1, p, at);
        touch(cache, 1, p, read, at);
        commit(cache, 1, p, None, at, at + Duration::from_millis(10));
        read
    }

    #[test]
    fn s4_a_b_then_a_b_c_hits_a_b() {
        let mut cache = Cache::default();
        let ab = prompt(&[text(words(0, 300)), user(words(1, 200))]);
        assert_eq!(send(&mut cache, &ab, t(0)), 0);
        let abc = prompt(&[text(words(0, 300)), user(words(1, 200)), user(words(2, 50))]);
        assert_eq!(send(&mut cache, &abc, t(5)), ab.tokens());
    }

    #[test]
    fn s4_a_b_then_a_c_misses_then_a_d_hits_a() {
        let mut cache = Cache::default();
        let a = words(0, 640);
        let ab = prompt(&[text(a.clone()), user(words(1, 200))]);
        let ac = prompt(&[text(a.clone()), user(words(2, 200))]);
        let ad = prompt(&[text(a), user(words(3, 200))]);
        assert_eq!(send(&mut cache, &ab, t(0)), 0);
        assert_eq!(
            send(&mut cache, &ac, t(5)),
            0,
            "the second request sharing A still misses"
        );
        let shared = ab.blocks[0].end;
        let got = send(&mut cache, &ad, t(10));
        assert_eq!(
            got,
            (shared / UNIT * UNIT) as u64,
            "the third hits the common-prefix unit"
        );
        assert!(got > 0);
    }

    #[test]
    fn s4_a_hit_needs_a_whole_unit() {
        let mut cache = Cache::default();
        let ab = prompt(&[text(words(0, 300)), user(words(1, 200))]);
        send(&mut cache, &ab, t(0));
        // Same first block, different user input: the only unit (end of AB) is not a prefix.
        let ax = prompt(&[text(words(0, 300)), user(words(9, 200))]);
        assert_eq!(hit_tokens(&cache, 1, &ax, t(1)), 0);
    }

    #[test]
    fn s4_model_output_unit() {
        let mut cache = Cache::default();
        let q = prompt(&[user(words(0, 300))]);
        let with_reply = prompt(&[
            user(words(0, 300)),
            B {
                turn_end: true,
                ..text(words(5, 40))
            },
        ]);
        commit(&mut cache, 1, &q, Some(&with_reply), t(0), t(0));
        let next = prompt(&[
            user(words(0, 300)),
            B {
                turn_end: true,
                ..text(words(5, 40))
            },
            user(words(6, 20)),
        ]);
        assert_eq!(hit_tokens(&cache, 1, &next, t(1)), with_reply.tokens());
    }

    #[test]
    fn s4_units_expire_after_retention() {
        let mut cache = Cache::default();
        let ab = prompt(&[user(words(0, 300))]);
        send(&mut cache, &ab, t(0));
        assert!(hit_tokens(&cache, 1, &ab, t(RETENTION.as_secs() - 1)) > 0);
        assert_eq!(hit_tokens(&cache, 1, &ab, t(RETENTION.as_secs())), 0);
    }
}
