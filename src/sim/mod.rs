//! The upstream simulator (`cachet sim`): one axum router that speaks the OpenAI, Anthropic,
//! Gemini, DeepSeek and vLLM-like (OpenAI-compatible) APIs closely enough for the official SDKs.
//!
//! Mounts on one listener, so a proxy upstream is `http://HOST:PORT/<mount>`:
//!
//! ```text
//! /openai      chat completions, responses, models, embeddings        (openai.rs)
//! /vllm/{i}    the same, one mount per replica, i < replicas          (openai.rs)
//! /deepseek    chat completions with DeepSeek's cache usage fields    (openai.rs)
//! /anthropic   messages, count_tokens, models                         (anthropic.rs)
//! /gemini      {v1beta,v1}/models/{m}:…, cachedContents               (gemini/)
//! /__sim/faults  the injected faults: GET, POST (replace), DELETE      (faults.rs)
//! ```
//!
//! Every reply is deterministic (`reply.rs`): the text names the model and the prompt token count,
//! and IDs come from one counter per router, so two simulators fed the same requests answer the
//! same bytes apart from timestamps.
//!
//! Caching is billed as the providers publish it (`../shared/providers.md`): each dialect renders
//! its request into a [`prompt::SimPrompt`] (real o200k tokens, `tokens.rs`), the provider's rule
//! in `rules/` decides what is read and written, and `engine.rs` keeps the caches and the bills
//! (`billing.rs`, served at `GET /__sim/stats`). Time comes only from the simulator's `Clock`.

mod anthropic;
pub mod billing;
pub mod engine;
mod faults;
pub mod gate;
mod gemini;
pub(crate) mod openai;
pub mod prompt;
mod reply;
pub mod rules;
pub mod tokens;
mod wire;

#[cfg(test)]
mod caching_tests;
#[cfg(test)]
mod test_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::http::StatusCode;
use axum::http::Uri;
use axum::response::Response;

pub use faults::{CONTROL_PATH, ErrorFault, FAULT_HEADER, Faults, Tally};
pub use reply::Reply;
pub use wire::HANG_AFTER_HEADER;

use crate::clock::{self, Clock};
use engine::Engine;
pub use engine::Settings;
use faults::FaultState;
use openai::Flavor;
use wire::api_key;
use wire::{Dialect, SimError};

/// Router for `cachet sim`: mounts `/openai`, `/anthropic`, `/gemini`, `/deepseek`, `/vllm/{i}`,
/// on the system clock with default settings.
pub fn router(replicas: usize) -> Router {
    router_with(replicas, Settings::default(), Faults::default())
}

/// [`router`] with settings (`--gemini-implicit`, `--kv-capacity-tokens`) and `faults` injected
/// from the start; `/__sim/faults` changes them while it runs.
pub fn router_with(replicas: usize, settings: Settings, faults: Faults) -> Router {
    let sim = Sim::new(Arc::new(Clock::system()), settings, replicas);
    sim.set_faults(faults);
    build(Arc::new(sim))
}

/// The router of an existing simulator, with the faults set on it (the replay keeps the
/// `Arc<Sim>` to read its bills).
pub fn build(sim: Arc<Sim>) -> Router {
    mounts(sim.clone())
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            faults::inject,
        ))
        // Added after the layer, so that no fault reaches the controls.
        .merge(faults::control(sim.clone()))
        .merge(stats_route(sim))
}

fn stats_route(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/__sim/stats", axum::routing::get(stats))
        .with_state(sim)
}

fn mounts(sim: Arc<Sim>) -> Router {
    let replicas = sim.replicas;
    let mut app = Router::new()
        .nest("/openai", openai::router(sim.clone(), Flavor::OpenAi))
        .nest("/deepseek", openai::router(sim.clone(), Flavor::DeepSeek))
        .nest("/anthropic", anthropic::router(sim.clone()))
        .nest("/gemini", gemini::router(sim.clone()));
    for i in 0..replicas {
        app = app.nest(
            &format!("/vllm/{i}"),
            openai::router(sim.clone(), Flavor::Vllm(i)),
        );
    }
    app.fallback(unknown_mount)
}

/// Outside every mount no dialect applies; OpenAI's shape is the most widely understood.
async fn unknown_mount(uri: Uri) -> Response {
    let message = format!("no simulator mount serves {}", uri.path());
    axum::response::IntoResponse::into_response(SimError::new(
        Dialect::OpenAi,
        StatusCode::NOT_FOUND,
        message,
    ))
}

/// `GET /__sim/stats`: billed tokens and nano-USD per API key and model, live cache entries,
/// replica load.
async fn stats(axum::extract::State(sim): axum::extract::State<Arc<Sim>>) -> Response {
    wire::ok_json(&sim.stats())
}

/// The error shape of the mount serving `path`, for replies made outside the mount's router.
fn dialect_of(path: &str) -> Dialect {
    let mount = path.trim_start_matches('/').split('/').next();
    match mount.unwrap_or_default() {
        "anthropic" => Dialect::Anthropic,
        "gemini" => Dialect::Gemini,
        _ => Dialect::OpenAi,
    }
}

/// The prompt the simulator bills for `body` sent to the mount `upstream` (`anthropic`, `openai`,
/// `deepseek`, `vllm`, `gemini`) at `path`: what the replay's oracle prices. A Gemini request's
/// own prompt excludes any cached content it references.
pub fn render_request(upstream: &str, path: &str, body: &serde_json::Value) -> prompt::SimPrompt {
    match upstream {
        "anthropic" => anthropic::render(body),
        "gemini" => gemini::render(body),
        _ => openai::render_request(path, body),
    }
}

