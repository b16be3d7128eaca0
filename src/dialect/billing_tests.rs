//! The table at the top of `src/usage.rs`, checked end to end: a provider's raw response body →
//! [`usage_from_body`] → [`Usage`] → cost from `config/prices.toml`.
//!
//! Providers disagree on whether cached tokens sit inside their input figure (OpenAI, Gemini,
//! DeepSeek) or outside it (Anthropic). A dialect that reads one as the other bills the cached
//! tokens twice, or not at all; so every row states what the provider billed as input, and the
//! usage must account for each of those tokens exactly once.
//!
//! Costs are computed by hand next to each row, in pico-USD per token (= micro-USD per MTok):
//!
//! | model             | input     | cache read | write 5m  | write 1h   | output     |
//! |-------------------|-----------|------------|-----------|------------|------------|
//! | claude-sonnet-4-6 | 3_000_000 | 300_000    | 3_750_000 | 6_000_000  | 15_000_000 |
//! | claude-haiku-4-5  | 1_000_000 | 100_000    | 1_250_000 | 2_000_000  | 5_000_000  |
//! | gpt-4.1           | 2_000_000 | 500_000    | 2_000_000 | —          | —          |
//! | gpt-4o            | 2_500_000 | 1_250_000  | 2_500_000 | —          | —          |
//! | gemini-2.5-flash  | 300_000   | 30_000     | 300_000   | —          | —          |
//! | gemini-2.5-pro >200k | 2_500_000 | 250_000 | 2_500_000 | —          | —          |
//! | deepseek-v4-pro (from 2026-08-17) | 1_320_000 | 44_000 | 1_320_000 | — | 3_960_000 |
//! | deepseek-v4-flash | 140_000   | 2_800      | 140_000   | —          | 280_000    |
//!
//! `nano = round_half_up(Σ tokens × pico / 1000)`, once per request.

use http::Method;

use super::{classify, usage_from_body};
use crate::config::ProviderKind;
use crate::pricing::{Cost, PriceTable};
use crate::usage::{Usage, UsageAcc};

/// Prices in force on this day (the DeepSeek rows are dated).
const DATE: &str = "2026-11-29";

struct Row {
    what: &'static str,
    provider: ProviderKind,
    /// The path after the mount, so the row goes through the same routing as a request.
    path: &'static str,
    /// The model the request named (what the proxy prices by).
    model: &'static str,
    /// A complete non-streamed response body, as the provider sends it.
    body: &'static str,
    /// What the provider billed as input, read off `body` by hand.
    billed_input: u64,
    usage: Usage,
    /// The request's cost: `None` where prices.toml lacks a price it needs.
    cost: Cost,
    /// The input tokens alone (output left out): what caching changes, and what savings are
    /// computed on (DESIGN.md Definitions). Priced even where an output price is missing.
    input_cost: Cost,
}

const fn usage(input_uncached: u64, cache_read: u64, w5m: u64, w1h: u64, output: u64) -> Usage {
    Usage {
        input_uncached,
        cache_read,
        cache_write_5m: w5m,
        cache_write_1h: w1h,
        output,
    }
}

const fn nano(actual: u64, uncached: u64) -> Cost {
    Cost {
        actual: Some(actual),
        uncached: Some(uncached),
    }
}

const UNPRICED: Cost = Cost {
    actual: None,
    uncached: None,
};

