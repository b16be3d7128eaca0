//! What cachet tells operators: one structured log line per request and Prometheus metrics.
//!
//! Metric names are part of the contract (DESIGN.md). Labels are bounded and server-controlled:
//! `upstream` is a configured name, `model` a model of the price table or `other`, `status` an
//! HTTP code. Prompt text and credentials never reach a log line or a label.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics::{counter, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

use crate::clock::Clock;
use crate::config::{LogConfig, LogFormat};
use crate::explain::{Explanation, Fingerprint};
use crate::ledger::{Ledger, LedgerRecord};
use crate::plan::{Branch, CachePlan};
use crate::pricing::{Cost, ModelPrice, PriceTable, Rates};
use crate::registry::Outcome as CacheOutcome;
use crate::upstream::body::{Observed, Outcome};
use crate::usage::Usage;

pub const REQUESTS_TOTAL: &str = "cachet_requests_total";
pub const TOKENS_TOTAL: &str = "cachet_tokens_total";
pub const COST_USD_TOTAL: &str = "cachet_cost_usd_total";
pub const COST_UNCACHED_USD_TOTAL: &str = "cachet_cost_uncached_usd_total";
pub const OVERHEAD_SECONDS: &str = "cachet_overhead_seconds";
pub const UPSTREAM_TTFB_SECONDS: &str = "cachet_upstream_ttfb_seconds";
pub const UNPRICED_TOTAL: &str = "cachet_unpriced_requests_total";
pub const PLAN_BRANCH_TOTAL: &str = "cachet_plan_branch_total";

/// Label for anything outside the price table, and for requests with no model.
pub const OTHER: &str = "other";

/// Installs the tracing subscriber once per process (later calls are no-ops).
pub fn init_tracing(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Err means a subscriber is already installed (tests, demo): keep it.
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

/// The process-wide Prometheus recorder (the `metrics` facade has one global recorder).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let overhead = [
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
            ];
            let ttfb = [
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(OVERHEAD_SECONDS.into()), &overhead)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(UPSTREAM_TTFB_SECONDS.into()), &ttfb)
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            // Err: another recorder is installed; this handle then renders nothing, never panics.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        "Requests through the proxy by upstream, model and HTTP status."
    );
    metrics::describe_counter!(
        TOKENS_TOTAL,
        "Tokens by kind: input_uncached, cache_read, cache_write, output."
    );
    metrics::describe_histogram!(
        OVERHEAD_SECONDS,
        metrics::Unit::Seconds,
        "Time spent in the proxy, upstream excluded."
    );
    metrics::describe_histogram!(
        UPSTREAM_TTFB_SECONDS,
        metrics::Unit::Seconds,
        "From sending upstream to the first body byte."
    );
    let branches: Vec<&str> = Branch::ALL.iter().map(|b| b.as_str()).collect();
    metrics::describe_counter!(
        PLAN_BRANCH_TOTAL,
        format!(
            "Requests by the way the cache planner went, and on replica pools by how the \
             replica was picked; branch is one of: {}.",
            branches.join(", ")
        )
    );
    metrics::describe_counter!(
        UNPRICED_TOTAL,
        "Requests whose cost is null because the price table lacks a price they need."
    );
    metrics::describe_counter!(
        crate::ledger::DROPPED_TOTAL,
        "Ledger records dropped: the queue was full, or the store refused them twice."
    );
}

/// The one copy of a label value, for the life of the process. Only values from bounded,
/// server-controlled sets come here (configured upstream names, price-table models, HTTP
/// status codes), so the set stays small.
fn label(value: &str) -> &'static str {
    static LABELS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let Ok(mut labels) = LABELS.get_or_init(Default::default).lock() else {
        return "unknown";
    };
    if let Some(known) = labels.get(value) {
        return known;
    }
    let interned: &'static str = Box::leak(value.to_owned().into_boxed_str());
    labels.insert(interned);
    interned
}

/// An HTTP status code as a label, without allocating.
fn status_label(status: u16) -> &'static str {
    let digit = |n: u16| b'0' + (n % 10) as u8;
    let digits = [digit(status / 100), digit(status / 10), digit(status)];
    std::str::from_utf8(&digits).map_or("unknown", label)
}

