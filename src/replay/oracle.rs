//! The oracle: the most any placement of caches could save on a workload under the provider's
//! rules, computed with perfect foresight on the workload's context-first layout.
//!
//! - **OpenAI and DeepSeek** cache automatically: no placement decision exists, only the layout.
//!   The oracle runs the simulator's own rule functions (`sim::rules::openai` on a single
//!   machine, ignoring routing and overflow; `sim::rules::deepseek`) on the context-first
//!   prompts.
//! - **Anthropic and Gemini** need a placement. Both are bounded by one decomposition: the
//!   requests' prompts form a trie of cacheable prefixes (block ends reaching the model's
//!   minimum); each trie edge (the tokens between a cacheable prefix and the nearest cacheable
//!   one above it) is used by the requests whose prompts pass through it, at their times. A
//!   request that reads a prefix reads every edge on its path, and every read of an edge needs
//!   an earlier write of it that has stayed alive through reuse (each entry a request reads was
//!   used by an earlier request that also passed through the edge, within the entry's TTL).
//!   So per edge, the uses split into *sessions*: the first use writes, the later ones read.
//!   Choosing the best sessions per edge independently, by dynamic programming over its uses,
//!   is a relaxation of every real schedule (it ignores the 4-breakpoint and 20-block limits,
//!   the 1h-before-5m order, and that a Gemini request reads only one cache and a new cache
//!   re-bills its whole prefix), hence an upper bound on savings:
//!   - Anthropic session: every gap between consecutive use times ≤ its TTL (a hit refreshes
//!     the entry); profit = readers × (input − read) × L − (write_τ − input) × L, τ chosen per
//!     session. One more way to bridge a gap of more than 5 minutes (up to an hour) at the 5m
//!     premium: when the request after the gap shares a longer cacheable prefix with an earlier
//!     request of the last hour. A 1h entry of that longer prefix holds (and its reads serve)
//!     this edge too, and its writer paid the 1h premium only on its own new tokens: charging
//!     the edge its own 1h premium there would not be a bound (a schedule doing this saves
//!     more).
//!   - Gemini session (an explicit cache held from its first to its last use, exactly as long
//!     as needed): profit = readers × (input − read) × L − read × L (the creator pays the
//!     creation at the input price and then reads it) − storage × L × hours held.
//!
//!   Readers are the uses after the first at a strictly later time (a write is visible only
//!   once its response has begun). Gemini implicit caching is treated as off.
//!
//! Money is computed in pico-USD and reported in nano-USD, like the simulator's bills.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::pricing::Rates;
use crate::sim::prompt::SimPrompt;
use crate::sim::rules::{self, deepseek, openai};

/// One request as the oracle sees it: its time (seconds from the start) and its context-first
/// prompt, rendered by the simulator.
pub struct Item {
    pub t: f64,
    pub prompt: SimPrompt,
}

/// The oracle's bill for the input side of a workload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OracleBill {
    /// Input tokens of all requests.
    pub input_tokens: u64,
    /// Those tokens all billed as uncached input, nano-USD.
    pub uncached_nusd: u64,
    /// The most that caching could save on them, nano-USD.
    pub saved_nusd: u64,
    /// Tokens read from cache, for providers whose caching has no write fee (OpenAI, DeepSeek):
    /// their savings are proportional to it, so efficiency can be told without prices.
    pub read_tokens: Option<u64>,
}

/// Prices per token in pico-USD, as the price table holds them.
#[derive(Clone, Copy, Debug)]
pub struct Prices {
    pub input: u64,
    pub read: u64,
    pub write_5m: u64,
    pub write_1h: Option<u64>,
    /// Per token-hour (Gemini explicit caches).
    pub storage: u64,
}

impl Prices {
    /// Token units (input 1, read 0) for a model without prices: only `read_tokens` is then
    /// meaningful.
    pub const TOKENS: Prices = Prices {
        input: 1,
        read: 0,
        write_5m: 1,
        write_1h: None,
        storage: 0,
    };

    /// From a price row; `None` when input or read prices are missing (no money can be told).
    pub fn from_rates(rates: &Rates) -> Option<Prices> {
        Some(Prices {
            input: rates.input?,
            read: rates.cache_read?,
            write_5m: rates.cache_write_5m.or(rates.input)?,
            write_1h: rates.cache_write_1h,
            storage: rates.storage.unwrap_or(0),
        })
    }
}

fn uncached(items: &[Item], prices: &Prices) -> (u64, u64) {
    let tokens: u64 = items.iter().map(|i| i.prompt.tokens()).sum();
    (
        tokens,
        pico_to_nano(u128::from(tokens) * u128::from(prices.input)),
    )
}

