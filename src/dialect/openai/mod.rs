//! OpenAI: Chat Completions and Responses (also the chat shape of DeepSeek and
//! OpenAI-compatible servers, see `deepseek.rs`).

pub mod prompt;

/// Sets `prompt_cache_key` on a Chat Completions or Responses body that has none (appended, so
/// every other field keeps its place). Returns whether it changed the body.
pub fn set_prompt_cache_key(body: &mut Value, key: String) -> bool {
    match body.as_object_mut() {
        Some(fields) if !fields.contains_key("prompt_cache_key") => {
            fields.insert("prompt_cache_key".into(), Value::String(key));
            true
        }
        _ => false,
    }
}
pub mod rewrite;

use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::{Endpoint, EventUsage, has_object_field};
use crate::envelope::Envelope;
use crate::usage::{Usage, UsagePatch, count};

pub fn classify(method: &Method, path: &str) -> Option<Endpoint> {
    if *method != Method::POST {
        return None;
    }
    match path {
        "/v1/chat/completions" => Some(Endpoint::Chat),
        "/v1/responses" => Some(Endpoint::Responses),
        _ => None,
    }
}

/// `{"error": {"message", "type", "param", "code"}}`, as the OpenAI API and its SDKs expect.
pub fn error_body(status: StatusCode, label: &str, message: &str) -> Value {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": label}})
}

/// Chat usage: `prompt_tokens` includes cached and written tokens.
pub fn chat_usage(usage: &Value) -> Option<UsagePatch> {
    let details = usage.get("prompt_tokens_details");
    inclusive_usage(
        count(usage.get("prompt_tokens"))?,
        details.and_then(|d| count(d.get("cached_tokens"))),
        details.and_then(|d| count(d.get("cache_write_tokens"))),
        count(usage.get("completion_tokens")),
    )
}

/// Responses usage: `input_tokens` includes cached and written tokens.
pub fn responses_usage(usage: &Value) -> Option<UsagePatch> {
    let details = usage.get("input_tokens_details");
    inclusive_usage(
        count(usage.get("input_tokens"))?,
        details.and_then(|d| count(d.get("cached_tokens"))),
        details.and_then(|d| count(d.get("cache_write_tokens"))),
        count(usage.get("output_tokens")),
    )
}

fn inclusive_usage(
    input: u64,
    cached: Option<u64>,
    written: Option<u64>,
    output: Option<u64>,
) -> Option<UsagePatch> {
    let cache_read = cached.unwrap_or(0).min(input);
    let cache_write = written.unwrap_or(0).min(input - cache_read);
    Some(UsagePatch::full(Usage {
        input_uncached: input - cache_read - cache_write,
        cache_read,
        cache_write_5m: cache_write,
        cache_write_1h: 0,
        output: output.unwrap_or(0),
    }))
}

/// A chat stream chunk: usage only on the final `choices: []` chunk (other chunks say
/// `"usage": null` when usage was requested).
pub fn chat_event(data: &[u8], usage_of: impl Fn(&Value) -> Option<UsagePatch>) -> EventUsage {
    if !has_object_field(data, b"\"usage\"") {
        return EventUsage::default();
    }
    let Ok(chunk) = serde_json::from_slice::<Value>(data) else {
        return EventUsage::default();
    };
    let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) else {
        return EventUsage::default();
    };
    let no_choices = chunk
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty);
    EventUsage {
        patch: usage_of(usage),
        is_usage_only_chunk: no_choices,
    }
}

/// Responses stream: the terminal events carry the whole response, usage included.
pub fn responses_event(event: Option<&str>, data: &[u8]) -> Option<UsagePatch> {
    const TERMINAL: [&str; 3] = [
        "response.completed",
        "response.incomplete",
        "response.failed",
    ];
    match event {
        Some(name) if !TERMINAL.contains(&name) => return None,
        // Without an `event:` line the type is only in the data; let the parse decide.
        _ => {}
    }
    if !has_object_field(data, b"\"usage\"") {
        return None;
    }
    let value: Value = serde_json::from_slice(data).ok()?;
    let kind = value.get("type").and_then(Value::as_str)?;
    if !TERMINAL.contains(&kind) {
        return None;
    }
    responses_usage(value.get("response")?.get("usage")?)
}

