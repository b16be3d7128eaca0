//! Replica pools: which replica of an upstream's `base_urls` a request goes to.
//!
//! Steps, for a request with prefix boundaries `b1..bn` (chained keys, so a replica holds `bi`
//! only if it held `b1..bi-1` when it processed the prompt):
//! 1. Each healthy replica's *predicted prefix* is the number of leading boundaries its index
//!    holds, in tokens (a greedy walk, as llm-d's approximate scorer does).
//! 2. Bounded load (consistent hashing with bounded loads, Mirrokni et al.), on the load that
//!    matters for balance: a replica whose in-flight count, averaged over time (exponentially,
//!    over `LOAD_WINDOW`), exceeds `(1+ε)` × the pool's mean is passed over, unless that
//!    average is under one request. Against bursts, the in-flight count itself stays within
//!    twice the classic bound, `ceil(2(1+ε)(m+1)/h)` with `m` requests in flight over `h`
//!    healthy replicas. Without a bound every request would follow the prefix all of them
//!    share (a trace's system prompt) onto one replica.
//! 3. Among the replicas within the bound, the lowest cost wins (Dynamo's KV router): the
//!    predicted prefix, less `LOAD_TOKENS` for each request the replica has in flight. So a
//!    conversation stays with its history, and a prompt whose best match is a head every
//!    replica holds goes to the least loaded; a replica passed over hands the request to the
//!    one holding the next-longest prefix. Ties go to the least loaded, then to a rotating
//!    cursor. No prefix anywhere: the least loaded (cold).
//! 4. The rest follow as failover candidates: within the bound by cost, then over it, then the
//!    replicas in their cool-down (a pool never refuses a request while a replica is left).
//!
//! Why the average and not the count alone: on the Mooncake trace (8 replicas, about 3
//! requests in flight each) a count bound of `ceil(1.25(m+1)/h)` held a conversation's replica
//! over the bound for 8% of requests, each then resent its whole history elsewhere (26% of
//! tokens cached against a bound of 34%, load balance 1.23); with the time-averaged bound and
//! the cost of step 3 a conversation's next turn follows its history (33.6%, balance 1.12).
//! The index was not the problem: it predicted 99.8% of the tokens the replicas then read.
//!
//! The index is one LRU per replica of prefix keys weighted by their tokens, sized to the
//! replica's `kv_capacity_tokens`: a prompt's keys are stamped tail first, so eviction takes
//! the tails of old prompts before their heads, as vLLM frees blocks. It is written at the
//! decision (siblings sent in a burst co-locate) and corrected by what the replica reports:
//! the provider-to-estimate token scale is learnt from usage, and a replica that read less
//! than predicted has evicted more than the index believes, so the index gives up as much.
//!
//! Cost: O(replicas × matched boundaries) hash lookups per request under one lock, no I/O.
//! Keys already include the tenant, so a prefix seen under one credential never helps another.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use crate::clock::Clock;
use crate::plan::Branch;
use crate::prefix::{Boundary, PrefixKey};

/// How long a replica that failed (connect error, 5xx) is passed over before it is tried again.
pub const COOL_DOWN: Duration = Duration::from_secs(10);

/// The time over which a replica's in-flight count is averaged for the load bound.
pub const LOAD_WINDOW: Duration = Duration::from_secs(60);

/// What a request in flight on a replica costs a prefix there, in provider tokens (a term of
/// the choice's cost, step 3): a head every replica holds is worth less than a lighter replica.
pub const LOAD_TOKENS: u64 = 512;

/// The pool of one upstream: its replicas' load, health and prefix index.
pub struct Pool {
    state: Mutex<State>,
    epsilon: f64,
    clock: Arc<Clock>,
}

struct State {
    replicas: Vec<Replica>,
    /// Where ties and round-robin start next.
    cursor: usize,
    /// Provider tokens per cachet estimate, learnt from reported usage.
    scale: TokenScale,
}

struct Replica {
    in_flight: u32,
    /// `in_flight` averaged over time (exponentially, over `LOAD_WINDOW`) up to `since`.
    average: f64,
    since: SystemTime,
    lru: KeyLru,
    down_until: Option<SystemTime>,
}

impl Replica {
    /// Brings the time average up to `now`: the count has been `in_flight` since `since`.
    fn settle(&mut self, now: SystemTime) {
        let Ok(elapsed) = now.duration_since(self.since) else {
            return;
        };
        let keep = (-elapsed.as_secs_f64() / LOAD_WINDOW.as_secs_f64()).exp();
        let current = f64::from(self.in_flight);
        self.average = current + (self.average - current) * keep;
        self.since = now;
    }
}