fn pico_to_nano(pico: u128) -> u64 {
    u64::try_from((pico + 500) / 1000).unwrap_or(u64::MAX)
}

fn at(start: SystemTime, t: f64) -> SystemTime {
    start + Duration::from_secs_f64(t.max(0.0))
}

/// OpenAI: the automatic cache on one machine (no routing, no overflow), on `items` in time
/// order.
pub fn openai(items: &[Item], prices: &Prices, min_tokens: u64) -> OracleBill {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut cache = openai::Cache::default();
    let mut read = 0u64;
    for item in items {
        let now = at(start, item.t);
        let cached = openai::cached_tokens(&cache, 0, 0, &item.prompt, min_tokens, now);
        let visible = rules::first_byte(now, item.prompt.tokens() - cached);
        openai::commit(&mut cache, 0, 0, &item.prompt, min_tokens, now, visible);
        read += cached;
    }
    automatic_bill(items, prices, read)
}

/// DeepSeek: the provider's own units, on `items` in time order.
pub fn deepseek(items: &[Item], prices: &Prices) -> OracleBill {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut cache = deepseek::Cache::default();
    let mut read = 0u64;
    for item in items {
        let now = at(start, item.t);
        let hit = deepseek::hit_tokens(&cache, 0, &item.prompt, now);
        deepseek::touch(&mut cache, 0, &item.prompt, hit, now);
        let visible = rules::first_byte(now, item.prompt.tokens() - hit);
        deepseek::commit(&mut cache, 0, &item.prompt, None, now, visible);
        read += hit;
    }
    automatic_bill(items, prices, read)
}

fn automatic_bill(items: &[Item], prices: &Prices, read: u64) -> OracleBill {
    let (input_tokens, uncached_nusd) = uncached(items, prices);
    let saved = u128::from(read) * u128::from(prices.input.saturating_sub(prices.read));
    OracleBill {
        input_tokens,
        uncached_nusd,
        saved_nusd: pico_to_nano(saved),
        read_tokens: Some(read),
    }
}

/// Anthropic: the best sessions per trie edge (module docs).
pub fn anthropic(items: &[Item], prices: &Prices, min_tokens: u64) -> OracleBill {
    const FIVE_MINUTES: f64 = 300.0;
    const ONE_HOUR: f64 = 3600.0;
    let read_gain = prices.input.saturating_sub(prices.read) as f64;
    let premium_5m = prices.write_5m as f64 - prices.input as f64;
    let premium_1h = prices.write_1h.map(|w| w as f64 - prices.input as f64);
    let saved: f64 = edges(items, min_tokens)
        .iter()
        .map(|edge| {
            let uses = &edge.uses;
            best_sessions(uses.len(), |first, end| {
                let gaps = (first + 1..end).map(|j| (j, uses[j] - uses[j - 1]));
                let mut short = true;
                let mut within_hour = true;
                for (j, gap) in gaps {
                    within_hour &= gap <= ONE_HOUR;
                    short &= gap <= FIVE_MINUTES
                        || (premium_1h.is_some() && gap <= ONE_HOUR && edge.bridged[j]);
                }
                let premium = match (short, within_hour, premium_1h) {
                    (true, _, _) => premium_5m,
                    (false, true, Some(p)) => p,
                    _ => return None,
                };
                Some(readers(&uses[first..end]) as f64 * read_gain - premium)
            }) * edge.tokens as f64
        })
        .sum();
    bill(items, prices, saved)
}

/// Gemini explicit caches: the best sessions per trie edge (module docs).
pub fn gemini(items: &[Item], prices: &Prices, min_tokens: u64) -> OracleBill {
    let read_gain = prices.input.saturating_sub(prices.read) as f64;
    let saved: f64 = edges(items, min_tokens)
        .iter()
        .map(|edge| {
            best_sessions(edge.uses.len(), |first, end| {
                let uses = &edge.uses[first..end];
                let hours = (uses[uses.len() - 1] - uses[0]) / 3600.0;
                Some(
                    readers(uses) as f64 * read_gain
                        - prices.read as f64
                        - prices.storage as f64 * hours,
                )
            }) * edge.tokens as f64
        })
        .sum();
    bill(items, prices, saved)
}

fn bill(items: &[Item], prices: &Prices, saved_pico: f64) -> OracleBill {
    let (input_tokens, uncached_nusd) = uncached(items, prices);
    OracleBill {
        input_tokens,
        uncached_nusd,
        saved_nusd: pico_to_nano(saved_pico.max(0.0).round() as u128),
        read_tokens: None,
    }
}

/// Uses of a session after the first at a strictly later time: those can read the write.
fn readers(uses: &[f64]) -> usize {
    uses.iter().filter(|&&t| t > uses[0]).count()
}

