//! The response body cachet hands to the client: the upstream's bytes, forwarded as they come,
//! shown on the way to a usage tap, with accounting run exactly once at the end.
//!
//! No task and no channel sit between upstream and client: each `poll_frame` polls the
//! upstream stream, so backpressure runs end to end and a client that goes away drops this
//! body, which drops the upstream response and with it the upstream connection (generation
//! stops). `Drop` then records the exchange as cancelled with the usage seen so far.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use http_body::{Body, Frame};
use tokio::time::Sleep;

use super::sse::{JsonArraySplitter, SseDecoder};
use crate::config::ProviderKind;
use crate::dialect::{self, Endpoint};
use crate::usage::{Usage, UsageAcc};

/// Largest unfinished event (or non-streamed JSON body) the tap holds to read usage from.
const MAX_TAP_BYTES: usize = 64 << 20;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How the response is framed, decided from its content type and the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Not a modelled route, or an error status: bytes pass, nothing is read.
    Opaque,
    Json,
    Sse,
    JsonArray,
}

impl Framing {
    pub fn of(endpoint: Option<&Endpoint>, success: bool, content_type: Option<&str>) -> Self {
        let Some(endpoint) = endpoint.filter(|e| success && e.reports_usage()) else {
            return Self::Opaque;
        };
        let content_type = content_type.unwrap_or("").to_ascii_lowercase();
        if content_type.starts_with("text/event-stream") {
            Self::Sse
        } else if matches!(endpoint, Endpoint::GeminiGenerate { stream: true, .. }) {
            Self::JsonArray
        } else {
            Self::Json
        }
    }
}

/// Reads usage from the bytes going by; in `strip` mode also drops the usage-only chunk that
/// cachet requested on the client's behalf.
pub struct Tap {
    provider: ProviderKind,
    endpoint: Option<Endpoint>,
    framing: Framing,
    pub(crate) strip_usage_chunk: bool,
    sse: SseDecoder,
    array: JsonArraySplitter,
    json: Vec<u8>,
    acc: UsageAcc,
    /// Set when the tap could not follow the body (oversized event or body, bad JSON).
    pub lost: bool,
}

impl Tap {
    pub fn new(
        provider: ProviderKind,
        endpoint: Option<Endpoint>,
        framing: Framing,
        strip_usage_chunk: bool,
    ) -> Self {
        Self {
            provider,
            endpoint,
            framing,
            strip_usage_chunk: strip_usage_chunk && framing == Framing::Sse,
            sse: SseDecoder::new(MAX_TAP_BYTES),
            array: JsonArraySplitter::new(MAX_TAP_BYTES),
            json: Vec::new(),
            acc: UsageAcc::default(),
            lost: false,
        }
    }

    /// Observes one chunk and returns the bytes to forward: the chunk itself, except in strip
    /// mode, where whole events are forwarded once complete.
    pub fn observe(&mut self, chunk: Bytes) -> Bytes {
        let Some(endpoint) = self.endpoint.as_ref() else {
            return chunk;
        };
        let (provider, acc) = (self.provider, &mut self.acc);
        match self.framing {
            Framing::Opaque => chunk,
            Framing::Json => {
                if self.json.len() + chunk.len() <= MAX_TAP_BYTES {
                    self.json.extend_from_slice(&chunk);
                } else {
                    self.lost = true;
                }
                chunk
            }
            Framing::JsonArray => {
                self.array.feed(&chunk, |element| {
                    if let Some(p) =
                        dialect::usage_from_event(provider, endpoint, None, element).patch
                    {
                        acc.apply(p);
                    }
                });
                self.lost |= self.array.overflowed;
                chunk
            }
            Framing::Sse if !self.strip_usage_chunk => {
                self.sse.feed(&chunk, |ev| {
                    let seen = dialect::usage_from_event(provider, endpoint, ev.event, &ev.data);
                    if let Some(p) = seen.patch {
                        acc.apply(p);
                    }
                });
                self.lost |= self.sse.overflowed;
                chunk
            }
            Framing::Sse => {
                let mut out = Vec::with_capacity(chunk.len());
                self.sse.feed(&chunk, |ev| {
                    let seen = dialect::usage_from_event(provider, endpoint, ev.event, &ev.data);
                    if let Some(p) = seen.patch {
                        acc.apply(p);
                    }
                    if !seen.is_usage_only_chunk {
                        out.extend_from_slice(ev.raw);
                    }
                });
                if self.sse.overflowed {
                    // Cannot frame events any more: forward what is left of the stream as is.
                    self.lost = true;
                    self.strip_usage_chunk = false;
                }
                Bytes::from(out)
            }
        }
    }

