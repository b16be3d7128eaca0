//! The replay driver: each workload, for each route, against a fresh simulator on a virtual
//! clock. The clock is set to a request's `t` before it is sent; requests with equal `t` are
//! sent concurrently; every response is read to its end before time moves on.
//!
//! Routes, each from a fresh simulator state on the same timeline (DESIGN.md "Measuring"):
//! - **direct**: the requests as the workload has them, straight to the simulator;
//! - **fixed**: the placement other gateways inject, straight to the simulator (Anthropic: a 5m
//!   `cache_control` on the last system block and on the last block of the last message;
//!   Gemini: one `cachedContents` of system instruction + tools once they reach the minimum;
//!   OpenAI and DeepSeek unchanged);
//! - **cachet**: through a cachet proxy in this process running the shipped default config,
//!   with only the upstream base URLs pointed at the simulator.
//!
//! For the replica pool (`mooncake`) the direct route is round-robin over the replicas (what a
//! Kubernetes Service does), the fixed route a consistent hash of the first block, and cachet
//! the `vllm` upstream with the replicas as its `base_urls`. A pool's replies are held until the
//! end of their simulated service (`sim::gate`), so requests overlap on the replayed timeline
//! and a router sees them in flight: the clock moves from event to event (an arrival, or the
//! earliest end), requests are sent one at a time in trace order (equal `t` included; each
//! waits until its replica has it), and replies are released in order of their ends.
//!
//! With faults (`cachet replay --faults`), every route's simulator injects them, and each
//! failed request is classed by what its response shows: the fault injected on it (an error
//! status the spec injects, marked `error` in `x-cachet-sim-fault`, or a reply cut short marked
//! `reset`), or nothing that explains it, which on the cachet route is a defect of cachet's.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use futures_util::future::join_all;
use serde_json::{Value, json};

use super::audit::{self, Audit, Books};
use super::workload::{Provider, Request, Workload};
use crate::clock::{Clock, parse_rfc3339, utc_date};
use crate::config::Config;
use crate::pricing::PriceTable;
use crate::server;
use crate::sim::engine::ReplicaLoad;
use crate::sim::{self, FAULT_HEADER, Faults, Settings, Sim, Tally};
use crate::state::AppState;
use crate::usage::Usage;

/// The virtual timeline starts here (a Monday; the price table covers it).
pub const T0_UNIX: u64 = 1_793_610_000; // 2026-11-02T09:00:00Z
/// Replicas of the pool the `mooncake` workload runs against.
pub const POOL_REPLICAS: usize = 8;
pub const POOL_KV_TOKENS: u64 = 2_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Direct,
    Fixed,
    Cachet,
}

impl Route {
    pub const ALL: [Route; 3] = [Route::Direct, Route::Fixed, Route::Cachet];

    pub fn name(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Fixed => "fixed",
            Route::Cachet => "cachet",
        }
    }
}

/// What the simulator billed for one route.
#[derive(Clone, Debug, Default)]
pub struct RouteResult {
    pub requests: u64,
    pub failed: u64,
    /// Of the failures, those that failed with exactly the fault injected on them.
    pub injected: u64,
    /// Of the failures, those no injected fault explains.
    pub unexplained: u64,
    /// Responses that are the proxy's own errors (`x-cachet-error`).
    pub proxy_errors: u64,
    /// The faults the simulator injected (its own count, cachet's own calls included).
    pub faults: Tally,
    pub tokens: Usage,
    /// Input side including Gemini storage, nano-USD; `None` when a price is missing.
    pub cost_nusd: Option<u64>,
    /// The input tokens of this route billed as uncached input.
    pub uncached_nusd: Option<u64>,
    pub output_nusd: Option<u64>,
    /// Replica pools: what each replica served.
    pub replicas: Vec<ReplicaLoad>,
    /// Streams the client cancelled after their first event.
    pub cancelled: u64,
    /// The cachet route: its ledger and `/metrics` held against what the simulator reported.
    pub audit: Option<Audit>,
}

pub fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(T0_UNIX)
}

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Failed with exactly the fault injected on it.
    Injected,
    /// Failed with nothing injected that explains it.
    Unexplained,
}

