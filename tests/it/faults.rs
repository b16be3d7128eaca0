//! The simulator's fault injection, seen by a client talking to it directly and through the
//! proxy: errors in the mount's dialect, latency, resets and slow streams, and the controls.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cachet::sim::{CONTROL_PATH, FAULT_HEADER, Faults};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::common::*;

const CLAUDE: &str =
    r#"{"model":"claude-sonnet-4-6","max_tokens":50,"messages":[{"role":"user","content":"Hi"}]}"#;
const CLAUDE_STREAM: &str = r#"{"model":"claude-sonnet-4-6","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
const CHAT: &str = r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"Hi"}]}"#;

/// A simulator on 127.0.0.1:0 injecting `faults` from the start.
async fn start_sim(faults: Value) -> SocketAddr {
    let faults = Faults::from_json(&faults.to_string()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = cachet::sim::router_with(1, cachet::sim::Settings::default(), faults);
    tokio::spawn(async move { axum::serve(cachet::server::nodelay(listener), app).await });
    addr
}

/// The proxy with one upstream per `(name, provider, mount)` on the simulator. Names are
/// unique to each test: the Prometheus recorder is process-wide.
async fn proxy_for(sim: SocketAddr, upstreams: &[(&str, &str, &str)]) -> TestProxy {
    let config: String = upstreams
        .iter()
        .map(|(name, provider, mount)| {
            format!(
                "[[upstreams]]\nname = \"{name}\"\nprovider = \"{provider}\"\nbase_url = \"http://{sim}{mount}\"\n"
            )
        })
        .collect();
    TestProxy::spawn(&config).await
}

async fn post(url: String, body: &str) -> reqwest::Response {
    client()
        .post(url)
        .header("x-api-key", "k")
        .header("authorization", "Bearer k")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn set_faults(sim: SocketAddr, faults: Value) -> Value {
    let r = post(format!("http://{sim}{CONTROL_PATH}"), &faults.to_string()).await;
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key(FAULT_HEADER));
    json_body(r).await
}

async fn control(sim: SocketAddr, method: reqwest::Method) -> reqwest::Response {
    client()
        .request(method, format!("http://{sim}{CONTROL_PATH}"))
        .send()
        .await
        .unwrap()
}

async fn json_body(r: reqwest::Response) -> Value {
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

fn fault_header(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get(FAULT_HEADER)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// What a streamed body delivered, and whether it failed rather than ended.
async fn read_stream(r: reqwest::Response) -> (String, bool) {
    let mut stream = r.bytes_stream();
    let mut text = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => text.extend_from_slice(&bytes),
            Err(_) => return (String::from_utf8(text).unwrap(), true),
        }
    }
    (String::from_utf8(text).unwrap(), false)
}

#[tokio::test]
async fn injected_429s_then_success_relayed_by_the_proxy() {
    let sim = start_sim(json!({
        "mount": "/anthropic",
        "errors": {"status": 429, "count": 2, "retry_after_s": 1},
    }))
    .await;
    let proxy = proxy_for(sim, &[("faults-429", "anthropic", "/anthropic")]).await;
    for _ in 0..2 {
        let r = post(proxy.url("/faults-429/v1/messages"), CLAUDE).await;
        assert_eq!(r.status(), 429);
        assert_eq!(fault_header(&r).as_deref(), Some("error"));
        assert_eq!(r.headers()["retry-after"], "1");
        let body: Value = json_body(r).await;
        assert_eq!(body["type"], "error", "{body}");
        assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("injected"),
            "the simulator's own body: {body}"
        );
    }
    let r = post(proxy.url("/faults-429/v1/messages"), CLAUDE).await;
    assert_eq!(r.status(), 200);
    assert_eq!(fault_header(&r), None);
    assert_eq!(json_body(r).await["type"], "message");
    let shown: Value = json_body(control(sim, reqwest::Method::GET).await).await;
    assert_eq!(shown["errors"]["count"], 0);
    eventually("three requests recorded", || proxy.recorded() == 3).await;
}

#[tokio::test]
async fn a_529_hits_the_anthropic_mount_only() {
    let sim = start_sim(json!({})).await;
    let proxy = proxy_for(
        sim,
        &[
            ("faults-529-claude", "anthropic", "/anthropic"),
            ("faults-529-openai", "openai", "/openai"),
        ],
    )
    .await;
    set_faults(
        sim,
        json!({"mount": "/anthropic", "errors": {"status": 529, "count": 1}}),
    )
    .await;
    let r = post(proxy.url("/faults-529-openai/v1/chat/completions"), CHAT).await;
    assert_eq!(r.status(), 200, "another mount is unaffected");
    assert_eq!(fault_header(&r), None);
    let r = post(proxy.url("/faults-529-claude/v1/messages"), CLAUDE).await;
    assert_eq!(r.status(), 529);
    assert_eq!(fault_header(&r).as_deref(), Some("error"));
    let body: Value = json_body(r).await;
    assert_eq!(body["error"]["type"], "overloaded_error", "{body}");
    let r = post(proxy.url("/faults-529-claude/v1/messages"), CLAUDE).await;
    assert_eq!(r.status(), 200, "one error, then answers");
}

