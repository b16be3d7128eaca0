//! The prefix registry: what cachet has seen and believes is cached, per tenant (DESIGN.md
//! "Registry", "Definitions" → Tenant).
//!
//! For each tenant, prefix key → the prefix's estimated tokens, when it was first and last seen,
//! how often it was reused, and the belief that the provider holds it cached until some time.
//! Beliefs come only from what providers report: after a response, the prefixes its reported
//! cache read and write cover are believed cached for the provider's retention; a prefix the
//! registry believed cached but the provider did not read is dropped (the provider contradicted
//! it). Time comes from the [`Clock`].
//!
//! The in-process store is a moka cache weighed by entry size with a memory bound; the
//! [`Registry`] trait is what a shared (Redis) backend will implement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use moka::sync::Cache;

use crate::clock::Clock;
use crate::plan::gemini::Live;
use crate::prefix::PrefixKey;
use crate::tenant::Tenant;

/// One prefix of one request, as the registry needs it: its key and cumulative token estimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub key: PrefixKey,
    pub tokens: u64,
}

/// What the registry knows of a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known {
    pub tokens: u64,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    /// Requests after the first that carried this prefix.
    pub reuses: u64,
    /// Believed cached by the provider until then (`None`: no belief).
    pub cached_until: Option<SystemTime>,
}

impl Known {
    pub fn believed_cached(&self, now: SystemTime) -> bool {
        self.cached_until.is_some_and(|until| now < until)
    }
}

/// A response's report on a request's prefixes, in the provider's tokens.
#[derive(Clone, Copy, Debug)]
pub struct Report {
    /// All input tokens the provider counted (uncached, read and written).
    pub input_total: u64,
    /// Tokens the provider said it read from its cache.
    pub cache_read: u64,
    /// Tokens it said it wrote (Anthropic) — or, for automatic caches, `None`: the whole prompt
    /// is cached after the request.
    pub cache_write: Option<u64>,
    /// How long the provider keeps what it cached (its TTL or retention).
    pub retention: Duration,
}

/// Converts between cachet's token estimates (bytes / 4, what marks carry) and the provider's
/// counts, by one request's own totals, so that nothing depends on exact counts.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// The request's input, estimated.
    pub estimated: u64,
    /// The same input as the provider counted it.
    pub reported: u64,
}

impl Scale {
    /// The scale of a request whose last mark is its whole prompt.
    pub fn of(marks: &[Mark], reported: u64) -> Self {
        Scale {
            estimated: marks.last().map_or(0, |m| m.tokens),
            reported,
        }
    }

    pub fn to_estimate(self, reported: u64) -> u64 {
        ratio(reported, self.estimated, self.reported)
    }

    pub fn to_reported(self, estimated: u64) -> u64 {
        ratio(estimated, self.reported, self.estimated)
    }
}

/// `n × num ÷ den`, 0 when `den` is 0.
fn ratio(n: u64, num: u64, den: u64) -> u64 {
    if den == 0 {
        return 0;
    }
    u64::try_from(u128::from(n) * u128::from(num) / u128::from(den)).unwrap_or(u64::MAX)
}

/// What a request's prefixes were predicted to hit, and what the provider then reported, both
/// in the provider's tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Tokens of the longest prefix believed cached before the request.
    pub predicted: u64,
    pub actual: u64,
    /// Beliefs the report contradicted and the registry dropped.
    pub dropped: usize,
}

pub trait Registry: Send + Sync {
    /// The longest of `marks` (ordered, shortest first) that this tenant has sent before, and
    /// what is known of it.
    fn longest_known(&self, tenant: &Tenant, marks: &[Mark]) -> Option<(usize, Known)>;

    /// Records a request's prefixes and the provider's report on them.
    fn observe(&self, tenant: &Tenant, marks: &[Mark], report: Report) -> Outcome;
}

/// The in-process registry.
pub struct MemoryRegistry {
    clock: Arc<Clock>,
    entries: Cache<(Tenant, PrefixKey), Known>,
}

/// Bytes one entry costs in the cache (key, value and moka's own bookkeeping, roughly).
const ENTRY_BYTES: u32 = 160;

impl MemoryRegistry {
    /// A registry holding at most about `max_bytes` of entries; the least useful are evicted.
    pub fn new(clock: Arc<Clock>, max_bytes: u64) -> Self {
        MemoryRegistry {
            clock,
            entries: Cache::builder()
                .weigher(|_, _| ENTRY_BYTES)
                .max_capacity(max_bytes)
                .build(),
        }
    }

    pub fn get(&self, tenant: &Tenant, key: &PrefixKey) -> Option<Known> {
        self.entries.get(&(*tenant, *key))
    }
}