/// Who made an upstream call: the client, or cachet on its own for a client's request
/// (DESIGN.md Definitions: each of these has its own record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Call {
    #[default]
    Client,
    CacheCreate,
    CacheExtend,
    /// The client's request sent again, without a cache that had vanished upstream.
    Resend,
    /// Not a call: the storage of a Gemini cache cachet created, booked when it ends.
    CacheStorage,
}

impl Call {
    pub fn as_str(self) -> &'static str {
        match self {
            Call::Client => "client",
            Call::CacheCreate => "cache_create",
            Call::CacheExtend => "cache_extend",
            Call::Resend => "resend",
            Call::CacheStorage => "cache_storage",
        }
    }
}

/// One upstream call's facts, filled in as they become known along the request path.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub request_id: String,
    pub call: Call,
    /// For a call cachet made on its own: the client request that caused it.
    pub caused_by: Option<String>,
    pub upstream: Option<String>,
    pub endpoint: Option<&'static str>,
    pub model: Option<String>,
    pub stream: bool,
    pub status: u16,
    pub rewrites: Vec<&'static str>,
    /// `x-cachet-team`: cost attribution only (never part of the tenant).
    pub team: Option<String>,
    pub received: Instant,
    /// Proxy time before the upstream call (parsing, rewriting).
    pub pre_send: Duration,
    pub sent: Option<Instant>,
    /// Proxy time between the upstream's response head and handing the response on.
    pub post_head: Duration,
    /// The request's cache plan (modelled routes with a prompt).
    pub plan: Option<CachePlan>,
    /// What the registry predicted and the provider reported.
    pub cache_outcome: Option<CacheOutcome>,
    /// What is kept of the prompt for the miss explainer (taken when the answer ends).
    pub fingerprint: Option<std::sync::Arc<Fingerprint>>,
    /// Why the request read less than its tenant's history allowed.
    pub miss: Option<Explanation>,
    /// How long the request waited for another one writing the same new prefix.
    pub coalesced: Option<Duration>,
    /// The caller's tenant (from its credential).
    pub tenant: Option<crate::tenant::Tenant>,
    pub provider: Option<&'static str>,
    /// The way the cache planner went (`cachet_plan_branch_total`).
    pub branch: Option<&'static str>,
    /// `cache_control` markers the client sent (a top-level one counting as one).
    pub client_markers: u8,
    /// Breakpoints cachet added.
    pub breakpoints: u8,
    /// The body as sent upstream, kept only when `log.excerpts` is on.
    pub excerpt_source: Option<bytes::Bytes>,
}

impl Exchange {
    pub fn new(request_id: String, received: Instant) -> Self {
        Self {
            request_id,
            call: Call::Client,
            caused_by: None,
            upstream: None,
            endpoint: None,
            model: None,
            stream: false,
            status: 0,
            rewrites: Vec::new(),
            team: None,
            received,
            pre_send: Duration::ZERO,
            sent: None,
            post_head: Duration::ZERO,
            plan: None,
            cache_outcome: None,
            fingerprint: None,
            miss: None,
            coalesced: None,
            tenant: None,
            provider: None,
            branch: None,
            client_markers: 0,
            breakpoints: 0,
            excerpt_source: None,
        }
    }
}

/// What is observed of a call whose answer cachet read whole itself (or of none at all): it
/// ended at `ended`, with `usage`.
fn ended_now(ended: Instant, usage: Option<Usage>) -> Observed {
    Observed {
        outcome: Outcome::Complete,
        usage,
        tap_lost: false,
        first_byte: None,
        ended,
        relay_overhead: Duration::ZERO,
    }
}

/// What `record` works out besides the exchange.
struct RecordFacts<'a> {
    observed: &'a Observed,
    overhead: Duration,
    error: Option<&'static str>,
    cost: Cost,
    premium: Option<u64>,
    /// What the request's miss cost (its tokens at input less read price), nano-USD.
    miss_cost: Option<u64>,
    model: Option<String>,
}

