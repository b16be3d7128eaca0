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
        [ErrorFault {
            status: 429,
            count: Some(3),
            probability: None,
            retry_after_s: Some(2)
        }]
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
    assert!(e.contains("errors: set count, probability or both"), "{e}");
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
    assert_eq!(f.plan("/openai/v1/chat/completions", never), None);
    let status = |plan: Option<Plan>| plan.and_then(|p| p.error).map(|e| e.status);
    assert_eq!(status(f.plan("/anthropic/v1/messages", never)), Some(529));
    assert_eq!(f.errors[0].count, Some(1));
    assert_eq!(status(f.plan("/anthropic/v1/messages", never)), Some(529));
    assert_eq!(
        f.plan("/anthropic/v1/messages", never),
        None,
        "count used up"
    );
    assert_eq!(f.errors[0].count, Some(0));
}

/// A draw that fires no fault given a probability.
fn never(_: u64) -> f64 {
    1.0
}

#[test]
fn other_faults_persist() {
    let mut f = faults(json!({"latency_ms": 7, "slow_stream_ms": 3}));
    for _ in 0..3 {
        let plan = f.plan("/gemini/v1/models", never).unwrap();
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
    let chunks: Vec<super::super::wire::Chunk> = chunks
        .iter()
        .map(|c| super::super::wire::Chunk::new(Bytes::from_static(c.as_bytes()), 0, None))
        .collect();
    let sim = std::sync::Arc::new(crate::sim::Sim::new(
        std::sync::Arc::new(crate::clock::Clock::system()),
        crate::sim::Settings::default(),
        0,
    ));
    let meter = super::super::wire::Meter::new(sim, String::new(), "", &Default::default());
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
async fn whole_replies_are_cut_only_by_a_reset_after_no_event() {
    let app = crate::sim::router_with(
        0,
        crate::sim::Settings::default(),
        faults(json!({"reset_after_events": 1})),
    );
    let res = call(&app, "POST", MESSAGES, &[], ANTHROPIC_REQUEST).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header(FAULT_HEADER), None);
    assert_eq!(json_of(&res)["type"], "message");

    let app = crate::sim::router_with(
        0,
        crate::sim::Settings::default(),
        faults(json!({"reset_after_events": 0})),
    );
    let req = axum::http::Request::post(MESSAGES)
        .body(Body::from(ANTHROPIC_REQUEST))
        .unwrap();
    let res = tower::ServiceExt::oneshot(app.clone(), req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "the head arrives");
    assert_eq!(
        res.headers().get(FAULT_HEADER).unwrap().to_str().unwrap(),
        "reset"
    );
    let (frames, failed) = drain(res).await;
    assert!(failed && frames.is_empty(), "the body fails before a byte");
    // An error reply is left whole.
    let res = call(&app, "POST", "/anthropic/v1/messages", &[], "{").await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(res.header(FAULT_HEADER), None);
}

#[test]
fn probabilities_and_lists_parse_and_round_trip() {
    let spec = json!({
        "seed": 7,
        "errors": [
            {"status": 429, "probability": 0.1, "retry_after_s": 1},
            {"status": 404, "count": 3, "probability": 0.05},
        ],
        "reset_after_events": 0,
        "reset_probability": 0.2,
        "evict_probability": 0.1,
    });
    let parsed = faults(spec.clone());
    assert_eq!(parsed.errors.len(), 2);
    assert_eq!(parsed.errors[1].count, Some(3));
    assert_eq!(parsed.error_statuses(), [429, 404]);
    assert_eq!(serde_json::to_value(&parsed).unwrap(), spec);
}

#[test]
fn bad_probabilities_say_what_is_wrong() {
    let err = |v: serde_json::Value| Faults::from_json(&v.to_string()).unwrap_err();
    let e = err(json!({"errors": {"status": 429, "probability": 1.5}}));
    assert_eq!(e, "errors.probability: 1.5 is not a probability (0 to 1)");
    let e = err(json!({"errors": [{"status": 429, "count": 1}, {"status": 42, "count": 1}]}));
    assert!(
        e.starts_with("errors[1].status: 42 is not an error status"),
        "{e}"
    );
    let e = err(json!({"errors": [{"status": 429, "count": 1, "every": 2}]}));
    assert!(e.contains("unknown field `every`"), "{e}");
    let e = err(json!({"errors": 429}));
    assert!(e.contains("an error fault object or a list of them"), "{e}");
    let e = err(json!({"reset_probability": 0.5}));
    assert_eq!(e, "reset_probability: set reset_after_events too");
    let e = err(json!({"evict_probability": -0.1}));
    assert!(e.starts_with("evict_probability: -0.1 is not"), "{e}");
}

/// The plans of `n` distinct requests (fingerprints 0..n), each seen `times` times in a row.
fn plans(spec: serde_json::Value, n: u32, times: u32) -> Vec<Option<Plan>> {
    let state = FaultState::default();
    state.replace(faults(spec));
    let mut out = Vec::new();
    for i in 0..n {
        let mut fp = [0u8; 16];
        fp[..4].copy_from_slice(&i.to_le_bytes());
        for _ in 0..times {
            out.push(state.plan("/anthropic/v1/messages", Some(fp)));
        }
    }
    out
}

#[test]
fn draws_are_seeded_independent_and_hit_their_rates() {
    let spec = json!({
        "errors": [{"status": 429, "probability": 0.2}, {"status": 404, "probability": 0.1}],
        "reset_after_events": 0, "reset_probability": 0.3,
        "evict_probability": 0.05,
    });
    let n = 10_000;
    let a = plans(spec.clone(), n, 1);
    assert_eq!(a, plans(spec.clone(), n, 1), "the same seed draws the same");
    let mut seeded = spec.clone();
    seeded["seed"] = json!(1);
    assert_ne!(a, plans(seeded, n, 1), "another seed draws otherwise");
    let share = |f: &dyn Fn(&Plan) -> bool| {
        a.iter().flatten().filter(|p| f(p)).count() as f64 / f64::from(n)
    };
    let status = |s: u16| move |p: &Plan| p.error.is_some_and(|e| e.status == s);
    // 404 only where 429 did not fire first: 0.8 × 0.1.
    for (got, want) in [
        (share(&status(429)), 0.2),
        (share(&status(404)), 0.08),
        (share(&|p| p.stream.reset_after.is_some()), 0.3),
        (share(&|p| p.evict), 0.05),
    ] {
        assert!((got - want).abs() < want * 0.15, "{got} vs {want}");
    }
    // A request sent again draws afresh: both attempts fail only about p² of the time.
    let twice = plans(json!({"errors": {"status": 429, "probability": 0.5}}), n, 2);
    let both = twice
        .chunks(2)
        .filter(|pair| pair.iter().all(Option::is_some))
        .count() as f64
        / f64::from(n);
    assert!((both - 0.25).abs() < 0.03, "{both}");
}

#[test]
fn a_count_caps_a_probability() {
    let got = plans(
        json!({"errors": {"status": 404, "probability": 1.0, "count": 2}}),
        5,
        1,
    );
    let errors = got.iter().filter(|p| p.is_some()).count();
    assert_eq!(errors, 2);
    assert!(got[0].is_some() && got[1].is_some() && got[4].is_none());
}

fn manual_sim(replicas: usize) -> (std::sync::Arc<crate::sim::Sim>, axum::Router) {
    // 2026-11-02T00:00:00Z: a date the price table covers.
    let clock = std::sync::Arc::new(crate::clock::Clock::manual(
        std::time::UNIX_EPOCH + Duration::from_secs(1_793_577_600),
    ));
    let sim = std::sync::Arc::new(crate::sim::Sim::new(
        clock,
        crate::sim::Settings::default(),
        replicas,
    ));
    (sim.clone(), crate::sim::build(sim))
}

fn account<'a>(stats: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    let fp = crate::sim::billing::key_fingerprint(key);
    stats["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key_fp"] == fp.as_str())
        .unwrap()
}

