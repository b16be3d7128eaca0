//! Transparency: with every rewrite and `usage.inject_include_usage` off, the upstream gets the
//! client's bytes and the client gets the upstream's bytes, for every fixture.

use crate::common::*;

const TRANSPARENT: &str = "[usage]\ninject_include_usage = false\n[rewrite]\nquestion_last = false\nstable_tools = false\n";

struct Case {
    path: &'static str,
    /// Request body as the client sends it (odd whitespace on purpose: it must survive).
    request: &'static str,
    reply: Reply,
    expected_body: &'static [u8],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            path: "/openai/v1/chat/completions",
            request: "{\"model\": \"gpt-4.1\",  \"messages\": [{\"role\": \"user\", \"content\": \"Hi \\u00e9\"}], \"temperature\": 0.70, \"x_unknown\": {\"b\": 1, \"a\": [1.0, null]}}",
            reply: Reply::json(200, fixture!("openai_chat.json")),
            expected_body: fixture!("openai_chat.json"),
        },
        Case {
            path: "/openai/v1/chat/completions",
            request: "{\"model\":\"gpt-4.1\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
            reply: Reply::sse(fixture!("openai_chat.sse"), 97),
            expected_body: fixture!("openai_chat.sse"),
        },
        Case {
            path: "/openai/v1/responses",
            request: "{\"model\":\"gpt-4.1\",\"input\":\"Hi\"}",
            reply: Reply::json(200, fixture!("openai_responses.json")),
            expected_body: fixture!("openai_responses.json"),
        },
        Case {
            path: "/openai/v1/responses",
            request: "{\"model\":\"gpt-4.1\",\"input\":\"Hi\",\"stream\":true}",
            reply: Reply::sse(fixture!("openai_responses.sse"), 13),
            expected_body: fixture!("openai_responses.sse"),
        },
        Case {
            path: "/anthropic/v1/messages?beta=true",
            request: "{\"model\":\"claude-sonnet-4-6\",\"max_tokens\":64,\"system\":[{\"type\":\"text\",\"text\":\"S\",\"cache_control\":{\"type\":\"ephemeral\"}}],\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
            reply: Reply::json(200, fixture!("anthropic_messages.json")),
            expected_body: fixture!("anthropic_messages.json"),
        },
        Case {
            path: "/anthropic/v1/messages",
            request: "{\"model\":\"claude-sonnet-4-6\",\"max_tokens\":64,\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
            reply: Reply::sse(fixture!("anthropic_messages.sse"), 50),
            expected_body: fixture!("anthropic_messages.sse"),
        },
        Case {
            path: "/anthropic/v1/messages/count_tokens",
            request: "{\"model\":\"claude-sonnet-4-6\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
            reply: Reply::json(200, b"{\"input_tokens\":9}"),
            expected_body: b"{\"input_tokens\":9}",
        },
        Case {
            path: "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
            request: "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"Hi\"}]}]}",
            reply: Reply::json(200, fixture!("gemini_generate.json")),
            expected_body: fixture!("gemini_generate.json"),
        },
        Case {
            path: "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            request: "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"Hi\"}]}]}",
            reply: Reply::sse(fixture!("gemini_stream.sse"), 31),
            expected_body: fixture!("gemini_stream.sse"),
        },
        Case {
            path: "/gemini/v1/models/gemini-2.5-flash:streamGenerateContent",
            request: "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"Hi\"}]}]}",
            reply: Reply {
                headers: vec![("content-type", "application/json; charset=UTF-8".into())],
                ..Reply::sse(fixture!("gemini_stream.json"), 17)
            },
            expected_body: fixture!("gemini_stream.json"),
        },
        Case {
            path: "/gemini/v1beta/cachedContents?key=AIza-test",
            request: "{\"model\":\"models/gemini-2.5-flash\",\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"Doc\"}]}],\"ttl\":\"300s\"}",
            reply: Reply::json(
                200,
                b"{\"name\":\"cachedContents/abc\",\"model\":\"models/gemini-2.5-flash\"}",
            ),
            expected_body:
                b"{\"name\":\"cachedContents/abc\",\"model\":\"models/gemini-2.5-flash\"}",
        },
        Case {
            path: "/deepseek/chat/completions",
            request: "{\"model\":\"deepseek-chat\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
            reply: Reply::sse(fixture!("deepseek_chat.sse"), 64),
            expected_body: fixture!("deepseek_chat.sse"),
        },
    ]
}

