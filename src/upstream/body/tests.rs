use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use proptest::prelude::*;
use tokio::sync::mpsc;

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/",
            $name
        ))
        .as_slice()
    };
}

struct Case {
    provider: ProviderKind,
    endpoint: Endpoint,
    framing: Framing,
    body: &'static [u8],
    want: Usage,
}

fn u(input_uncached: u64, cache_read: u64, w5: u64, w1h: u64, output: u64) -> Usage {
    Usage {
        input_uncached,
        cache_read,
        cache_write_5m: w5,
        cache_write_1h: w1h,
        output,
    }
}

fn gemini(stream: bool) -> Endpoint {
    Endpoint::GeminiGenerate {
        model: "gemini-2.5-flash".into(),
        stream,
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            provider: ProviderKind::Openai,
            endpoint: Endpoint::Chat,
            framing: Framing::Sse,
            body: fixture!("openai_chat.sse"),
            want: u(86, 1920, 0, 0, 4),
        },
        Case {
            provider: ProviderKind::Openai,
            endpoint: Endpoint::Chat,
            framing: Framing::Json,
            body: fixture!("openai_chat.json"),
            want: u(86, 1920, 0, 0, 2),
        },
        Case {
            provider: ProviderKind::Openai,
            endpoint: Endpoint::Responses,
            framing: Framing::Sse,
            body: fixture!("openai_responses.sse"),
            want: u(220, 1280, 0, 0, 1),
        },
        Case {
            provider: ProviderKind::Openai,
            endpoint: Endpoint::Responses,
            framing: Framing::Json,
            body: fixture!("openai_responses.json"),
            want: u(220, 1280, 0, 0, 1),
        },
        Case {
            provider: ProviderKind::Anthropic,
            endpoint: Endpoint::AnthropicMessages,
            framing: Framing::Sse,
            body: fixture!("anthropic_messages.sse"),
            want: u(50, 100_000, 148, 100, 503),
        },
        Case {
            provider: ProviderKind::Anthropic,
            endpoint: Endpoint::AnthropicMessages,
            framing: Framing::Json,
            body: fixture!("anthropic_messages.json"),
            want: u(50, 100_000, 148, 100, 503),
        },
        Case {
            provider: ProviderKind::Gemini,
            endpoint: gemini(true),
            framing: Framing::Sse,
            body: fixture!("gemini_stream.sse"),
            want: u(2000, 8000, 0, 0, 50),
        },
        Case {
            provider: ProviderKind::Gemini,
            endpoint: gemini(true),
            framing: Framing::JsonArray,
            body: fixture!("gemini_stream.json"),
            want: u(2000, 8000, 0, 0, 50),
        },
        Case {
            provider: ProviderKind::Gemini,
            endpoint: gemini(false),
            framing: Framing::Json,
            body: fixture!("gemini_generate.json"),
            want: u(2000, 8000, 0, 0, 50),
        },
        Case {
            provider: ProviderKind::Deepseek,
            endpoint: Endpoint::Chat,
            framing: Framing::Sse,
            body: fixture!("deepseek_chat.sse"),
            want: u(176, 1024, 0, 0, 50),
        },
    ]
}

