//! Fault injection for `cachet sim`: a layer around every mount that can delay the response
//! head, answer with errors in the mount's dialect, cut replies short, slow streams down and
//! evict the caller's caches before their TTL, so that clients and the proxy can be tested
//! against a misbehaving upstream.
//!
//! Faults are set at startup (`cachet sim --faults '<json>'` or `--faults @file.json`) and
//! changed at runtime through `/__sim/faults` (`GET` shows, `POST` replaces, `DELETE` clears),
//! which sits outside the layer so a fault can never lock the controls out. Every key is
//! optional:
//!
//! | key | effect |
//! |---|---|
//! | `mount` | only requests under this mount (`/anthropic`, `/vllm/0`, …) are affected |
//! | `seed` | seeds the draws of the faults given a `probability` (default 0) |
//! | `latency_ms` | delay before the response head |
//! | `errors` | `{status, count?, probability?, retry_after_s?}`, or a list of them: the next `count` requests, or each request with `probability` (both: at most `count` of them), answered with `status` in the mount's dialect; the first of the list that fires wins |
//! | `reset_after_events` | streams fail after K SSE events (K chunks of a JSON-array stream); with K = 0 a successful whole reply fails before its body too |
//! | `reset_probability` | the share of those replies that are cut (default: all) |
//! | `slow_stream_ms` | delay before every streamed event after the first |
//! | `evict_probability` | before a request is served, with this probability, the caller's caches are evicted before their TTL: its Gemini `cachedContents` are deleted (storage booked up to then; a request naming one gets the API's 404), its Anthropic, OpenAI, DeepSeek and implicit Gemini prefix entries dropped, and a `/vllm/{i}` replica's KV cache emptied |
//!
//! Every response a fault touched carries `x-cachet-sim-fault: <kinds>` (`latency`, `error`,
//! `reset`, `slow_stream`, `evict`) so that a test can tell an injected failure from a real
//! one; `GET /__sim/stats` counts them under `faults`.
//!
//! Draws are deterministic: each comes from the seed, the request (method, path and query,
//! API key and body) and how many identical requests came before, so a replay draws the same
//! faults whatever the order in which concurrent requests arrive, and a client that retries a
//! request draws afresh.
//!
//! Delays are real time (`tokio::time::sleep`): the simulator is driven live.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use http_body::Body as _;
use serde::{Deserialize, Serialize};

use super::Sim;
use super::wire::{Dialect, SSE, SimError};

/// The response header naming the faults applied to a response.
pub const FAULT_HEADER: &str = "x-cachet-sim-fault";
/// Where the faults are read and changed at runtime.
pub const CONTROL_PATH: &str = "/__sim/faults";

/// What to break. Every field is optional; the default breaks nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Only requests under this mount (`/anthropic`, `/vllm/0`, …) are affected; none: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// Seeds the draws of the faults given a probability.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seed: u64,
    /// Delay before the response head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Error responses: one spec or a list of them (serialized as given: one as an object).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "one_or_many::serialize",
        deserialize_with = "one_or_many::deserialize"
    )]
    pub errors: Vec<ErrorFault>,
    /// Streamed responses fail (the connection drops without a clean end) after this many SSE
    /// events, or body chunks when the stream is not SSE; with 0, whole successful replies
    /// fail before their body too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_after_events: Option<u64>,
    /// The share of the replies `reset_after_events` applies to that are cut; none: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_probability: Option<f64>,
    /// Delay before every streamed event after the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_stream_ms: Option<u64>,
    /// The share of requests before which the caller's caches are evicted before their TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evict_probability: Option<f64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `status` for the next `count` affected requests, or for each with `probability`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorFault {
    pub status: u16,
    /// Requests still to fail; each affected request takes one. With a probability: at most
    /// this many more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Each affected request fails with this probability (drawn from the seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Sent as `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

/// `errors` is one fault spec (an object) or a list of them.
mod one_or_many {
    use std::fmt;

    use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
    use serde::de::{MapAccess, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::ErrorFault;

    pub fn serialize<S: Serializer>(errors: &[ErrorFault], s: S) -> Result<S::Ok, S::Error> {
        match errors {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ErrorFault>, D::Error> {
        struct OneOrMany;
        impl<'de> Visitor<'de> for OneOrMany {
            type Value = Vec<ErrorFault>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an error fault object or a list of them")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                ErrorFault::deserialize(MapAccessDeserializer::new(map)).map(|e| vec![e])
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq))
            }
        }
        d.deserialize_any(OneOrMany)
    }
}