#[tokio::test]
async fn a_reset_after_two_events_truncates_the_stream_and_the_proxy_records_it() {
    let sim = start_sim(json!({"reset_after_events": 2})).await;
    let direct = post(format!("http://{sim}/anthropic/v1/messages"), CLAUDE_STREAM).await;
    assert_eq!(direct.status(), 200);
    assert_eq!(fault_header(&direct).as_deref(), Some("reset"));
    let (text, failed) = read_stream(direct).await;
    assert!(failed, "the connection drops without a clean end");
    assert_eq!(
        text.matches("\n\n").count(),
        2,
        "exactly two events: {text}"
    );
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert!(text.contains("event: content_block_start\n"), "{text}");

    let proxy = proxy_for(sim, &[("faults-reset", "anthropic", "/anthropic")]).await;
    let r = post(proxy.url("/faults-reset/v1/messages"), CLAUDE_STREAM).await;
    assert_eq!(r.status(), 200);
    assert_eq!(fault_header(&r).as_deref(), Some("reset"));
    let (text, failed) = read_stream(r).await;
    assert!(failed, "the client sees the stream cut: {text}");
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert!(!text.contains("message_stop"), "{text}");
    // Every event that preceded the cut reaches the client (the proxy lets hyper flush before
    // it fails the body).
    assert_eq!(text.matches("\n\n").count(), 2, "{text}");

    let r = post(proxy.url("/faults-reset/v1/messages"), CLAUDE).await;
    assert_eq!(
        r.status(),
        200,
        "the proxy serves on; whole replies are not cut"
    );
    r.bytes().await.unwrap();
    eventually("both requests recorded", || proxy.recorded() == 2).await;
    let text = metrics_of(&proxy).await;
    let series = "cachet_requests_total{upstream=\"faults-reset\",model=\"claude-sonnet-4-6\",status=\"200\"}";
    assert_eq!(metric(&text, series), Some(2.0), "{text}");
}

#[tokio::test]
async fn a_reply_reset_before_its_body_still_brings_the_head_through_the_proxy() {
    // Before the fix the proxy failed the body before hyper had written the head: the client
    // saw the connection close with no response at all, not even `x-cachet-request-id`.
    let sim = start_sim(json!({"reset_after_events": 0})).await;
    let proxy = proxy_for(sim, &[("faults-reset0", "openai", "/openai")]).await;
    for _ in 0..20 {
        let r = post(proxy.url("/faults-reset0/v1/chat/completions"), CHAT).await;
        assert_eq!(r.status(), 200, "the upstream's head");
        assert_eq!(fault_header(&r).as_deref(), Some("reset"));
        assert!(r.headers().contains_key("x-cachet-request-id"));
        assert!(r.bytes().await.is_err(), "then the body fails");
    }
}

#[tokio::test]
async fn latency_delays_the_response_head() {
    let sim = start_sim(json!({"mount": "/openai", "latency_ms": 150})).await;
    let proxy = proxy_for(sim, &[("faults-latency", "openai", "/openai")]).await;
    let started = Instant::now();
    let r = post(proxy.url("/faults-latency/v1/chat/completions"), CHAT).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(r.status(), 200);
    assert_eq!(fault_header(&r).as_deref(), Some("latency"));
    let started = Instant::now();
    let r = post(format!("http://{sim}/openai/v1/chat/completions"), CHAT).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_slow_stream_spaces_its_events_out() {
    const SLOW: Duration = Duration::from_millis(25);
    let sim = start_sim(json!({"slow_stream_ms": 25})).await;
    let proxy = proxy_for(sim, &[("faults-slow", "anthropic", "/anthropic")]).await;
    let r = post(proxy.url("/faults-slow/v1/messages"), CLAUDE_STREAM).await;
    assert_eq!(fault_header(&r).as_deref(), Some("slow_stream"));
    let started = Instant::now();
    let (text, failed) = read_stream(r).await;
    assert!(!failed, "slow, not cut: {text}");
    assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    let events = u32::try_from(text.matches("\n\n").count()).unwrap();
    assert!(events > 3, "{text}");
    // The first event came with the head; every later one waited.
    assert!(started.elapsed() >= SLOW * (events - 1));

    let started = Instant::now();
    let r = post(
        format!("http://{sim}/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
        r#"{"contents":[{"role":"user","parts":[{"text":"Hi"}]}]}"#,
    )
    .await;
    let (text, failed) = read_stream(r).await;
    assert!(!failed);
    let array: Value = serde_json::from_str(&text).unwrap();
    let chunks = u32::try_from(array.as_array().unwrap().len()).unwrap();
    assert!(
        started.elapsed() >= SLOW * (chunks - 1),
        "a JSON array stream waits between chunks"
    );
}

#[tokio::test]
async fn delete_clears_and_the_controls_are_never_faulted() {
    let spec = json!({"latency_ms": 20, "errors": {"status": 500, "count": 50}});
    let sim = start_sim(spec.clone()).await;
    for _ in 0..3 {
        let r = control(sim, reqwest::Method::GET).await;
        assert_eq!(r.status(), 200);
        assert_eq!(fault_header(&r), None);
        assert_eq!(json_body(r).await, spec, "nothing taken");
    }
    let r = post(
        format!("http://{sim}{CONTROL_PATH}"),
        r#"{"errors":{"status":500,"count":50,"every":2}}"#,
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(fault_header(&r), None);
    let body: Value = json_body(r).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("unknown field `every`"), "{body}");

    let r = post(
        format!("http://{sim}/gemini/v1beta/models/gemini-2.5-flash:generateContent"),
        r#"{"contents":[{"role":"user","parts":[{"text":"Hi"}]}]}"#,
    )
    .await;
    assert_eq!(r.status(), 500);
    assert_eq!(fault_header(&r).as_deref(), Some("latency, error"));
    let body: Value = json_body(r).await;
    assert_eq!(body["error"]["status"], "INTERNAL", "{body}");

    let r = control(sim, reqwest::Method::DELETE).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_body(r).await, json!({}));
    let shown: Value = json_body(control(sim, reqwest::Method::GET).await).await;
    assert_eq!(shown, json!({}));
    let r = post(format!("http://{sim}/openai/v1/chat/completions"), CHAT).await;
    assert_eq!(r.status(), 200);
    assert_eq!(fault_header(&r), None);
}
