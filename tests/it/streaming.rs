//! Streams: unbuffered, tapped for usage, cancelled with the client, and the one sanctioned
//! change (dropping the usage chunk cachet asked for).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::Notify;

use crate::common::*;

const CHAT_STREAM: &str =
    "{\"model\":\"gpt-4.1\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}";

fn totals_for(proxy: &TestProxy, upstream: &str) -> cachet::telemetry::Totals {
    proxy
        .state
        .telemetry()
        .totals()
        .into_iter()
        .filter(|((u, _), _)| u == upstream)
        .map(|(_, t)| t)
        .next()
        .unwrap_or_default()
}

#[tokio::test]
async fn usage_is_requested_for_chat_streams_and_its_chunk_removed() {
    let mock = MockUpstream::start(|_| Reply::sse(fixture!("openai_chat.sse"), 40)).await;
    let proxy = TestProxy::in_front_of(&mock, "").await;
    let r = client()
        .post(proxy.url("/openai/v1/chat/completions"))
        .body(CHAT_STREAM)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cachet-rewrites"], "include_usage");
    assert!(!r.headers().contains_key("content-length"));
    let body = r.text().await.unwrap();

    let sent: Value = serde_json::from_slice(&mock.last().body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(
        serde_json::to_string(&sent).unwrap(),
        "{\"model\":\"gpt-4.1\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"stream_options\":{\"include_usage\":true}}",
        "only the one field is added, key order kept"
    );

    let original = std::str::from_utf8(fixture!("openai_chat.sse")).unwrap();
    let events: Vec<&str> = original.split_inclusive("\n\n").collect();
    let expected: String = events
        .iter()
        .filter(|e| !e.contains("\"choices\":[]"))
        .copied()
        .collect();
    assert_eq!(body, expected, "every other byte is the upstream's");
    assert!(body.ends_with("data: [DONE]\n\n"));

    eventually("usage recorded", || {
        totals_for(&proxy, "openai").usage.output == 4
    })
    .await;
    let t = totals_for(&proxy, "openai");
    assert_eq!((t.usage.input_uncached, t.usage.cache_read), (86, 1920));
}

#[tokio::test]
async fn a_client_that_asked_for_usage_gets_the_stream_as_sent() {
    let mock = MockUpstream::start(|_| Reply::sse(fixture!("openai_chat.sse"), 40)).await;
    let proxy = TestProxy::in_front_of(&mock, "").await;
    let request = "{\"model\":\"gpt-4.1\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[]}";
    let r = client()
        .post(proxy.url("/openai/v1/chat/completions"))
        .body(request)
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("x-cachet-rewrites"));
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        fixture!("openai_chat.sse")
    );
    assert_eq!(mock.last().body.as_ref(), request.as_bytes());
}