#[tokio::test]
async fn an_eviction_deletes_the_callers_cached_contents_and_books_their_storage_to_then() {
    let (sim, app) = manual_sim(0);
    let words = crate::sim::rules::test_support::words(4, 3000);
    let create = json!({"model": "models/gemini-2.5-flash", "ttl": "3600s",
        "contents": [{"role": "user", "parts": [{"text": words}]}]});
    let mut names = Vec::new();
    for key in ["g-key", "other"] {
        let res = call(
            &app,
            "POST",
            "/gemini/v1beta/cachedContents",
            &[("x-goog-api-key", key)],
            &create.to_string(),
        )
        .await;
        assert_eq!(res.status, StatusCode::OK);
        names.push(json_of(&res)["name"].as_str().unwrap().to_owned());
    }
    let tokens = json_of(
        &call(
            &app,
            "GET",
            &format!("/gemini/v1beta/{}", names[0]),
            &[("x-goog-api-key", "g-key")],
            "",
        )
        .await,
    )["usageMetadata"]["totalTokenCount"]
        .as_u64()
        .unwrap();
    sim.clock.advance(Duration::from_secs(1800));
    sim.set_faults(faults(
        json!({"mount": "/gemini", "evict_probability": 1.0}),
    ));
    let generate = |name: &str| {
        json!({"cachedContent": name, "contents": [{"role": "user", "parts": [{"text": "q?"}]}]})
            .to_string()
    };
    let path = "/gemini/v1beta/models/gemini-2.5-flash:generateContent";
    let res = call(
        &app,
        "POST",
        path,
        &[("x-goog-api-key", "g-key")],
        &generate(&names[0]),
    )
    .await;
    assert_eq!(
        res.status,
        StatusCode::NOT_FOUND,
        "as Google answers a deleted cache"
    );
    assert_eq!(json_of(&res)["error"]["status"], "NOT_FOUND");
    assert_eq!(res.header(FAULT_HEADER).as_deref(), Some("evict"));
    sim.set_faults(Faults::default());
    let res = call(
        &app,
        "POST",
        path,
        &[("x-goog-api-key", "other")],
        &generate(&names[1]),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "another key's cache stays");
    let stats = sim.stats();
    // Deleted half an hour after creation: $1.00 per 1M tokens per hour × 0.5 h.
    assert_eq!(account(&stats, "g-key")["storage_nusd"], tokens * 500);
    assert_eq!(stats["caches"]["gemini"]["cached_contents"], 1);
    let tally = &stats["faults"];
    assert_eq!(tally["evictions"], 1);
    assert_eq!(tally["evicted_cached_contents"], 1);
    assert_eq!(tally["evicted_entries"], 1);
}