/// A chain of prefix keys with the cachet estimate of tokens up to each.
#[derive(Clone, Debug, Default)]
pub struct Chain(Vec<(PrefixKey, u64)>);

impl Chain {
    pub fn of(boundaries: &[Boundary]) -> Self {
        Chain(boundaries.iter().map(|b| (b.key, b.tokens)).collect())
    }

    /// Estimated tokens of the whole prompt.
    pub fn tokens(&self) -> u64 {
        self.0.last().map_or(0, |&(_, t)| t)
    }
}

/// The order in which to try a request's replicas, and why the first was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pick {
    /// Replica indexes, the choice first, then failover candidates.
    pub order: Vec<usize>,
    pub branch: Branch,
    /// Estimated tokens the first replica is predicted to hold.
    pub predicted: u64,
    /// Each replica's predicted prefix, estimated tokens (0 with affinity off).
    pub matched: Vec<u64>,
}

/// A replica's load and health as the choice sees them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Load {
    pub in_flight: u32,
    /// The in-flight count averaged over time (`LOAD_WINDOW`).
    pub average: f64,
    pub healthy: bool,
}

/// Step 2–4 as a pure function: `matched[i]` is replica i's predicted prefix in tokens,
/// `per_request` what each request in flight costs in the same tokens, `start` the rotating
/// tie-break. `affinity` off: least loaded, round-robin among equals.
pub fn choose(
    loads: &[Load],
    matched: &[u64],
    per_request: u64,
    epsilon: f64,
    start: usize,
    affinity: bool,
) -> Pick {
    let n = loads.len();
    let healthy: Vec<usize> = (0..n).filter(|&i| loads[i].healthy).collect();
    let total: u64 = healthy.iter().map(|&i| u64::from(loads[i].in_flight)).sum();
    let burst = bound(total, healthy.len(), 1.0 + 2.0 * epsilon);
    let mean = healthy.iter().map(|&i| loads[i].average).sum::<f64>() / healthy.len().max(1) as f64;
    let heavy = ((1.0 + epsilon) * mean).max(1.0);
    let within = |i: usize| u64::from(loads[i].in_flight) < burst && loads[i].average <= heavy;
    let rotation = |i: usize| (i + n - start % n.max(1)) % n.max(1);
    let score = |i: usize| if affinity { matched[i] } else { 0 };
    let cost =
        |i: usize| i128::from(per_request) * i128::from(loads[i].in_flight) - i128::from(score(i));
    let mut order: Vec<usize> = (0..n).collect();
    // Within the bound first, then over it, then in cool-down; then the lowest cost, the
    // least loaded and the rotation.
    order.sort_by_key(|&i| {
        let tier = match (loads[i].healthy, within(i)) {
            (true, true) => 0u8,
            (true, false) => 1,
            (false, _) => 2,
        };
        (tier, cost(i), loads[i].in_flight, rotation(i))
    });
    let first = order.first().copied();
    let predicted = first.map_or(0, score);
    let best_anywhere = healthy.iter().map(|&i| score(i)).max().unwrap_or(0);
    let branch = match () {
        _ if !affinity => Branch::ReplicaBalanced,
        _ if predicted > 0 && predicted >= best_anywhere => Branch::ReplicaAffinity,
        _ if best_anywhere > 0 => Branch::ReplicaOverloaded,
        _ => Branch::ReplicaCold,
    };
    Pick {
        order,
        branch,
        predicted,
        matched: (0..n).map(score).collect(),
    }
}

/// Most requests a replica may hold with this one placed: `ceil((1+ε)(m+1)/h)`.
fn bound(in_flight: u64, healthy: usize, epsilon: f64) -> u64 {
    let mean = (in_flight + 1) as f64 / healthy.max(1) as f64;
    ((1.0 + epsilon) * mean).ceil().max(1.0) as u64
}