/// Salts that make the draws of one request independent of each other.
const RESET_SALT: u64 = 1 << 32;
const EVICT_SALT: u64 = (1 << 32) + 1;

impl Faults {
    /// Parses and checks a fault spec; the error says which field is wrong and why.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let mut de = serde_json::Deserializer::from_str(text);
        let mut faults: Faults = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            }
        })?;
        de.end().map_err(|e| e.to_string())?;
        faults.check()?;
        Ok(faults)
    }

    /// The `--faults` argument: JSON, or `@path` to a JSON file.
    pub fn from_arg(arg: &str) -> Result<Self, String> {
        match arg.strip_prefix('@') {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read faults from {path}: {e}"))?;
                Self::from_json(&text).map_err(|e| format!("{path}: {e}"))
            }
            None => Self::from_json(arg),
        }
    }

    /// The statuses the spec injects: a failure with one of them and the `error` fault kind
    /// is the injected one.
    pub fn error_statuses(&self) -> Vec<u16> {
        self.errors.iter().map(|e| e.status).collect()
    }

    /// Rejects what cannot be injected, and writes the mount as it is matched.
    fn check(&mut self) -> Result<(), String> {
        for (i, errors) in self.errors.iter().enumerate() {
            let at = match self.errors.len() {
                1 => "errors".to_owned(),
                _ => format!("errors[{i}]"),
            };
            if !(400..=599).contains(&errors.status) {
                return Err(format!(
                    "{at}.status: {} is not an error status (400 to 599)",
                    errors.status
                ));
            }
            if errors.count.is_none() && errors.probability.is_none() {
                return Err(format!("{at}: set count, probability or both"));
            }
            check_probability(&format!("{at}.probability"), errors.probability)?;
        }
        check_probability("reset_probability", self.reset_probability)?;
        check_probability("evict_probability", self.evict_probability)?;
        if self.reset_probability.is_some() && self.reset_after_events.is_none() {
            return Err("reset_probability: set reset_after_events too".to_owned());
        }
        if let Some(mount) = self.mount.take() {
            if !mount.starts_with('/') {
                return Err(format!("mount: {mount:?} must start with '/'"));
            }
            let mount = mount.trim_end_matches('/');
            // "/" covers everything, as no mount would.
            self.mount = (!mount.is_empty()).then(|| mount.to_owned());
        }
        Ok(())
    }

    /// Whether any fault is drawn per request (which then needs the request's fingerprint).
    fn draws(&self) -> bool {
        self.errors.iter().any(|e| e.probability.is_some())
            || self.reset_probability.is_some()
            || self.evict_probability.is_some()
    }

    /// What to do to a request for `path`, taking one from an error count; `None` when the
    /// request is left alone. `draw(salt)` is the request's uniform draw in [0, 1) for `salt`.
    fn plan(&mut self, path: &str, draw: impl Fn(u64) -> f64) -> Option<Plan> {
        if !covers(self.mount.as_deref(), path) {
            return None;
        }
        let mut error = None;
        for (i, e) in self.errors.iter_mut().enumerate() {
            let drawn = e.probability.is_none_or(|p| draw(i as u64) < p);
            let left = e.count.is_none_or(|n| n > 0);
            if error.is_none() && drawn && left {
                if let Some(n) = &mut e.count {
                    *n -= 1;
                }
                error = Some(*e);
            }
        }
        let reset = self
            .reset_after_events
            .filter(|_| self.reset_probability.is_none_or(|p| draw(RESET_SALT) < p));
        let evict = self.evict_probability.is_some_and(|p| draw(EVICT_SALT) < p);
        let plan = Plan {
            latency: self.latency_ms.map(Duration::from_millis),
            error,
            stream: StreamFaults {
                reset_after: reset,
                slow: self.slow_stream_ms.map(Duration::from_millis),
            },
            evict,
        };
        (!plan.is_empty()).then_some(plan)
    }
}

fn check_probability(at: &str, p: Option<f64>) -> Result<(), String> {
    match p {
        Some(p) if !(0.0..=1.0).contains(&p) => {
            Err(format!("{at}: {p} is not a probability (0 to 1)"))
        }
        _ => Ok(()),
    }
}