#[tokio::test]
async fn every_fixture_passes_byte_for_byte_in_both_directions() {
    let replies: Vec<Reply> = cases().into_iter().map(|c| c.reply).collect();
    let served = std::sync::atomic::AtomicUsize::new(0);
    let mock = MockUpstream::start(move |_| {
        replies[served.fetch_add(1, std::sync::atomic::Ordering::SeqCst)].clone()
    })
    .await;
    let proxy = TestProxy::in_front_of(&mock, TRANSPARENT).await;
    let http = client();
    for (i, case) in cases().into_iter().enumerate() {
        let response = http
            .post(proxy.url(case.path))
            .header("content-type", "application/json")
            .header("authorization", "Bearer sk-test")
            .header("x-cachet-team", "search")
            .header("x-custom", "kept")
            .body(case.request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", case.path);
        let headers = response.headers().clone();
        assert!(headers.contains_key("x-cachet-request-id"), "{}", case.path);
        assert!(
            !headers.contains_key("x-cachet-rewrites"),
            "no rewrite happened: {}",
            case.path
        );
        let body = response.bytes().await.unwrap();
        assert_eq!(
            body.as_ref(),
            case.expected_body,
            "response bytes for {}",
            case.path
        );
        let seen = &mock.requests()[i];
        assert_eq!(
            seen.body.as_ref(),
            case.request.as_bytes(),
            "request bytes for {}",
            case.path
        );
        let upstream_path = format!(
            "/{}",
            case.path
                .split_once('/')
                .unwrap()
                .1
                .split_once('/')
                .unwrap()
                .1
        );
        assert!(
            seen.path_and_query.ends_with(&upstream_path),
            "{} vs {}",
            seen.path_and_query,
            case.path
        );
        assert_eq!(
            seen.headers["authorization"], "Bearer sk-test",
            "the client's key passes through"
        );
        assert_eq!(seen.headers["x-custom"], "kept");
        assert!(
            !seen.headers.contains_key("x-cachet-team"),
            "x-cachet-* headers are stripped"
        );
        if let Some(request_id) = headers.get("x-request-id") {
            assert_eq!(
                request_id, "req_upstream_1",
                "upstream response headers reach the client"
            );
        }
    }
}

#[tokio::test]
async fn unmodelled_paths_pass_through_untouched_with_query_and_escapes() {
    let mock = MockUpstream::start(|r| {
        let mut reply = Reply::json(200, format!("{{\"echo\":{}}}", r.body.len()).as_bytes());
        reply
            .headers
            .push(("x-echo-path", r.path_and_query.clone()));
        reply
    })
    .await;
    let proxy = TestProxy::in_front_of(&mock, "[limits]\nmax_body_bytes = 1024\n").await;
    let http = client();

    let r = http
        .get(proxy.url("/openai/v1/models?limit=2&after=a%2Fb"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        mock.last().path_and_query,
        "/openai/v1/models?limit=2&after=a%2Fb"
    );
    let seen = mock.last();
    assert_eq!(seen.method, "GET");
    assert!(
        !seen.headers.contains_key("transfer-encoding")
            && !seen.headers.contains_key("content-length"),
        "a GET stays bodiless: {:?}",
        seen.headers
    );

    // A file upload larger than the JSON body limit: not a modelled route, so not limited, and
    // its (binary) bytes arrive intact.
    let upload: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
    let r = http
        .post(proxy.url("/openai/v1/files/dir%2Fname.jsonl"))
        .header("content-type", "application/octet-stream")
        .body(upload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = mock.last();
    assert_eq!(seen.path_and_query, "/openai/v1/files/dir%2Fname.jsonl");
    assert_eq!(seen.body.as_ref(), upload.as_slice());
    assert_eq!(
        seen.headers["content-length"], "5000",
        "streamed through with its length"
    );
    assert!(!seen.headers.contains_key("transfer-encoding"));

    // Embeddings and Gemini's ?key= credential.
    let r = http
        .post(proxy.url("/openai/v1/embeddings"))
        .body("{\"model\":\"e\",\"input\":\"x\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(proxy.url("/gemini/v1beta/models?key=AIza%2Bkey&pageSize=5"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        mock.last().path_and_query,
        "/gemini/v1beta/models?key=AIza%2Bkey&pageSize=5"
    );

    // The mount root itself.
    let r = http.get(proxy.url("/anthropic")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.last().path_and_query, "/anthropic/");
}

#[tokio::test]
async fn upstream_errors_reach_the_client_unchanged() {
    let statuses = [400u16, 401, 429, 500, 503, 529];
    let mock = MockUpstream::start(|r| {
        let status: u16 = r.path_and_query.rsplit('=').next().unwrap().parse().unwrap();
        let mut reply = Reply::json(status, format!("{{\"type\":\"error\",\"error\":{{\"type\":\"vendor_{status}\",\"message\":\"from upstream\"}}}}").as_bytes());
        reply.headers.push(("retry-after", "7".into()));
        reply
    })
    .await;
    let proxy = TestProxy::in_front_of(&mock, "").await;
    for status in statuses {
        let r = client()
            .post(proxy.url(&format!("/anthropic/v1/messages?s={status}")))
            .body("{\"model\":\"claude-sonnet-4-6\",\"max_tokens\":1,\"messages\":[]}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status);
        assert_eq!(r.headers()["retry-after"], "7");
        assert!(
            !r.headers().contains_key("x-cachet-error"),
            "the vendor's error is not cachet's"
        );
        let body = r.text().await.unwrap();
        assert_eq!(
            body,
            format!(
                "{{\"type\":\"error\",\"error\":{{\"type\":\"vendor_{status}\",\"message\":\"from upstream\"}}}}"
            )
        );
    }
}
