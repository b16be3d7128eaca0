//! Single-flight for cold prefixes: concurrent requests that would each write the same new
//! prefix wait for the first one's response to begin, so that one writes and the others read.
//!
//! The upstream is a mock of Anthropic's rule "a cache entry only becomes available after the
//! first response begins": a request that carries a breakpoint writes unless an earlier
//! response holding the write has begun, and every write takes `HEAD` to begin.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::common::*;

/// A mock upstream whose cache entry is readable once the first write's response has begun.
async fn anthropic_mock(head: Duration) -> MockUpstream {
    let readable_from: Arc<Mutex<Option<Instant>>> = Arc::default();
    MockUpstream::start(move |r| {
        let marked = String::from_utf8_lossy(&r.body).contains("cache_control");
        let now = Instant::now();
        let mut readable = readable_from.lock().unwrap();
        let (write, read) = match *readable {
            Some(at) if marked && now >= at => (0, 2500),
            _ if marked => {
                readable.get_or_insert(now + head);
                (2500, 0)
            }
            _ => (0, 0),
        };
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-6", "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 10,
            "cache_creation_input_tokens": write, "cache_read_input_tokens": read,
            "output_tokens": 1}});
        Reply {
            head_delay: if write > 0 { head } else { Duration::ZERO },
            ..Reply::json(200, body.to_string().as_bytes())
        }
    })
    .await
}

/// (cache write, cache read) tokens of each of `n` concurrent requests sharing a long system
/// prompt, each with its own question.
async fn concurrent(proxy: &TestProxy, n: usize) -> Vec<(u64, u64)> {
    let system = "You are the support assistant of a hardware store; answer briefly and cite \
                  the policy section you rely on. "
        .repeat(120);
    let sends = (0..n).map(|i| {
        let body = json!({
            "model": "claude-sonnet-4-6",
            "max_tokens": 20,
            "system": system,
            "messages": [{"role": "user", "content": format!("Question number {i}?")}],
        });
        let url = proxy.url("/anthropic/v1/messages");
        async move {
            let r = client()
                .post(url)
                .header("x-api-key", "k")
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            let usage = &body["usage"];
            (
                usage["cache_creation_input_tokens"].as_u64().unwrap(),
                usage["cache_read_input_tokens"].as_u64().unwrap(),
            )
        }
    });
    join_all(sends).await
}

#[tokio::test]
async fn concurrent_requests_on_a_new_prefix_write_it_once() {
    let mock = anthropic_mock(Duration::from_millis(300)).await;
    let proxy = TestProxy::in_front_of(&mock, "").await;
    let usage = concurrent(&proxy, 4).await;
    assert_eq!(
        usage.iter().filter(|(w, _)| *w > 0).count(),
        1,
        "one writer: {usage:?}"
    );
    assert_eq!(
        usage.iter().filter(|(_, r)| *r > 0).count(),
        3,
        "the others read: {usage:?}"
    );
    assert_eq!(mock.requests().len(), 4, "every request went upstream once");
}

#[tokio::test]
async fn without_single_flight_each_concurrent_request_writes() {
    let mock = anthropic_mock(Duration::from_millis(300)).await;
    let proxy = TestProxy::in_front_of(&mock, "").await;
    // The same proxy config but for the anthropic upstream's strategies.
    let proxy_off = TestProxy::spawn(&format!(
        "[[upstreams]]\nname = \"anthropic\"\nbase_url = \"{}/anthropic\"\nstrategies = [\"cache_control\"]\n",
        mock.url()
    ))
    .await;
    drop(proxy);
    let usage = concurrent(&proxy_off, 4).await;
    assert!(usage.iter().all(|(w, r)| *w > 0 && *r == 0), "{usage:?}");
}

#[tokio::test]
async fn a_leader_slower_than_max_wait_is_not_waited_for() {
    let mock = anthropic_mock(Duration::from_millis(800)).await;
    let proxy = TestProxy::in_front_of(&mock, "[coalesce]\nmax_wait = \"100ms\"\n").await;
    let started = Instant::now();
    let usage = concurrent(&proxy, 3).await;
    // Every request succeeded; the followers gave up after 100 ms and wrote too.
    assert!(usage.iter().all(|(w, _)| *w > 0), "{usage:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}
