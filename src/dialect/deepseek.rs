//! DeepSeek and other OpenAI-compatible servers: the OpenAI chat shape, reachable with or
//! without the `/v1` prefix, and DeepSeek's own cache counters.

use http::Method;
use serde_json::Value;

use super::Endpoint;
use super::openai;
use crate::usage::{Usage, UsagePatch, count};

pub fn classify(method: &Method, path: &str) -> Option<Endpoint> {
    match (method, path) {
        (&Method::POST, "/chat/completions") => Some(Endpoint::Chat),
        _ => openai::classify(method, path),
    }
}

/// `prompt_cache_hit_tokens` / `prompt_cache_miss_tokens`; `prompt_tokens` is their sum. A
/// server that only sends the OpenAI fields is read as OpenAI.
pub fn usage(usage: &Value) -> Option<UsagePatch> {
    let (Some(hit), Some(miss)) = (
        count(usage.get("prompt_cache_hit_tokens")),
        count(usage.get("prompt_cache_miss_tokens")),
    ) else {
        return openai::chat_usage(usage);
    };
    Some(UsagePatch::full(Usage {
        input_uncached: miss,
        cache_read: hit,
        cache_write_5m: 0,
        cache_write_1h: 0,
        output: count(usage.get("completion_tokens")).unwrap_or(0),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deepseek_counters_split_prompt_tokens() {
        let u = json!({"prompt_tokens": 1200, "prompt_cache_hit_tokens": 1024,
            "prompt_cache_miss_tokens": 176, "completion_tokens": 50, "total_tokens": 1250,
            "prompt_tokens_details": {"cached_tokens": 1024}});
        let p = usage(&u).unwrap();
        assert_eq!(
            (p.input_uncached, p.cache_read, p.output),
            (Some(176), Some(1024), Some(50))
        );
        let vllm = json!({"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 64}});
        let p = usage(&vllm).unwrap();
        assert_eq!((p.input_uncached, p.cache_read), (Some(36), Some(64)));
    }
}