/// One request's outcome, and whether its response was the proxy's own error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub outcome: Outcome,
    pub proxy_error: bool,
    /// The client cancelled the stream after its first event, as planned.
    pub cancelled: bool,
}

impl RouteResult {
    fn count(&mut self, answer: Answer) {
        self.requests += 1;
        match answer.outcome {
            Outcome::Ok => {}
            Outcome::Injected => {
                self.failed += 1;
                self.injected += 1;
            }
            Outcome::Unexplained => {
                self.failed += 1;
                self.unexplained += 1;
            }
        }
        self.proxy_errors += u64::from(answer.proxy_error);
        self.cancelled += u64::from(answer.cancelled);
    }

    /// Requests that succeeded.
    pub fn ok(&self) -> u64 {
        self.requests - self.failed
    }
}

/// Replays `workload` on `route` and returns the simulator's bill.
pub async fn replay(
    workload: &Workload,
    route: Route,
    progress: &mut Progress,
) -> anyhow::Result<RouteResult> {
    replay_with(workload, route, None, progress).await
}

/// [`replay`] with `faults` injected by the simulator.
pub async fn replay_with(
    workload: &Workload,
    route: Route,
    faults: Option<&Faults>,
    progress: &mut Progress,
) -> anyhow::Result<RouteResult> {
    let clock = Arc::new(Clock::manual(t0()));
    let replicas = if workload.provider == Provider::Vllm {
        POOL_REPLICAS
    } else {
        0
    };
    let settings = Settings {
        gemini_implicit: false,
        kv_capacity_tokens: POOL_KV_TOKENS,
        prices: None,
    };
    let sim = Sim::new(clock.clone(), settings, replicas);
    let sim = Arc::new(if replicas > 0 {
        sim.holding_replica_replies()
    } else {
        sim
    });
    let injected = Injected::of(faults);
    if let Some(faults) = faults {
        sim.set_faults(faults.clone());
    }
    let sim_listener = server::bind("127.0.0.1:0".parse()?).await?;
    let sim_addr = sim_listener.local_addr()?;
    let sim_server = axum::serve(server::nodelay(sim_listener), sim::build(sim.clone()));
    let sim_task = Abort(tokio::spawn(async move { sim_server.await }));

    let (base, proxy) = match route {
        Route::Cachet => {
            let proxy = Proxy::start(&format!("http://{sim_addr}"), clock.clone()).await?;
            (format!("http://{}", proxy.addr), Some(proxy))
        }
        Route::Direct | Route::Fixed => (format!("http://{sim_addr}"), None),
    };
    let metrics_before = proxy
        .as_ref()
        .map(|p| audit::metrics_books(&crate::http::metrics_text(&p.state)));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .context("HTTP client")?;
    let mut fixed = Fixed::default();
    let mut result = RouteResult::default();
    progress.start(
        &format!(
            "{} {} {}",
            workload.name,
            workload.provider.upstream(),
            route.name()
        ),
        workload.requests.len(),
    );
    if let Some(gate) = sim.gate() {
        let pool = Pool {
            client: &client,
            base: &base,
            route,
            clock: &clock,
            gate,
            injected: &injected,
        };
        pool.replay(workload, &mut result, progress).await;
    }
    let mut index = 0usize;
    let unheld = match sim.gate() {
        Some(_) => &[][..],
        None => &workload.requests[..],
    };
    for group in unheld.chunk_by(|a, b| a.t == b.t) {
        clock.set(t0() + Duration::from_secs_f64(group[0].t.max(0.0)));
        let shaped: Vec<(Request, Shape)> = group
            .iter()
            .enumerate()
            .map(|(i, request)| shape(workload.provider, request, index + i))
            .collect();
        let mut sends = Vec::with_capacity(group.len());
        for (request, how) in &shaped {
            let target = target(workload.provider, route, &base, request, index);
            index += 1;
            let body = match route {
                Route::Fixed => fixed.apply(&client, &base, workload, request).await,
                Route::Direct | Route::Cachet => request.body.clone(),
            };
            sends.push(send(&client, target, request, body, &injected, *how));
        }
        for answer in join_all(sends).await {
            result.count(answer);
        }
        progress.advance(group.len());
    }
    progress.finish();
    settle_cancelled(&sim, result.cancelled).await;
    if let (Some(proxy), Some(before)) = (proxy, metrics_before) {
        result.audit = Some(proxy.audit(&sim, before).await?);
    }
    sim.settle();
    result.cost_nusd = Some(0);
    result.uncached_nusd = Some(0);
    result.output_nusd = Some(0);
    for (_, _, account) in sim.accounts() {
        result.tokens.input_uncached += account.input_uncached;
        result.tokens.cache_read += account.cache_read;
        result.tokens.cache_write_5m += account.cache_write_5m;
        result.tokens.cache_write_1h += account.cache_write_1h;
        result.tokens.output += account.output;
        let input_and_storage = add(account.input_nusd, account.storage_nusd);
        result.cost_nusd = add(result.cost_nusd, input_and_storage);
        result.uncached_nusd = add(result.uncached_nusd, account.input_uncached_nusd);
        result.output_nusd = add(result.output_nusd, account.output_nusd);
    }
    result.replicas = sim.replica_loads();
    result.faults = sim.fault_tally();
    drop(sim_task);
    Ok(result)
}

