//! The cache rules seen through HTTP: each dialect's usage fields and the bills in
//! `/__sim/stats`, on a manual clock.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::billing::key_fingerprint;
use super::rules::test_support::words;
use super::test_support::{call, json_of};
use super::{Settings, Sim, build};
use crate::clock::Clock;

fn sim(replicas: usize) -> (Arc<Sim>, Router) {
    // 2026-11-02T00:00:00Z: a date the price table covers.
    let clock = Arc::new(Clock::manual(
        UNIX_EPOCH + Duration::from_secs(1_793_577_600),
    ));
    let sim = Arc::new(Sim::new(clock, Settings::default(), replicas));
    (sim.clone(), build(sim))
}

fn advance(sim: &Sim, secs: u64) {
    sim.clock.advance(Duration::from_secs(secs));
}

async fn post(app: &Router, path: &str, key: (&str, &str), body: &Value) -> Value {
    let res = call(app, "POST", path, &[key], &body.to_string()).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    json_of(&res)
}

fn account<'a>(stats: &'a Value, key: &str, model: &str) -> &'a Value {
    let fp = key_fingerprint(key);
    stats["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key_fp"] == fp.as_str() && a["model"] == model)
        .unwrap_or_else(|| panic!("no account for {model} in {stats}"))
}

fn anthropic_request(system: &str, question: &str) -> Value {
    json!({
        "model": "claude-sonnet-4-6",
        "max_tokens": 50,
        "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": question}],
    })
}

const A: &str = "/anthropic/v1/messages";

#[tokio::test]
async fn anthropic_usage_reports_writes_then_reads() {
    let (sim, app) = sim(0);
    let key = ("x-api-key", "sk-ant-1");
    let system = words(1, 1500);
    let first = post(&app, A, key, &anthropic_request(&system, "first?")).await;
    let u = &first["usage"];
    let written = u["cache_creation_input_tokens"].as_u64().unwrap();
    assert!(written >= 1500, "{u}");
    assert_eq!(u["cache_creation"]["ephemeral_5m_input_tokens"], written);
    assert_eq!(u["cache_creation"]["ephemeral_1h_input_tokens"], 0);
    assert_eq!(u["cache_read_input_tokens"], 0);
    let after = u["input_tokens"].as_u64().unwrap();
    assert!(
        after > 0 && after < 20,
        "only the question follows the breakpoint: {u}"
    );

    advance(&sim, 60);
    let mut req = anthropic_request(&system, "second?");
    req["stream"] = json!(true);
    let res = call(&app, "POST", A, &[key], &req.to_string()).await;
    let events = res.sse();
    let start = &events[0].1["message"]["usage"];
    assert_eq!(start["cache_read_input_tokens"], written);
    assert_eq!(start["cache_creation_input_tokens"], 0);
    let delta = &events
        .iter()
        .find(|(e, _)| e.as_deref() == Some("message_delta"))
        .unwrap()
        .1;
    assert_eq!(delta["usage"]["cache_read_input_tokens"], written);

    // Another API key shares nothing.
    let other = post(
        &app,
        A,
        ("x-api-key", "sk-ant-2"),
        &anthropic_request(&system, "q"),
    )
    .await;
    assert_eq!(other["usage"]["cache_read_input_tokens"], 0);

    let stats = sim.stats();
    let mine = account(&stats, "sk-ant-1", "claude-sonnet-4-6");
    assert_eq!(mine["requests"], 2);
    assert_eq!(mine["cache_read"], written);
    assert_eq!(mine["cache_write_5m"], written);
    // Input side: writes at $3.75/M, reads at $0.30/M, the rest at $3/M, rounded per request.
    let uncached = mine["input_uncached"].as_u64().unwrap();
    let pico = |tokens: u64, usd_per_m: u64| tokens * usd_per_m;
    let expected = (pico(written, 3_750_000) + 500) / 1000
        + (pico(written, 300_000) + 500) / 1000
        + pico(uncached, 3_000_000) / 1000;
    let got = mine["input_nusd"].as_u64().unwrap();
    assert!(got.abs_diff(expected) <= 2, "{got} vs {expected}");
    // One entry per API key.
    assert_eq!(stats["caches"]["anthropic"]["entries"], 2);
}

