//! The miss explainer on the built-in workloads, through the proxy to the simulator: a
//! timestamp at the top of the system prompt (`volatile`) and a question before its document
//! (`docqa` with the rewrite off).

use cachet::explain::Reason;
use cachet::replay::workload::{Provider, Request, Scale, built_in};

use crate::common::*;

async fn proxy_to_sim(extra: &str) -> TestProxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(cachet::server::nodelay(listener), cachet::sim::router(0)).await
    });
    TestProxy::spawn(&format!(
        "{extra}\n[[upstreams]]\nname = \"anthropic\"\nbase_url = \"http://{sim}/anthropic\"\n"
    ))
    .await
}

async fn send(proxy: &TestProxy, request: &Request) {
    let mut req = client()
        .post(proxy.url(&format!("/{}{}", request.upstream, request.path)))
        .header("content-type", "application/json");
    for (name, value) in &request.headers {
        req = req.header(name, value);
    }
    let r = req.body(request.body.to_string()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
}

fn anthropic(name: &str) -> Vec<Request> {
    built_in(name, Scale::Ci)
        .unwrap()
        .into_iter()
        .find(|w| w.provider == Provider::Anthropic)
        .unwrap()
        .requests
}

#[tokio::test]
async fn volatile_misses_on_the_timestamp_where_it_starts() {
    let proxy = proxy_to_sim("").await;
    let requests = anthropic("volatile");
    for request in &requests[..3] {
        send(&proxy, request).await;
    }
    eventually("three requests recorded", || proxy.recorded() == 3).await;
    let misses = proxy.state.telemetry().recent_misses();
    assert_eq!(misses.len(), 2, "every request after the first: {misses:?}");
    let system = requests[2].body["system"].to_string();
    // The system prompt's text starts with the timestamp line.
    assert!(system.contains("Current time: 2026-11-29T"), "{system}");
    for (upstream, miss) in misses {
        assert_eq!(upstream, "anthropic");
        assert_eq!(miss.reason, Reason::TimestampInPrefix);
        assert_eq!(miss.segment, "system 0");
        assert_eq!(miss.offset, "Current time: ".len());
        assert!(
            miss.tokens >= 1000,
            "the ~1.5k tokens of stable instructions after it: {}",
            miss.tokens
        );
        assert!(
            miss.excerpt.is_none(),
            "no prompt text unless log.excerpts is on"
        );
    }
}

#[tokio::test]
async fn docqa_with_the_rewrite_off_misses_on_the_question_before_the_document() {
    let proxy = proxy_to_sim("[rewrite]\nquestion_last = false\n[log]\nexcerpts = true\n").await;
    let requests = anthropic("docqa");
    for request in &requests[..4] {
        send(&proxy, request).await;
    }
    eventually("four requests recorded", || proxy.recorded() == 4).await;
    let misses = proxy.state.telemetry().recent_misses();
    assert_eq!(misses.len(), 3, "{misses:?}");
    for (_, miss) in &misses {
        assert_eq!(miss.reason, Reason::QuestionBeforeContext);
        assert_eq!(miss.segment, "message 0 part 0");
        let excerpt = miss.excerpt.as_deref().unwrap();
        assert!(excerpt.chars().count() <= 40 && !excerpt.contains(char::is_numeric));
    }

    // With the rewrite on, the same traffic has no such miss: each new question is just that.
    let proxy = proxy_to_sim("").await;
    for request in &requests[..4] {
        send(&proxy, request).await;
    }
    eventually("four requests recorded", || proxy.recorded() == 4).await;
    let misses = proxy.state.telemetry().recent_misses();
    assert!(
        misses
            .iter()
            .all(|(_, m)| m.reason != Reason::QuestionBeforeContext),
        "{misses:?}"
    );
}