impl Pool {
    pub fn new(replicas: usize, capacity_tokens: u64, epsilon: f64, clock: Arc<Clock>) -> Self {
        let now = clock.now();
        let replicas = (0..replicas)
            .map(|_| Replica {
                in_flight: 0,
                average: 0.0,
                since: now,
                lru: KeyLru::new(capacity_tokens),
                down_until: None,
            })
            .collect();
        Pool {
            state: Mutex::new(State {
                replicas,
                cursor: 0,
                scale: TokenScale::default(),
            }),
            epsilon,
            clock,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update under the lock leaves the state usable (counts, maps, stamps).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Chooses a replica for `chain` (`None`: an unmodelled request, balanced by load) and
    /// writes the chain into the chosen replica's index.
    pub fn pick(&self, chain: Option<&Chain>, affinity: bool) -> Pick {
        let now = self.clock.now();
        let mut state = self.state();
        let loads: Vec<Load> = state
            .replicas
            .iter_mut()
            .map(|r| {
                r.settle(now);
                Load {
                    in_flight: r.in_flight,
                    average: r.average,
                    healthy: r.down_until.is_none_or(|until| now >= until),
                }
            })
            .collect();
        let matched: Vec<u64> = match chain.filter(|_| affinity) {
            Some(chain) => state
                .replicas
                .iter()
                .map(|r| r.lru.matched(chain))
                .collect(),
            None => vec![0; loads.len()],
        };
        let per_request = state.scale.to_estimate(LOAD_TOKENS);
        let pick = choose(
            &loads,
            &matched,
            per_request,
            self.epsilon,
            state.cursor,
            affinity && chain.is_some(),
        );
        tracing::debug!(
            replica = pick.order.first().copied().unwrap_or(0),
            branch = pick.branch.as_str(),
            matched = ?pick.matched,
            in_flight = ?loads.iter().map(|l| l.in_flight).collect::<Vec<_>>(),
            "pool pick"
        );
        // The rotation moves on cold and balanced choices only, so cold prefixes spread over
        // an idle pool in turn (llm-d's least recently cold-assigned replica).
        if matches!(pick.branch, Branch::ReplicaCold | Branch::ReplicaBalanced) {
            state.cursor = state.cursor.wrapping_add(1);
        }
        pick
    }

    /// A request is being sent to `replica`: it counts in flight until the guard drops.
    pub fn start(self: &Arc<Self>, replica: usize, chain: Option<&Chain>) -> InFlight {
        let now = self.clock.now();
        let mut state = self.state();
        let scale = state.scale;
        if let Some(r) = state.replicas.get_mut(replica) {
            r.settle(now);
            r.in_flight += 1;
            if let Some(chain) = chain {
                r.lru.admit(chain, scale);
            }
        }
        InFlight {
            pool: self.clone(),
            replica,
        }
    }

    /// `replica` failed to answer (connect error, 5xx head): passed over until the cool-down
    /// ends, and what was just written for `chain` is taken back (the replica did not take it).
    pub fn failed(&self, replica: usize, chain: Option<&Chain>, predicted: u64) {
        let now = self.clock.now();
        let mut state = self.state();
        if let Some(r) = state.replicas.get_mut(replica) {
            r.down_until = Some(now + COOL_DOWN);
            if let Some(chain) = chain {
                r.lru.forget_beyond(chain, predicted);
            }
        }
    }

    /// `replica` answered: it is healthy again.
    pub fn answered(&self, replica: usize) {
        if let Some(r) = self.state().replicas.get_mut(replica) {
            r.down_until = None;
        }
    }

    /// What the replica reported for `chain`: `input` and `cached` in provider tokens, and the
    /// estimate the index predicted it held.
    pub fn reported(&self, replica: usize, chain: &Chain, predicted: u64, input: u64, cached: u64) {
        let mut state = self.state();
        state.scale.learn(chain.tokens(), input);
        let scale = state.scale;
        let read = scale.to_estimate(cached);
        // Predicted against read, per request (estimated tokens): how far the index drifts.
        tracing::debug!(
            replica,
            predicted,
            read,
            input,
            cached,
            "pool replica reported"
        );
        if let Some(r) = state.replicas.get_mut(replica) {
            r.lru.correct(predicted, read, scale);
        }
    }

    /// Each replica's in-flight count averaged over time, as of now.
    pub fn average_in_flight(&self) -> Vec<f64> {
        let now = self.clock.now();
        let mut state = self.state();
        state
            .replicas
            .iter_mut()
            .map(|r| {
                r.settle(now);
                r.average
            })
            .collect()
    }

    /// Requests in flight on each replica.
    pub fn in_flight(&self) -> Vec<u32> {
        self.state().replicas.iter().map(|r| r.in_flight).collect()
    }

    /// Provider tokens each replica's index believes it holds.
    pub fn held_tokens(&self) -> Vec<u64> {
        self.state().replicas.iter().map(|r| r.lru.used).collect()
    }

    pub fn len(&self) -> usize {
        self.state().replicas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One request in flight on a replica; dropping it (body end, client gone, failover) releases it.
pub struct InFlight {
    pool: Arc<Pool>,
    pub replica: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.pool.clock.now();
        if let Some(r) = self.pool.state().replicas.get_mut(self.replica) {
            r.settle(now);
            r.in_flight = r.in_flight.saturating_sub(1);
        }
    }
}

/// Provider tokens per cachet estimate (bytes / 4 is rough: prose of long words runs under
/// it, code over it), as reported sums with a bounded memory so it follows the traffic.
/// Nothing learnt yet (both 0): one to one.
#[derive(Clone, Copy, Debug, Default)]
struct TokenScale {
    estimated: u64,
    reported: u64,
}

/// The sums are halved past this, so old traffic weighs less.
const SCALE_MEMORY: u64 = 1 << 32;

impl TokenScale {
    fn learn(&mut self, estimated: u64, reported: u64) {
        if estimated == 0 || reported == 0 {
            return;
        }
        self.estimated += estimated;
        self.reported += reported;
        while self.estimated > SCALE_MEMORY || self.reported > SCALE_MEMORY {
            self.estimated = self.estimated.div_ceil(2);
            self.reported = self.reported.div_ceil(2);
        }
    }

    fn to_reported(self, estimate: u64) -> u64 {
        match self.estimated {
            0 => estimate,
            _ => mul_div(estimate, self.reported, self.estimated),
        }
    }

    fn to_estimate(self, reported: u64) -> u64 {
        match self.reported {
            0 => reported,
            _ => mul_div(reported, self.estimated, self.reported),
        }
    }
}

fn mul_div(n: u64, num: u64, den: u64) -> u64 {
    u64::try_from(u128::from(n) * u128::from(num) / u128::from(den)).unwrap_or(u64::MAX)
}

/// Prefix keys a replica is believed to hold, least recently used first out, each weighing its
/// chunk's provider tokens; at most `capacity` tokens in all.
struct KeyLru {
    capacity: u64,
    used: u64,
    /// key → (stamp, weight).
    entries: HashMap<PrefixKey, (u64, u64)>,
    order: BTreeMap<u64, PrefixKey>,
    clock: u64,
}

impl KeyLru {
    fn new(capacity: u64) -> Self {
        KeyLru {
            capacity,
            used: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
        }
    }

    /// Estimated tokens of the chain's longest prefix held.
    fn matched(&self, chain: &Chain) -> u64 {
        chain
            .0
            .iter()
            .take_while(|(key, _)| self.entries.contains_key(key))
            .last()
            .map_or(0, |&(_, tokens)| tokens)
    }

    /// Holds every key of the chain, the head most recently used, then evicts to capacity.
    fn admit(&mut self, chain: &Chain, scale: TokenScale) {
        let mut previous = 0;
        let weights: Vec<u64> = chain
            .0
            .iter()
            .map(|&(_, tokens)| {
                let weight = scale.to_reported(tokens.saturating_sub(previous));
                previous = tokens;
                weight
            })
            .collect();
        for (&(key, _), &weight) in chain.0.iter().zip(&weights).rev() {
            self.clock += 1;
            if let Some((stamp, old)) = self.entries.insert(key, (self.clock, weight)) {
                self.order.remove(&stamp);
                self.used -= old;
            }
            self.order.insert(self.clock, key);
            self.used += weight;
        }
        self.evict_to(self.capacity);
    }

    fn evict_to(&mut self, limit: u64) {
        while self.used > limit {
            let Some((_, key)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, weight)) = self.entries.remove(&key) {
                self.used -= weight;
            }
        }
    }

    /// Takes back the chain's keys past `kept` estimated tokens.
    fn forget_beyond(&mut self, chain: &Chain, kept: u64) {
        for &(key, tokens) in &chain.0 {
            if tokens > kept
                && let Some((stamp, weight)) = self.entries.remove(&key)
            {
                self.order.remove(&stamp);
                self.used -= weight;
            }
        }
    }

    /// The replica read `read` estimated tokens where `predicted` were believed held: it
    /// evicted that much more than the index did, so the index drops as many of its oldest
    /// tokens. (The chain itself stays: the replica holds the prompt it has just processed.)
    fn correct(&mut self, predicted: u64, read: u64, scale: TokenScale) {
        let shortfall = scale.to_reported(predicted.saturating_sub(read));
        // A block's rounding (16 tokens) is no news.
        if shortfall > 16 {
            self.evict_to(self.used.saturating_sub(shortfall));
        }
    }
}

#[cfg(test)]
mod tests;