    /// At end of stream: reads a buffered JSON body, and returns bytes still owed to the client
    /// (an unterminated last event in strip mode).
    pub fn finish(&mut self) -> Bytes {
        let Some(endpoint) = self.endpoint.as_ref() else {
            return Bytes::new();
        };
        match self.framing {
            Framing::Json if !self.lost => {
                match dialect::usage_from_body(self.provider, endpoint, &self.json) {
                    Some(p) => self.acc.apply(p),
                    None => self.lost = true,
                }
                self.json = Vec::new();
                Bytes::new()
            }
            Framing::Sse => {
                let (provider, acc) = (self.provider, &mut self.acc);
                let mut drop_rest = false;
                let rest = self.sse.finish(|ev| {
                    let seen = dialect::usage_from_event(provider, endpoint, ev.event, &ev.data);
                    if let Some(p) = seen.patch {
                        acc.apply(p);
                    }
                    drop_rest = seen.is_usage_only_chunk;
                });
                if self.strip_usage_chunk && !drop_rest {
                    Bytes::from(rest)
                } else {
                    Bytes::new()
                }
            }
            _ => Bytes::new(),
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.acc.get()
    }
}

/// How an upstream body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    UpstreamError,
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "ok",
            Self::UpstreamError => "upstream_error",
            Self::Cancelled => "cancelled",
        }
    }
}

/// What the body saw, handed to the completion callback once.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    pub outcome: Outcome,
    pub usage: Option<Usage>,
    /// The tap could not read all of the body: usage may be incomplete.
    pub tap_lost: bool,
    pub first_byte: Option<Instant>,
    pub ended: Instant,
    /// Time spent inside the proxy while relaying the body (tap work).
    pub relay_overhead: Duration,
}

pub struct ObservedBody {
    stream: BoxStream<'static, Result<Bytes, reqwest::Error>>,
    /// Longest silence allowed between two chunks (`timeouts.idle`).
    idle: Duration,
    idle_deadline: Pin<Box<Sleep>>,
    /// The deadline is armed for the current wait; a wait starts when the client asks for
    /// more, so a slow reader is never mistaken for a silent upstream.
    waiting: bool,
    tap: Tap,
    on_end: Option<Box<dyn FnOnce(Observed) + Send>>,
    first_byte: Option<Instant>,
    relay_overhead: Duration,
    ended: bool,
    /// Pieces received and not yet handed on.
    held: Coalesced,
    /// The upstream's end (or error), seen while coalescing, for the next poll.
    deferred: Option<Option<Result<Bytes, reqwest::Error>>>,
    /// An upstream error waits one turn: hyper drops what it has buffered but not yet written
    /// when a body fails (the bytes before the cut, and before the first byte the response
    /// head itself), and it flushes them when a poll is pending, so the client gets the head
    /// and every byte that preceded the cut.
    flushed_before_error: bool,
    /// Bytes still owed by a response with a `content-length`: hyper stops polling once it has
    /// them all, so the end must be noticed here rather than from the stream's `None`.
    remaining: Option<u64>,
}

impl ObservedBody {
    pub fn new(
        response: reqwest::Response,
        tap: Tap,
        idle: Duration,
        on_end: impl FnOnce(Observed) + Send + 'static,
    ) -> Self {
        let remaining = if tap.strip_usage_chunk {
            None
        } else {
            response.content_length()
        };
        let mut body = Self {
            stream: response.bytes_stream().boxed(),
            idle,
            idle_deadline: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            tap,
            on_end: Some(Box::new(on_end)),
            first_byte: None,
            relay_overhead: Duration::ZERO,
            ended: false,
            held: Coalesced::default(),
            deferred: None,
            flushed_before_error: false,
            remaining,
        };
        if body.remaining == Some(0) {
            // An empty body may never be polled at all.
            let _ = body.complete();
        }
        body
    }