impl Telemetry {
    fn ledger_record(&self, ex: &Exchange, facts: &RecordFacts<'_>) -> LedgerRecord {
        let observed = facts.observed;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let outcome = outcome_of(ex, facts.error, observed);
        let nusd = |n: Option<u64>| n.and_then(|n| i64::try_from(n).ok());
        let at_ms = self
            .clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        LedgerRecord {
            at_ms,
            request_id: ex.request_id.clone(),
            call: ex.call.as_str(),
            caused_by: ex.caused_by.clone(),
            instance_id: self.instance_id.clone(),
            tenant: ex.tenant.map(|t| t.fingerprint()).unwrap_or_default(),
            team: ex.team.clone(),
            upstream: ex.upstream.clone().unwrap_or_default(),
            provider: ex.provider.unwrap_or("none"),
            model: facts.model.clone(),
            endpoint: ex.endpoint.unwrap_or("passthrough"),
            stream: ex.stream,
            status: ex.status,
            outcome,
            usage_complete: usage_complete(ex, observed, outcome),
            usage: observed.usage.unwrap_or_default(),
            cost_nusd: nusd(facts.cost.actual),
            cost_uncached_nusd: nusd(facts.cost.uncached),
            write_premium_nusd: nusd(facts.premium),
            storage_nusd: None,
            prefix_key: ex
                .plan
                .as_ref()
                .and_then(CachePlan::reusable_key)
                .map(|k| k.to_string()),
            plan_branch: ex.branch,
            rewrites: ex.rewrites.join(","),
            client_markers: ex.client_markers,
            breakpoints: ex.breakpoints,
            miss_reason: ex.miss.as_ref().map(|m| m.reason.as_str()),
            miss_tokens: ex.miss.as_ref().and_then(|m| i64::try_from(m.tokens).ok()),
            miss_segment: ex.miss.as_ref().map(|m| m.segment.clone()),
            miss_cost_nusd: nusd(facts.miss_cost),
            latency_ms: ms(observed.ended.duration_since(ex.received)),
            ttfb_ms: observed
                .first_byte
                .map(|f| ms(f.duration_since(ex.received))),
            overhead_ms: ms(facts.overhead),
        }
    }
}

/// How a call ended, as the ledger names it.
fn outcome_of(ex: &Exchange, error: Option<&'static str>, observed: &Observed) -> &'static str {
    match (error, observed.outcome) {
        (Some("client_closed"), _) | (None, Outcome::Cancelled) => "cancelled",
        (Some(_), _) => "proxy_error",
        (None, Outcome::UpstreamError) => "upstream_error",
        (None, Outcome::Complete) if (200..300).contains(&ex.status) => "ok",
        (None, Outcome::Complete) => "upstream_error",
    }
}

/// Whether a record's usage is all the provider will bill for the call. A call that never
/// reached the upstream, and an error the upstream answered whole, bill nothing. A call the
/// client cancelled (or cachet gave up on) after sending may have been billed for more than was
/// reported; so may a success whose usage never came, or whose stream broke.
fn usage_complete(ex: &Exchange, observed: &Observed, outcome: &str) -> bool {
    match (outcome, observed.outcome) {
        ("cancelled" | "proxy_error", _) => ex.sent.is_none(),
        (_, Outcome::Complete) => {
            let billable = (200..300).contains(&ex.status) && ex.endpoint.is_some();
            !observed.tap_lost && (observed.usage.is_some() || !billable)
        }
        _ => false,
    }
}

/// What `tokens` a miss could have read cost over reading them, nano-USD.
fn miss_cost(rates: &Rates, tokens: u64) -> Option<u64> {
    let over = rates.input?.saturating_sub(rates.cache_read?);
    u64::try_from((u128::from(tokens) * u128::from(over) + 500) / 1000).ok()
}

/// What the cache writes of `u` cost over the same tokens billed as input, nano-USD.
fn write_premium(rates: &Rates, u: &Usage) -> Option<u64> {
    let input = u128::from(rates.input?);
    let over = |tokens: u64, rate: Option<u64>| -> Option<u128> {
        match tokens {
            0 => Some(0),
            n => Some(u128::from(n) * u128::from(rate?).saturating_sub(input)),
        }
    };
    let pico = over(u.cache_write_5m, rates.cache_write_5m)?
        + over(u.cache_write_1h, rates.cache_write_1h)?;
    u64::try_from((pico + 500) / 1000).ok()
}

/// A process id for the ledger: host name (when known) and a random suffix.
fn instance_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "cachet".to_owned());
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{host}-{}", &id[id.len() - 8..])
}

