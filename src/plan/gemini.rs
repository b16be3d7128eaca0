//! Gemini explicit caching (providers.md §3.2–§3.4): which prefix of a request goes into a
//! `cachedContents`, whether an existing one is referenced, and how long it is kept.
//!
//! A cached content holds a request's leading part: `systemInstruction`, `tools`,
//! `toolConfig` and the first `k` of its `contents`. The cuts considered are the end of every
//! Content but the last (with `gemini_split_turn` a document asked about in the same turn is
//! its own Content) and the end of the system instruction and tools (`k = 0`), longest first,
//! each only when it reaches the model's minimum. A request references one cache at most.
//!
//! Economics, per token, with input price `p`, cache read price `r` and storage `s` per
//! token-hour. Caching a prefix of `P` tokens now, when the longest cache this request could
//! read instead holds `S` of them (`0` when none):
//! - now: the create bills `P × p` and the request reads `P × r`, instead of `S × r + (P − S) × p`:
//!   `S × (p − r) + P × r` more;
//! - each of the `n` later requests that share the prefix reads `P − S` more tokens at `r`
//!   instead of `p`: `n × (P − S) × (p − r)` less;
//! - storage, from creation until expiry: `P × s × H`, with `H = n × g + T` for a reuse gap `g`
//!   and the TTL `T` kept after the last use.
//!
//! So a cache is created when `n × (P − S) × (p − r) > S × (p − r) + P × r + P × s × H`. Only a
//! prefix this tenant has sent before is a candidate (`n = 0` otherwise: a prompt seen once
//! tells nothing of its reuse); `n` is the number of times it was sent so far (what came back
//! that often is expected back as often again; one more for the system instruction and tools
//! alone, which every conversation of an application shares) and `g` its mean gap, the time
//! since it was first seen over those sends.
//!
//! The TTL is the break-even hold `T = (p − r) / s`: keeping a cache that long costs what one
//! read saves, so holding it until then and letting it go after is the ski-rental choice, never
//! worse than twice what foresight would pay (Gemini 2.5 Flash: 16 minutes), within [1 min,
//! 1 h]. Each use that finds less than half of it left extends it by a PATCH, so a cache lives
//! while it is used and expires on its own once cold: cachet never needs to delete one. With
//! `S` in the rule, a conversation or an agent loop does not re-create its cache on every
//! turn: a longer cache replaces the one it extends once the new part outweighs the re-billing
//! of the old one (when the prefix has grown to a little over twice the cache).

use std::time::{Duration, SystemTime};

use crate::prefix::{Boundary, PrefixKey};
use crate::prompt::{Place, Prompt};
use crate::registry::Known;

const MIN_TTL: Duration = Duration::from_secs(60);
const MAX_TTL: Duration = Duration::from_secs(3600);
/// A cache this close to its expiry is not referenced: the request could arrive after it.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

/// A prefix that can go into a cached content: the system instruction, tools and tool config
/// plus the first `contents` Contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub contents: usize,
    pub key: PrefixKey,
    /// Estimated tokens up to the cut.
    pub tokens: u64,
}

/// A cached content cachet created and believes alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub name: String,
    pub expires: SystemTime,
}

/// What is known of one cut when planning.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The registry's history of the prefix (`None`: never sent by this tenant).
    pub known: Option<Known>,
    /// The cached content holding exactly this prefix, if any.
    pub live: Option<Live>,
}

/// Prices per token in pico-USD (storage per token-hour).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    pub input: f64,
    pub read: f64,
    pub storage: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Reference `name` in place of the cut; `extend` asks for a new TTL first.
    Reference {
        cut: Cut,
        name: String,
        extend: Option<Duration>,
    },
    /// Create a cache of the cut with this TTL, then reference it.
    Create { cut: Cut, ttl: Duration },
    /// Send the request as it is.
    Nothing,
}

