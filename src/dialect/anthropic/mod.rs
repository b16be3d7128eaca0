//! Anthropic Messages.

pub mod markers;
pub mod prompt;
pub mod rewrite;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::Endpoint;
use crate::usage::{UsagePatch, count};

pub fn classify(method: &Method, path: &str) -> Option<Endpoint> {
    if *method != Method::POST {
        return None;
    }
    match path {
        "/v1/messages" => Some(Endpoint::AnthropicMessages),
        "/v1/messages/count_tokens" => Some(Endpoint::AnthropicCountTokens),
        _ => None,
    }
}

pub fn looks_like(path: &str) -> bool {
    path.contains("/v1/messages")
}

/// `{"type":"error","error":{"type","message"}}` with Anthropic's error type for the status.
pub fn error_body(status: StatusCode, message: &str) -> Value {
    let kind = match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// `input_tokens` already excludes cached tokens. The write total comes with a TTL split in
/// `cache_creation` on full usage objects; `message_delta` gives the total alone.
pub fn usage(usage: &Value) -> Option<UsagePatch> {
    let split = usage.get("cache_creation");
    let write_5m = split.and_then(|s| count(s.get("ephemeral_5m_input_tokens")));
    let write_1h = split.and_then(|s| count(s.get("ephemeral_1h_input_tokens")));
    let total = count(usage.get("cache_creation_input_tokens"));
    let (cache_write_5m, cache_write_1h, cache_write_total) = match (write_5m, write_1h) {
        (None, None) => (None, None, total),
        (m5, h1) => (Some(m5.unwrap_or(0)), Some(h1.unwrap_or(0)), None),
    };
    let patch = UsagePatch {
        input_uncached: count(usage.get("input_tokens")),
        cache_read: count(usage.get("cache_read_input_tokens")),
        cache_write_5m,
        cache_write_1h,
        cache_write_total,
        output: count(usage.get("output_tokens")),
    };
    (patch != UsagePatch::default()).then_some(patch)
}

/// `message_start` carries the input side; each `message_delta` carries cumulative counts.
pub fn event_usage(event: Option<&str>, data: &[u8]) -> Option<UsagePatch> {
    match event {
        Some("message_start") => {
            let v: Value = serde_json::from_slice(data).ok()?;
            usage(v.get("message")?.get("usage")?)
        }
        Some("message_delta") => {
            let v: Value = serde_json::from_slice(data).ok()?;
            usage(v.get("usage")?)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::UsageAcc;

    #[test]
    fn usage_keeps_input_exclusive_of_cache_and_splits_writes_by_ttl() {
        let u = json!({"input_tokens": 50, "cache_creation_input_tokens": 248,
            "cache_read_input_tokens": 100000,
            "cache_creation": {"ephemeral_5m_input_tokens": 148, "ephemeral_1h_input_tokens": 100},
            "output_tokens": 503});
        let mut acc = UsageAcc::default();
        acc.apply(usage(&u).unwrap());
        let u = acc.get().unwrap();
        assert_eq!(
            (
                u.input_uncached,
                u.cache_read,
                u.cache_write_5m,
                u.cache_write_1h,
                u.output
            ),
            (50, 100000, 148, 100, 503)
        );
        assert_eq!(u.input_total(), 100298);
    }

    #[test]
    fn stream_usage_starts_at_message_start_and_deltas_replace_it() {
        let start = br#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":20,"cache_creation_input_tokens":3000,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":3000},"output_tokens":1}}}"#;
        let delta = br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":20,"cache_creation_input_tokens":3000,"cache_read_input_tokens":0,"output_tokens":15}}"#;
        let mut acc = UsageAcc::default();
        acc.apply(event_usage(Some("message_start"), start).unwrap());
        acc.apply(event_usage(Some("message_delta"), delta).unwrap());
        assert_eq!(
            event_usage(
                Some("content_block_delta"),
                br#"{"usage":{"output_tokens":9}}"#
            ),
            None
        );
        let u = acc.get().unwrap();
        assert_eq!(
            (
                u.input_uncached,
                u.cache_write_5m,
                u.cache_write_1h,
                u.output
            ),
            (20, 0, 3000, 15)
        );
    }
}
