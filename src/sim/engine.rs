//! The simulator's cache state and billing behind one lock: each dialect handler renders its
//! request into a [`SimPrompt`] and calls one method here, which applies the provider's rule
//! (`rules/`), updates the caches and bills the input side. Output is billed as it is written
//! ([`Engine::bill_output`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use serde_json::{Value, json};

use super::billing::{Ledger, Report};
use super::prompt::{SimPrompt, Ttl};
use super::rules::{self, Times, anthropic, deepseek, gemini, openai, pool};
use crate::clock::{format_rfc3339, utc_date};
use crate::pricing::PriceTable;
use crate::usage::Usage;

/// Settings a simulator starts with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Gemini implicit caching (no saving is guaranteed by Google, so off unless asked for).
    pub gemini_implicit: bool,
    /// KV cache size of each vLLM-like replica.
    pub kv_capacity_tokens: u64,
    /// The price table (prices and minimums); `None`: the built-in `config/prices.toml`, the
    /// proxy's default too.
    pub prices: Option<std::sync::Arc<PriceTable>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            gemini_implicit: false,
            kv_capacity_tokens: 2_000_000,
            prices: None,
        }
    }
}

/// Minimums when the price table names none for a model: the provider's documented floor.
const DEFAULT_MIN_ANTHROPIC: u64 = 1024;
const DEFAULT_MIN_OPENAI: u64 = 1024;
const DEFAULT_MIN_GEMINI: u64 = 2048;

pub struct Engine {
    prices: std::sync::Arc<PriceTable>,
    settings: Settings,
    /// On a virtual clock a response begins after its simulated prefill; on the system clock it
    /// begins when the handler returns, right after the cache is updated.
    virtual_time: bool,
    state: Mutex<State>,
}

struct State {
    anthropic: anthropic::Cache,
    openai: openai::Cache,
    deepseek: deepseek::Cache,
    gemini: gemini::Implicit,
    replicas: Vec<Replica>,
    ledger: Ledger,
    /// The cache partitions of each API key, one per model it used (for evictions).
    scopes: HashMap<String, HashSet<u64>>,
}

impl State {
    /// The partition of `key` and `model`, noted as the key's.
    fn scope(&mut self, key: &str, model: &str) -> u64 {
        let scope = rules::scope(key, model);
        if let Some(scopes) = self.scopes.get_mut(key) {
            scopes.insert(scope);
        } else {
            self.scopes.insert(key.to_owned(), HashSet::from([scope]));
        }
        scope
    }
}

/// One vLLM-like replica: its KV cache and the simulated time it has been busy.
pub struct Replica {
    lru: pool::Lru,
    /// End times of requests started, for the in-flight count.
    running: Vec<SystemTime>,
    requests: u64,
    busy_micros: u128,
    cached_tokens: u64,
    prompt_tokens: u64,
}

/// What a replica reports for one request.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaOutcome {
    pub cached: u64,
    /// Requests in flight on the replica when this one arrived (itself excluded).
    pub in_flight: usize,
    /// When the replica is done with it.
    pub end: SystemTime,
}

