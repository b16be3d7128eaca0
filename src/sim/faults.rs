//! Fault injection for `cachet sim`: a layer around every mount that can delay the response
//! head, answer with errors in the mount's dialect, cut streams short and slow them down, so
//! that clients and the proxy can be tested against a misbehaving upstream.
//!
//! Faults are set at startup (`cachet sim --faults '<json>'` or `--faults @file.json`) and
//! changed at runtime through `/__sim/faults` (`GET` shows, `POST` replaces, `DELETE` clears),
//! which sits outside the layer so a fault can never lock the controls out. Every response a
//! fault touched carries `x-cachet-sim-fault: <kinds>` (`latency`, `error`, `reset`,
//! `slow_stream`) so that a test can tell an injected failure from a real one.
//!
//! Delays are real time (`tokio::time::sleep`): the simulator is driven live.

use std::collections::VecDeque;
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

use super::wire::{Dialect, SSE, SimError};

/// The response header naming the faults applied to a response.
pub const FAULT_HEADER: &str = "x-cachet-sim-fault";
/// Where the faults are read and changed at runtime.
pub const CONTROL_PATH: &str = "/__sim/faults";

/// What to break. Every field is optional; the default breaks nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Only requests under this mount (`/anthropic`, `/vllm/0`, …) are affected; none: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// Delay before the response head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Error responses for the next few requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<ErrorFault>,
    /// Streamed responses fail (the connection drops without a clean end) after this many SSE
    /// events, or body chunks when the stream is not SSE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_after_events: Option<u64>,
    /// Delay before every streamed event after the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_stream_ms: Option<u64>,
}

/// The next `count` affected requests get `status` in the dialect's error shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorFault {
    pub status: u16,
    /// Requests still to fail; each affected request takes one.
    pub count: u64,
    /// Sent as `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

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

    /// Rejects what cannot be injected, and writes the mount as it is matched.
    fn check(&mut self) -> Result<(), String> {
        if let Some(errors) = &self.errors
            && !(400..=599).contains(&errors.status)
        {
            return Err(format!(
                "errors.status: {} is not an error status (400 to 599)",
                errors.status
            ));
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

    /// What to do to a request for `path`, taking one from the error count; `None` when the
    /// request is left alone.
    fn plan(&mut self, path: &str) -> Option<Plan> {
        if !covers(self.mount.as_deref(), path) {
            return None;
        }
        let error = self.errors.as_mut().filter(|e| e.count > 0).map(|e| {
            e.count -= 1;
            *e
        });
        let plan = Plan {
            latency: self.latency_ms.map(Duration::from_millis),
            error,
            stream: StreamFaults {
                reset_after: self.reset_after_events,
                slow: self.slow_stream_ms.map(Duration::from_millis),
            },
        };
        (!plan.is_empty()).then_some(plan)
    }
}

/// Whether `path` is under `mount`, segment-wise: `/vllm` covers `/vllm/0/v1/models`, and
/// `/openai` does not cover `/openai2`.
fn covers(mount: Option<&str>, path: &str) -> bool {
    let Some(mount) = mount else { return true };
    path.strip_prefix(mount)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The faults chosen for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    latency: Option<Duration>,
    error: Option<ErrorFault>,
    stream: StreamFaults,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.latency.is_none() && self.error.is_none() && self.stream.is_empty()
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

/// The faults of one simulator, shared by the layer and the control endpoints. The lock is
/// only ever held to read or swap the spec, never across an await.
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultState(Arc<Mutex<Faults>>);

impl FaultState {
    pub(crate) fn new(faults: Faults) -> Self {
        FaultState(Arc::new(Mutex::new(faults)))
    }

    fn lock(&self) -> MutexGuard<'_, Faults> {
        // Every update replaces the spec or decrements a counter, so a lock poisoned by a
        // panicking holder still guards a consistent value.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn plan(&self, path: &str) -> Option<Plan> {
        self.lock().plan(path)
    }

    fn replace(&self, faults: Faults) -> Faults {
        *self.lock() = faults.clone();
        faults
    }
}

/// The layer: applies the current faults to every request it wraps.
pub(crate) async fn inject(State(state): State<FaultState>, req: Request, next: Next) -> Response {
    let Some(plan) = state.plan(req.uri().path()) else {
        return next.run(req).await;
    };
    let mut kinds = Vec::new();
    if let Some(latency) = plan.latency {
        tokio::time::sleep(latency).await;
        kinds.push("latency");
    }
    let mut res = match plan.error {
        Some(error) => {
            kinds.push("error");
            refuse(req, error).await
        }
        None => {
            let res = next.run(req).await;
            match framing_of(&res) {
                Some(framing) if !plan.stream.is_empty() => {
                    kinds.extend(plan.stream.kinds());
                    shape(res, framing, plan.stream)
                }
                _ => res,
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
pub(crate) fn control(state: FaultState) -> Router {
    Router::new()
        .route(CONTROL_PATH, get(show).post(replace).delete(clear))
        .with_state(state)
}

async fn show(State(state): State<FaultState>) -> Json<Faults> {
    Json(state.lock().clone())
}

async fn replace(State(state): State<FaultState>, body: Bytes) -> Result<Json<Faults>, SimError> {
    let faults = std::str::from_utf8(&body)
        .map_err(|e| e.to_string())
        .and_then(Faults::from_json)
        .map_err(|e| SimError::bad_request(Dialect::OpenAi, format!("invalid faults: {e}")))?;
    Ok(Json(state.replace(faults)))
}

async fn clear(State(state): State<FaultState>) -> Json<Faults> {
    Json(state.replace(Faults::default()))
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