/// Whether `path` is under `mount`, segment-wise: `/vllm` covers `/vllm/0/v1/models`, and
/// `/openai` does not cover `/openai2`.
fn covers(mount: Option<&str>, path: &str) -> bool {
    let Some(mount) = mount else { return true };
    path.strip_prefix(mount)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A uniform draw in [0, 1) from the seed, the request's fingerprint, its occurrence and a salt.
fn uniform(seed: u64, fingerprint: &[u8; 16], occurrence: u64, salt: u64) -> f64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cachet sim fault draw");
    hasher.update(&seed.to_le_bytes());
    hasher.update(fingerprint);
    hasher.update(&occurrence.to_le_bytes());
    hasher.update(&salt.to_le_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    // 53 random bits, the precision of an f64 in [0, 1).
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// The faults chosen for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Plan {
    latency: Option<Duration>,
    error: Option<ErrorFault>,
    stream: StreamFaults,
    evict: bool,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.latency.is_none() && self.error.is_none() && self.stream.is_empty() && !self.evict
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StreamFaults {
    reset_after: Option<u64>,
    slow: Option<Duration>,
}

impl StreamFaults {
    fn is_empty(&self) -> bool {
        self.reset_after.is_none() && self.slow.is_none()
    }

    fn kinds(&self) -> impl Iterator<Item = &'static str> {
        let reset = self.reset_after.map(|_| "reset");
        let slow = self.slow.map(|_| "slow_stream");
        reset.into_iter().chain(slow)
    }
}

/// How many faults were injected, by kind (`GET /__sim/stats`, `faults`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Requests delayed before their head.
    pub latency: u64,
    /// Error responses by status.
    pub errors: BTreeMap<u16, u64>,
    /// Replies cut short.
    pub resets: u64,
    /// Streams slowed.
    pub slow_streams: u64,
    /// Requests before which the caller's caches were evicted.
    pub evictions: u64,
    /// Cache entries those evictions removed (Gemini `cachedContents`, prefix entries,
    /// replica KV blocks).
    pub evicted_entries: u64,
    /// Of them, Gemini `cachedContents` deleted.
    pub evicted_cached_contents: u64,
}

/// The faults of one simulator, shared by the layer and the control endpoints. The lock is
/// only ever held to read or swap the spec, never across an await.
#[derive(Debug, Default)]
pub(crate) struct FaultState(Mutex<Inner>);

#[derive(Debug, Default)]
struct Inner {
    faults: Faults,
    /// How many times each request fingerprint has been seen, for independent draws.
    seen: HashMap<[u8; 16], u64>,
    tally: Tally,
}

impl FaultState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update replaces the spec or bumps a counter, so a lock poisoned by a
        // panicking holder still guards a consistent value.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a request under `path` needs its fingerprint for the draws.
    fn draws_for(&self, path: &str) -> bool {
        let inner = self.lock();
        inner.faults.draws() && covers(inner.faults.mount.as_deref(), path)
    }

    fn plan(&self, path: &str, fingerprint: Option<[u8; 16]>) -> Option<Plan> {
        let mut inner = self.lock();
        let occurrence = match fingerprint {
            Some(fp) => {
                let n = inner.seen.entry(fp).or_insert(0);
                *n += 1;
                *n - 1
            }
            None => 0,
        };
        let seed = inner.faults.seed;
        let fp = fingerprint.unwrap_or_default();
        inner
            .faults
            .plan(path, |salt| uniform(seed, &fp, occurrence, salt))
    }

    pub(crate) fn replace(&self, faults: Faults) -> Faults {
        let mut inner = self.lock();
        inner.faults = faults.clone();
        inner.seen.clear();
        faults
    }

    fn spec(&self) -> Faults {
        self.lock().faults.clone()
    }

    fn count(&self, f: impl FnOnce(&mut Tally)) {
        f(&mut self.lock().tally);
    }

    pub(crate) fn tally(&self) -> Tally {
        self.lock().tally.clone()
    }
}

/// The request's fingerprint for the draws: method, path and query, API key and body.
fn fingerprint(req: &Request, body: &[u8]) -> [u8; 16] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(req.method().as_str().as_bytes());
    hasher.update(&[0]);
    let target = req.uri().path_and_query().map_or("", |pq| pq.as_str());
    hasher.update(target.as_bytes());
    hasher.update(&[0]);
    hasher.update(super::wire::api_key(req.headers()).as_bytes());
    hasher.update(&[0]);
    hasher.update(body);
    let mut out = [0u8; 16];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    out
}