/// The driver of a pool's replay, with replies held by the simulator's gate.
struct Pool<'a> {
    client: &'a reqwest::Client,
    base: &'a str,
    route: Route,
    clock: &'a Clock,
    gate: &'a crate::sim::gate::Gate,
    injected: &'a Injected,
}

impl Pool<'_> {
    async fn replay(&self, workload: &Workload, result: &mut RouteResult, progress: &mut Progress) {
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel::<Answer>();
        let count = |answer: Answer, result: &mut RouteResult, progress: &mut Progress| {
            result.count(answer);
            progress.advance(1);
        };
        for (index, request) in workload.requests.iter().enumerate() {
            let at = t0() + Duration::from_secs_f64(request.t.max(0.0));
            for answer in self.release(Some(at), &mut finished).await {
                count(answer, result, progress);
            }
            self.clock.set(at);
            let parked = self.gate.arrivals();
            let url = target(workload.provider, self.route, self.base, request, index);
            let (client, request, done) = (self.client.clone(), request.clone(), done.clone());
            let injected = self.injected.clone();
            tokio::spawn(async move {
                let body = request.body.clone();
                let answer = send(&client, url, &request, body, &injected, Shape::Whole).await;
                let _ = done.send(answer);
            });
            // The next request waits until this one has reached its replica (or has failed
            // on the way), so arrivals keep the trace's order.
            tokio::select! {
                () = self.gate.arrived(parked + 1) => {}
                Some(answer) = finished.recv() => count(answer, result, progress),
            }
        }
        for answer in self.release(None, &mut finished).await {
            count(answer, result, progress);
        }
    }

    /// Moves the clock through every end up to `until` (`None`: all), releasing those replies
    /// and waiting for each to be read; returns their outcomes.
    async fn release(
        &self,
        until: Option<SystemTime>,
        finished: &mut tokio::sync::mpsc::UnboundedReceiver<Answer>,
    ) -> Vec<Answer> {
        let mut outcomes = Vec::new();
        while let Some(end) = self
            .gate
            .next_end()
            .filter(|&end| until.is_none_or(|u| end <= u))
        {
            self.clock.set(end);
            for _ in 0..self.gate.release(end) {
                match finished.recv().await {
                    Some(answer) => outcomes.push(answer),
                    None => return outcomes,
                }
            }
        }
        outcomes
    }
}

/// A sum of money that is unknown (`None`) as soon as one term is.
fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    Some(a? + b?)
}

/// Where a request goes on this route.
fn target(provider: Provider, route: Route, base: &str, request: &Request, index: usize) -> String {
    if provider == Provider::Vllm && route != Route::Cachet {
        let replica = match route {
            Route::Fixed => first_block_hash(&request.body) % POOL_REPLICAS as u64,
            Route::Direct | Route::Cachet => (index % POOL_REPLICAS) as u64,
        };
        return format!("{base}/vllm/{replica}{}", request.path);
    }
    format!("{base}/{}{}", request.upstream, request.path)
}

/// How the replay's client sends a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Whole,
    Stream,
    /// Streamed, and cancelled by the client after the first event.
    Cancel,
}

