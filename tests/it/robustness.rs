//! No input brings the proxy down: arbitrary request bodies on every modelled route, arbitrary
//! bytes from the upstream. cachet answers 400 (its own, with `x-cachet-error`) or forwards,
//! never a 5xx of its own, and relays whatever the upstream sent unchanged.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::Value;

use crate::common::*;

const ROUTES: [&str; 7] = [
    "/openai/v1/chat/completions",
    "/openai/v1/responses",
    "/deepseek/chat/completions",
    "/anthropic/v1/messages",
    "/anthropic/v1/messages/count_tokens",
    "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent",
    "/gemini/v1beta/cachedContents",
];

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z \\\\\"\\n]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bodies: arbitrary JSON, chat-shaped JSON with odd field types, or arbitrary bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        (json(), json(), json()).prop_map(|(stream_options, messages, stream)| {
            let stream = if stream.is_null() { Value::Bool(true) } else { stream };
            serde_json::to_vec(&serde_json::json!({
                "model": "gpt-4.1", "stream": stream, "stream_options": stream_options, "messages": messages
            }))
            .unwrap()
        }),
        vec(any::<u8>(), 0..64),
    ]
}

/// Upstream replies: SSE-looking or JSON-looking text, or raw bytes; never containing ']' so
/// that no usage-only chunk (`"choices":[]`) can appear and every byte must come back.
fn reply() -> impl Strategy<Value = (bool, Vec<u8>)> {
    let text =
        "(data: |event: |: |\\{\"usage\":\\{|\"usageMetadata\"|\\n|\\r\\n|[a-z0-9 ,:\"{}\\[])*"
            .prop_map(|s: String| s.replace(']', "").into_bytes());
    let bytes =
        vec(any::<u8>(), 0..200).prop_map(|b| b.into_iter().filter(|c| *c != b']').collect());
    (any::<bool>(), prop_oneof![text, bytes])
}

#[test]
fn arbitrary_requests_and_upstream_bytes_never_break_the_proxy() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let script: Arc<Mutex<(bool, Vec<u8>)>> = Arc::new(Mutex::new((false, Vec::new())));
    let (mock, proxy) = rt.block_on(async {
        let s = script.clone();
        let mock = MockUpstream::start(move |_| {
            let (sse, bytes) = s.lock().unwrap().clone();
            let mut reply = Reply::sse(&bytes, 7);
            if !sse {
                reply.headers = vec![("content-type", "application/json".into())];
            }
            if bytes.is_empty() {
                reply.chunks = vec![Bytes::new()];
            }
            reply
        })
        .await;
        let proxy = TestProxy::in_front_of(&mock, "").await;
        (mock, proxy)
    });
    let http = client();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(96));
    runner
        .run(
            &(0..ROUTES.len(), body(), reply()),
            |(route, body, reply)| {
                *script.lock().unwrap() = reply.clone();
                let before = mock.requests().len();
                let (status, error, rewrites, got) = rt.block_on(async {
                    let r = http
                        .post(proxy.url(ROUTES[route]))
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    let status = r.status().as_u16();
                    let error = r
                        .headers()
                        .get("x-cachet-error")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let rewrites = r.headers().get("x-cachet-rewrites").is_some();
                    (status, error, rewrites, r.bytes().await.unwrap())
                });
                match error.as_deref() {
                    Some("bad_json") => {
                        prop_assert_eq!(status, 400);
                        prop_assert!(serde_json::from_slice::<Value>(&body).is_err());
                        prop_assert_eq!(mock.requests().len(), before, "nothing forwarded");
                    }
                    Some(other) => {
                        prop_assert!(false, "unexpected cachet error {other} ({status})")
                    }
                    None => {
                        prop_assert_eq!(status, 200);
                        prop_assert_eq!(
                            got.as_ref(),
                            reply.1.as_slice(),
                            "upstream bytes relayed (rewrites: {})",
                            rewrites
                        );
                        if !rewrites {
                            let sent = mock.last().body;
                            prop_assert_eq!(
                                sent.as_ref(),
                                body.as_slice(),
                                "client bytes forwarded"
                            );
                        }
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    // Still serving.
    let health = rt.block_on(async {
        http.get(proxy.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(health, 200);
}