/// The layer: applies the current faults to every request it wraps.
pub(crate) async fn inject(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    let state = &sim.faults;
    let path = req.uri().path().to_owned();
    let (req, fingerprint) = if state.draws_for(&path) {
        let (parts, body) = req.into_parts();
        let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
            let message = "cachet sim: could not read the request body";
            return SimError::bad_request(super::dialect_of(&path), message).into_response();
        };
        let req = Request::from_parts(parts, Body::from(body.clone()));
        let fp = fingerprint(&req, &body);
        (req, Some(fp))
    } else {
        (req, None)
    };
    let Some(plan) = state.plan(&path, fingerprint) else {
        return next.run(req).await;
    };
    let mut kinds = Vec::new();
    if plan.evict {
        let evicted = sim.evict(&req);
        state.count(|t| {
            t.evictions += 1;
            t.evicted_entries += evicted.entries;
            t.evicted_cached_contents += evicted.cached_contents;
        });
        kinds.push("evict");
    }
    if let Some(latency) = plan.latency {
        tokio::time::sleep(latency).await;
        state.count(|t| t.latency += 1);
        kinds.push("latency");
    }
    let mut res = match plan.error {
        Some(error) => {
            kinds.push("error");
            state.count(|t| *t.errors.entry(error.status).or_insert(0) += 1);
            refuse(req, error).await
        }
        None => {
            let res = next.run(req).await;
            // A whole successful reply is one event: only a reset after 0 events cuts it.
            let whole = (res.status().is_success() && plan.stream.reset_after == Some(0))
                .then_some((
                    Framing::Chunks,
                    StreamFaults {
                        reset_after: Some(0),
                        slow: None,
                    },
                ));
            let shaping = match framing_of(&res) {
                Some(framing) if !plan.stream.is_empty() => Some((framing, plan.stream)),
                Some(_) => None,
                None => whole,
            };
            match shaping {
                Some((framing, stream)) => {
                    kinds.extend(stream.kinds());
                    state.count(|t| {
                        t.resets += u64::from(stream.reset_after.is_some());
                        t.slow_streams += u64::from(stream.slow.is_some());
                    });
                    shape(res, framing, stream)
                }
                None => res,
            }
        }
    };
    if !kinds.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kinds.join(", "))
    {
        res.headers_mut().insert(FAULT_HEADER, value);
    }
    res
}

/// The injected error, in the dialect of the mount `req` was for.
async fn refuse(req: Request, error: ErrorFault) -> Response {
    let dialect = super::dialect_of(req.uri().path());
    // A real upstream reads the request before it refuses it; replying with the request
    // unread can make the client see a reset instead of the error.
    let _ = axum::body::to_bytes(req.into_body(), usize::MAX).await;
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = format!("cachet sim: injected {status} fault");
    let mut res = SimError::new(dialect, status, message).into_response();
    if let Some(seconds) = error.retry_after_s {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    res
}

/// `GET`, `POST` and `DELETE /__sim/faults`, to be mounted outside the layer.
pub(crate) fn control(sim: Arc<Sim>) -> Router {
    Router::new()
        .route(CONTROL_PATH, get(show).post(replace).delete(clear))
        .with_state(sim)
}

async fn show(State(sim): State<Arc<Sim>>) -> Json<Faults> {
    Json(sim.faults.spec())
}

async fn replace(State(sim): State<Arc<Sim>>, body: Bytes) -> Result<Json<Faults>, SimError> {
    let faults = std::str::from_utf8(&body)
        .map_err(|e| e.to_string())
        .and_then(Faults::from_json)
        .map_err(|e| SimError::bad_request(Dialect::OpenAi, format!("invalid faults: {e}")))?;
    Ok(Json(sim.faults.replace(faults)))
}

async fn clear(State(sim): State<Arc<Sim>>) -> Json<Faults> {
    Json(sim.faults.replace(Faults::default()))
}

/// How a streamed body divides into events; `None` for a body that is not streamed (a JSON
/// reply sent whole), which stream faults leave alone.
fn framing_of(res: &Response) -> Option<Framing> {
    let sse = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(SSE));
    if sse {
        Some(Framing::Sse(SseBoundaries::default()))
    } else if res.body().size_hint().exact().is_none() {
        Some(Framing::Chunks)
    } else {
        None
    }
}