/// The most profit from splitting `n` uses (sorted by time) into sessions of consecutive uses,
/// each worth `profit(first, end)` per token for uses `first..end` (`None`: not a valid
/// session, nor is any that starts earlier), uses between sessions paying full price.
fn best_sessions(n: usize, profit: impl Fn(usize, usize) -> Option<f64>) -> f64 {
    let mut best = vec![0.0f64; n + 1];
    for end in 1..=n {
        best[end] = best[end - 1];
        for first in (0..end).rev() {
            match profit(first, end) {
                Some(p) => best[end] = best[end].max(best[first] + p),
                // A gap too long for the TTL stays too long for every earlier start.
                None => break,
            }
        }
    }
    best[n]
}

/// A trie edge: the tokens between a cacheable prefix and the nearest cacheable prefix above it,
/// and the times of the requests passing through it.
struct Edge {
    tokens: u64,
    /// Use times, sorted.
    uses: Vec<f64>,
    /// Per use: an earlier request of the last hour shares a longer cacheable prefix with it
    /// (whose 1h entry could serve this edge too).
    bridged: Vec<bool>,
}

/// A cacheable prefix: its end and the prefix hash there.
type PrefixId = (usize, u64);

/// One request through a prefix: its time and the next cacheable prefix on its path.
type Use = (f64, Option<PrefixId>);

/// The cacheable prefixes of every prompt (block ends of at least `min_tokens`), each with the
/// tokens it adds over the cacheable prefix before it (taken from the first prompt that has
/// it), and the times of all requests that have it.
fn edges(items: &[Item], min_tokens: u64) -> Vec<Edge> {
    // Per prefix: its tokens over its parent, and its uses as (time, the next cacheable prefix
    // on that request's path).
    let mut by_prefix: HashMap<PrefixId, (u64, Vec<Use>)> = HashMap::new();
    let mut order: Vec<PrefixId> = Vec::new();
    for item in items {
        let mut parent = 0u64;
        let mut path: Vec<PrefixId> = Vec::new();
        for block in &item.prompt.blocks {
            let end = block.end;
            if (end as u64) < min_tokens || (end as u64) == parent {
                continue;
            }
            let key = (end, item.prompt.prefix_hash(end));
            if path.contains(&key) {
                continue;
            }
            by_prefix.entry(key).or_insert_with(|| {
                order.push(key);
                (end as u64 - parent, Vec::new())
            });
            path.push(key);
            parent = end as u64;
        }
        for (i, key) in path.iter().enumerate() {
            if let Some((_, uses)) = by_prefix.get_mut(key) {
                uses.push((item.t, path.get(i + 1).copied()));
            }
        }
    }
    order
        .into_iter()
        .filter_map(|key| by_prefix.remove(&key))
        .map(|(tokens, mut uses)| {
            uses.sort_by(|a, b| a.0.total_cmp(&b.0));
            let bridged = (0..uses.len())
                .map(|j| {
                    let (t, child) = uses[j];
                    child.is_some()
                        && uses[..j]
                            .iter()
                            .any(|&(s, c)| c == child && s < t && t - s <= 3600.0)
                })
                .collect();
            Edge {
                tokens,
                uses: uses.into_iter().map(|(t, _)| t).collect(),
                bridged,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) fn anthropic_cost_of_placement(
    items: &[Item],
    placements: &[Vec<(usize, crate::sim::prompt::Ttl)>],
    prices: &Prices,
    min_tokens: u64,
) -> u128 {
    use crate::sim::rules::anthropic;
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut cache = anthropic::Cache::default();
    let mut pico = 0u128;
    for (item, marks) in items.iter().zip(placements) {
        let now = at(start, item.t);
        let bps: Vec<anthropic::Breakpoint> = marks
            .iter()
            .map(|&(block, ttl)| anthropic::Breakpoint { block, ttl })
            .collect();
        let hit = anthropic::lookup(&cache, 0, &item.prompt, &bps, now);
        let c = anthropic::charge(&item.prompt, &bps, hit, min_tokens);
        let visible = rules::first_byte(now, c.uncached + c.write_5m + c.write_1h);
        let times = rules::Times {
            start: now,
            visible,
        };
        anthropic::commit(&mut cache, 0, &item.prompt, &bps, hit, min_tokens, times);
        pico += u128::from(c.uncached) * u128::from(prices.input)
            + u128::from(c.read) * u128::from(prices.read)
            + u128::from(c.write_5m) * u128::from(prices.write_5m)
            + u128::from(c.write_1h) * u128::from(prices.write_1h.unwrap_or(prices.write_5m));
    }
    pico
}
