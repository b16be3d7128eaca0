//! What every simulated dialect shares on the wire: errors in each provider's shape, request
//! bodies, JSON responses, and streamed bodies (SSE or Gemini's JSON array) sent as several
//! body chunks, as a real upstream does, so that clients and the proxy's stream tap see frames.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Sim;
use super::billing::Report;
use crate::usage::Usage;

pub(crate) const SSE: &str = "text/event-stream";
pub(crate) const JSON: &str = "application/json";

/// Which provider's error shape a response uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    Anthropic,
    Gemini,
}

/// An error the simulator answers with, rendered in its dialect's shape.
#[derive(Debug)]
pub(crate) struct SimError {
    dialect: Dialect,
    status: StatusCode,
    message: String,
}

impl SimError {
    pub(crate) fn new(dialect: Dialect, status: StatusCode, message: impl Into<String>) -> Self {
        SimError {
            dialect,
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(dialect: Dialect, message: impl Into<String>) -> Self {
        Self::new(dialect, StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(dialect: Dialect, message: impl Into<String>) -> Self {
        Self::new(dialect, StatusCode::NOT_FOUND, message)
    }

    /// The body each provider sends for this status.
    fn body(&self) -> Value {
        let code = self.status.as_u16();
        match self.dialect {
            Dialect::OpenAi => {
                let (kind, label) = match code {
                    429 => ("requests", json!("rate_limit_exceeded")),
                    500.. => ("server_error", Value::Null),
                    _ => ("invalid_request_error", Value::Null),
                };
                json!({"error": {
                    "message": self.message,
                    "type": kind,
                    "param": null,
                    "code": label,
                }})
            }
            Dialect::Anthropic => {
                let kind = match code {
                    401 => "authentication_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    413 => "request_too_large",
                    429 => "rate_limit_error",
                    529 => "overloaded_error",
                    500.. => "api_error",
                    _ => "invalid_request_error",
                };
                json!({"type": "error", "error": {"type": kind, "message": self.message}})
            }
            Dialect::Gemini => {
                let status = match code {
                    401 => "UNAUTHENTICATED",
                    403 => "PERMISSION_DENIED",
                    404 => "NOT_FOUND",
                    429 => "RESOURCE_EXHAUSTED",
                    503 => "UNAVAILABLE",
                    504 => "DEADLINE_EXCEEDED",
                    500.. => "INTERNAL",
                    _ => "INVALID_ARGUMENT",
                };
                json!({"error": {"code": code, "message": self.message, "status": status}})
            }
        }
    }
}

impl IntoResponse for SimError {
    fn into_response(self) -> Response {
        json_response(self.status, &self.body())
    }
}

/// The request body as a JSON object; anything else is the dialect's 400.
pub(crate) fn parse_object(dialect: Dialect, body: &[u8]) -> Result<Value, SimError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value.is_object() => Ok(value),
        Ok(_) => Err(SimError::bad_request(
            dialect,
            "the request body must be a JSON object",
        )),
        Err(err) => Err(SimError::bad_request(
            dialect,
            format!("could not parse the JSON body of your request: {err}"),
        )),
    }
}

/// A required, non-empty string field, e.g. `model`.
pub(crate) fn require_str<'a>(
    dialect: Dialect,
    body: &'a Value,
    field: &str,
) -> Result<&'a str, SimError> {
    match body.get(field).and_then(Value::as_str) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(SimError::bad_request(
            dialect,
            format!("{field}: field required (a non-empty string)"),
        )),
    }
}

/// The field must be a non-empty array, as the real APIs require of `messages`.
pub(crate) fn require_messages<'a>(
    dialect: Dialect,
    body: &'a Value,
    field: &str,
) -> Result<&'a [Value], SimError> {
    match body.get(field).and_then(Value::as_array) {
        Some(items) if !items.is_empty() => Ok(items),
        Some(_) => Err(SimError::bad_request(
            dialect,
            format!("{field}: at least one message is required"),
        )),
        None => Err(SimError::bad_request(
            dialect,
            format!("{field}: field required (an array of messages)"),
        )),
    }
}

/// True when the request asks for a stream (`"stream": true`).
pub(crate) fn wants_stream(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool) == Some(true)
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    // Serialising a `Value` cannot fail; an empty body would only hide a bug in serde_json.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, JSON)], bytes).into_response()
}

pub(crate) fn ok_json(body: &Value) -> Response {
    json_response(StatusCode::OK, body)
}

/// One SSE event: `event: NAME` (when given), `data: JSON`, and a blank line, all ending in `eol`
/// (`"\n"` for OpenAI and Anthropic, `"\r\n"` for Google).
pub(crate) fn sse_event(event: Option<&str>, data: &Value, eol: &str) -> Bytes {
    let mut out = String::new();
    if let Some(event) = event {
        out.push_str("event: ");
        out.push_str(event);
        out.push_str(eol);
    }
    out.push_str("data: ");
    out.push_str(&data.to_string());
    out.push_str(eol);
    out.push_str(eol);
    Bytes::from(out)
}

/// One frame of a streamed body: its bytes, the output tokens it delivers, and the usage its
/// event reports (cumulative, as every dialect's stream reports it), if any.
pub(crate) struct Chunk {
    pub bytes: Bytes,
    pub output: u64,
    pub reports: Option<Usage>,
}

impl Chunk {
    pub(crate) fn new(bytes: Bytes, output: u64, reports: Option<Usage>) -> Self {
        Chunk {
            bytes,
            output,
            reports,
        }
    }
}