fn rows() -> Vec<Row> {
    vec![
        Row {
            what: "anthropic: writes split by TTL, input_tokens outside the cache counts",
            provider: ProviderKind::Anthropic,
            path: "/v1/messages",
            model: "claude-sonnet-4-6",
            body: r#"{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant",
                "model":"claude-sonnet-4-6","content":[{"type":"text","text":"Section 4 says..."}],
                "stop_reason":"end_turn","stop_sequence":null,
                "usage":{"input_tokens":1520,"cache_creation_input_tokens":6000,
                    "cache_read_input_tokens":0,
                    "cache_creation":{"ephemeral_5m_input_tokens":2000,"ephemeral_1h_input_tokens":4000},
                    "output_tokens":310,"service_tier":"standard"}}"#,
            // 1520 + 6000 + 0
            billed_input: 7520,
            usage: usage(1520, 0, 2000, 4000, 310),
            // 1520×3e6 + 2000×3.75e6 + 4000×6e6 + 310×15e6
            //   = 4.56e9 + 7.5e9 + 24e9 + 4.65e9 = 40.71e9 pico
            // uncached: 7520×3e6 + 4.65e9 = 22.56e9 + 4.65e9 = 27.21e9 pico
            cost: nano(40_710_000, 27_210_000),
            // 40.71e9 − 4.65e9 = 36.06e9; 22.56e9
            input_cost: nano(36_060_000, 22_560_000),
        },
        Row {
            what: "anthropic trap: a large cache read beside a tiny input_tokens",
            provider: ProviderKind::Anthropic,
            path: "/v1/messages",
            model: "claude-sonnet-4-6-20260101",
            body: r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-6",
                "content":[{"type":"text","text":"Yes."}],"stop_reason":"end_turn","stop_sequence":null,
                "usage":{"input_tokens":12,"cache_creation_input_tokens":0,
                    "cache_read_input_tokens":150000,
                    "cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},
                    "output_tokens":95}}"#,
            // 12 + 0 + 150000 (reading input_tokens as OpenAI's would underflow 12 − 150000)
            billed_input: 150_012,
            usage: usage(12, 150_000, 0, 0, 95),
            // 12×3e6 + 150000×3e5 + 95×15e6 = 0.036e9 + 45e9 + 1.425e9 = 46.461e9 pico
            // uncached: 150012×3e6 + 1.425e9 = 450.036e9 + 1.425e9 = 451.461e9 pico
            cost: nano(46_461_000, 451_461_000),
            input_cost: nano(45_036_000, 450_036_000),
        },
        Row {
            what: "anthropic shape without the TTL split (older API versions, compatible \
                   endpoints): the write total counts as 5m",
            provider: ProviderKind::Anthropic,
            path: "/v1/messages",
            model: "claude-haiku-4-5",
            body: r#"{"id":"msg_02","type":"message","role":"assistant","model":"claude-haiku-4-5",
                "content":[{"type":"text","text":"Done."}],"stop_reason":"end_turn","stop_sequence":null,
                "usage":{"input_tokens":40,"cache_creation_input_tokens":5000,
                    "cache_read_input_tokens":20000,"output_tokens":120}}"#,
            // 40 + 5000 + 20000
            billed_input: 25_040,
            usage: usage(40, 20_000, 5000, 0, 120),
            // 40×1e6 + 20000×1e5 + 5000×1.25e6 + 120×5e6 = 0.04e9 + 2e9 + 6.25e9 + 0.6e9 = 8.89e9
            // uncached: 25040×1e6 + 0.6e9 = 25.64e9 pico
            cost: nano(8_890_000, 25_640_000),
            input_cost: nano(8_290_000, 25_040_000),
        },
        Row {
            what: "openai chat: cached_tokens inside prompt_tokens; gpt-4.1 has no output price",
            provider: ProviderKind::Openai,
            path: "/v1/chat/completions",
            model: "gpt-4.1",
            body: r#"{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion",
                "created":1741570283,"model":"gpt-4.1-2025-04-14",
                "choices":[{"index":0,"message":{"role":"assistant","content":"The answer...",
                    "refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],
                "usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,
                    "prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},
                    "completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,
                        "accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},
                "service_tier":"default","system_fingerprint":"fp_3802b2e4e4"}"#,
            billed_input: 2006,
            // 2006 − 1920 = 86 uncached
            usage: usage(86, 1920, 0, 0, 300),
            // 300 output tokens and no output price: null, never a guess.
            cost: UNPRICED,
            // 86×2e6 + 1920×5e5 = 0.172e9 + 0.96e9 = 1.132e9; uncached 2006×2e6 = 4.012e9
            input_cost: nano(1_132_000, 4_012_000),
        },
        Row {
            what: "openai chat trap: cached_tokens == prompt_tokens",
            provider: ProviderKind::Openai,
            path: "/v1/chat/completions",
            model: "gpt-4o",
            body: r#"{"id":"chatcmpl-1","object":"chat.completion","created":1741570300,
                "model":"gpt-4o-2024-08-06",
                "choices":[{"index":0,"message":{"role":"assistant","content":"4"},
                    "logprobs":null,"finish_reason":"stop"}],
                "usage":{"prompt_tokens":4096,"completion_tokens":1,"total_tokens":4097,
                    "prompt_tokens_details":{"cached_tokens":4096,"audio_tokens":0},
                    "completion_tokens_details":{"reasoning_tokens":0}}}"#,
            billed_input: 4096,
            // Every prompt token was a hit: none left to bill as uncached.
            usage: usage(0, 4096, 0, 0, 1),
            cost: UNPRICED,
            // 4096×1.25e6 = 5.12e9; uncached 4096×2.5e6 = 10.24e9
            input_cost: nano(5_120_000, 10_240_000),
        },
        Row {
            what: "openai responses: input_tokens_details.cached_tokens inside input_tokens",
            provider: ProviderKind::Openai,
            path: "/v1/responses",
            model: "gpt-4o",
            body: r#"{"id":"resp_67ccd2bed1ec8190b14f964abc054267","object":"response",
                "created_at":1741476542,"status":"completed","model":"gpt-4o-2024-08-06",
                "output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant",
                    "content":[{"type":"output_text","text":"...","annotations":[]}]}],
                "prompt_cache_key":"k1",
                "usage":{"input_tokens":3000,"input_tokens_details":{"cached_tokens":2816},
                    "output_tokens":150,"output_tokens_details":{"reasoning_tokens":0},
                    "total_tokens":3150}}"#,
            billed_input: 3000,
            usage: usage(184, 2816, 0, 0, 150),
            cost: UNPRICED,
            // 184×2.5e6 + 2816×1.25e6 = 0.46e9 + 3.52e9 = 3.98e9; uncached 3000×2.5e6 = 7.5e9
            input_cost: nano(3_980_000, 7_500_000),
        },
        Row {
            what: "openai responses, GPT-5.6 shape: cache_write_tokens inside input_tokens too; \
                   a model prices.toml does not name is unpriced",
            provider: ProviderKind::Openai,
            path: "/v1/responses",
            model: "gpt-5.6-sol",
            body: r#"{"id":"resp_2","object":"response","status":"completed","model":"gpt-5.6-sol",
                "output":[],
                "usage":{"input_tokens":5000,
                    "input_tokens_details":{"cached_tokens":1024,"cache_write_tokens":3000},
                    "output_tokens":20,"output_tokens_details":{"reasoning_tokens":0},
                    "total_tokens":5020}}"#,
            billed_input: 5000,
            // 5000 − 1024 − 3000 = 976
            usage: usage(976, 1024, 3000, 0, 20),
            cost: UNPRICED,
            input_cost: UNPRICED,
        },
        Row {
            what: "gemini: cachedContentTokenCount inside promptTokenCount, thoughts billed as \
                   output, tool-use prompt as input",
            provider: ProviderKind::Gemini,
            path: "/v1beta/models/gemini-2.5-flash:generateContent",
            model: "gemini-2.5-flash",
            body: r#"{"candidates":[{"content":{"parts":[{"text":"It rained."}],"role":"model"},
                    "finishReason":"STOP","index":0}],
                "usageMetadata":{"promptTokenCount":12000,"candidatesTokenCount":200,
                    "totalTokenCount":13500,"cachedContentTokenCount":10000,
                    "promptTokensDetails":[{"modality":"TEXT","tokenCount":12000}],
                    "cacheTokensDetails":[{"modality":"TEXT","tokenCount":10000}],
                    "toolUsePromptTokenCount":500,"thoughtsTokenCount":800},
                "modelVersion":"gemini-2.5-flash","responseId":"mGmUaLyKB4a7nvgP8pG4oQo"}"#,
            // promptTokenCount + toolUsePromptTokenCount: totalTokenCount 13500 = 12000 + 500
            // + 200 + 800, so the tool-use prompt is outside promptTokenCount.
            billed_input: 12_500,
            // 12000 − 10000 + 500 = 2500 uncached; 200 + 800 = 1000 output
            usage: usage(2500, 10_000, 0, 0, 1000),
            cost: UNPRICED,
            // 2500×3e5 + 10000×3e4 = 0.75e9 + 0.3e9 = 1.05e9; uncached 12500×3e5 = 3.75e9
            input_cost: nano(1_050_000, 3_750_000),
        },
        Row {
            what: "gemini trap: counting the cache twice would also pick the wrong price tier",
            provider: ProviderKind::Gemini,
            path: "/v1beta/models/gemini-2.5-pro:generateContent",
            model: "gemini-2.5-pro",
            body: r#"{"candidates":[{"content":{"parts":[{"text":"Summary..."}],"role":"model"},
                    "finishReason":"STOP","index":0}],
                "usageMetadata":{"promptTokenCount":250000,"candidatesTokenCount":50,
                    "totalTokenCount":250050,"cachedContentTokenCount":240000},
                "modelVersion":"gemini-2.5-pro"}"#,
            billed_input: 250_000,
            usage: usage(10_000, 240_000, 0, 0, 50),
            cost: UNPRICED,
            // 250000 > 200000: tier rates. 10000×2.5e6 + 240000×2.5e5 = 25e9 + 60e9 = 85e9;
            // uncached 250000×2.5e6 = 625e9
            input_cost: nano(85_000_000, 625_000_000),
        },
        Row {
            what: "deepseek: hit + miss = prompt_tokens; the OpenAI-style cached_tokens it also \
                   sends is the same hit, not more",
            provider: ProviderKind::Deepseek,
            path: "/chat/completions",
            model: "deepseek-v4-pro",
            body: r#"{"id":"930c60df-bf64-41c9-a88e-3ec75f81e00e","object":"chat.completion",
                "created":1755000000,"model":"deepseek-v4-pro",
                "choices":[{"index":0,"message":{"role":"assistant","content":"..."},
                    "logprobs":null,"finish_reason":"stop"}],
                "usage":{"prompt_tokens":10000,"completion_tokens":500,"total_tokens":10500,
                    "prompt_tokens_details":{"cached_tokens":9984},
                    "completion_tokens_details":{"reasoning_tokens":200},
                    "prompt_cache_hit_tokens":9984,"prompt_cache_miss_tokens":16},
                "system_fingerprint":"fp_ffc7281d48_prod0820_fp8_kvcache"}"#,
            billed_input: 10_000,
            usage: usage(16, 9984, 0, 0, 500),
            // 16×1.32e6 + 9984×44_000 + 500×3.96e6
            //   = 21_120_000 + 439_296_000 + 1_980_000_000 = 2_440_416_000 pico
            // uncached: 10000×1.32e6 + 1.98e9 = 15.18e9 pico
            cost: nano(2_440_416, 15_180_000),
            // 460_416_000 pico; 13.2e9
            input_cost: nano(460_416, 13_200_000),
        },
        Row {
            what: "deepseek on /v1: sub-nano read prices round half up once per request",
            provider: ProviderKind::Deepseek,
            path: "/v1/chat/completions",
            model: "deepseek-v4-flash",
            body: r#"{"id":"2","object":"chat.completion","model":"deepseek-v4-flash",
                "choices":[{"index":0,"message":{"role":"assistant","content":"ok"},
                    "finish_reason":"stop"}],
                "usage":{"prompt_tokens":3333,"completion_tokens":77,"total_tokens":3410,
                    "prompt_cache_hit_tokens":3201,"prompt_cache_miss_tokens":132}}"#,
            billed_input: 3333,
            usage: usage(132, 3201, 0, 0, 77),
            // 132×140_000 + 3201×2_800 + 77×280_000 = 18_480_000 + 8_962_800 + 21_560_000
            //   = 49_002_800 pico → 49_002.8 → 49_003 nano
            // uncached: 3333×140_000 + 21_560_000 = 466_620_000 + 21_560_000 = 488_180_000
            cost: nano(49_003, 488_180),
            // 27_442_800 pico → 27_443; 466_620_000
            input_cost: nano(27_443, 466_620),
        },
        Row {
            what: "openai-compatible server (vLLM) with no prompt_tokens_details: all input \
                   uncached; an unknown model is unpriced",
            provider: ProviderKind::OpenaiCompatible,
            path: "/v1/chat/completions",
            model: "Qwen/Qwen3-8B",
            body: r#"{"id":"chatcmpl-8d3c","object":"chat.completion","created":1755000001,
                "model":"Qwen/Qwen3-8B",
                "choices":[{"index":0,"message":{"role":"assistant","content":"Hi",
                    "tool_calls":[]},"logprobs":null,"finish_reason":"stop","stop_reason":null}],
                "usage":{"prompt_tokens":812,"total_tokens":852,"completion_tokens":40,
                    "prompt_tokens_details":null},
                "prompt_logprobs":null}"#,
            billed_input: 812,
            usage: usage(812, 0, 0, 0, 40),
            cost: UNPRICED,
            input_cost: UNPRICED,
        },
    ]
}

#[test]
fn each_billed_input_token_is_priced_once_from_raw_body_to_cost() {
    let prices = PriceTable::built_in().unwrap();
    for row in rows() {
        let what = row.what;
        let endpoint = classify(row.provider, &Method::POST, row.path)
            .unwrap_or_else(|| panic!("{what}: {} is a modelled route", row.path));
        let patch = usage_from_body(row.provider, &endpoint, row.body.as_bytes())
            .unwrap_or_else(|| panic!("{what}: usage read"));
        let mut acc = UsageAcc::default();
        acc.apply(patch);
        let usage = acc.get().unwrap();
        assert_eq!(usage, row.usage, "{what}");
        assert_eq!(usage.input_total(), row.billed_input, "{what}");

        // As the proxy prices a request: a model with no price row costs null.
        let price = prices.price_on(row.model, DATE);
        let cost_of = |u: &Usage| price.map_or(Cost::default(), |p| p.cost(u));
        assert_eq!(cost_of(&usage), row.cost, "{what}");
        let input_side = Usage { output: 0, ..usage };
        assert_eq!(cost_of(&input_side), row.input_cost, "{what}");
    }
}
