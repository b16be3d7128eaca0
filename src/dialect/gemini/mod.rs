//! Google Gemini (`generativelanguage.googleapis.com`), under `/v1beta/` and `/v1/`.

pub mod cache;
pub mod prompt;
pub mod rewrite;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Endpoint, has_object_field};
use crate::usage::{Usage, UsagePatch, count};

const VERSIONS: [&str; 2] = ["/v1beta/", "/v1/"];

pub fn classify(method: &Method, path: &str) -> Option<Endpoint> {
    let rest = VERSIONS.iter().find_map(|v| path.strip_prefix(v))?;
    if rest == "cachedContents" || rest.starts_with("cachedContents/") {
        return Some(Endpoint::GeminiCachedContents);
    }
    if *method != Method::POST {
        return None;
    }
    let (model, action) = rest.strip_prefix("models/")?.rsplit_once(':')?;
    if model.is_empty() || model.contains('/') {
        return None;
    }
    let model = model.to_owned();
    match action {
        "generateContent" => Some(Endpoint::GeminiGenerate {
            model,
            stream: false,
        }),
        "streamGenerateContent" => Some(Endpoint::GeminiGenerate {
            model,
            stream: true,
        }),
        "countTokens" => Some(Endpoint::GeminiCountTokens { model }),
        _ => None,
    }
}

pub fn looks_like(path: &str) -> bool {
    path.contains("/v1beta/")
        || path.contains("cachedContents")
        || (path.contains("/models/") && path.contains(':'))
}

/// `{"error": {"code", "message", "status"}}` with Google's canonical status name.
pub fn error_body(status: StatusCode, message: &str) -> Value {
    let canonical = match status.as_u16() {
        400 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        502 | 503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    };
    json!({"error": {"code": status.as_u16(), "message": message, "status": canonical}})
}

/// `promptTokenCount` includes the cached tokens; thoughts are billed as output and tool-use
/// prompts as input.
pub fn usage(meta: &Value) -> Option<UsagePatch> {
    let prompt = count(meta.get("promptTokenCount")).unwrap_or(0);
    let cached = count(meta.get("cachedContentTokenCount"))
        .unwrap_or(0)
        .min(prompt);
    let tool_prompt = count(meta.get("toolUsePromptTokenCount")).unwrap_or(0);
    let output = count(meta.get("candidatesTokenCount")).unwrap_or(0)
        + count(meta.get("thoughtsTokenCount")).unwrap_or(0);
    Some(UsagePatch::full(Usage {
        input_uncached: prompt - cached + tool_prompt,
        cache_read: cached,
        cache_write_5m: 0,
        cache_write_1h: 0,
        output,
    }))
}

/// A streamed chunk (SSE `data:` or one array element) carries running totals; the last wins.
pub fn event_usage(data: &[u8]) -> Option<UsagePatch> {
    if !has_object_field(data, b"\"usageMetadata\"") {
        return None;
    }
    let v: Value = serde_json::from_slice(data).ok()?;
    usage(v.get("usageMetadata")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_token_count_includes_cached_tokens() {
        let m = json!({"promptTokenCount": 10000, "cachedContentTokenCount": 8000,
            "candidatesTokenCount": 40, "thoughtsTokenCount": 10, "totalTokenCount": 10050});
        let p = usage(&m).unwrap();
        assert_eq!(
            (p.input_uncached, p.cache_read, p.output),
            (Some(2000), Some(8000), Some(50))
        );
        let m = json!({"promptTokenCount": 12, "candidatesTokenCount": 3});
        let p = usage(&m).unwrap();
        assert_eq!(
            (p.input_uncached, p.cache_read, p.output),
            (Some(12), Some(0), Some(3))
        );
    }

    #[test]
    fn stream_chunks_without_metadata_are_skipped_unparsed() {
        assert_eq!(
            event_usage(br#"{"candidates":[{"content":{"parts":[{"text":"usageMetadata"}]}}]}"#),
            None
        );
        let p = event_usage(
            br#"{"candidates":[],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":2}}"#,
        )
        .unwrap();
        assert_eq!(p.output, Some(2));
    }
}