fn run(case: &Case, strip: bool, cuts: &[usize]) -> (Vec<u8>, Option<Usage>) {
    let mut tap = Tap::new(
        case.provider,
        Some(case.endpoint.clone()),
        case.framing,
        strip,
    );
    let mut out = Vec::new();
    let mut from = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (case.body.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(case.body.len());
    for c in cuts {
        out.extend_from_slice(&tap.observe(Bytes::copy_from_slice(&case.body[from..c])));
        from = c;
    }
    out.extend_from_slice(&tap.finish());
    assert!(!tap.lost);
    (out, tap.usage())
}

#[test]
fn every_fixture_yields_its_usage_and_passes_unchanged() {
    for case in cases() {
        let (out, usage) = run(&case, false, &[]);
        assert_eq!(out, case.body, "{:?}", case.endpoint);
        assert_eq!(
            usage,
            Some(case.want),
            "{:?} {:?}",
            case.endpoint,
            case.framing
        );
    }
}

#[test]
fn strip_mode_drops_only_the_usage_only_chunk() {
    let case = &cases()[0];
    let (out, usage) = run(case, true, &[]);
    let text = String::from_utf8(out).unwrap();
    let original = std::str::from_utf8(case.body).unwrap();
    let usage_event = original
        .split("\n\n")
        .find(|e| e.contains("\"choices\":[]"))
        .unwrap();
    assert_eq!(text, original.replace(&format!("{usage_event}\n\n"), ""));
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(
        usage,
        Some(case.want),
        "usage is still read from the dropped chunk"
    );
    // DeepSeek-style usage on a content chunk is never dropped.
    let ds = &cases()[9];
    assert_eq!(run(ds, true, &[]).0, ds.body);
}

#[test]
fn error_bodies_and_unmodelled_routes_are_not_read() {
    assert_eq!(
        Framing::of(Some(&Endpoint::Chat), false, Some("application/json")),
        Framing::Opaque
    );
    assert_eq!(
        Framing::of(None, true, Some("text/event-stream")),
        Framing::Opaque
    );
    assert_eq!(
        Framing::of(Some(&Endpoint::AnthropicCountTokens), true, None),
        Framing::Opaque
    );
    assert_eq!(
        Framing::of(
            Some(&Endpoint::Chat),
            true,
            Some("text/event-stream; charset=utf-8")
        ),
        Framing::Sse
    );
    assert_eq!(
        Framing::of(Some(&gemini(true)), true, Some("application/json")),
        Framing::JsonArray
    );
    assert_eq!(
        Framing::of(Some(&gemini(false)), true, Some("application/json")),
        Framing::Json
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn any_split_gives_identical_bytes_and_usage(
        which in 0usize..10,
        strip in any::<bool>(),
        cuts in proptest::collection::vec(0usize..4096, 0..16),
    ) {
        let all = cases();
        let case = &all[which];
        prop_assert_eq!(run(case, strip, &cuts), run(case, strip, &[]));
    }
}

/// An upstream body fed by the test, chunk by chunk.
fn fed_response() -> (mpsc::Sender<Bytes>, reqwest::Response) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    let response = http::Response::new(reqwest::Body::wrap_stream(stream));
    (tx, reqwest::Response::from(response))
}

#[tokio::test]
async fn the_idle_clock_runs_only_while_the_client_waits_for_more() {
    let (tx, response) = fed_response();
    let seen = Arc::new(Mutex::new(None));
    let sink = seen.clone();
    let tap = Tap::new(ProviderKind::Openai, None, Framing::Opaque, false);
    let mut body = ObservedBody::new(response, tap, Duration::from_millis(400), move |o| {
        *sink.lock().unwrap() = Some(o.outcome);
    });
    tx.send(Bytes::from_static(b"one")).await.unwrap();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "one"
    );
    // The client does not ask for more for longer than the idle timeout…
    tokio::time::sleep(Duration::from_millis(700)).await;
    // …then asks, and the upstream answers 100 ms later: no timeout.
    let feeder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send(Bytes::from_static(b"two")).await.unwrap();
        tx
    });
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "two"
    );
    // Now the upstream stays silent while the client waits: the stream fails.
    let _tx = feeder.await.unwrap();
    let end = body.frame().await.unwrap();
    assert!(
        end.unwrap_err()
            .to_string()
            .contains("upstream sent nothing")
    );
    assert_eq!(*seen.lock().unwrap(), Some(Outcome::UpstreamError));
}

#[tokio::test]
async fn pieces_that_arrived_together_go_out_as_one_frame_and_the_end_follows() {
    let (tx, response) = fed_response();
    let seen = Arc::new(Mutex::new(None));
    let sink = seen.clone();
    let tap = Tap::new(ProviderKind::Openai, None, Framing::Opaque, false);
    let mut body = ObservedBody::new(response, tap, Duration::from_secs(5), move |o| {
        *sink.lock().unwrap() = Some(o.outcome);
    });
    for piece in ["data: 1\n\n", "data: 2\n\n", "data: 3\n\n"] {
        tx.send(Bytes::from_static(piece.as_bytes())).await.unwrap();
    }
    drop(tx);
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(frame, "data: 1\n\ndata: 2\n\ndata: 3\n\n");
    assert_eq!(
        *seen.lock().unwrap(),
        None,
        "the end is reported after the data is delivered"
    );
    assert!(body.frame().await.is_none());
    assert_eq!(*seen.lock().unwrap(), Some(Outcome::Complete));
}

#[tokio::test]
async fn an_upstream_error_after_data_waits_one_pending_poll_so_the_data_is_flushed() {
    use std::task::Poll;
    let stream = futures_util::stream::iter([
        Ok(Bytes::from_static(b"data: 1\n\n")),
        Err(std::io::Error::other("connection reset")),
    ]);
    let response = reqwest::Response::from(http::Response::new(reqwest::Body::wrap_stream(stream)));
    let tap = Tap::new(ProviderKind::Openai, None, Framing::Opaque, false);
    let mut body = ObservedBody::new(response, tap, Duration::from_secs(5), |_| {});
    let mut body = std::pin::Pin::new(&mut body);
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    // Data first, delivered on its own.
    let first = loop {
        match http_body::Body::poll_frame(body.as_mut(), &mut cx) {
            Poll::Ready(frame) => break frame,
            Poll::Pending => {}
        }
    };
    assert_eq!(first.unwrap().unwrap().into_data().unwrap(), "data: 1\n\n");
    // Then one pending turn (hyper writes out what it buffered), then the error.
    assert!(http_body::Body::poll_frame(body.as_mut(), &mut cx).is_pending());
    let end = http_body::Body::poll_frame(body.as_mut(), &mut cx);
    assert!(matches!(end, Poll::Ready(Some(Err(_)))));
}
