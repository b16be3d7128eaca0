//! Errors cachet raises itself: in the caller's dialect, with `x-cachet-error`, never a panic.

use std::time::Duration;

use serde_json::Value;

use crate::common::*;

async fn error_of(r: reqwest::Response) -> (u16, String, Value) {
    let status = r.status().as_u16();
    let label = r
        .headers()
        .get("x-cachet-error")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(r.headers().contains_key("x-cachet-request-id"));
    (
        status,
        label,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

async fn post_error(
    proxy: &TestProxy,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, String, Value) {
    error_of(
        client()
            .post(proxy.url(path))
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn assert_openai_shape(body: &Value, label: &str) {
    assert!(
        body["error"]["message"].as_str().unwrap().len() > 5,
        "{body}"
    );
    assert!(body["error"]["type"].is_string(), "{body}");
    assert_eq!(body["error"]["code"], label, "{body}");
    assert!(body["error"].get("param").is_some(), "{body}");
}

fn assert_anthropic_shape(body: &Value) {
    assert_eq!(body["type"], "error", "{body}");
    assert!(
        body["error"]["type"].is_string() && body["error"]["message"].is_string(),
        "{body}"
    );
}

fn assert_gemini_shape(body: &Value, code: u16) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"].is_string() && body["error"]["status"].is_string(),
        "{body}"
    );
}

#[tokio::test]
async fn malformed_json_is_a_400_in_each_dialect_and_never_reaches_upstream() {
    let mock = MockUpstream::start(|_| Reply::json(200, b"{}")).await;
    let proxy = TestProxy::in_front_of(&mock, "").await;
    let http = client();
    let bad = "{\"model\": \"x\", \"messages\": [";

    let (status, label, body) = post_error(&proxy, "/openai/v1/chat/completions", bad).await;
    assert_eq!((status, label.as_str()), (400, "bad_json"));
    assert_openai_shape(&body, "bad_json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1"),
        "{body}"
    );

    let (status, label, body) = post_error(&proxy, "/anthropic/v1/messages", bad).await;
    assert_eq!((status, label.as_str()), (400, "bad_json"));
    assert_anthropic_shape(&body);
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let (status, _, body) = post_error(
        &proxy,
        "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
        "",
    )
    .await;
    assert_eq!(status, 400);
    assert_gemini_shape(&body, 400);
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");

    let (status, _, body) = post_error(&proxy, "/deepseek/chat/completions", "nope").await;
    assert_eq!(status, 400);
    assert_openai_shape(&body, "bad_json");

    assert!(
        mock.requests().is_empty(),
        "nothing malformed was forwarded"
    );
    // The process is still up and serving.
    let r = http
        .post(proxy.url("/openai/v1/chat/completions"))
        .body("{\"model\":\"m\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_on_modelled_routes() {
    let mock = MockUpstream::start(|_| Reply::json(200, b"{}")).await;
    let proxy = TestProxy::in_front_of(&mock, "[limits]\nmax_body_bytes = 2048\n").await;
    let http = client();
    let big = format!(
        "{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "x".repeat(4096)
    );

    let (status, label, body) = post_error(&proxy, "/anthropic/v1/messages", big.clone()).await;
    assert_eq!((status, label.as_str()), (413, "body_too_large"));
    assert_eq!(body["error"]["type"], "request_too_large");

    // Without a content-length (chunked upload) the limit still holds.
    let stream = futures_util::stream::iter(
        big.into_bytes()
            .chunks(100)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let (status, _, body) = post_error(
        &proxy,
        "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
        reqwest::Body::wrap_stream(stream),
    )
    .await;
    assert_eq!(status, 413);
    assert_gemini_shape(&body, 413);
    assert!(mock.requests().is_empty());

    // The unread rest of the body makes the connection unusable: the client is told so.
    let r = http
        .post(proxy.url("/openai/v1/chat/completions"))
        .body("x".repeat(4096))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["connection"], "close");

    // Exactly at the limit is fine.
    let filler = 2048 - "{\"model\":\"m\",\"pad\":\"\"}".len();
    let at_limit = format!("{{\"model\":\"m\",\"pad\":\"{}\"}}", "y".repeat(filler));
    assert_eq!(at_limit.len(), 2048);
    let r = http
        .post(proxy.url("/openai/v1/chat/completions"))
        .body(at_limit)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn unknown_mounts_answer_404_in_the_dialect_their_path_suggests() {
    let mock = MockUpstream::start(|_| Reply::json(200, b"{}")).await;
    let proxy = TestProxy::in_front_of(&mock, "").await;

    let (status, label, body) = post_error(&proxy, "/claude/v1/messages", "{}").await;
    assert_eq!((status, label.as_str()), (404, "unknown_mount"));
    assert_anthropic_shape(&body);
    assert_eq!(body["error"]["type"], "not_found_error");

    let (status, _, body) = post_error(
        &proxy,
        "/google/v1beta/models/gemini-2.5-flash:generateContent",
        "{}",
    )
    .await;
    assert_eq!(status, 404);
    assert_gemini_shape(&body, 404);
    assert_eq!(body["error"]["status"], "NOT_FOUND");

    let (status, _, body) =
        error_of(client().get(proxy.url("/v1/models")).send().await.unwrap()).await;
    assert_eq!(status, 404);
    assert_openai_shape(&body, "unknown_mount");

    // A mount is matched by whole segments: /openaix is not /openai.
    let (status, _, _) = error_of(
        client()
            .get(proxy.url("/openaix/v1/models"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = TestProxy::spawn(&format!(
        "[[upstreams]]\nname = \"anthropic\"\nbase_url = \"http://127.0.0.1:{port}\"\n[[upstreams]]\nname = \"openai\"\nbase_url = \"http://127.0.0.1:{port}\"\n"
    ))
    .await;
    let (status, label, body) = post_error(
        &proxy,
        "/anthropic/v1/messages",
        "{\"model\":\"m\",\"max_tokens\":1,\"messages\":[]}",
    )
    .await;
    assert_eq!((status, label.as_str()), (502, "upstream_unreachable"));
    assert_anthropic_shape(&body);
    let (status, label, body) = error_of(
        client()
            .get(proxy.url("/openai/v1/models"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, label.as_str()), (502, "upstream_unreachable"));
    assert_openai_shape(&body, "upstream_unreachable");
    assert!(
        !body.to_string().contains("sk-"),
        "no credential in the message"
    );
}

#[tokio::test]
async fn no_first_byte_within_the_timeout_is_a_504() {
    let mock = MockUpstream::start(|_| Reply {
        head_delay: Duration::from_secs(3),
        ..Reply::json(200, b"{}")
    })
    .await;
    let proxy = TestProxy::in_front_of(&mock, "[timeouts]\nfirst_byte = \"300ms\"\n").await;
    let (status, label, body) = error_of(
        client()
            .post(proxy.url("/gemini/v1beta/models/gemini-2.5-flash:generateContent"))
            .body("{\"contents\":[]}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, label.as_str()), (504, "upstream_timeout"));
    assert_gemini_shape(&body, 504);
    assert_eq!(body["error"]["status"], "DEADLINE_EXCEEDED");
}
