//! `/metrics`: the contract's names, bounded labels, exact cost totals.

use crate::common::*;

#[tokio::test]
async fn requests_tokens_cost_and_overhead_are_exported() {
    let mock = MockUpstream::start(|_| Reply::json(200, fixture!("anthropic_messages.json"))).await;
    let url = mock.url();
    // A unique upstream name: the Prometheus recorder is process-wide.
    let proxy = TestProxy::spawn(&format!(
        "[[upstreams]]\nname = \"metrics-claude\"\nprovider = \"anthropic\"\nbase_url = \"{url}\"\n"
    ))
    .await;
    let http = client();
    for model in [
        "claude-sonnet-4-6",
        "claude-sonnet-4-6-20260101",
        "some-unknown-model",
    ] {
        let r = http
            .post(proxy.url("/metrics-claude/v1/messages"))
            .body(format!(
                "{{\"model\":\"{model}\",\"max_tokens\":5,\"messages\":[]}}"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let r = http
        .post(proxy.url("/metrics-claude/v1/messages"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let mut text = String::new();
    eventually("three requests recorded", || proxy.recorded() == 4).await;
    text.push_str(&metrics_of(&proxy).await);
    let m = |prefix: &str| metric(&text, prefix);
    assert_eq!(
        m(
            "cachet_requests_total{upstream=\"metrics-claude\",model=\"claude-sonnet-4-6\",status=\"200\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        m("cachet_requests_total{upstream=\"metrics-claude\",model=\"other\",status=\"200\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        m("cachet_requests_total{upstream=\"metrics-claude\",model=\"other\",status=\"400\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        m(
            "cachet_tokens_total{upstream=\"metrics-claude\",model=\"claude-sonnet-4-6\",kind=\"cache_read\"}"
        ),
        Some(200_000.0)
    );
    assert_eq!(
        m(
            "cachet_tokens_total{upstream=\"metrics-claude\",model=\"claude-sonnet-4-6\",kind=\"cache_write\"}"
        ),
        Some(496.0)
    );
    assert_eq!(
        m(
            "cachet_tokens_total{upstream=\"metrics-claude\",model=\"claude-sonnet-4-6\",kind=\"input_uncached\"}"
        ),
        Some(100.0)
    );
    assert_eq!(
        m(
            "cachet_tokens_total{upstream=\"metrics-claude\",model=\"claude-sonnet-4-6\",kind=\"output\"}"
        ),
        Some(1006.0)
    );
    // Two requests of 38_850_000 nano-USD each (hand-computed in the pricing tests).
    assert!(text.contains("cachet_cost_usd_total{upstream=\"metrics-claude\",model=\"claude-sonnet-4-6\"} 0.077700000"), "{text}");
    assert!(text.contains("cachet_cost_uncached_usd_total{upstream=\"metrics-claude\",model=\"claude-sonnet-4-6\"} 0.616878000"), "{text}");
    assert!(
        text.contains(
            "cachet_unpriced_requests_total{upstream=\"metrics-claude\",model=\"other\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("cachet_overhead_seconds_bucket"), "{text}");
    assert!(
        text.contains("cachet_upstream_ttfb_seconds_bucket{upstream=\"metrics-claude\""),
        "{text}"
    );
    assert!(!text.contains("sk-"), "no credential in metrics");
}

#[tokio::test]
async fn an_admin_token_guards_metrics_but_not_probes() {
    let mock = MockUpstream::start(|_| Reply::json(200, b"{}")).await;
    let proxy = TestProxy::in_front_of(&mock, "[admin]\ntoken = \"s3cret\"\n").await;
    let http = client();
    let r = http.get(proxy.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-cachet-error"], "unauthorized");
    assert_eq!(
        http.get(proxy.url("/metrics"))
            .bearer_auth("wrong!")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        http.get(proxy.url("/metrics"))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(proxy.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
