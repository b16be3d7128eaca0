use std::convert::Infallible;
use std::time::Instant;

use axum::http::StatusCode;
use http_body_util::BodyExt;
use serde_json::json;

use super::*;
use crate::sim::test_support::{call, json_of};

fn faults(json: serde_json::Value) -> Faults {
    Faults::from_json(&json.to_string()).unwrap()
}

#[test]
fn a_full_spec_parses_and_round_trips() {
    let spec = json!({
        "mount": "/anthropic",
        "latency_ms": 250,
        "errors": {"status": 429, "count": 3, "retry_after_s": 2},
        "reset_after_events": 2,
        "slow_stream_ms": 100,
    });
    let parsed = faults(spec.clone());
    assert_eq!(
        parsed.errors,
        Some(ErrorFault {
            status: 429,
            count: 3,
            retry_after_s: Some(2)
        })
    );
    assert_eq!(serde_json::to_value(&parsed).unwrap(), spec);
    assert_eq!(Faults::from_json("{}").unwrap(), Faults::default());
    assert_eq!(serde_json::to_value(Faults::default()).unwrap(), json!({}));
}

#[test]
fn bad_specs_say_what_is_wrong() {
    let err = |text: &str| Faults::from_json(text).unwrap_err();
    assert!(err(r#"{"latency":1}"#).contains("unknown field `latency`"));
    let e = err(r#"{"errors":{"status":429,"count":1,"retry":1}}"#);
    assert!(e.starts_with("errors.retry: unknown field `retry`"), "{e}");
    let e = err(r#"{"errors":{"status":429}}"#);
    assert!(e.contains("missing field `count`"), "{e}");
    let e = err(r#"{"latency_ms":"slow"}"#);
    assert!(e.starts_with("latency_ms: invalid type"), "{e}");
    let e = err(r#"{"errors":{"status":200,"count":1}}"#);
    assert!(e.contains("not an error status"), "{e}");
    assert!(err(r#"{"mount":"anthropic"}"#).contains("must start with '/'"));
    assert!(err(r#"{} {}"#).contains("trailing characters"));
    assert!(err("[1]").contains("invalid type"));
}

#[test]
fn mounts_are_matched_by_whole_segments() {
    assert_eq!(
        faults(json!({"mount": "/vllm/"})).mount.as_deref(),
        Some("/vllm")
    );
    assert_eq!(faults(json!({"mount": "/"})).mount, None);
    assert!(covers(None, "/anything"));
    assert!(covers(Some("/vllm"), "/vllm/0/v1/models"));
    assert!(covers(Some("/openai"), "/openai"));
    assert!(!covers(Some("/openai"), "/openai2/v1/models"));
    assert!(!covers(Some("/anthropic"), "/openai/v1/chat/completions"));
}

#[test]
fn the_argument_is_json_or_a_file() {
    let path = std::env::temp_dir().join(format!("cachet-faults-unit-{}.json", std::process::id()));
    std::fs::write(&path, r#"{"latency_ms": 5}"#).unwrap();
    let from_file = Faults::from_arg(&format!("@{}", path.display()));
    std::fs::remove_file(&path).unwrap();
    assert_eq!(from_file.unwrap().latency_ms, Some(5));
    assert_eq!(
        Faults::from_arg(r#"{"latency_ms": 5}"#).unwrap().latency_ms,
        Some(5)
    );
    let missing = Faults::from_arg("@/nonexistent/faults.json").unwrap_err();
    assert!(
        missing.starts_with("cannot read faults from /nonexistent"),
        "{missing}"
    );
}

#[test]
fn errors_count_down_for_covered_requests_only() {
    let mut f = faults(json!({"mount": "/anthropic", "errors": {"status": 529, "count": 2}}));
    assert_eq!(f.plan("/openai/v1/chat/completions"), None);
    let status = |plan: Option<Plan>| plan.and_then(|p| p.error).map(|e| e.status);
    assert_eq!(status(f.plan("/anthropic/v1/messages")), Some(529));
    assert_eq!(f.errors.map(|e| e.count), Some(1));
    assert_eq!(status(f.plan("/anthropic/v1/messages")), Some(529));
    assert_eq!(f.plan("/anthropic/v1/messages"), None, "count used up");
    assert_eq!(f.errors.map(|e| e.count), Some(0));
}

#[test]
fn other_faults_persist() {
    let mut f = faults(json!({"latency_ms": 7, "slow_stream_ms": 3}));
    for _ in 0..3 {
        let plan = f.plan("/gemini/v1/models").unwrap();
        assert_eq!(plan.latency, Some(Duration::from_millis(7)));
        assert_eq!(plan.stream.slow, Some(Duration::from_millis(3)));
        assert_eq!(plan.error, None);
    }
}

fn sse() -> Framing {
    Framing::Sse(SseBoundaries::default())
}

fn texts(pieces: &[Piece]) -> Vec<(&str, bool)> {
    pieces
        .iter()
        .map(|p| (std::str::from_utf8(&p.bytes).unwrap(), p.ends_event))
        .collect()
}

#[test]
fn a_chunk_is_cut_after_each_event_it_holds() {
    let mut f = sse();
    let pieces = f.split(Bytes::from("event: a\ndata: 1\n\ndata: 2\n\ndata: 3"));
    assert_eq!(
        texts(&pieces),
        [
            ("event: a\ndata: 1\n\n", true),
            ("data: 2\n\n", true),
            ("data: 3", false)
        ]
    );
    let pieces = f.split(Bytes::from("\n\n"));
    assert_eq!(texts(&pieces), [("\n\n", true)]);
}

#[test]
fn an_event_may_span_chunks_and_end_in_crlf() {
    let mut f = sse();
    let mut ends = Vec::new();
    for chunk in ["data: 1\r", "\n\r", "\n", "data", ": 2\r\n", "\r\n"] {
        ends.extend(
            texts(&f.split(Bytes::from(chunk)))
                .into_iter()
                .map(|(t, e)| (t.to_owned(), e)),
        );
    }
    let ended: Vec<&str> = ends
        .iter()
        .filter(|(_, e)| *e)
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(ended, ["\n", "\r\n"], "the bytes that close events 1 and 2");
}

#[test]
fn blank_lines_between_events_end_nothing() {
    let mut f = sse();
    let pieces = f.split(Bytes::from("\n\ndata: 1\n\n\n\ndata: 2\n\n"));
    assert_eq!(
        texts(&pieces),
        [("\n\ndata: 1\n\n", true), ("\n\ndata: 2\n\n", true)]
    );
}

#[test]
fn without_sse_every_chunk_is_an_event() {
    let pieces = Framing::Chunks.split(Bytes::from("[{\"a\":1}\n\n"));
    assert_eq!(texts(&pieces), [("[{\"a\":1}\n\n", true)]);
}

fn streamed(content_type: &'static str, chunks: &[&'static str]) -> Response {
    let chunks: Vec<(Bytes, u64)> = chunks
        .iter()
        .map(|c| (Bytes::from_static(c.as_bytes()), 0))
        .collect();
    let sim = std::sync::Arc::new(crate::sim::Sim::new(
        std::sync::Arc::new(crate::clock::Clock::system()),
        crate::sim::Settings::default(),
        0,
    ));
    let meter = super::super::wire::Meter {
        sim,
        key: String::new(),
        model: String::new(),
    };
    super::super::wire::stream_response(content_type, chunks, meter)
}

/// The data frames a body yields, and whether it failed instead of ending.
async fn drain(res: Response) -> (Vec<Bytes>, bool) {
    let mut body = res.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => frames.extend(frame.into_data().ok()),
            Err(_) => return (frames, true),
        }
    }
    (frames, false)
}

fn faults_for_stream(reset_after: Option<u64>, slow_ms: Option<u64>) -> StreamFaults {
    StreamFaults {
        reset_after,
        slow: slow_ms.map(Duration::from_millis),
    }
}

#[tokio::test]
async fn a_reset_comes_right_after_the_kth_event() {
    let res = streamed(
        SSE,
        &["data: 1\n\nda", "ta: 2\n", "\ndata: 3\n\ndata: 4\n\n"],
    );
    let framing = framing_of(&res).unwrap();
    let res = shape(res, framing, faults_for_stream(Some(2), None));
    let (frames, failed) = drain(res).await;
    assert!(failed);
    assert_eq!(frames.concat(), b"data: 1\n\ndata: 2\n\n");
}

#[tokio::test]
async fn a_stream_no_longer_than_k_events_ends_cleanly() {
    let res = streamed(SSE, &["data: 1\n\n", "data: 2\n\n"]);
    let res = shape(res, sse(), faults_for_stream(Some(2), None));
    let (frames, failed) = drain(res).await;
    assert!(!failed);
    assert_eq!(frames.concat(), b"data: 1\n\ndata: 2\n\n");
}

#[tokio::test]
async fn a_json_array_stream_resets_after_k_chunks() {
    let res = streamed(super::super::wire::JSON, &["[{}", ",{}", ",{}]"]);
    assert_eq!(framing_of(&res), Some(Framing::Chunks));
    let res = shape(res, Framing::Chunks, faults_for_stream(Some(0), None));
    let (frames, failed) = drain(res).await;
    assert!(failed);
    assert!(frames.is_empty());
}

#[tokio::test]
async fn a_slow_stream_waits_before_every_event_but_the_first() {
    let res = streamed(SSE, &["data: 1\n\ndata: 2\n\ndata: 3\n\n"]);
    let started = Instant::now();
    let res = shape(res, sse(), faults_for_stream(None, Some(30)));
    let (frames, failed) = drain(res).await;
    assert!(!failed);
    assert_eq!(frames.len(), 3, "one frame per event");
    assert!(started.elapsed() >= Duration::from_millis(60));
}

#[test]
fn whole_bodies_are_not_streams() {
    let res = crate::sim::wire::ok_json(&json!({}));
    assert_eq!(framing_of(&res), None);
    let stream = futures_util::stream::iter([Ok::<_, Infallible>(Bytes::from("x"))]);
    let res = Response::new(Body::from_stream(stream));
    assert_eq!(framing_of(&res), Some(Framing::Chunks));
}

const MESSAGES: &str = "/anthropic/v1/messages";
const ANTHROPIC_REQUEST: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_REQUEST: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn errors_come_in_the_mounts_dialect() {
    let app = crate::sim::router_with(
        0,
        crate::sim::Settings::default(),
        faults(json!({"errors": {"status": 503, "count": 3, "retry_after_s": 4}})),
    );
    let res = call(&app, "POST", MESSAGES, &[], ANTHROPIC_REQUEST).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.header(FAULT_HEADER).as_deref(), Some("error"));
    assert_eq!(res.header("retry-after").as_deref(), Some("4"));
    assert_eq!(json_of(&res)["error"]["type"], "api_error");
    let res = call(
        &app,
        "POST",
        "/gemini/v1beta/models/g:generateContent",
        &[],
        "{}",
    )
    .await;
    assert_eq!(json_of(&res)["error"]["status"], "UNAVAILABLE");
    let res = call(
        &app,
        "POST",
        "/deepseek/chat/completions",
        &[],
        CHAT_REQUEST,
    )
    .await;
    assert_eq!(json_of(&res)["error"]["type"], "server_error");
    let res = call(
        &app,
        "POST",
        "/deepseek/chat/completions",
        &[],
        CHAT_REQUEST,
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "three errors, then answers");
    assert_eq!(res.header(FAULT_HEADER), None);
}

#[tokio::test]
async fn the_controls_replace_show_and_clear() {
    let app = crate::sim::router(0);
    let spec =
        json!({"mount": "/anthropic", "errors": {"status": 529, "count": 1}, "latency_ms": 1});
    let res = call(&app, "POST", CONTROL_PATH, &[], &spec.to_string()).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(json_of(&res), spec);
    let res = call(&app, "POST", MESSAGES, &[], ANTHROPIC_REQUEST).await;
    assert_eq!(res.status.as_u16(), 529);
    assert_eq!(res.header(FAULT_HEADER).as_deref(), Some("latency, error"));
    assert_eq!(json_of(&res)["error"]["type"], "overloaded_error");
    let shown = json_of(&call(&app, "GET", CONTROL_PATH, &[], "").await);
    assert_eq!(shown["errors"]["count"], 0, "the count went down");
    let res = call(&app, "DELETE", CONTROL_PATH, &[], "").await;
    assert_eq!(json_of(&res), json!({}));
    let res = call(&app, "POST", MESSAGES, &[], ANTHROPIC_REQUEST).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header(FAULT_HEADER), None);
}

#[tokio::test]
async fn bad_control_bodies_are_a_400_and_change_nothing() {
    let app = crate::sim::router_with(
        0,
        crate::sim::Settings::default(),
        faults(json!({"latency_ms": 1})),
    );
    for body in ["{", r#"{"latency_ms":1,"jitter_ms":2}"#, "[1]"] {
        let res = call(&app, "POST", CONTROL_PATH, &[], body).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(res.header(FAULT_HEADER), None);
        let err = json_of(&res);
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("invalid faults: "), "{message}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
    let res = call(&app, "POST", CONTROL_PATH, &[], r#"{"jitter_ms":2}"#).await;
    assert!(
        json_of(&res)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `jitter_ms`")
    );
    let shown = json_of(&call(&app, "GET", CONTROL_PATH, &[], "").await);
    assert_eq!(shown, json!({"latency_ms": 1}));
}

#[tokio::test]
async fn stream_faults_leave_whole_replies_alone() {
    let app = crate::sim::router_with(
        0,
        crate::sim::Settings::default(),
        faults(json!({"reset_after_events": 0})),
    );
    let res = call(&app, "POST", MESSAGES, &[], ANTHROPIC_REQUEST).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header(FAULT_HEADER), None);
    assert_eq!(json_of(&res)["type"], "message");
}
