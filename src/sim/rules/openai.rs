//! OpenAI automatic prompt caching, gpt-4o … gpt-5.5 (providers.md §2.1, §2.10): prompts of at
//! least the model's minimum (1024) are cached on one of [`MACHINES`] machines chosen by a hash
//! of the first ~256 tokens and `prompt_cache_key`; above ~15 requests a minute for one
//! (prefix, key) the overflow goes to other machines; a hit is the longest prefix cached on that
//! machine, reported in 128-token steps; entries last [`RETENTION`] after their last use; writes
//! are free. Caches are per organization (API key here) and model.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use super::Entry;
use crate::sim::prompt::SimPrompt;

pub const MACHINES: usize = 8;
/// "The hash typically uses the first 256 tokens."
pub const ROUTING_TOKENS: usize = 256;
/// "cache hits occurring in increments of 128 tokens".
pub const STEP: usize = 128;
/// "approximately 15 requests per minute" per (prefix, key) before overflow.
pub const RATE_PER_MIN: usize = 15;
/// "generally remain active for 5 to 10 minutes of inactivity": the upper figure.
pub const RETENTION: Duration = Duration::from_secs(600);

#[derive(Default)]
pub struct Cache {
    machines: [HashMap<(u64, u64), Entry>; MACHINES],
    recent: HashMap<(u64, u64), VecDeque<SystemTime>>,
    writes_since_sweep: usize,
}