/// The cuts of `prompt`, longest first: the end of each Content but the last (a request
/// keeps at least one of its own), and the end of the system instruction and tools.
pub fn cuts(prompt: &Prompt<'_>, boundaries: &[Boundary]) -> Vec<Cut> {
    let content = |segment: usize| match prompt.segments.get(segment).map(|s| s.place) {
        Some(Place::Message { index, .. }) => Some(index),
        _ => None,
    };
    let Some(last_content) = (0..prompt.segments.len()).filter_map(content).max() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut leading = None;
    for b in boundaries.iter().filter(|b| b.segment_end) {
        match content(b.segment) {
            // The end of a whole Content: the next segment starts another one.
            Some(index) if index < last_content && content(b.segment + 1) != Some(index) => {
                out.push(Cut {
                    contents: index + 1,
                    key: b.key,
                    tokens: b.tokens,
                });
            }
            Some(_) => {}
            None => leading = Some(b),
        }
    }
    if let Some(b) = leading {
        out.push(Cut {
            contents: 0,
            key: b.key,
            tokens: b.tokens,
        });
    }
    out.sort_by(|a, b| b.tokens.cmp(&a.tokens).then(b.contents.cmp(&a.contents)));
    out.dedup_by_key(|c| c.key);
    out
}

/// What to do with a request whose cuts (longest first) have `facts`. `min_tokens` is the
/// model's minimum in estimated tokens.
pub fn decide(cuts: &[(Cut, Facts)], prices: Prices, min_tokens: u64, now: SystemTime) -> Decision {
    let alive = |f: &Facts| {
        f.live
            .as_ref()
            .filter(|l| l.expires > now + EXPIRY_MARGIN)
            .cloned()
    };
    for (i, (cut, facts)) in cuts.iter().enumerate() {
        if cut.tokens < min_tokens {
            continue;
        }
        if let Some(live) = alive(facts) {
            let ttl = ttl(prices);
            let left = live.expires.duration_since(now).unwrap_or_default();
            return Decision::Reference {
                cut: *cut,
                name: live.name,
                extend: (left < ttl / 2).then_some(ttl),
            };
        }
        let Some(known) = facts.known else {
            continue;
        };
        // The longest shorter cache this request could read instead.
        let shorter = cuts[i + 1..]
            .iter()
            .find(|(c, f)| c.tokens >= min_tokens && alive(f).is_some())
            .map_or(0, |(c, _)| c.tokens);
        let gap = mean_gap(&known, now);
        // System instruction and tools alone are shared by every conversation of an
        // application: seen twice, they are expected back more than once.
        let n = known.reuses + 1 + u64::from(cut.contents == 0);
        if worth_creating(cut.tokens, shorter, n, gap, prices) {
            return Decision::Create {
                cut: *cut,
                ttl: ttl(prices),
            };
        }
    }
    Decision::Nothing
}

/// The module docs' rule: `n × (P − S) × (p − r) > S × (p − r) + P × r + P × s × H`.
pub fn worth_creating(p_tokens: u64, s_tokens: u64, n: u64, gap: Duration, prices: Prices) -> bool {
    let (big_p, big_s, n) = (p_tokens as f64, s_tokens.min(p_tokens) as f64, n as f64);
    let gain = prices.input - prices.read;
    let held_hours = (n * gap.as_secs_f64() + ttl(prices).as_secs_f64()) / 3600.0;
    let saved = n * (big_p - big_s) * gain;
    let spent = big_s * gain + big_p * prices.read + big_p * prices.storage * held_hours;
    saved > spent
}

/// The break-even hold `(p − r) / s` (module docs).
pub fn ttl(prices: Prices) -> Duration {
    if prices.storage <= 0.0 {
        return MAX_TTL;
    }
    let hours = (prices.input - prices.read).max(0.0) / prices.storage;
    Duration::from_secs_f64(hours * 3600.0).clamp(MIN_TTL, MAX_TTL)
}

/// Mean time between the sends of a prefix, counting the one being planned now.
fn mean_gap(known: &Known, now: SystemTime) -> Duration {
    let span = now.duration_since(known.first_seen).unwrap_or_default();
    span / u32::try_from(known.reuses + 1).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