fn shape(res: Response, framing: Framing, faults: StreamFaults) -> Response {
    let (mut parts, body) = res.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let shaped = Shaped {
        inner: body.into_data_stream(),
        framing,
        ready: VecDeque::new(),
        faults,
        events: 0,
        at_event_start: true,
        done: false,
    };
    let stream = futures_util::stream::unfold(shaped, Shaped::step);
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Where events end in a streamed body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Sse(SseBoundaries),
    /// Not SSE (Gemini's JSON array): every body chunk counts as one event.
    Chunks,
}

/// A piece of body no longer than one event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    bytes: Bytes,
    /// The piece's last byte ends an event.
    ends_event: bool,
}

impl Framing {
    /// `chunk` cut after every event end it holds, so that faults can act between events.
    fn split(&mut self, chunk: Bytes) -> Vec<Piece> {
        let boundaries = match self {
            Framing::Chunks => {
                return vec![Piece {
                    bytes: chunk,
                    ends_event: true,
                }];
            }
            Framing::Sse(boundaries) => boundaries,
        };
        let mut pieces = Vec::new();
        let mut start = 0;
        for (i, &byte) in chunk.iter().enumerate() {
            if boundaries.ends_event(byte) {
                pieces.push(Piece {
                    bytes: chunk.slice(start..=i),
                    ends_event: true,
                });
                start = i + 1;
            }
        }
        if start < chunk.len() {
            pieces.push(Piece {
                bytes: chunk.slice(start..),
                ends_event: false,
            });
        }
        pieces
    }
}

/// SSE event ends (a blank line after a non-blank one, with `\n` or `\r\n` line endings),
/// found a byte at a time so that an event may span any number of chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SseBoundaries {
    /// Nothing but `\r` since the last line ending.
    line_empty: bool,
    /// The current event has a non-blank line: a blank line now ends it. Extra blank lines
    /// between events end nothing.
    in_event: bool,
}

impl Default for SseBoundaries {
    fn default() -> Self {
        SseBoundaries {
            line_empty: true,
            in_event: false,
        }
    }
}

impl SseBoundaries {
    fn ends_event(&mut self, byte: u8) -> bool {
        match byte {
            b'\n' if self.line_empty && self.in_event => {
                self.in_event = false;
                true
            }
            b'\n' => {
                self.line_empty = true;
                false
            }
            b'\r' => false,
            _ => {
                self.line_empty = false;
                self.in_event = true;
                false
            }
        }
    }
}

/// A streamed body with the stream faults applied between its events.
struct Shaped {
    inner: BodyDataStream,
    framing: Framing,
    ready: VecDeque<Piece>,
    faults: StreamFaults,
    /// Events passed on whole.
    events: u64,
    at_event_start: bool,
    done: bool,
}

impl Shaped {
    async fn step(mut self) -> Option<(Result<Bytes, io::Error>, Self)> {
        if self.done {
            return None;
        }
        let piece = match self.next_piece().await? {
            Ok(piece) => piece,
            Err(err) => {
                self.done = true;
                return Some((Err(io::Error::other(err)), self));
            }
        };
        if let Some(k) = self.faults.reset_after.filter(|&k| self.events >= k) {
            // hyper drops what it has buffered but not written when a body fails. Yielding
            // once first makes it flush, so the client gets exactly the first k events.
            tokio::task::yield_now().await;
            self.done = true;
            let reason = format!("cachet sim: injected reset after {k} events");
            return Some((
                Err(io::Error::new(io::ErrorKind::ConnectionReset, reason)),
                self,
            ));
        }
        if self.at_event_start
            && self.events > 0
            && let Some(delay) = self.faults.slow
        {
            tokio::time::sleep(delay).await;
        }
        self.at_event_start = piece.ends_event;
        self.events += u64::from(piece.ends_event);
        Some((Ok(piece.bytes), self))
    }

    /// The next piece; `None` at the body's end. The stream only ends when the inner body has
    /// nothing more, so a reset due after the last event never cuts a complete stream.
    async fn next_piece(&mut self) -> Option<Result<Piece, axum::Error>> {
        loop {
            if let Some(piece) = self.ready.pop_front() {
                return Some(Ok(piece));
            }
            match self.inner.next().await? {
                Ok(chunk) => self.ready.extend(self.framing.split(chunk)),
                Err(err) => return Some(Err(err)),
            }
        }
    }
}

#[cfg(test)]
mod tests;