impl Registry for MemoryRegistry {
    fn longest_known(&self, tenant: &Tenant, marks: &[Mark]) -> Option<(usize, Known)> {
        marks
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, mark)| self.get(tenant, &mark.key).map(|known| (i, known)))
    }

    fn observe(&self, tenant: &Tenant, marks: &[Mark], report: Report) -> Outcome {
        let now = self.clock.now();
        let scale = Scale::of(marks, report.input_total);
        let estimated = scale.estimated;
        let to_estimate = |real| scale.to_estimate(real);
        let to_real = |est| scale.to_reported(est);
        // Providers read and write whole prefixes that end at marks (breakpoints, block ends),
        // while bytes / 4 is only an estimate of their tokens: a converted count is snapped to
        // the nearest mark when within a quarter of it.
        let snap = |est: u64| -> u64 {
            if est == 0 {
                return 0;
            }
            marks
                .iter()
                .map(|m| m.tokens)
                .min_by_key(|t| t.abs_diff(est))
                .filter(|t| t.abs_diff(est) * 4 <= est)
                .unwrap_or(est)
        };
        let read = snap(to_estimate(report.cache_read));
        let predicted = marks
            .iter()
            .rev()
            .find_map(|m| {
                self.get(tenant, &m.key)
                    .filter(|k| k.believed_cached(now))
                    .map(|_| m.tokens)
            })
            .unwrap_or(0);
        // What the provider holds after this request: what it read plus what it wrote, or the
        // whole prompt for caches that keep everything they see.
        let held = match report.cache_write {
            Some(write) => snap(to_estimate(report.cache_read + write)),
            None => estimated,
        };
        let until = now + report.retention;
        let mut dropped = 0;
        for mark in marks {
            let key = (*tenant, mark.key);
            let mut known = self.entries.get(&key).map_or(
                Known {
                    tokens: mark.tokens,
                    first_seen: now,
                    last_seen: now,
                    reuses: 0,
                    cached_until: None,
                },
                |k| Known {
                    last_seen: now,
                    reuses: k.reuses + 1,
                    ..k
                },
            );
            if known.believed_cached(now) && mark.tokens <= predicted && mark.tokens > read {
                // Believed cached, yet the provider did not read it: the belief was wrong.
                known.cached_until = None;
                dropped += 1;
            }
            if held > 0 && mark.tokens <= held {
                // Read or written by this request: cached from now on, whatever was believed.
                known.cached_until = Some(until);
            }
            self.entries.insert(key, known);
        }
        Outcome {
            predicted: to_real(predicted),
            actual: report.cache_read,
            dropped,
        }
    }
}

/// The Gemini cached contents cachet created, by tenant and the prefix each holds: a cache is
/// only ever referenced for the tenant whose credential created it. Each is kept until its
/// storage is booked (`take_ended`), so that none ends unaccounted; live caches are few (each
/// lives at most an hour past its last use), so a map under a lock holds them.
pub struct ContentCaches {
    entries: Mutex<HashMap<(Tenant, PrefixKey), Held>>,
    /// Prefixes whose create the provider refused (too small, say), until when not to ask again.
    refused: Cache<(Tenant, PrefixKey), SystemTime>,
}

/// A cache cachet holds, with what its storage bill needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub live: Live,
    /// Tokens the cache holds (its create's `totalTokenCount`).
    pub tokens: u64,
    pub created: SystemTime,
    /// Who the storage is billed to: the create's record.
    pub owner: Arc<Owner>,
}

/// The attribution of a cache's storage: the upstream call that created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub upstream: String,
    pub provider: &'static str,
    pub model: String,
    pub team: Option<String>,
    /// The create call's request id.
    pub request_id: String,
}

/// Refusals remembered: far more than a tenant's working set, bounded all the same.
const REFUSALS: u64 = 100_000;

impl ContentCaches {
    pub fn new() -> Self {
        ContentCaches {
            entries: Mutex::default(),
            refused: Cache::new(REFUSALS),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Tenant, PrefixKey), Held>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cache holding `key` for `tenant`, unless it has expired by `now`.
    pub fn get(&self, tenant: &Tenant, key: &PrefixKey, now: SystemTime) -> Option<Live> {
        self.lock()
            .get(&(*tenant, *key))
            .filter(|held| held.live.expires > now)
            .map(|held| held.live.clone())
    }

    /// The provider refused to create a cache of `key`: not asked again before `until`.
    pub fn refuse(&self, tenant: &Tenant, key: &PrefixKey, until: SystemTime) {
        self.refused.insert((*tenant, *key), until);
    }

    pub fn is_refused(&self, tenant: &Tenant, key: &PrefixKey, now: SystemTime) -> bool {
        self.refused
            .get(&(*tenant, *key))
            .is_some_and(|until| now < until)
    }

    /// Holds a new cache for `key`; the one it replaces, if any, has ended (its storage is due).
    pub fn insert(&self, tenant: &Tenant, key: &PrefixKey, held: Held) -> Option<Held> {
        self.lock().insert((*tenant, *key), held)
    }

    /// The cache `name` of `key` lives until `expires` now (a TTL extension).
    pub fn extend(&self, tenant: &Tenant, key: &PrefixKey, name: &str, expires: SystemTime) {
        if let Some(held) = self.lock().get_mut(&(*tenant, *key))
            && held.live.name == name
        {
            held.live.expires = expires;
        }
    }

    /// Forgets the cache `name` held for `key` (it has vanished upstream), unless another
    /// has taken its place meanwhile; the forgotten one has ended.
    pub fn forget(&self, tenant: &Tenant, key: &PrefixKey, name: &str) -> Option<Held> {
        let mut entries = self.lock();
        let id = (*tenant, *key);
        if entries.get(&id).is_some_and(|h| h.live.name == name) {
            return entries.remove(&id);
        }
        None
    }

    /// Removes and returns the caches expired by `now` (all of them with `None`: shutdown,
    /// when every cache is billed to its expiry, what its owner is committed to).
    pub fn take_ended(&self, now: Option<SystemTime>) -> Vec<(Tenant, Held)> {
        let mut entries = self.lock();
        let ended: Vec<(Tenant, PrefixKey)> = entries
            .iter()
            .filter(|(_, held)| now.is_none_or(|now| held.live.expires <= now))
            .map(|(id, _)| *id)
            .collect();
        ended
            .into_iter()
            .filter_map(|id| entries.remove(&id).map(|held| (id.0, held)))
            .collect()
    }
}

impl Default for ContentCaches {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests;