/// A 200 whose body is `chunks`, one body frame each, never buffered into one. Each chunk's
/// output tokens are billed through `meter` as the chunk is handed to the connection, so a
/// client that disconnects mid-stream pays only for what it was sent; what the stream reported
/// is booked when the body is dropped. With `x-sim-hang-after: N` the stream stops after N
/// frames and hangs, as a stalled generation does, until the client goes away.
pub(crate) fn stream_response(
    content_type: &'static str,
    chunks: Vec<Chunk>,
    meter: Meter,
) -> Response {
    let total = chunks.len();
    let hang_after = meter.hang_after.unwrap_or(usize::MAX);
    let frames = chunks.into_iter().enumerate();
    // The meter lives as long as the body does: a hung stream books what it told only when the
    // client goes away.
    let body = Body::from_stream(futures_util::stream::unfold(
        (frames, meter),
        move |(mut frames, mut meter)| async move {
            match frames.next() {
                Some((i, chunk)) if i < hang_after => {
                    meter.bill(chunk.output);
                    if let Some(usage) = chunk.reports {
                        meter.report.usage = Some(usage);
                    }
                    meter.report.cut = i + 1 < total;
                    Some((Ok::<Bytes, Infallible>(chunk.bytes), (frames, meter)))
                }
                Some(_) => {
                    std::future::pending::<()>().await;
                    None
                }
                None => None,
            }
        },
    ));
    let mut res = (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// Asks a stream to hang after this many frames (tests and `cachet replay` cancel such streams).
pub const HANG_AFTER_HEADER: &str = "x-sim-hang-after";

/// Bills one response's output tokens to its API key and model, and books what the response
/// told its client when it is dropped (a stream: when its body is).
pub(crate) struct Meter {
    sim: Arc<Sim>,
    key: String,
    model: String,
    hang_after: Option<usize>,
    report: Report,
}

impl Meter {
    pub(crate) fn new(sim: Arc<Sim>, key: String, model: &str, headers: &HeaderMap) -> Self {
        let hang_after = headers
            .get(HANG_AFTER_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Meter {
            sim,
            key,
            model: model.to_owned(),
            hang_after,
            // A stream that is dropped before its first frame told nothing and was cut.
            report: Report {
                cut: true,
                ..Report::default()
            },
        }
    }

    pub(crate) fn bill(&self, tokens: u64) {
        self.sim
            .engine
            .bill_output(&self.key, &self.model, tokens, self.sim.now());
    }

    /// A response handed over whole: bills its output and books `usage` as what it told.
    pub(crate) fn whole(mut self, usage: Usage) {
        self.bill(usage.output);
        self.report = Report {
            usage: Some(usage),
            ..Report::default()
        };
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.sim
            .engine
            .book_told(&self.key, &self.model, self.report, self.sim.now());
    }
}

/// The caller's credential as the simulator partitions caches by it: `x-api-key`, a bearer
/// token, or `x-goog-api-key`; empty when none is sent.
pub(crate) fn api_key(headers: &HeaderMap) -> String {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    get("x-api-key")
        .or_else(|| get("authorization").and_then(|v| v.strip_prefix("Bearer ")))
        .or_else(|| get("x-goog-api-key"))
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_shapes_per_dialect() {
        let e = SimError::bad_request(Dialect::OpenAi, "bad");
        assert_eq!(
            e.body(),
            json!({"error": {"message": "bad", "type": "invalid_request_error", "param": null, "code": null}})
        );
        let e = SimError::not_found(Dialect::Anthropic, "gone");
        assert_eq!(
            e.body(),
            json!({"type": "error", "error": {"type": "not_found_error", "message": "gone"}})
        );
        let e = SimError::new(Dialect::Gemini, StatusCode::FORBIDDEN, "no");
        assert_eq!(
            e.body(),
            json!({"error": {"code": 403, "message": "no", "status": "PERMISSION_DENIED"}})
        );
    }

    #[test]
    fn overload_and_rate_limit_shapes() {
        let status = |code| StatusCode::from_u16(code).unwrap();
        let e = SimError::new(Dialect::OpenAi, status(429), "slow down");
        assert_eq!(e.body()["error"]["type"], "requests");
        assert_eq!(e.body()["error"]["code"], "rate_limit_exceeded");
        let e = SimError::new(Dialect::Anthropic, status(529), "busy");
        assert_eq!(e.body()["error"]["type"], "overloaded_error");
        let e = SimError::new(Dialect::Anthropic, status(503), "down");
        assert_eq!(e.body()["error"]["type"], "api_error");
        let e = SimError::new(Dialect::Gemini, status(503), "down");
        assert_eq!(e.body()["error"]["status"], "UNAVAILABLE");
        let e = SimError::new(Dialect::Gemini, status(500), "oops");
        assert_eq!(e.body()["error"]["status"], "INTERNAL");
    }

    #[test]
    fn parse_object_rejects_non_objects() {
        assert!(parse_object(Dialect::OpenAi, b"{\"a\":1}").is_ok());
        assert!(parse_object(Dialect::OpenAi, b"[1]").is_err());
        assert!(parse_object(Dialect::OpenAi, b"{").is_err());
    }

    #[test]
    fn sse_event_framing() {
        let data = json!({"a": 1});
        assert_eq!(sse_event(None, &data, "\n"), "data: {\"a\":1}\n\n");
        assert_eq!(
            sse_event(Some("ping"), &data, "\r\n"),
            "event: ping\r\ndata: {\"a\":1}\r\n\r\n"
        );
    }
}