    /// Nothing from upstream yet: waits, with the idle timeout armed for this wait.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.waiting {
            self.waiting = true;
            let deadline = tokio::time::Instant::now() + self.idle;
            self.idle_deadline.as_mut().reset(deadline);
        }
        ready!(self.idle_deadline.as_mut().poll(cx));
        self.ended = true;
        self.end(Outcome::UpstreamError);
        Poll::Ready(Some(Err(Box::new(IdleTimeout(self.idle)))))
    }

    /// Reads what the tap still holds and reports the end; returns bytes still owed.
    fn complete(&mut self) -> Bytes {
        self.ended = true;
        let started = Instant::now();
        let rest = self.tap.finish();
        self.relay_overhead += started.elapsed();
        self.end(Outcome::Complete);
        rest
    }

    fn end(&mut self, outcome: Outcome) {
        if let Some(on_end) = self.on_end.take() {
            on_end(Observed {
                outcome,
                usage: self.tap.usage(),
                tap_lost: self.tap.lost,
                first_byte: self.first_byte,
                ended: Instant::now(),
                relay_overhead: self.relay_overhead,
            });
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    /// Forwards what the upstream has sent, joining the pieces that are already here into one
    /// frame (one write to the client instead of one per piece), never waiting for more.
    /// Yielding to the upstream connection's task to let it hand over more pieces was tried:
    /// it saves writes only when events arrive in bursts, and costs an extra turn per event
    /// when they arrive one by one, as LLM streams do (160 vs 128 µs of CPU per streamed
    /// request in bench-overhead's 1 KB stream case).
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(std::mem::take(&mut this.held).into_frame());
            }
            let next = match this.deferred.take() {
                Some(next) => next,
                None => match this.stream.try_poll_next_unpin(cx) {
                    Poll::Ready(next) => next,
                    Poll::Pending if this.held.is_empty() => return this.poll_idle(cx),
                    Poll::Pending => {
                        return Poll::Ready(std::mem::take(&mut this.held).into_frame());
                    }
                },
            };
            match next {
                Some(Ok(chunk)) => {
                    let started = Instant::now();
                    this.waiting = false;
                    this.first_byte.get_or_insert(started);
                    if let Some(remaining) = this.remaining.as_mut() {
                        *remaining = remaining.saturating_sub(chunk.len() as u64);
                    }
                    let out = this.tap.observe(chunk);
                    this.held.push(out);
                    this.relay_overhead += started.elapsed();
                    if this.remaining == Some(0) {
                        // Nothing owed after a content-length body (strip mode has none).
                        let rest = this.complete();
                        this.held.push(rest);
                    } else if this.held.len() >= COALESCE_MAX {
                        return Poll::Ready(std::mem::take(&mut this.held).into_frame());
                    }
                }
                // Deliver what is already here first; the end comes on the next poll.
                end if !this.held.is_empty() => {
                    this.deferred = Some(end);
                    return Poll::Ready(std::mem::take(&mut this.held).into_frame());
                }
                Some(Err(err)) if !this.flushed_before_error => {
                    this.flushed_before_error = true;
                    this.deferred = Some(Some(Err(err)));
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Some(Err(err)) => {
                    this.ended = true;
                    this.end(Outcome::UpstreamError);
                    return Poll::Ready(Some(Err(Box::new(err))));
                }
                None => {
                    let rest = this.complete();
                    this.held.push(rest);
                    return Poll::Ready(std::mem::take(&mut this.held).into_frame());
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.held.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.remaining {
            Some(n) if !self.ended => http_body::SizeHint::with_exact(n),
            _ => http_body::SizeHint::default(),
        }
    }
}

/// Largest frame built from pieces that arrived together.
const COALESCE_MAX: usize = 64 << 10;

/// Pieces of body joined into one frame; a single piece is passed on without a copy.
#[derive(Default)]
struct Coalesced {
    first: Option<Bytes>,
    more: Option<BytesMut>,
}

impl Coalesced {
    fn push(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        match (&mut self.more, self.first.take()) {
            (Some(buf), _) => buf.extend_from_slice(&piece),
            (None, None) => self.first = Some(piece),
            (None, Some(first)) => {
                let mut buf = BytesMut::with_capacity(first.len() + piece.len());
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&piece);
                self.more = Some(buf);
            }
        }
    }

    fn len(&self) -> usize {
        self.first.as_ref().map_or(0, Bytes::len) + self.more.as_ref().map_or(0, BytesMut::len)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame to return: `None` (end of body) when there is nothing.
    fn into_frame(self) -> Option<Result<Frame<Bytes>, BoxError>> {
        let bytes = match (self.first, self.more) {
            (_, Some(buf)) => buf.freeze(),
            (Some(first), None) => first,
            (None, None) => return None,
        };
        Some(Ok(Frame::data(bytes)))
    }
}

/// The upstream went silent for longer than `timeouts.idle` in the middle of a body.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {0:?}")]
pub struct IdleTimeout(Duration);

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // Still pending here means the client went away before the end.
        self.end(Outcome::Cancelled);
    }
}

#[cfg(test)]
mod tests;