/// State shared by every mount of one router.
pub struct Sim {
    /// Source of the numeric part of every ID (`chatcmpl-sim-1`, `msg_sim_2`, …). One counter per
    /// router rather than per process, so that tests running side by side stay deterministic.
    last_id: AtomicU64,
    clock: Arc<Clock>,
    replicas: usize,
    pub(crate) engine: Engine,
    gemini_caches: Mutex<gemini::Store>,
    /// Replica replies held until the virtual clock reaches their end (`gate`).
    gate: Option<gate::Gate>,
    /// The faults injected (`faults.rs`) and how many were.
    faults: FaultState,
}

/// What one eviction removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Evicted {
    /// Cache entries of every kind.
    pub entries: u64,
    /// Of them, Gemini `cachedContents`.
    pub cached_contents: u64,
}

impl Sim {
    pub fn new(clock: Arc<Clock>, settings: Settings, replicas: usize) -> Self {
        let virtual_time = clock.is_manual();
        Sim {
            last_id: AtomicU64::new(0),
            clock,
            replicas,
            engine: Engine::new(settings, replicas, virtual_time),
            gemini_caches: Mutex::default(),
            gate: None,
            faults: FaultState::default(),
        }
    }

    /// Replaces the faults injected from now on (and the count of draws made).
    pub fn set_faults(&self, faults: Faults) {
        self.faults.replace(faults);
    }

    /// How many faults were injected so far, by kind.
    pub fn fault_tally(&self) -> Tally {
        self.faults.tally()
    }

    /// Evicts the caches of `req`'s caller before their TTL: its Gemini `cachedContents` are
    /// deleted (storage booked up to now), its prefix entries with every provider dropped, and
    /// the KV cache of the `/vllm/{i}` replica it is for emptied.
    pub(crate) fn evict(&self, req: &axum::extract::Request) -> Evicted {
        let now = self.now();
        let path = req.uri().path();
        let key = match dialect_of(path) {
            Dialect::Gemini => gemini::caller_key(req.headers(), req.uri()),
            Dialect::OpenAi | Dialect::Anthropic => api_key(req.headers()),
        };
        let cached_contents = self.gemini_caches().evict(&self.engine, &key, now);
        let replica = path
            .strip_prefix("/vllm/")
            .and_then(|rest| rest.split('/').next())
            .and_then(|i| i.parse::<usize>().ok());
        let entries = self.engine.evict(&key, replica);
        Evicted {
            entries: entries + cached_contents,
            cached_contents,
        }
    }

    /// Holds each replica reply until its driver releases it at the end of the request's
    /// simulated service (`gate`): for a replay of a pool on a virtual clock.
    pub fn holding_replica_replies(mut self) -> Self {
        self.gate = Some(gate::Gate::default());
        self
    }

    pub fn gate(&self) -> Option<&gate::Gate> {
        self.gate.as_ref()
    }

    pub fn stats(&self) -> serde_json::Value {
        let now = self.now();
        let caches = self.gemini_caches().summary(&self.engine, now);
        let mut stats = self.engine.stats(now, caches);
        if let (Some(obj), Ok(tally)) = (
            stats.as_object_mut(),
            serde_json::to_value(self.fault_tally()),
        ) {
            obj.insert("faults".to_owned(), tally);
        }
        stats
    }

    /// Books the storage of every Gemini cache still alive up to its expiry, which its creator
    /// has committed to unless it deletes it: the end of a replay.
    pub fn settle(&self) {
        self.gemini_caches().settle(&self.engine);
    }

    pub fn accounts(&self) -> Vec<(String, String, billing::Account)> {
        self.engine.accounts()
    }

    pub fn replica_loads(&self) -> Vec<engine::ReplicaLoad> {
        self.engine.replica_loads()
    }

    pub(crate) fn gemini_caches(&self) -> std::sync::MutexGuard<'_, gemini::Store> {
        // A panic while holding the lock leaves the store consistent (every update is one
        // insert or remove), so a poisoned lock is safe to keep using.
        self.gemini_caches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.last_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Seconds since the Unix epoch, as `created` fields carry them.
    pub(crate) fn unix_now(&self) -> u64 {
        clock::unix_secs(self.now())
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{call, json_of};
    use axum::http::StatusCode;

    #[tokio::test]
    async fn unknown_mount_is_404_openai_shape() {
        let app = super::router(1);
        let res = call(&app, "POST", "/nowhere/v1/chat/completions", &[], "{}").await;
        assert_eq!(res.status, StatusCode::NOT_FOUND);
        let body = json_of(&res);
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }

    #[tokio::test]
    async fn vllm_mounts_only_below_replicas() {
        let app = super::router(2);
        let req = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        for i in 0..2 {
            let res = call(
                &app,
                "POST",
                &format!("/vllm/{i}/v1/chat/completions"),
                &[],
                req,
            )
            .await;
            assert_eq!(res.status, StatusCode::OK);
            assert_eq!(res.header("x-cachet-sim-replica"), Some(i.to_string()));
        }
        let res = call(&app, "POST", "/vllm/2/v1/chat/completions", &[], req).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn ids_count_up_per_router() {
        let app = super::router(0);
        let req = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let a = json_of(&call(&app, "POST", "/openai/v1/chat/completions", &[], req).await);
        let b = json_of(&call(&app, "POST", "/deepseek/chat/completions", &[], req).await);
        assert_eq!(a["id"], "chatcmpl-sim-1");
        assert_eq!(b["id"], "chatcmpl-sim-2");
    }
}