/// Every fourth request of a chat dialect is streamed, and every third of those is cancelled by
/// its client after the first event (a user pressing stop), so that the books are held to
/// streams and cancelled streams too. Every route sends the same shapes. A pool's replies are
/// held by the simulator's gate, so pools are sent whole.
pub fn shape(provider: Provider, request: &Request, index: usize) -> (Request, Shape) {
    let how = match index % 12 {
        5 => Shape::Cancel,
        1 | 9 => Shape::Stream,
        _ => Shape::Whole,
    };
    if how == Shape::Whole || provider == Provider::Vllm {
        return (request.clone(), Shape::Whole);
    }
    let mut request = request.clone();
    match provider {
        Provider::Gemini => {
            request.path = request
                .path
                .replace(":generateContent", ":streamGenerateContent?alt=sse");
        }
        Provider::Anthropic | Provider::OpenAi | Provider::DeepSeek | Provider::Vllm => {
            if let Some(body) = request.body.as_object_mut() {
                body.insert("stream".into(), Value::Bool(true));
            }
        }
    }
    (request, how)
}

/// Waits (a few seconds at most) until the simulator has seen every cancelled stream's client
/// go away: a cut is booked when the connection closes, after the client has moved on.
async fn settle_cancelled(sim: &Sim, cancelled: u64) {
    let cut = || -> u64 {
        sim.accounts()
            .iter()
            .map(|(_, _, a)| a.told.cut_streams)
            .sum()
    };
    for _ in 0..500 {
        if cut() >= cancelled {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A consistent hash of a request's first content block (the first text part of its first
/// message): the baseline pool router.
fn first_block_hash(body: &Value) -> u64 {
    let first = body
        .pointer("/messages/0/content/0/text")
        .or_else(|| body.pointer("/messages/0/content"));
    let text = first.and_then(Value::as_str).unwrap_or_default();
    let hash = blake3::hash(text.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(bytes)
}

/// What the simulator injects that can fail a request: the error statuses of the spec.
#[derive(Clone, Debug, Default)]
struct Injected {
    statuses: Vec<u16>,
}

impl Injected {
    fn of(faults: Option<&Faults>) -> Self {
        Injected {
            statuses: faults.map(Faults::error_statuses).unwrap_or_default(),
        }
    }

    /// Whether a failure is the fault injected on the request: an injected error status marked
    /// `error`, or a successful head whose body was cut, marked `reset`.
    fn explains(&self, status: reqwest::StatusCode, body_ok: bool, kinds: &[&str]) -> bool {
        if status.is_success() {
            !body_ok && kinds.contains(&"reset")
        } else {
            kinds.contains(&"error") && self.statuses.contains(&status.as_u16())
        }
    }
}

/// Sends one request and reads its response to the end; how it ended.
async fn send(
    client: &reqwest::Client,
    url: String,
    request: &Request,
    body: Value,
    injected: &Injected,
    how: Shape,
) -> Answer {
    let unexplained = Answer {
        outcome: Outcome::Unexplained,
        proxy_error: false,
        cancelled: false,
    };
    let mut builder = client.post(url).header("content-type", "application/json");
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    if how == Shape::Cancel {
        // The simulator sends one event and waits, as a slow generation would: the cut then
        // falls at the same event whatever the timing.
        builder = builder.header(sim::HANG_AFTER_HEADER, "1");
    }
    let Ok(bytes) = serde_json::to_vec(&body) else {
        return unexplained;
    };
    let Ok(res) = builder.body(bytes).send().await else {
        return unexplained;
    };
    let status = res.status();
    let proxy_error = res.headers().contains_key(crate::error::ERROR_HEADER);
    let kinds: String = res
        .headers()
        .get(FAULT_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let kinds: Vec<&str> = kinds.split(',').map(str::trim).collect();
    if how == Shape::Cancel && status.is_success() {
        let mut res = res;
        let first = res.chunk().await;
        // Dropping the response closes the connection: the user pressed stop.
        drop(res);
        let cancelled = matches!(first, Ok(Some(_)));
        let outcome = match () {
            _ if cancelled => Outcome::Ok,
            _ if injected.explains(status, false, &kinds) => Outcome::Injected,
            _ => Outcome::Unexplained,
        };
        return Answer {
            outcome,
            proxy_error,
            cancelled,
        };
    }
    let body_ok = res.bytes().await.is_ok();
    let outcome = match () {
        _ if status.is_success() && body_ok => Outcome::Ok,
        _ if injected.explains(status, body_ok, &kinds) => Outcome::Injected,
        _ => Outcome::Unexplained,
    };
    Answer {
        outcome,
        proxy_error,
        cancelled: false,
    }
}

/// The fixed-placement baseline's client-side rewrite, with the Gemini caches it keeps.
#[derive(Default)]
struct Fixed {
    /// (API key, model, system+tools JSON) → cache name and expiry.
    gemini: HashMap<(String, String, String), (String, SystemTime)>,
    prices: Option<PriceTable>,
}

impl Fixed {
    async fn apply(
        &mut self,
        client: &reqwest::Client,
        base: &str,
        workload: &Workload,
        request: &Request,
    ) -> Value {
        let mut body = request.body.clone();
        match workload.provider {
            Provider::Anthropic => mark_anthropic(&mut body),
            Provider::Gemini => {
                self.gemini(client, base, workload, request, &mut body)
                    .await
            }
            Provider::OpenAi | Provider::DeepSeek | Provider::Vllm => {}
        }
        body
    }

    /// One `cachedContents` of system instruction + tools (+ tool config) once they reach the
    /// model's minimum, created with the request's own key and re-created after it expires
    /// (default TTL, 1 h); the request then references it instead of carrying them. A create
    /// that fails (an injected fault) leaves the request as it is.
    async fn gemini(
        &mut self,
        client: &reqwest::Client,
        base: &str,
        workload: &Workload,
        request: &Request,
        body: &mut Value,
    ) {
        let Some(obj) = body.as_object() else {
            return;
        };
        let fixed: serde_json::Map<String, Value> = ["systemInstruction", "tools", "toolConfig"]
            .iter()
            .filter_map(|k| obj.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect();
        if fixed.is_empty() {
            return;
        }
        let prices = self
            .prices
            .get_or_insert_with(|| PriceTable::built_in().unwrap_or_default());
        let min = prices
            .price_on(&workload.model, &utc_date(t0()))
            .and_then(|p| p.min_cacheable_tokens)
            .unwrap_or(2048);
        let fixed = Value::Object(fixed);
        if sim::render_request("gemini", &request.path, &fixed).tokens() < min {
            return;
        }
        let key = request
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("x-goog-api-key"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let now = t0() + Duration::from_secs_f64(request.t.max(0.0));
        let id = (key.clone(), workload.model.clone(), fixed.to_string());
        let live = self
            .gemini
            .get(&id)
            .filter(|(_, expires)| now < *expires)
            .map(|(name, _)| name.clone());
        let name = match live {
            Some(name) => name,
            None => {
                let mut create = fixed.clone();
                create["model"] = json!(format!("models/{}", workload.model));
                let Some((name, expires)) = create_cache(client, base, &key, &create).await else {
                    return;
                };
                let expires = expires.unwrap_or(now);
                self.gemini.insert(id, (name.clone(), expires));
                name
            }
        };
        if let Some(obj) = body.as_object_mut() {
            for k in ["systemInstruction", "tools", "toolConfig"] {
                obj.shift_remove(k);
            }
            obj.insert("cachedContent".into(), json!(name));
        }
    }
}

/// Creates a Gemini cache of `body` with `key`; its name and expiry, `None` when the create
/// failed.
async fn create_cache(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: &Value,
) -> Option<(String, Option<SystemTime>)> {
    let res = client
        .post(format!("{base}/gemini/v1beta/cachedContents"))
        .header("x-goog-api-key", key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .ok()
        .filter(|res| res.status().is_success())?;
    let bytes = res.bytes().await.ok()?;
    let created: Value = serde_json::from_slice(&bytes).ok()?;
    let name = created["name"].as_str()?.to_owned();
    let expires = created["expireTime"].as_str().and_then(parse_rfc3339);
    Some((name, expires))
}

/// A 5m `cache_control` on the last system block and on the last block of the last message.
fn mark_anthropic(body: &mut Value) {
    let marker = json!({"type": "ephemeral"});
    if let Some(system) = body.get_mut("system") {
        mark_last(system, &marker);
    }
    let last = body
        .get_mut("messages")
        .and_then(Value::as_array_mut)
        .and_then(|m| m.last_mut())
        .and_then(|m| m.get_mut("content"));
    if let Some(content) = last {
        mark_last(content, &marker);
    }
}

fn mark_last(content: &mut Value, marker: &Value) {
    if let Value::String(text) = content {
        *content = json!([{"type": "text", "text": text, "cache_control": marker}]);
    } else if let Some(block) = content.as_array_mut().and_then(|a| a.last_mut()) {
        if let Some(obj) = block.as_object_mut() {
            obj.entry("cache_control").or_insert_with(|| marker.clone());
        }
    }
}

/// A cachet proxy on an ephemeral port with the shipped defaults, its upstreams pointed at the
/// simulator (plus `deepseek` and a `vllm` upstream, which the defaults leave commented out),
/// on the replay's virtual clock.
struct Proxy {
    addr: std::net::SocketAddr,
    state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Proxy {
    async fn start(sim: &str, clock: Arc<Clock>) -> anyhow::Result<Proxy> {
        let extra = r#"
[[upstreams]]
name = "deepseek"
provider = "deepseek"
base_url = "https://api.deepseek.com"

[[upstreams]]
name = "vllm"
provider = "openai-compatible"
base_urls = ["http://vllm-0.internal:8000"]
"#;
        let env = [
            (
                "CACHET_LOG__LEVEL",
                std::env::var("CACHET_REPLAY_LOG").unwrap_or_else(|_| "error".to_owned()),
            ),
            // The replay's proxy keeps its ledger in memory: a replay is no traffic to account.
            ("CACHET_LEDGER__URL", "sqlite::memory:".to_owned()),
            (
                "CACHET_UPSTREAMS__OPENAI__BASE_URL",
                format!("{sim}/openai"),
            ),
            (
                "CACHET_UPSTREAMS__ANTHROPIC__BASE_URL",
                format!("{sim}/anthropic"),
            ),
            (
                "CACHET_UPSTREAMS__GEMINI__BASE_URL",
                format!("{sim}/gemini"),
            ),
            (
                "CACHET_UPSTREAMS__DEEPSEEK__BASE_URL",
                format!("{sim}/deepseek"),
            ),
            (
                "CACHET_UPSTREAMS__VLLM__BASE_URLS",
                (0..POOL_REPLICAS)
                    .map(|i| format!("{sim}/vllm/{i}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "CACHET_UPSTREAMS__VLLM__KV_CAPACITY_TOKENS",
                POOL_KV_TOKENS.to_string(),
            ),
        ];
        let config = Config::load_from(Some(extra), env.map(|(k, v)| (k.to_owned(), v)))
            .map_err(|e| anyhow::anyhow!("replay proxy config: {e}"))?;
        // `CACHET_REPLAY_LOG=info` shows the proxy's request lines (errors only by default).
        crate::telemetry::init_tracing(&config.log);
        let state = AppState::with_clock(config, clock).map_err(anyhow::Error::msg)?;
        let listener = server::bind("127.0.0.1:0".parse()?).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(state.clone(), listener, None, async move {
            let _ = stopped.await;
        }));
        Ok(Proxy {
            addr,
            state,
            stop: Some(stop),
            task,
        })
    }

    /// Stops the proxy as an operator would (its ledger flushed, its Gemini caches' storage
    /// booked to expiry), then holds its books against what the simulator told its clients.
    async fn audit(mut self, sim: &Sim, metrics_before: (Books, u64)) -> anyhow::Result<Audit> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .context("the replay's proxy")?
            .context("the replay's proxy")?;
        sim.settle();
        let (metrics_after, dropped_after) =
            audit::metrics_books(&crate::http::metrics_text(&self.state));
        let ledger = self
            .state
            .telemetry()
            .ledger()
            .context("the replay's proxy has no ledger")?;
        let summary = ledger.store().summary(i64::MIN, i64::MAX).await?;
        let (told, told_unpriced, cut_streams, untold) = Audit::told_from(&sim.accounts());
        let count = |n: i64| u64::try_from(n).unwrap_or_default();
        Ok(Audit {
            ledger: Books {
                usage: summary.usage,
                cost_nusd: count(summary.cost_nusd),
                cost_uncached_nusd: count(summary.cost_uncached_nusd),
            },
            metrics: audit::books_since(metrics_after, metrics_before.0),
            told,
            records: count(summary.records),
            unpriced: count(summary.unpriced),
            cancelled: count(summary.cancelled),
            incomplete: count(summary.incomplete),
            told_unpriced,
            cut_streams,
            dropped: dropped_after.saturating_sub(metrics_before.1),
            untold,
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

struct Abort<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Abort<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A progress bar on stderr when it is a terminal; otherwise one line per finished route.
pub struct Progress {
    tty: bool,
    label: String,
    total: usize,
    done: usize,
    drawn: usize,
}

impl Progress {
    pub fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            label: String::new(),
            total: 0,
            done: 0,
            drawn: usize::MAX,
        }
    }

    fn start(&mut self, label: &str, total: usize) {
        self.label = label.to_owned();
        self.total = total.max(1);
        self.done = 0;
        self.drawn = usize::MAX;
        self.draw();
    }

    fn advance(&mut self, n: usize) {
        self.done += n;
        self.draw();
    }

    fn draw(&mut self) {
        if !self.tty {
            return;
        }
        const WIDTH: usize = 30;
        let filled = self.done * WIDTH / self.total;
        let percent = self.done * 100 / self.total;
        if percent == self.drawn {
            return;
        }
        self.drawn = percent;
        let bar: String = "#".repeat(filled) + &"-".repeat(WIDTH - filled);
        eprint!(
            "\r{:<32} [{bar}] {:>3}% {}/{}",
            self.label, percent, self.done, self.total
        );
        let _ = std::io::stderr().flush();
    }

    fn finish(&mut self) {
        if self.tty {
            eprint!("\r{:<80}\r", "");
        } else {
            eprintln!("replayed {} ({} requests)", self.label, self.done);
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_anthropic_marks_the_last_system_and_last_message_blocks() {
        let mut body = json!({
            "system": "be brief",
            "messages": [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "doc"}, {"type": "text", "text": "q?"}]},
            ],
        });
        mark_anthropic(&mut body);
        let marker = json!({"type": "ephemeral"});
        assert_eq!(
            body["system"],
            json!([{"type": "text", "text": "be brief", "cache_control": marker}])
        );
        assert_eq!(
            body["messages"][0]["content"], "first",
            "earlier messages untouched"
        );
        assert!(
            body["messages"][2]["content"][0]
                .get("cache_control")
                .is_none()
        );
        assert_eq!(body["messages"][2]["content"][1]["cache_control"], marker);
        // A client's own marker is kept, not duplicated.
        let mut own = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]});
        mark_anthropic(&mut own);
        assert_eq!(
            own["messages"][0]["content"][0]["cache_control"]["ttl"],
            "1h"
        );
    }

    #[test]
    fn pool_routes_round_robin_or_by_first_block() {
        let request = |text: &str| Request {
            t: 0.0,
            upstream: "vllm".into(),
            path: "/v1/chat/completions".into(),
            headers: Vec::new(),
            body: json!({"messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]}),
        };
        let a = request("shared system block");
        let direct: Vec<String> = (0..9)
            .map(|i| target(Provider::Vllm, Route::Direct, "http://s", &a, i))
            .collect();
        assert_eq!(direct[0], "http://s/vllm/0/v1/chat/completions");
        assert_eq!(direct[8], direct[0]);
        assert_ne!(direct[1], direct[0]);
        let fixed = |r: &Request, i| target(Provider::Vllm, Route::Fixed, "http://s", r, i);
        assert_eq!(fixed(&a, 0), fixed(&a, 5), "same first block, same replica");
        let b = request("another");
        assert_eq!(
            target(
                Provider::Anthropic,
                Route::Direct,
                "http://s",
                &Request {
                    upstream: "anthropic".into(),
                    ..b
                },
                3
            ),
            "http://s/anthropic/v1/chat/completions"
        );
    }
}
