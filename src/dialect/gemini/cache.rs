//! The `cachedContents` JSON cachet writes and reads (providers.md §3.2–§3.3): the create body
//! for a request's leading part, the request rewritten to reference the cache, the TTL patch,
//! and what a create answers.
//!
//! A request that references a cache must not set `systemInstruction`, `tools` or
//! `toolConfig` (a 400 otherwise): they move into the cache with the leading Contents. Field
//! values are copied as the client sent them, in either casing the API accepts.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use crate::clock::parse_rfc3339;

/// The fields only a cache may carry once one is referenced, in both casings.
const FIXED: [&str; 5] = [
    "systemInstruction",
    "system_instruction",
    "tools",
    "toolConfig",
    "tool_config",
];

/// The create body for the request's system instruction, tools, tool config and first
/// `contents` Contents, on `model` (bare name), kept for `ttl`.
pub fn create_body(request: &Value, model: &str, contents: usize, ttl: Duration) -> Option<Value> {
    let request = request.as_object()?;
    let mut body = Map::new();
    body.insert("model".into(), json!(format!("models/{model}")));
    for field in FIXED {
        if let Some(value) = request.get(field) {
            body.insert(field.into(), value.clone());
        }
    }
    if contents > 0 {
        let leading = request.get("contents")?.as_array()?.get(..contents)?;
        body.insert("contents".into(), Value::Array(leading.to_vec()));
    }
    body.insert("ttl".into(), json!(duration(ttl)));
    Some(Value::Object(body))
}

/// Rewrites `request` to read the cache `name` in place of its leading part: the fixed fields
/// and the first `contents` Contents go, `cachedContent` comes. `false` (and `request`
/// untouched) when the request does not have that many Contents plus one of its own.
pub fn reference(request: &mut Value, name: &str, contents: usize) -> bool {
    let Some(object) = request.as_object_mut() else {
        return false;
    };
    let enough = object
        .get("contents")
        .and_then(Value::as_array)
        .is_some_and(|c| c.len() > contents);
    if !enough {
        return false;
    }
    for field in FIXED {
        object.shift_remove(field);
    }
    if let Some(Value::Array(all)) = object.get_mut("contents") {
        all.drain(..contents);
    }
    object.insert("cachedContent".into(), json!(name));
    true
}

/// The path and body of a PATCH giving cache `name` a new TTL.
pub fn extend(name: &str, ttl: Duration) -> (String, Value) {
    (
        format!("/v1beta/{name}?updateMask=ttl"),
        json!({"ttl": duration(ttl)}),
    )
}

/// Where caches are created.
pub const CREATE_PATH: &str = "/v1beta/cachedContents";

/// What a create (or a patch) answered: the cache's name, expiry and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub name: String,
    /// `createTime`: storage is billed from then (`None` if the answer leaves it out).
    pub created: Option<SystemTime>,
    pub expires: SystemTime,
    /// `usageMetadata.totalTokenCount`: the tokens the create billed at the input price.
    pub tokens: u64,
}

pub fn created(body: &[u8]) -> Option<Created> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let name = value.get("name")?.as_str()?;
    if !name.starts_with("cachedContents/") {
        return None;
    }
    Some(Created {
        name: name.to_owned(),
        created: value
            .get("createTime")
            .and_then(Value::as_str)
            .and_then(parse_rfc3339),
        expires: parse_rfc3339(value.get("expireTime")?.as_str()?)?,
        tokens: value
            .pointer("/usageMetadata/totalTokenCount")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

/// Whether a Gemini error body is about the request's cached content (a 400 naming it), rather
/// than about anything else the client sent.
pub fn about_the_cache(body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    value
        .pointer("/error/message")
        .and_then(Value::as_str)
        .is_some_and(|m| {
            let m = m.to_ascii_lowercase();
            m.contains("cachedcontent")
                || m.contains("cached content")
                || m.contains("cached_content")
        })
}

/// A Duration as the API writes it: whole seconds, then `s`.
fn duration(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leading_part_moves_into_the_cache_and_the_rest_stays() {
        let request = json!({
            "contents": [
                {"role": "user", "parts": [{"text": "document"}]},
                {"role": "user", "parts": [{"text": "question?"}]},
            ],
            "system_instruction": {"parts": [{"text": "be brief"}]},
            "tools": [{"functionDeclarations": [{"name": "f"}]}],
            "generationConfig": {"maxOutputTokens": 9},
        });
        let create = create_body(&request, "gemini-2.5-flash", 1, Duration::from_secs(90))
            .expect("a create body");
        assert_eq!(
            create,
            json!({
                "model": "models/gemini-2.5-flash",
                "system_instruction": {"parts": [{"text": "be brief"}]},
                "tools": [{"functionDeclarations": [{"name": "f"}]}],
                "contents": [{"role": "user", "parts": [{"text": "document"}]}],
                "ttl": "90s",
            })
        );
        let mut sent = request.clone();
        assert!(reference(&mut sent, "cachedContents/x", 1));
        assert_eq!(
            sent,
            json!({
                "contents": [{"role": "user", "parts": [{"text": "question?"}]}],
                "generationConfig": {"maxOutputTokens": 9},
                "cachedContent": "cachedContents/x",
            })
        );
        // Field order of what stays is kept.
        let keys: Vec<&String> = sent
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, ["contents", "generationConfig", "cachedContent"]);
        // A cache of the system part only leaves every Content in the request.
        let create = create_body(&request, "m", 0, Duration::from_secs(60)).expect("body");
        assert!(create.get("contents").is_none());
    }

    #[test]
    fn a_request_keeps_at_least_one_content_of_its_own() {
        let mut request = json!({"contents": [{"parts": [{"text": "a"}]}]});
        let before = request.clone();
        assert!(!reference(&mut request, "cachedContents/x", 1));
        assert_eq!(request, before);
        assert!(create_body(&request, "m", 2, Duration::from_secs(60)).is_none());
    }

    #[test]
    fn a_create_answer_gives_name_expiry_and_tokens() {
        let body = br#"{"name":"cachedContents/abc","model":"models/m",
            "expireTime":"2026-11-02T09:05:00Z","usageMetadata":{"totalTokenCount":4100}}"#;
        let c = created(body).expect("parsed");
        assert_eq!(c.name, "cachedContents/abc");
        assert_eq!(c.tokens, 4100);
        assert_eq!(
            c.expires,
            parse_rfc3339("2026-11-02T09:05:00Z").expect("time")
        );
        assert!(created(b"{\"error\":{}}").is_none());
        assert!(about_the_cache(
            br#"{"error":{"code":400,"message":"CachedContent can not be used with GenerateContent request setting system_instruction","status":"INVALID_ARGUMENT"}}"#
        ));
        assert!(!about_the_cache(
            br#"{"error":{"code":400,"message":"temperature must be in [0, 2]","status":"INVALID_ARGUMENT"}}"#
        ));
        assert!(!about_the_cache(b"not json"));
        assert!(created(b"not json").is_none());
        let (path, body) = extend("cachedContents/abc", Duration::from_millis(90_500));
        assert_eq!(path, "/v1beta/cachedContents/abc?updateMask=ttl");
        assert_eq!(body, json!({"ttl": "90s"}));
    }
}