/// Running totals per (upstream, model label), for `cachet demo`'s table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub usage: Usage,
    pub cost_nusd: u64,
    pub cost_uncached_nusd: u64,
    /// Requests whose cost was null.
    pub unpriced: u64,
}

pub struct Telemetry {
    prices: PriceTable,
    /// The proxy's clock: records are dated, and priced, by it.
    clock: Arc<Clock>,
    /// Where records go, once the server has opened the store.
    ledger: OnceLock<Ledger>,
    /// This process, in its records.
    instance_id: String,
    totals: Mutex<BTreeMap<(&'static str, &'static str), Totals>>,
    /// The latest miss explanations with their upstream, newest last (for `demo` and tests;
    /// the ledger keeps them all).
    misses: Mutex<std::collections::VecDeque<(String, Explanation)>>,
}

/// Miss explanations kept in memory.
const RECENT_MISSES: usize = 256;

impl Telemetry {
    pub fn new(prices: PriceTable, clock: Arc<Clock>) -> Self {
        Self {
            prices,
            clock,
            ledger: OnceLock::new(),
            instance_id: instance_id(),
            totals: Mutex::new(BTreeMap::new()),
            misses: Mutex::default(),
        }
    }

    /// Sends every record from now on to `ledger` (once; later calls are ignored).
    pub fn attach_ledger(&self, ledger: Ledger) {
        let _ = self.ledger.set(ledger);
    }

    pub fn ledger(&self) -> Option<&Ledger> {
        self.ledger.get()
    }

    /// The model's minimum cacheable prompt from the price table, in provider tokens.
    pub fn min_cacheable_tokens(&self, model: &str) -> Option<u64> {
        self.price_on(model, self.clock.now())?.min_cacheable_tokens
    }