#[tokio::test]
async fn anthropic_five_markers_are_a_400_in_anthropic_shape() {
    let (_, app) = sim(0);
    let blocks: Vec<Value> = (0..5)
        .map(|i| json!({"type": "text", "text": words(i, 5), "cache_control": {"type": "ephemeral"}}))
        .collect();
    let req = json!({"model": "claude-sonnet-4-6", "max_tokens": 5, "system": blocks,
        "messages": [{"role": "user", "content": "hi"}]});
    let res = call(&app, "POST", A, &[("x-api-key", "k")], &req.to_string()).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let body = json_of(&res);
    assert_eq!(body["type"], "error");
    assert_eq!(
        body["error"]["message"],
        "A maximum of 4 blocks with cache_control may be provided. Found 5."
    );
}

#[tokio::test]
async fn openai_reports_cached_tokens_in_both_apis() {
    let (sim, app) = sim(0);
    let key = ("authorization", "Bearer sk-oai");
    let doc = words(2, 2000);
    let chat = |q: &str| {
        json!({"model": "gpt-4.1", "messages": [
            {"role": "system", "content": doc}, {"role": "user", "content": q}]})
    };
    let first = post(&app, "/openai/v1/chat/completions", key, &chat("a?")).await;
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    advance(&sim, 5);
    let second = post(&app, "/openai/v1/chat/completions", key, &chat("b?")).await;
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(cached >= 1024 && cached % 128 == 0, "{cached}");
    assert!(cached <= second["usage"]["prompt_tokens"].as_u64().unwrap());

    let resp = |q: &str| json!({"model": "gpt-4.1", "instructions": doc, "input": q});
    post(&app, "/openai/v1/responses", key, &resp("a?")).await;
    advance(&sim, 5);
    let again = post(&app, "/openai/v1/responses", key, &resp("b?")).await;
    let cached = again["usage"]["input_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(cached >= 1024 && cached % 128 == 0, "{cached}");
}

#[tokio::test]
async fn deepseek_third_request_hits_the_common_prefix() {
    let (sim, app) = sim(0);
    let key = ("authorization", "Bearer sk-ds");
    let doc = words(3, 1000);
    let req = |q: &str| {
        json!({"model": "deepseek-chat", "messages": [
            {"role": "system", "content": doc}, {"role": "user", "content": q}]})
    };
    let mut hits = Vec::new();
    for q in ["one?", "two?", "three?"] {
        let body = post(&app, "/deepseek/chat/completions", key, &req(q)).await;
        let u = &body["usage"];
        assert_eq!(
            u["prompt_cache_hit_tokens"].as_u64().unwrap()
                + u["prompt_cache_miss_tokens"].as_u64().unwrap(),
            u["prompt_tokens"].as_u64().unwrap()
        );
        hits.push(u["prompt_cache_hit_tokens"].as_u64().unwrap());
        advance(&sim, 10);
    }
    assert_eq!(hits[0], 0);
    assert_eq!(
        hits[1], 0,
        "the second request sharing the document still misses"
    );
    assert!(hits[2] >= 960 && hits[2] % 64 == 0, "{hits:?}");
}

#[tokio::test]
async fn gemini_explicit_cache_bills_create_read_and_storage() {
    let (sim, app) = sim(0);
    let key = ("x-goog-api-key", "g-key");
    let create = json!({"model": "models/gemini-2.5-flash", "ttl": "3600s",
        "contents": [{"role": "user", "parts": [{"text": words(4, 3000)}]}]});
    let cache = post(&app, "/gemini/v1beta/cachedContents", key, &create).await;
    let tokens = cache["usageMetadata"]["totalTokenCount"].as_u64().unwrap();
    advance(&sim, 60);
    let generate = json!({"cachedContent": cache["name"], "contents": [{"role": "user", "parts": [{"text": "q?"}]}]});
    let body = post(
        &app,
        "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
        key,
        &generate,
    )
    .await;
    assert_eq!(body["usageMetadata"]["cachedContentTokenCount"], tokens);
    // Deleted 30 minutes after creation: storage for half an hour.
    advance(&sim, 1740);
    let name = cache["name"].as_str().unwrap();
    let res = call(
        &app,
        "DELETE",
        &format!("/gemini/v1beta/{name}"),
        &[key],
        "",
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    let stats = sim.stats();
    let mine = account(&stats, "g-key", "gemini-2.5-flash");
    assert_eq!(
        mine["cache_write_5m"], tokens,
        "creation billed as written tokens"
    );
    assert_eq!(mine["cache_read"], tokens);
    // $1.00 per 1M tokens per hour × 0.5 h = 500 nano-USD per token.
    assert_eq!(mine["storage_nusd"], tokens * 500);
    assert_eq!(stats["caches"]["gemini"]["cached_contents"], 0);
}

#[tokio::test]
async fn replicas_report_cached_tokens_and_in_flight() {
    let (sim, app) = sim(2);
    let key = ("authorization", "Bearer none");
    let req = json!({"model": "m", "max_tokens": 200, "ignore_eos": true,
        "messages": [{"role": "user", "content": words(5, 800)}]});
    let path = "/vllm/0/v1/chat/completions";
    let res = call(&app, "POST", path, &[key], &req.to_string()).await;
    assert_eq!(res.header("x-cachet-sim-in-flight").as_deref(), Some("0"));
    assert_eq!(json_of(&res)["usage"]["completion_tokens"], 200);
    // Same instant: the first still decodes (200 tokens at 50/s), so one is in flight.
    let res = call(&app, "POST", path, &[key], &req.to_string()).await;
    assert_eq!(res.header("x-cachet-sim-in-flight").as_deref(), Some("1"));
    let cached = json_of(&res)["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(cached > 0 && cached % 16 == 0);
    // The other replica holds nothing.
    let res = call(
        &app,
        "POST",
        "/vllm/1/v1/chat/completions",
        &[key],
        &req.to_string(),
    )
    .await;
    assert_eq!(
        json_of(&res)["usage"]["prompt_tokens_details"]["cached_tokens"],
        0
    );
    advance(&sim, 10);
    let stats = sim.stats();
    assert_eq!(stats["replicas"][0]["requests"], 2);
    assert_eq!(stats["replicas"][0]["in_flight"], 0);
}

#[tokio::test]
async fn a_cancelled_stream_bills_only_the_output_sent() {
    let (sim, app) = sim(0);
    let req = json!({"model": "claude-sonnet-4-6", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "hello"}]});
    let request = axum::http::Request::builder()
        .method("POST")
        .uri(A)
        .header("x-api-key", "sk-cancel")
        .body(axum::body::Body::from(req.to_string()))
        .unwrap();
    let res = tower::ServiceExt::oneshot(app, request).await.unwrap();
    let mut body = res.into_body();
    // message_start, content_block_start, ping, then two word deltas; then hang up.
    for _ in 0..5 {
        body.frame().await.unwrap().unwrap();
    }
    drop(body);
    let stats = sim.stats();
    let mine = account(&stats, "sk-cancel", "claude-sonnet-4-6");
    assert_eq!(mine["output"], 2);
    // What the client was told: message_start's input side and its placeholder output of 1.
    let told = &mine["told"];
    assert_eq!(
        (told["responses"].as_u64(), told["cut_streams"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(told["input_uncached"], mine["input_uncached"]);
    assert_eq!(told["output"], 1);
}

/// Frames of a streamed response until it ends (`None`) or stalls for `wait`.
async fn frames_within(body: &mut axum::body::Body, wait: Duration) -> (usize, bool) {
    let mut frames = 0;
    loop {
        match tokio::time::timeout(wait, body.frame()).await {
            Ok(Some(frame)) => {
                frame.unwrap();
                frames += 1;
            }
            Ok(None) => return (frames, true),
            Err(_) => return (frames, false),
        }
    }
}

#[tokio::test]
async fn what_each_response_told_is_booked_once_and_a_hung_stream_waits_for_its_client() {
    let (sim, app) = sim(0);
    let send = |stream: bool, hang: Option<&str>| {
        let req = json!({"model": "claude-sonnet-4-6", "max_tokens": 50, "stream": stream,
            "messages": [{"role": "user", "content": "hello there"}]});
        let mut request = axum::http::Request::builder()
            .method("POST")
            .uri(A)
            .header("x-api-key", "sk-told");
        if let Some(n) = hang {
            request = request.header(super::wire::HANG_AFTER_HEADER, n);
        }
        let request = request
            .body(axum::body::Body::from(req.to_string()))
            .unwrap();
        tower::ServiceExt::oneshot(app.clone(), request)
    };
    // Whole answers and complete streams tell exactly what they bill.
    json_of(
        &call(
            &app,
            "POST",
            A,
            &[("x-api-key", "sk-told")],
            &json!({"model": "claude-sonnet-4-6",
        "max_tokens": 50, "messages": [{"role": "user", "content": "hello there"}]})
            .to_string(),
        )
        .await,
    );
    let mut body = send(true, None).await.unwrap().into_body();
    assert!(
        frames_within(&mut body, Duration::from_secs(5)).await.1,
        "a complete stream ends"
    );
    drop(body);
    let stats = sim.stats();
    let mine = account(&stats, "sk-told", "claude-sonnet-4-6");
    let told = &mine["told"];
    assert_eq!(told["responses"], 2);
    assert_eq!(told["cut_streams"], 0);
    for kind in ["input_uncached", "cache_read", "cache_write_5m", "output"] {
        assert_eq!(told[kind], mine[kind], "{kind}");
    }
    assert_eq!(
        told["nusd"].as_u64().unwrap(),
        mine["input_nusd"].as_u64().unwrap() + mine["output_nusd"].as_u64().unwrap()
    );
    // x-sim-hang-after: 1 sends message_start, then nothing until the client goes away.
    let mut body = send(true, Some("1")).await.unwrap().into_body();
    let (frames, ended) = frames_within(&mut body, Duration::from_millis(300)).await;
    assert_eq!((frames, ended), (1, false));
    let before = account(&sim.stats(), "sk-told", "claude-sonnet-4-6")["told"].clone();
    assert_eq!(
        before["responses"], 2,
        "booked only when the client goes away"
    );
    drop(body);
    let told = account(&sim.stats(), "sk-told", "claude-sonnet-4-6")["told"].clone();
    assert_eq!(
        (told["responses"].as_u64(), told["cut_streams"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(
        told["output"].as_u64(),
        before["output"].as_u64().map(|o| o + 1)
    );
}

#[tokio::test]
async fn stats_are_served_and_never_show_keys() {
    let (_, app) = sim(0);
    let key = ("x-api-key", "sk-very-secret");
    post(&app, A, key, &anthropic_request("short", "q")).await;
    let res = call(&app, "GET", "/__sim/stats", &[], "").await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(!res.text().contains("sk-very-secret"));
    let stats = json_of(&res);
    assert_eq!(
        account(&stats, "sk-very-secret", "claude-sonnet-4-6")["requests"],
        1
    );
}

#[tokio::test]
async fn a_price_table_of_ones_own_sets_prices_and_minimums() {
    let table = crate::pricing::PriceTable::parse(
        r#"
[[models]]
model = "house-model"
provider = "anthropic"
effective_from = "2025-01-01"
input = 1.00
output = 2.00
cache_read = 0.10
cache_write_5m = 1.25
min_cacheable_tokens = 100
"#,
    )
    .unwrap();
    let clock = Arc::new(Clock::manual(
        UNIX_EPOCH + Duration::from_secs(1_793_577_600),
    ));
    let settings = Settings {
        prices: Some(Arc::new(table)),
        ..Settings::default()
    };
    let sim = Arc::new(Sim::new(clock, settings, 0));
    let app = build(sim.clone());
    let mut req = anthropic_request(&words(9, 150), "q?");
    req["model"] = json!("house-model");
    let body = post(&app, A, ("x-api-key", "k"), &req).await;
    // 150 words reach this table's minimum of 100, far below the built-in 1024.
    let written = body["usage"]["cache_creation_input_tokens"]
        .as_u64()
        .unwrap();
    assert!(written >= 150);
    let stats = sim.stats();
    let mine = account(&stats, "k", "house-model");
    let uncached = mine["input_uncached"].as_u64().unwrap();
    // $1.25/M for the write, $1/M for the rest, nano-USD rounded per request.
    let expected = (written * 1_250_000 + uncached * 1_000_000 + 500) / 1000;
    assert_eq!(mine["input_nusd"], expected);
}