/// The routing identity of a request: its first [`ROUTING_TOKENS`] tokens and its
/// `prompt_cache_key`.
pub fn route_hash(prompt: &SimPrompt, cache_key: Option<&str>) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&prompt.prefix_hash(ROUTING_TOKENS).to_le_bytes());
    if let Some(key) = cache_key {
        hasher.update(&[1]);
        hasher.update(key.as_bytes());
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Picks the machine for a request at `now` and counts it: the first [`RATE_PER_MIN`] requests
/// of a (prefix, key) within the trailing minute go to its home machine, each further 15 to the
/// next machine over.
pub fn route(cache: &mut Cache, scope: u64, route: u64, now: SystemTime) -> usize {
    let window = cache.recent.entry((scope, route)).or_default();
    while window
        .front()
        .is_some_and(|&t| t + Duration::from_secs(60) <= now)
    {
        window.pop_front();
    }
    let overflow = window.len() / RATE_PER_MIN;
    window.push_back(now);
    (usize::try_from(route % MACHINES as u64).unwrap_or(0) + overflow) % MACHINES
}

/// Cached tokens on `machine`: the longest run of live 128-token steps from the start, reported
/// only when it reaches the minimum (§2.1: 1024, 1152, 1280, …).
pub fn cached_tokens(
    cache: &Cache,
    machine: usize,
    scope: u64,
    prompt: &SimPrompt,
    min_tokens: u64,
    now: SystemTime,
) -> u64 {
    if prompt.tokens() < min_tokens {
        return 0;
    }
    let entries = &cache.machines[machine];
    let steps = (1..=prompt.len() / STEP)
        .take_while(|&i| {
            entries
                .get(&(scope, prompt.prefix_hash(i * STEP)))
                .is_some_and(|e| e.live_at(now))
        })
        .count();
    let cached = (steps * STEP) as u64;
    if cached >= min_tokens { cached } else { 0 }
}

/// After the request: every 128-token step of a prompt that reaches the minimum is cached on
/// the machine (written or refreshed), readable from `visible`.
pub fn commit(
    cache: &mut Cache,
    machine: usize,
    scope: u64,
    prompt: &SimPrompt,
    min_tokens: u64,
    now: SystemTime,
    visible: SystemTime,
) {
    if prompt.tokens() < min_tokens {
        return;
    }
    let entries = &mut cache.machines[machine];
    let fresh = Entry {
        visible,
        expires: now + RETENTION,
    };
    for i in 1..=prompt.len() / STEP {
        let key = (scope, prompt.prefix_hash(i * STEP));
        let renewed = Entry::renew(entries.get(&key).copied(), fresh, now);
        entries.insert(key, renewed);
    }
    cache.writes_since_sweep += prompt.len() / STEP;
    if cache.writes_since_sweep > 1 << 16 {
        for machine in &mut cache.machines {
            machine.retain(|_, e| now < e.expires);
        }
        cache
            .recent
            .retain(|_, w| w.back().is_some_and(|&t| now < t + Duration::from_secs(60)));
        cache.writes_since_sweep = 0;
    }
}

impl Cache {
    /// Drops every entry of `scopes` on every machine; returns how many there were.
    pub fn evict(&mut self, scopes: &std::collections::HashSet<u64>) -> u64 {
        self.machines
            .iter_mut()
            .map(|m| super::drop_scopes(m, scopes))
            .sum()
    }

    /// Live entries (128-token steps) over all machines.
    pub fn live_entries(&self, now: SystemTime) -> u64 {
        self.machines
            .iter()
            .map(|m| m.values().filter(|e| now < e.expires).count() as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::rules::test_support::{prompt, t, text, words};

    const MIN: u64 = 1024;

    fn send(cache: &mut Cache, p: &SimPrompt, key: Option<&str>, at: SystemTime) -> u64 {
        let machine = route(cache, 1, route_hash(p, key), at);
        let cached = cached_tokens(cache, machine, 1, p, MIN, at);
        commit(
            cache,
            machine,
            1,
            p,
            MIN,
            at,
            at + Duration::from_millis(50),
        );
        cached
    }

    #[test]
    fn s2_1_hits_come_in_128_token_steps_from_1024() {
        let mut cache = Cache::default();
        let doc = words(0, 1500);
        let first = prompt(&[text(doc.clone()), text(words(1, 30))]);
        assert_eq!(send(&mut cache, &first, None, t(0)), 0);
        let second = prompt(&[text(doc), text(words(2, 30))]);
        let shared = second.blocks[0].end;
        let got = send(&mut cache, &second, None, t(10));
        assert_eq!(got, (shared / 128 * 128) as u64);
        assert!(got >= 1024 && got % 128 == 0);
    }

    #[test]
    fn s2_1_prompts_below_1024_are_never_cached() {
        let mut cache = Cache::default();
        let p = prompt(&[text(words(0, 900))]);
        send(&mut cache, &p, None, t(0));
        assert_eq!(send(&mut cache, &p, None, t(1)), 0);
    }

    #[test]
    fn s2_1_a_shared_prefix_below_1024_reports_zero() {
        let mut cache = Cache::default();
        let head = words(0, 1000);
        send(
            &mut cache,
            &prompt(&[text(head.clone()), text(words(1, 600))]),
            None,
            t(0),
        );
        assert_eq!(
            send(
                &mut cache,
                &prompt(&[text(head), text(words(2, 600))]),
                None,
                t(1)
            ),
            0
        );
    }

    #[test]
    fn s2_1_retention_is_ten_minutes_of_inactivity() {
        let mut cache = Cache::default();
        let p = prompt(&[text(words(0, 1300))]);
        send(&mut cache, &p, None, t(0));
        assert!(send(&mut cache, &p, None, t(599)) > 0, "refreshed at 599 s");
        assert!(send(&mut cache, &p, None, t(599 + 599)) > 0);
        assert_eq!(send(&mut cache, &p, None, t(599 + 599 + 600)), 0);
    }

    #[test]
    fn s2_1_writes_become_visible_when_the_response_begins() {
        let mut cache = Cache::default();
        let p = prompt(&[text(words(0, 1300))]);
        send(&mut cache, &p, None, t(0));
        let machine = route(&mut cache, 1, route_hash(&p, None), t(0));
        assert_eq!(cached_tokens(&cache, machine, 1, &p, MIN, t(0)), 0);
    }

    #[test]
    fn s2_1_prompt_cache_key_changes_the_machine_choice() {
        let p = prompt(&[text(words(0, 1300))]);
        let machines: std::collections::HashSet<u64> = (0..32)
            .map(|i| route_hash(&p, Some(&format!("key-{i}"))) % MACHINES as u64)
            .collect();
        assert!(
            machines.len() > 3,
            "keys spread over machines: {machines:?}"
        );
        assert_eq!(route_hash(&p, Some("a")), route_hash(&p, Some("a")));
    }

    #[test]
    fn s2_1_overflow_above_15_per_minute_lands_on_another_machine() {
        let mut cache = Cache::default();
        let p = prompt(&[text(words(0, 1300))]);
        let r = route_hash(&p, None);
        let home: Vec<usize> = (0..15).map(|i| route(&mut cache, 1, r, t(i))).collect();
        assert!(home.iter().all(|&m| m == home[0]));
        let sixteenth = route(&mut cache, 1, r, t(15));
        assert_ne!(sixteenth, home[0]);
        // A minute later the window has emptied again.
        assert_eq!(route(&mut cache, 1, r, t(200)), home[0]);
    }

    #[test]
    fn s2_1_overflowed_requests_miss_the_home_machine_cache() {
        let mut cache = Cache::default();
        let p = prompt(&[text(words(0, 1300))]);
        let hits: Vec<u64> = (0..20).map(|i| send(&mut cache, &p, None, t(i))).collect();
        assert_eq!(hits[0], 0);
        assert!(hits[1..15].iter().all(|&h| h > 0));
        assert_eq!(
            hits[15], 0,
            "first request on the overflow machine is a miss"
        );
        assert!(hits[16] > 0);
    }
}