    pub fn recent_misses(&self) -> Vec<(String, Explanation)> {
        self.misses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    pub fn totals(&self) -> BTreeMap<(String, String), Totals> {
        let Ok(totals) = self.totals.lock() else {
            return BTreeMap::new();
        };
        totals
            .iter()
            .map(|((u, m), t)| ((u.to_string(), m.to_string()), t.clone()))
            .collect()
    }

    /// The cost counters in Prometheus text format. The `metrics` facade only has integer
    /// counters, and a float sum of per-request increments would drift from the exact
    /// nano-USD totals; these are rendered from the exact totals instead.
    pub fn render_costs(&self) -> String {
        use std::fmt::Write;
        let totals = self.totals();
        let mut out = String::new();
        for (name, help, pick) in [
            (
                COST_USD_TOTAL,
                "What the requests cost, in USD.",
                (|t: &Totals| t.cost_nusd) as fn(&Totals) -> u64,
            ),
            (
                COST_UNCACHED_USD_TOTAL,
                "What the same tokens would have cost with no caching, in USD.",
                |t: &Totals| t.cost_uncached_nusd,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((upstream, model), t) in &totals {
                let nano = pick(t);
                let _ = writeln!(
                    out,
                    "{name}{{upstream=\"{upstream}\",model=\"{model}\"}} {}.{:09}",
                    nano / 1_000_000_000,
                    nano % 1_000_000_000
                );
            }
        }
        out
    }

    /// Records a request that ended before or without an upstream body (cachet's own errors,
    /// clients that left early).
    pub fn record_rejected(&self, ex: &Exchange, error_label: &'static str) {
        let ended = Instant::now();
        let observed = ended_now(ended, None);
        self.record(
            ex,
            &observed,
            ended.duration_since(ex.received),
            Some(error_label),
        );
    }

    /// Records a call whose response cachet read in full itself (its own calls: cache creates
    /// and extensions), with the usage it billed.
    pub fn record_call(&self, ex: &Exchange, usage: Option<Usage>) {
        let ended = Instant::now();
        let observed = ended_now(ended, usage);
        self.record(ex, &observed, Duration::ZERO, None);
    }

    /// Books the storage of a cache that has ended: `nusd` (`None`: no storage price) on its
    /// own record (`call = cache_storage`, caused by the create), and in the cost totals. No
    /// request is counted: nothing was sent.
    pub fn record_storage(&self, ex: &Exchange, nusd: Option<u64>) {
        let upstream = ex.upstream.as_deref().map_or("none", label);
        let canonical = ex.model.as_deref().and_then(|m| self.prices.canonical(m));
        let model = canonical.map_or(OTHER, label);
        if let Ok(mut totals) = self.totals.lock() {
            let t = totals.entry((upstream, model)).or_default();
            match nusd {
                Some(n) => t.cost_nusd += n,
                None => t.unpriced += 1,
            }
        }
        if let Some(ledger) = self.ledger.get() {
            let observed = ended_now(Instant::now(), None);
            let facts = RecordFacts {
                observed: &observed,
                overhead: Duration::ZERO,
                error: None,
                cost: Cost {
                    actual: nusd,
                    uncached: Some(0),
                },
                premium: None,
                miss_cost: None,
                model: canonical.map(str::to_owned).or_else(|| ex.model.clone()),
            };
            let mut record = self.ledger_record(ex, &facts);
            record.storage_nusd = nusd.and_then(|n| i64::try_from(n).ok());
            record.usage_complete = true;
            ledger.record(record);
        }
        tracing::info!(
            target: "cachet::request",
            request_id = %ex.request_id,
            call = ex.call.as_str(),
            caused_by = ex.caused_by.as_deref(),
            upstream = %upstream,
            model = ex.model.as_deref().unwrap_or("-"),
            storage_nusd = nusd,
            "cache storage"
        );
    }

    /// The base rates of `model` today (on the proxy's clock).
    pub fn rates_now(&self, model: &str) -> Option<Rates> {
        Some(self.price_on(model, self.clock.now())?.rates.clone())
    }

    /// Every priced model's minimum cacheable prompt today.
    pub fn minimums_now(&self) -> Vec<(String, u64)> {
        self.prices
            .minimums_on(&crate::clock::utc_date(self.clock.now()))
    }

    /// The price row of `model` in force on the day of `at` (its rates, tiers and minimum).
    pub fn price_on(&self, model: &str, at: std::time::SystemTime) -> Option<&ModelPrice> {
        self.prices.price_on(model, &crate::clock::utc_date(at))
    }

    /// Records a request whose upstream body has ended (or was abandoned).
    pub fn record_observed(&self, ex: &Exchange, observed: &Observed) {
        if let Some(miss) = &ex.miss {
            let mut misses = self
                .misses
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if misses.len() == RECENT_MISSES {
                misses.pop_front();
            }
            misses.push_back((ex.upstream.clone().unwrap_or_default(), miss.clone()));
        }
        let overhead = ex.pre_send + ex.post_head + observed.relay_overhead;
        self.record(ex, observed, overhead, None);
        if let (Some(upstream), Some(sent), Some(first)) =
            (&ex.upstream, ex.sent, observed.first_byte)
        {
            histogram!(UPSTREAM_TTFB_SECONDS, "upstream" => label(upstream))
                .record(first.duration_since(sent).as_secs_f64());
        }
    }

    fn record(
        &self,
        ex: &Exchange,
        observed: &Observed,
        overhead: Duration,
        error: Option<&'static str>,
    ) {
        let Observed {
            outcome,
            usage,
            first_byte,
            ended,
            ..
        } = *observed;
        // Labels are interned: no allocation per request for the metrics below.
        let upstream = ex.upstream.as_deref().map_or("none", label);
        // One look-up of the model in the price table serves both the label and the price
        // (a name the table does not know is compared with every row once, not twice).
        let canonical = ex.model.as_deref().and_then(|m| self.prices.canonical(m));
        let model = canonical.map_or(OTHER, label);
        let status = status_label(ex.status);
        let price = canonical.and_then(|c| self.price_on(c, self.clock.now()));
        let mut cost = match (usage, price) {
            (Some(u), Some(price)) => price.cost(&u),
            (Some(_), None) => Cost::default(),
            (None, _) => Cost {
                actual: Some(0),
                uncached: Some(0),
            },
        };
        if matches!(ex.call, Call::CacheCreate | Call::CacheExtend) {
            // Without caching these calls would not happen at all: they cost what they cost,
            // against nothing.
            cost.uncached = Some(0);
        }
        let labels = [("upstream", upstream), ("model", model)];
        counter!(REQUESTS_TOTAL, "upstream" => upstream, "model" => model, "status" => status)
            .increment(1);
        histogram!(OVERHEAD_SECONDS).record(overhead.as_secs_f64());
        if let Some(u) = usage {
            for (kind, n) in [
                ("input_uncached", u.input_uncached),
                ("cache_read", u.cache_read),
                ("cache_write", u.cache_write()),
                ("output", u.output),
            ] {
                counter!(TOKENS_TOTAL, "upstream" => upstream, "model" => model, "kind" => kind)
                    .increment(n);
            }
            // Cost counters are rendered from `totals` (exact nano-USD) by `render_costs`.
            if cost.actual.is_none() || cost.uncached.is_none() {
                counter!(UNPRICED_TOTAL, &labels).increment(1);
            }
        }
        let mut first_unpriced = false;
        if let Ok(mut totals) = self.totals.lock() {
            let t = totals.entry((upstream, model)).or_default();
            t.requests += 1;
            t.usage += usage.unwrap_or_default();
            match (cost.actual, cost.uncached) {
                (Some(a), Some(b)) => {
                    t.cost_nusd += a;
                    t.cost_uncached_nusd += b;
                }
                _ => {
                    t.unpriced += 1;
                    first_unpriced = t.unpriced == 1;
                }
            }
        }
        // Once per upstream and model label (the counter counts every such request).
        if first_unpriced {
            tracing::warn!(
                upstream,
                model = ex.model.as_deref().unwrap_or("-"),
                "no price for this model in the price table (or for one of its token kinds): \
                 its costs are recorded as null; add it to prices.toml"
            );
        }
        let u = usage.unwrap_or_default();
        let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
        if let Some(ledger) = self.ledger.get() {
            let rates = price.map(|p| p.rates_for(u.input_total()));
            let premium = rates.as_ref().and_then(|r| write_premium(r, &u));
            let miss_cost = ex
                .miss
                .as_ref()
                .zip(rates.as_ref())
                .and_then(|(m, r)| miss_cost(r, m.tokens));
            let facts = RecordFacts {
                observed,
                overhead,
                error,
                cost,
                premium,
                miss_cost,
                model: canonical.map(str::to_owned).or_else(|| ex.model.clone()),
            };
            ledger.record(self.ledger_record(ex, &facts));
        }
        tracing::info!(
            target: "cachet::request",
            request_id = %ex.request_id,
            call = ex.call.as_str(),
            caused_by = ex.caused_by.as_deref(),
            upstream = %upstream,
            endpoint = ex.endpoint.unwrap_or("passthrough"),
            model = ex.model.as_deref().unwrap_or("-"),
            team = ex.team.as_deref().unwrap_or("-"),
            stream = ex.stream,
            status = ex.status,
            outcome = error.unwrap_or(outcome.as_str()),
            usage = usage.is_some(),
            usage_complete = usage_complete(ex, observed, outcome_of(ex, error, observed)),
            input_uncached = u.input_uncached,
            cache_read = u.cache_read,
            cache_write = u.cache_write(),
            output = u.output,
            hit_rate = u.hit_rate().map(|h| (h * 10_000.0).round() / 10_000.0),
            cost_nusd = cost.actual,
            latency_ms = ms(ended.duration_since(ex.received)),
            ttfb_ms = first_byte.map(|f| ms(f.duration_since(ex.received))),
            overhead_ms = ms(overhead),
            coalesced_ms = ex.coalesced.map(ms),
            rewrites = %ex.rewrites.join(","),
            prefix = ex.plan.as_ref().and_then(CachePlan::reusable_key).map(|k| k.short()),
            predicted_cached = ex.cache_outcome.map(|o| o.predicted),
            beliefs_dropped = ex.cache_outcome.map(|o| o.dropped),
            miss_reason = ex.miss.as_ref().map(|m| m.reason.as_str()),
            miss_segment = ex.miss.as_ref().map(|m| m.segment.as_str()),
            miss_offset = ex.miss.as_ref().map(|m| m.offset),
            miss_tokens = ex.miss.as_ref().map(|m| m.tokens),
            miss_excerpt = ex.miss.as_ref().and_then(|m| m.excerpt.as_deref()),
            "request"
        );
    }
}