#[tokio::test]
async fn an_eviction_drops_the_callers_prefix_entries_only() {
    let (sim, app) = manual_sim(1);
    let system = crate::sim::rules::test_support::words(1, 1500);
    let anthropic = |q: &str| {
        json!({"model": "claude-sonnet-4-6", "max_tokens": 5,
            "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": q}]})
        .to_string()
    };
    let chat =
        json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": system}]}).to_string();
    let read = |v: serde_json::Value| v["usage"]["cache_read_input_tokens"].as_u64().unwrap();
    let cached = |v: serde_json::Value| {
        v["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
    };
    for key in ["k1", "k2"] {
        let h = [("x-api-key", key), ("authorization", "Bearer k1")];
        assert_eq!(
            read(json_of(
                &call(&app, "POST", MESSAGES, &h, &anthropic("a?")).await
            )),
            0
        );
    }
    let chat_h = [("authorization", "Bearer k1")];
    call(&app, "POST", "/openai/v1/chat/completions", &chat_h, &chat).await;
    call(&app, "POST", "/vllm/0/v1/chat/completions", &chat_h, &chat).await;
    sim.clock.advance(Duration::from_secs(10));
    sim.set_faults(faults(
        json!({"mount": "/anthropic", "evict_probability": 1.0}),
    ));
    let res = call(
        &app,
        "POST",
        MESSAGES,
        &[("x-api-key", "k1")],
        &anthropic("b?"),
    )
    .await;
    assert_eq!(res.header(FAULT_HEADER).as_deref(), Some("evict"));
    assert_eq!(read(json_of(&res)), 0, "k1's prefix is gone");
    let tally = sim.fault_tally();
    assert_eq!(tally.evictions, 1);
    // k1's Anthropic entry and its OpenAI entries (the vLLM replica is not k1's to lose).
    assert!(tally.evicted_entries >= 2, "{tally:?}");
    sim.set_faults(Faults::default());
    let k2 = json_of(
        &call(
            &app,
            "POST",
            MESSAGES,
            &[("x-api-key", "k2")],
            &anthropic("c?"),
        )
        .await,
    );
    assert!(read(k2) >= 1500, "k2's prefix stays");
    let res = call(&app, "POST", "/openai/v1/chat/completions", &chat_h, &chat).await;
    assert_eq!(cached(json_of(&res)), 0, "k1's OpenAI prefix went too");
    let res = call(&app, "POST", "/vllm/0/v1/chat/completions", &chat_h, &chat).await;
    assert!(cached(json_of(&res)) > 0, "the replica kept its KV cache");
    // An eviction on a replica's mount empties that replica.
    sim.set_faults(faults(
        json!({"mount": "/vllm/0", "evict_probability": 1.0}),
    ));
    let res = call(&app, "POST", "/vllm/0/v1/chat/completions", &chat_h, &chat).await;
    assert_eq!(cached(json_of(&res)), 0);
}