/// Asks a chat stream for its usage chunk when the client did not (`usage.inject_include_usage`).
/// Returns true when the body was changed: the proxy must then drop that chunk again.
pub fn request_stream_usage(env: &mut Envelope) -> bool {
    let options = env.field("stream_options");
    let asked = options
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // A stream_options that is neither an object nor null is the client's error to hear
    // from upstream: leave the body alone (and its bytes unparsed).
    if asked || options.is_some_and(|o| !o.is_object() && !o.is_null()) {
        return false;
    }
    let wanted = json!({"include_usage": true});
    if options.is_none() && env.append_field("stream_options", &wanted) {
        return true;
    }
    env.edit(|json| {
        let Some(body) = json.as_object_mut() else {
            return false;
        };
        let options = body
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if options.is_null() {
            // `stream_options: null` expresses no wish.
            *options = Value::Object(Map::new());
        }
        // Anything else that is not an object is the client's error to hear from upstream.
        match options.as_object_mut() {
            Some(options) => {
                options.insert("include_usage".into(), Value::Bool(true));
                true
            }
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Envelope {
        fn parse_head(body: &[u8]) -> Result<Self, serde_json::Error> {
            Envelope::parse(
                bytes::Bytes::copy_from_slice(body),
                crate::dialect::HEAD_FIELDS,
            )
        }
    }

    #[test]
    fn chat_usage_subtracts_cached_and_written_tokens_from_prompt_tokens() {
        let u = json!({"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920, "cache_write_tokens": 0}});
        let p = chat_usage(&u).unwrap();
        assert_eq!(p.input_uncached, Some(86));
        assert_eq!(p.cache_read, Some(1920));
        assert_eq!(p.cache_write_5m, Some(0));
        assert_eq!(p.output, Some(300));
        // GPT-5.6+ style paid writes.
        let u = json!({"prompt_tokens": 5000, "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 3000}});
        let p = chat_usage(&u).unwrap();
        assert_eq!(
            (p.input_uncached, p.cache_read, p.cache_write_5m),
            (Some(1000), Some(1000), Some(3000))
        );
    }

    #[test]
    fn responses_usage_reads_input_tokens_details() {
        let u = json!({"input_tokens": 1500, "input_tokens_details": {"cached_tokens": 1280},
            "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 1507});
        let p = responses_usage(&u).unwrap();
        assert_eq!(
            (p.input_uncached, p.cache_read, p.output),
            (Some(220), Some(1280), Some(7))
        );
    }

    #[test]
    fn chat_events_find_the_usage_only_chunk() {
        let delta = br#"{"id":"x","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}"#;
        assert_eq!(chat_event(delta, chat_usage), EventUsage::default());
        let last = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}"#;
        let ev = chat_event(last, chat_usage);
        assert!(ev.is_usage_only_chunk);
        assert_eq!(ev.patch.unwrap().input_uncached, Some(10));
        // Some servers put usage on the last content chunk: counted, never dropped.
        let mixed = br#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
        let ev = chat_event(mixed, chat_usage);
        assert!(!ev.is_usage_only_chunk);
        assert_eq!(ev.patch.unwrap().output, Some(1));
    }

    #[test]
    fn responses_events_read_usage_from_the_terminal_event_only() {
        let done = br#"{"type":"response.completed","sequence_number":9,"response":{"id":"r","usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":0},"output_tokens":8}}}"#;
        assert_eq!(
            responses_event(Some("response.completed"), done)
                .unwrap()
                .output,
            Some(8)
        );
        assert_eq!(
            responses_event(None, done).unwrap().input_uncached,
            Some(12)
        );
        let created = br#"{"type":"response.created","response":{"usage":{"input_tokens":1}}}"#;
        assert_eq!(responses_event(Some("response.created"), created), None);
        assert_eq!(responses_event(None, created), None);
    }

    #[test]
    fn stream_usage_is_requested_only_when_the_client_did_not() {
        let mut env =
            Envelope::parse_head(br#"{"model":"m","stream":true,"messages":[]}"#.as_slice())
                .unwrap();
        assert!(request_stream_usage(&mut env));
        assert_eq!(
            env.into_bytes().unwrap().as_ref(),
            br#"{"model":"m","stream":true,"messages":[],"stream_options":{"include_usage":true}}"#
        );
        let mut env = Envelope::parse_head(
            br#"{"stream":true,"stream_options":{"include_obfuscation":false}}"#,
        )
        .unwrap();
        assert!(request_stream_usage(&mut env));
        assert_eq!(
            env.into_bytes().unwrap().as_ref(),
            br#"{"stream":true,"stream_options":{"include_obfuscation":false,"include_usage":true}}"#
        );
        let mut env =
            Envelope::parse_head(br#"{"stream":true,"stream_options":null}"#.as_slice()).unwrap();
        assert!(request_stream_usage(&mut env));
        assert_eq!(
            env.into_bytes().unwrap().as_ref(),
            br#"{"stream":true,"stream_options":{"include_usage":true}}"#
        );
        let mut env =
            Envelope::parse_head(br#"{"stream":true,"stream_options":5}"#.as_slice()).unwrap();
        assert!(
            !request_stream_usage(&mut env),
            "an invalid field is left for the upstream to reject"
        );
        assert!(!env.is_dirty());
        let original = br#"{"stream": true, "stream_options": {"include_usage": true}}"#;
        let mut env = Envelope::parse_head(original.as_slice()).unwrap();
        assert!(!request_stream_usage(&mut env));
        assert_eq!(
            env.into_bytes().unwrap().as_ref(),
            original,
            "untouched bytes are forwarded as sent"
        );
    }
}