#[tokio::test]
async fn usage_is_read_from_streams_split_into_tiny_chunks_in_every_dialect() {
    let mock = MockUpstream::start(|r| {
        let body = if r.path_and_query.starts_with("/anthropic") {
            fixture!("anthropic_messages.sse")
        } else if r.path_and_query.contains("alt=sse") {
            fixture!("gemini_stream.sse")
        } else if r.path_and_query.starts_with("/gemini") {
            // Without alt=sse Gemini streams a JSON array, as application/json.
            let mut reply = Reply::sse(fixture!("gemini_stream.json"), 3);
            reply.headers = vec![("content-type", "application/json; charset=UTF-8".into())];
            return reply;
        } else if r.path_and_query.starts_with("/deepseek") {
            fixture!("deepseek_chat.sse")
        } else {
            fixture!("openai_responses.sse")
        };
        Reply::sse(body, 3)
    })
    .await;
    let proxy = TestProxy::in_front_of(&mock, "").await;
    let http = client();
    let calls = [
        (
            "/anthropic/v1/messages",
            "{\"model\":\"claude-sonnet-4-6\",\"max_tokens\":9,\"stream\":true,\"messages\":[]}",
            fixture!("anthropic_messages.sse"),
        ),
        (
            "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            "{\"contents\":[]}",
            fixture!("gemini_stream.sse"),
        ),
        (
            "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            "{\"contents\":[]}",
            fixture!("gemini_stream.json"),
        ),
        (
            "/deepseek/v1/chat/completions",
            "{\"model\":\"deepseek-chat\",\"stream\":true,\"messages\":[]}",
            fixture!("deepseek_chat.sse"),
        ),
        (
            "/openai/v1/responses",
            "{\"model\":\"gpt-4.1\",\"stream\":true,\"input\":\"x\"}",
            fixture!("openai_responses.sse"),
        ),
    ];
    for (path, request, expected) in calls {
        let r = http
            .post(proxy.url(path))
            .body(request)
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap().as_ref(), expected, "{path}");
    }
    eventually("all five recorded", || {
        ["anthropic", "gemini", "deepseek", "openai"]
            .iter()
            .map(|u| totals_for(&proxy, u).requests)
            .sum::<u64>()
            == 5
    })
    .await;
    let a = totals_for(&proxy, "anthropic").usage;
    assert_eq!(
        (
            a.input_uncached,
            a.cache_read,
            a.cache_write_5m,
            a.cache_write_1h,
            a.output
        ),
        (50, 100_000, 148, 100, 503)
    );
    let g = totals_for(&proxy, "gemini").usage;
    assert_eq!(
        (g.input_uncached, g.cache_read, g.output),
        (4000, 16_000, 100),
        "two Gemini streams, 2000/8000/50 each"
    );
    let d = totals_for(&proxy, "deepseek").usage;
    assert_eq!((d.input_uncached, d.cache_read, d.output), (176, 1024, 50));
    let o = totals_for(&proxy, "openai").usage;
    assert_eq!((o.input_uncached, o.cache_read, o.output), (220, 1280, 1));
    // claude-sonnet-4-6 is fully priced: the cost is exact (see pricing tests for the sum).
    assert_eq!(totals_for(&proxy, "anthropic").cost_nusd, 38_850_000);
}

#[tokio::test]
async fn events_reach_the_client_before_the_upstream_has_finished() {
    let release = Arc::new(Notify::new());
    let hold = release.clone();
    let mock = MockUpstream::start(move |_| Reply {
        hold_last: Some(hold.clone()),
        ..Reply::sse(fixture!("anthropic_messages.sse"), 200)
    })
    .await;
    let proxy = TestProxy::in_front_of(&mock, "").await;
    let r = anthropic_stream(&proxy).await;
    let mut stream = r.bytes_stream();
    // The upstream holds back its last chunk until we have seen the first one: a proxy that
    // buffered the stream would never deliver it.
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("first chunk while upstream is mid-stream");
    assert!(first.unwrap().unwrap().starts_with(b"event: message_start"));
    release.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert!(rest.ends_with(b"data: {\"type\":\"message_stop\"}\n\n"));
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_upstream_request() {
    let mock = MockUpstream::start(|_| {
        let body = fixture!("anthropic_messages.sse");
        // Send the first two events, then hang as a slow generation would.
        let cut = body
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w == b"\n\n")
            .nth(1)
            .unwrap()
            .0
            + 2;
        Reply {
            hang: true,
            ..Reply::sse(&body[..cut], cut)
        }
    })
    .await;
    let proxy = TestProxy::in_front_of(&mock, "").await;
    let r = anthropic_stream(&proxy).await;
    let mut stream = r.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"event: message_start"));
    drop(stream);
    eventually("upstream stream dropped", || {
        mock.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    // Recorded once, with the input side that message_start reported before the hang-up.
    eventually("cancelled request recorded", || {
        totals_for(&proxy, "anthropic").requests == 1
    })
    .await;
    let t = totals_for(&proxy, "anthropic");
    assert_eq!(
        (t.usage.input_uncached, t.usage.cache_read, t.usage.output),
        (50, 100_000, 1)
    );
}

#[tokio::test]
async fn a_client_that_gives_up_before_the_answer_is_still_recorded_once() {
    let mock = MockUpstream::start(|_| Reply {
        head_delay: Duration::from_secs(2),
        ..Reply::json(200, fixture!("anthropic_messages.json"))
    })
    .await;
    let proxy = TestProxy::in_front_of(&mock, "").await;
    let gave_up = client()
        .post(proxy.url("/anthropic/v1/messages"))
        .timeout(Duration::from_millis(200))
        .body("{\"model\":\"claude-sonnet-4-6\",\"max_tokens\":9,\"messages\":[]}")
        .send()
        .await;
    assert!(gave_up.unwrap_err().is_timeout());
    eventually("abandoned request recorded", || {
        totals_for(&proxy, "anthropic").requests == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let t = totals_for(&proxy, "anthropic");
    assert_eq!(
        t.requests, 1,
        "recorded once, not again when the upstream answers"
    );
    assert_eq!(t.usage.input_uncached, 0, "no usage was seen");
}

#[tokio::test]
async fn an_upstream_silent_past_the_idle_timeout_ends_the_stream() {
    let mock = MockUpstream::start(|_| {
        let body = fixture!("anthropic_messages.sse");
        let cut = body.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
        Reply {
            hang: true,
            ..Reply::sse(&body[..cut], cut)
        }
    })
    .await;
    let proxy = TestProxy::in_front_of(&mock, "[timeouts]\nidle = \"300ms\"\n").await;
    let r = anthropic_stream(&proxy).await;
    let mut stream = r.bytes_stream();
    assert!(
        stream
            .next()
            .await
            .unwrap()
            .unwrap()
            .starts_with(b"event: message_start")
    );
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the stream ends");
    assert!(
        matches!(end, Some(Err(_)) | None),
        "cut short, not completed: {end:?}"
    );
    eventually("upstream released", || {
        mock.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("recorded once", || {
        totals_for(&proxy, "anthropic").requests == 1
    })
    .await;
    assert_eq!(
        totals_for(&proxy, "anthropic").usage.input_uncached,
        50,
        "usage seen before the silence"
    );
}
