//! The proxy in front of the real simulator: every dialect end to end, usage agreeing with
//! what the simulator reported.

use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn every_dialect_through_the_proxy_to_the_simulator() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(cachet::server::nodelay(listener), cachet::sim::router(1)).await
    });
    let proxy = TestProxy::spawn(&format!(
        r#"
[[upstreams]]
name = "openai"
base_url = "http://{sim}/openai"
[[upstreams]]
name = "anthropic"
base_url = "http://{sim}/anthropic"
[[upstreams]]
name = "gemini"
base_url = "http://{sim}/gemini"
[[upstreams]]
name = "deepseek"
base_url = "http://{sim}/deepseek"
[[upstreams]]
name = "vllm"
provider = "openai-compatible"
base_url = "http://{sim}/vllm/0"
"#
    ))
    .await;
    let http = client();
    let post = |path: &str, body: &str| {
        http.post(proxy.url(path))
            .header("x-api-key", "k")
            .header("authorization", "Bearer k")
            .body(body.to_owned())
            .send()
    };

    let r = post(
        "/openai/v1/chat/completions",
        r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"Hello"}]}"#,
    )
    .await
    .unwrap();
    let r: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let text = r["choices"][0]["message"]["content"].as_str().unwrap();
    let n = r["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        text,
        format!("cachet-sim reply from gpt-4.1 to {n} prompt tokens.")
    );

    let stream = post(
        "/openai/v1/chat/completions",
        r#"{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"Hello"}]}"#,
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        !stream.contains("\"choices\":[]"),
        "the injected usage chunk is stripped"
    );
    assert!(stream.ends_with("data: [DONE]\n\n"));

    for (path, body) in [
        (
            "/openai/v1/responses",
            r#"{"model":"gpt-4.1","input":"Hello","stream":true}"#,
        ),
        (
            "/anthropic/v1/messages",
            r#"{"model":"claude-sonnet-4-6","max_tokens":50,"messages":[{"role":"user","content":"Hello"}]}"#,
        ),
        (
            "/anthropic/v1/messages",
            r#"{"model":"claude-sonnet-4-6","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"Hello"}]}"#,
        ),
        (
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
            r#"{"contents":[{"role":"user","parts":[{"text":"Hello"}]}]}"#,
        ),
        (
            "/gemini/v1/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            r#"{"contents":[{"role":"user","parts":[{"text":"Hello"}]}]}"#,
        ),
        (
            "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            r#"{"contents":[{"role":"user","parts":[{"text":"Hello"}]}]}"#,
        ),
        (
            "/deepseek/chat/completions",
            r#"{"model":"deepseek-chat","stream":true,"messages":[{"role":"user","content":"Hello"}]}"#,
        ),
        (
            "/vllm/v1/chat/completions",
            r#"{"model":"llama","messages":[{"role":"user","content":"Hello"}]}"#,
        ),
    ] {
        let r = post(path, body).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let text = r.text().await.unwrap();
        assert!(
            text.contains("cachet-sim") || text.contains("\"cachet-sim \""),
            "{path}: {text}"
        );
    }
    eventually("ten requests recorded", || proxy.recorded() == 10).await;
    for ((upstream, model), t) in proxy.state.telemetry().totals() {
        assert!(
            t.usage.input_uncached > 0,
            "{upstream}/{model}: usage read for every request"
        );
        assert_eq!(
            t.usage.output,
            8 * t.requests,
            "{upstream}/{model}: 8 words per reply"
        );
    }
}