impl Engine {
    pub fn new(settings: Settings, replicas: usize, virtual_time: bool) -> Self {
        // The built-in table is compiled in and checked by the pricing tests.
        let prices = settings
            .prices
            .clone()
            .unwrap_or_else(|| std::sync::Arc::new(PriceTable::built_in().unwrap_or_default()));
        let replicas = (0..replicas)
            .map(|_| Replica {
                lru: pool::Lru::new(settings.kv_capacity_tokens),
                running: Vec::new(),
                requests: 0,
                busy_micros: 0,
                cached_tokens: 0,
                prompt_tokens: 0,
            })
            .collect();
        Engine {
            prices,
            settings,
            virtual_time,
            state: Mutex::new(State {
                anthropic: anthropic::Cache::default(),
                openai: openai::Cache::default(),
                deepseek: deepseek::Cache::default(),
                gemini: gemini::Implicit::default(),
                replicas,
                ledger: Ledger::default(),
                scopes: HashMap::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update under the lock is a sequence of inserts that leaves the maps usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// When a write made by a request starting at `start` becomes readable.
    fn visible(&self, start: SystemTime, uncached_tokens: u64) -> SystemTime {
        if self.virtual_time {
            rules::first_byte(start, uncached_tokens)
        } else {
            start
        }
    }

    /// The smallest `cachedContents` the model accepts ("the minimum input token count for
    /// context caching varies by model", providers.md §3.2): its minimum cacheable prompt.
    pub fn gemini_min_cache_tokens(&self, model: &str, at: SystemTime) -> u64 {
        self.min_tokens(model, at, DEFAULT_MIN_GEMINI)
    }

    fn min_tokens(&self, model: &str, at: SystemTime, default: u64) -> u64 {
        self.prices
            .price_on(model, &utc_date(at))
            .and_then(|p| p.min_cacheable_tokens)
            .unwrap_or(default)
    }

    /// Anthropic Messages (providers.md §1). `Err` is the 400 message for invalid markers.
    pub fn anthropic(
        &self,
        key: &str,
        model: &str,
        prompt: &SimPrompt,
        auto: Option<Ttl>,
        start: SystemTime,
    ) -> Result<Usage, String> {
        let bps = anthropic::breakpoints(prompt, auto)?;
        let min = self.min_tokens(model, start, DEFAULT_MIN_ANTHROPIC);
        let mut state = self.state();
        let scope = state.scope(key, model);
        let hit = anthropic::lookup(&state.anthropic, scope, prompt, &bps, start);
        let charge = anthropic::charge(prompt, &bps, hit, min);
        let times = Times {
            start,
            visible: self.visible(start, charge.uncached + charge.write_1h + charge.write_5m),
        };
        anthropic::commit(&mut state.anthropic, scope, prompt, &bps, hit, min, times);
        let usage = Usage {
            input_uncached: charge.uncached,
            cache_read: charge.read,
            cache_write_5m: charge.write_5m,
            cache_write_1h: charge.write_1h,
            output: 0,
        };
        state.ledger.input(&self.prices, key, model, &usage, start);
        Ok(usage)
    }

    /// OpenAI automatic caching (providers.md §2.1).
    pub fn openai(
        &self,
        key: &str,
        model: &str,
        prompt: &SimPrompt,
        cache_key: Option<&str>,
        start: SystemTime,
    ) -> Usage {
        let min = self.min_tokens(model, start, DEFAULT_MIN_OPENAI);
        let mut state = self.state();
        let scope = state.scope(key, model);
        let machine = openai::route(
            &mut state.openai,
            scope,
            openai::route_hash(prompt, cache_key),
            start,
        );
        let cached = openai::cached_tokens(&state.openai, machine, scope, prompt, min, start);
        let visible = self.visible(start, prompt.tokens() - cached);
        openai::commit(
            &mut state.openai,
            machine,
            scope,
            prompt,
            min,
            start,
            visible,
        );
        let usage = Usage {
            input_uncached: prompt.tokens() - cached,
            cache_read: cached,
            ..Usage::default()
        };
        state.ledger.input(&self.prices, key, model, &usage, start);
        usage
    }

    /// DeepSeek units (providers.md §4). `with_output` is the prompt followed by the reply.
    pub fn deepseek(
        &self,
        key: &str,
        model: &str,
        prompt: &SimPrompt,
        with_output: &SimPrompt,
        start: SystemTime,
    ) -> Usage {
        let mut state = self.state();
        let scope = state.scope(key, model);
        let hit = deepseek::hit_tokens(&state.deepseek, scope, prompt, start);
        deepseek::touch(&mut state.deepseek, scope, prompt, hit, start);
        let visible = self.visible(start, prompt.tokens() - hit);
        deepseek::commit(
            &mut state.deepseek,
            scope,
            prompt,
            Some(with_output),
            start,
            visible,
        );
        let usage = Usage {
            input_uncached: prompt.tokens() - hit,
            cache_read: hit,
            ..Usage::default()
        };
        state.ledger.input(&self.prices, key, model, &usage, start);
        usage
    }

    /// Gemini `generateContent` of the request's own prompt `own`: a `cachedContents` entry of
    /// `explicit` tokens is read in full (guaranteed); without one, implicit caching when
    /// enabled (providers.md §3).
    pub fn gemini(
        &self,
        key: &str,
        model: &str,
        own: &SimPrompt,
        explicit: Option<u64>,
        start: SystemTime,
    ) -> Usage {
        let mut state = self.state();
        let (read, uncached) = match explicit {
            Some(tokens) => (tokens, own.tokens()),
            None if self.settings.gemini_implicit => {
                let min = self.min_tokens(model, start, DEFAULT_MIN_GEMINI);
                let scope = state.scope(key, model);
                let hit = gemini::implicit_hit(&state.gemini, scope, own, min, start);
                let visible = self.visible(start, own.tokens() - hit);
                gemini::implicit_commit(&mut state.gemini, scope, own, min, start, visible);
                (hit, own.tokens() - hit)
            }
            None => (0, own.tokens()),
        };
        let usage = Usage {
            input_uncached: uncached,
            cache_read: read,
            ..Usage::default()
        };
        state.ledger.input(&self.prices, key, model, &usage, start);
        usage
    }

    /// Creating a `cachedContents` entry bills its tokens at the input price (§3.4); the
    /// answer tells them as `usageMetadata.totalTokenCount`.
    pub fn gemini_cache_created(&self, key: &str, model: &str, tokens: u64, at: SystemTime) {
        let usage = Usage {
            cache_write_5m: tokens,
            ..Usage::default()
        };
        let mut state = self.state();
        state.ledger.input(&self.prices, key, model, &usage, at);
        let report = Report {
            usage: Some(usage),
            cache_create: true,
            cut: false,
        };
        state.ledger.told(&self.prices, key, model, report, at);
    }

    /// Books a `cachedContents` entry's storage when it ends (deleted or expired).
    pub fn gemini_cache_ended(
        &self,
        key: &str,
        model: &str,
        tokens: u64,
        created: SystemTime,
        ended: SystemTime,
    ) {
        let storage = self
            .prices
            .price_on(model, &utc_date(created))
            .and_then(|p| p.rates_for(tokens).storage)
            .map(|pico| gemini::storage_nusd(tokens, created, ended, pico));
        let storage = if tokens == 0 { Some(0) } else { storage };
        self.state().ledger.storage(key, model, storage);
    }

    /// A vLLM-like replica (providers.md §6): cached tokens from its LRU, then the prompt
    /// admitted; the request occupies the replica for its simulated prefill and decode time.
    pub fn replica(
        &self,
        index: usize,
        prompt: &SimPrompt,
        output_tokens: u64,
        start: SystemTime,
    ) -> ReplicaOutcome {
        let mut state = self.state();
        let Some(replica) = state.replicas.get_mut(index) else {
            return ReplicaOutcome {
                cached: 0,
                in_flight: 0,
                end: start,
            };
        };
        let cached = replica.lru.cached_tokens(prompt);
        replica.lru.admit(prompt);
        replica.running.retain(|&end| end > start);
        let in_flight = replica.running.len();
        let busy = rules::service_time(prompt.tokens() - cached, output_tokens);
        replica.running.push(start + busy);
        replica.requests += 1;
        replica.busy_micros += busy.as_micros();
        replica.cached_tokens += cached;
        replica.prompt_tokens += prompt.tokens();
        ReplicaOutcome {
            cached,
            in_flight,
            end: start + busy,
        }
    }

    /// Drops every prefix entry of `key` (all models) with every provider, and empties the KV
    /// cache of `replica`, when given: the fault "caches evicted early". Returns how many
    /// entries (replica blocks included) there were.
    pub fn evict(&self, key: &str, replica: Option<usize>) -> u64 {
        let mut state = self.state();
        let state = &mut *state;
        let mut evicted = 0;
        if let Some(scopes) = state.scopes.get(key) {
            evicted += state.anthropic.evict(scopes)
                + state.openai.evict(scopes)
                + state.deepseek.evict(scopes)
                + state.gemini.evict(scopes);
        }
        if let Some(r) = replica.and_then(|i| state.replicas.get_mut(i)) {
            evicted += r.lru.clear();
        }
        evicted
    }

    /// Bills an input side computed by the caller (a replica's cache has no price of its own).
    pub fn bill_input(&self, key: &str, model: &str, usage: &Usage, at: SystemTime) {
        self.state()
            .ledger
            .input(&self.prices, key, model, usage, at);
    }

    /// Output tokens written to the client, billed as they go.
    pub fn bill_output(&self, key: &str, model: &str, tokens: u64, at: SystemTime) {
        self.state()
            .ledger
            .output(&self.prices, key, model, tokens, at);
    }

    /// What one response told its client, when it is dropped.
    pub fn book_told(&self, key: &str, model: &str, report: Report, at: SystemTime) {
        self.state()
            .ledger
            .told(&self.prices, key, model, report, at);
    }

    /// `GET /__sim/stats`.
    pub fn stats(&self, now: SystemTime, gemini_caches: Value) -> Value {
        let state = self.state();
        let accounts: Vec<Value> = state
            .ledger
            .accounts()
            .map(|(key_fp, model, account)| {
                let mut row = json!({"key_fp": key_fp, "model": model});
                if let (Value::Object(row), Ok(Value::Object(fields))) =
                    (&mut row, serde_json::to_value(account))
                {
                    row.extend(fields);
                }
                row
            })
            .collect();
        let (anthropic_entries, anthropic_tokens) = state.anthropic.live_entries(now);
        let replicas: Vec<Value> = state
            .replicas
            .iter()
            .enumerate()
            .map(|(i, r)| {
                json!({
                    "replica": i,
                    "requests": r.requests,
                    "prompt_tokens": r.prompt_tokens,
                    "cached_tokens": r.cached_tokens,
                    "busy_seconds": r.busy_micros as f64 / 1e6,
                    "in_flight": r.running.iter().filter(|&&end| end > now).count(),
                    "kv_tokens": r.lru.tokens(),
                })
            })
            .collect();
        json!({
            "now": format_rfc3339(now),
            "accounts": accounts,
            "caches": {
                "anthropic": {"entries": anthropic_entries, "tokens": anthropic_tokens},
                "openai": {"entries": state.openai.live_entries(now)},
                "deepseek": {"units": state.deepseek.live_entries(now)},
                "gemini": gemini_caches,
            },
            "replicas": replicas,
        })
    }

    /// The ledger's accounts, for in-process callers (the replay) that need exact figures.
    pub fn accounts(&self) -> Vec<(String, String, super::billing::Account)> {
        self.state()
            .ledger
            .accounts()
            .map(|(k, m, a)| (k.to_owned(), m.to_owned(), a.clone()))
            .collect()
    }

    pub fn replica_loads(&self) -> Vec<ReplicaLoad> {
        self.state()
            .replicas
            .iter()
            .map(|r| ReplicaLoad {
                requests: r.requests,
                cached_tokens: r.cached_tokens,
                prompt_tokens: r.prompt_tokens,
                busy_seconds: r.busy_micros as f64 / 1e6,
            })
            .collect()
    }
}

/// What one replica served: its time-averaged in-flight count over a span is
/// `busy_seconds / span`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReplicaLoad {
    pub requests: u64,
    pub cached_tokens: u64,
    pub prompt_tokens: u64,
    pub busy_seconds: f64,
}
