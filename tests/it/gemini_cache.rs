//! Gemini explicit caching through the proxy, against the simulator: a prefix sent again and
//! again gets a `cachedContents` created with the caller's key and referenced; a cache that
//! vanished upstream is forgotten and the request resent without it, transparently; another
//! key never reads it.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::common::*;

/// A proxy whose `name` upstream is the simulator's Gemini mount.
async fn proxy_for(sim: SocketAddr, name: &str, extra: &str) -> TestProxy {
    TestProxy::spawn(&format!(
        "[[upstreams]]\nname = \"{name}\"\nprovider = \"gemini\"\nbase_url = \"http://{sim}/gemini\"\n{extra}"
    ))
    .await
}

/// A question about a long document, asked question first in one string (the rewrite splits
/// it into two Contents, the document first).
fn request(question: &str) -> String {
    request_with(question, None)
}

fn request_with(question: &str, tool_config: Option<Value>) -> String {
    let document = "The annual report covers revenue, costs, hiring and the outlook for \
                    each region in detail. "
        .repeat(150);
    let mut body = json!({
        "systemInstruction": {"parts": [{"text": "Answer from the document."}]},
        "contents": [{"role": "user", "parts": [{"text": format!("{question}\n\n{document}")}]}],
        "generationConfig": {"maxOutputTokens": 20},
    });
    if let Some(config) = tool_config {
        body["toolConfig"] = config;
    }
    body.to_string()
}

struct Answer {
    status: u16,
    rewrites: String,
    cached: u64,
    prompt: u64,
}

async fn ask(proxy: &TestProxy, mount: &str, key: &str, question: &str) -> Answer {
    ask_with(proxy, mount, key, &request(question)).await
}

async fn ask_with(proxy: &TestProxy, mount: &str, key: &str, body: &str) -> Answer {
    let r = client()
        .post(proxy.url(&format!(
            "/{mount}/v1beta/models/gemini-2.5-flash:generateContent"
        )))
        .header("x-goog-api-key", key)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let rewrites = r
        .headers()
        .get("x-cachet-rewrites")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let usage = &body["usageMetadata"];
    Answer {
        status,
        rewrites,
        cached: usage["cachedContentTokenCount"].as_u64().unwrap_or(0),
        prompt: usage["promptTokenCount"].as_u64().unwrap_or(0),
    }
}

/// request_id, call, caused_by, storage_nusd, status.
type LedgerRow = (String, String, Option<String>, Option<i64>, i64);

async fn caches_of(sim: SocketAddr, key: &str) -> Vec<Value> {
    let r = client()
        .get(format!("http://{sim}/gemini/v1beta/cachedContents"))
        .header("x-goog-api-key", key)
        .send()
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    body["cachedContents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_reused_document_is_cached_referenced_and_resent_when_the_cache_vanishes() {
    let sim = start_simulator().await;
    let proxy = proxy_for(sim, "gemini-cc", "").await;
    // First and second sight: nothing known of its reuse yet, sent as it is.
    for q in ["What was revenue?", "What were the costs?"] {
        let a = ask(&proxy, "gemini-cc", "key-a", q).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.cached, 0);
        assert!(!a.rewrites.contains("cached_content"), "{}", a.rewrites);
    }
    assert!(caches_of(sim, "key-a").await.is_empty());
    // Third, moments later: a cache of the system instruction and the document, created with
    // the caller's own key, and read by this very request.
    let third = ask(&proxy, "gemini-cc", "key-a", "Who was hired?").await;
    assert_eq!(third.status, 200);
    assert_eq!(
        third.rewrites,
        "question_last,gemini_split_turn,cached_content"
    );
    let caches = caches_of(sim, "key-a").await;
    assert_eq!(caches.len(), 1, "{caches:?}");
    let cache_tokens = caches[0]["usageMetadata"]["totalTokenCount"]
        .as_u64()
        .unwrap();
    assert_eq!(third.cached, cache_tokens);
    assert!(
        third.prompt > third.cached,
        "the question is the request's own"
    );
    // The fourth reads it too; no second cache.
    let fourth = ask(&proxy, "gemini-cc", "key-a", "What is the outlook?").await;
    assert_eq!(fourth.cached, cache_tokens);
    assert_eq!(caches_of(sim, "key-a").await.len(), 1);

    // Another key sending the same prompt never reads key-a's cache.
    for q in ["What was revenue?", "What were the costs?"] {
        let other = ask(&proxy, "gemini-cc", "key-b", q).await;
        assert_eq!(other.status, 200);
        assert_eq!(other.cached, 0);
        assert!(!other.rewrites.contains("cached_content"));
    }

    // The cache vanishes behind cachet's back: the next request is answered all the same,
    // without it, and the stale cache is forgotten (the one after creates a new one).
    let name = caches[0]["name"].as_str().unwrap();
    let deleted = client()
        .delete(format!("http://{sim}/gemini/v1beta/{name}"))
        .header("x-goog-api-key", "key-a")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let after = ask(&proxy, "gemini-cc", "key-a", "Any risks?").await;
    assert_eq!(after.status, 200, "resent without the vanished cache");
    assert_eq!(after.cached, 0);
    assert!(
        !after.rewrites.contains("cached_content"),
        "{}",
        after.rewrites
    );
    assert!(after.prompt > cache_tokens, "the whole prompt sent again");
    let again = ask(&proxy, "gemini-cc", "key-a", "Any news?").await;
    assert_eq!(again.status, 200);
    assert!(again.rewrites.contains("cached_content"));
    assert_eq!(again.cached, cache_tokens);

    let metrics = metrics_of(&proxy).await;
    let requests = |status: &str| {
        metric(
            &metrics,
            &format!(
                "cachet_requests_total{{upstream=\"gemini-cc\",model=\"gemini-2.5-flash\",status=\"{status}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    // 8 client requests answered, 2 creates, and the one attempt that found the cache gone.
    assert_eq!(requests("200"), 10.0);
    assert_eq!(requests("404"), 1.0);

    // The ledger: each create and the failed attempt are records of their own; the vanished
    // cache's storage is booked when it ended, on the create that made it.
    let ledger = proxy.state.telemetry().ledger().unwrap();
    assert!(ledger.flush(std::time::Duration::from_secs(10)).await);
    let cachet::ledger::Store::Sqlite(pool) = ledger.store() else {
        panic!("test proxies keep their ledger in SQLite");
    };
    let rows: Vec<LedgerRow> = sqlx::query_as(
        "SELECT request_id, call, caused_by, storage_nusd, status FROM ledger ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let of = |call: &str| rows.iter().filter(|r| r.1 == call).collect::<Vec<_>>();
    let creates = of("cache_create");
    assert_eq!(creates.len(), 2, "{rows:?}");
    let storage = of("cache_storage");
    assert_eq!(storage.len(), 1, "{rows:?}");
    assert_eq!(storage[0].2.as_deref(), Some(creates[0].0.as_str()));
    assert!(storage[0].3.unwrap() > 0, "{rows:?}");
    assert_eq!(of("resend").len(), 1);
    assert!(
        rows.iter().any(|r| r.1 == "client" && r.4 == 404),
        "the attempt that found the cache gone"
    );
}

#[tokio::test]
async fn with_the_strategy_off_nothing_is_cached() {
    let sim = start_simulator().await;
    let proxy = proxy_for(sim, "gemini-cc-off", "strategies = []").await;
    for q in ["a?", "b?", "c?", "d?"] {
        let a = ask(&proxy, "gemini-cc-off", "key-off", q).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.cached, 0);
    }
    assert!(caches_of(sim, "key-off").await.is_empty());
    let metrics = metrics_of(&proxy).await;
    assert!(
        metric(
            &metrics,
            "cachet_plan_branch_total{branch=\"strategy_off\"}"
        )
        .unwrap_or(0.0)
            >= 4.0
    );
}

#[tokio::test]
async fn a_cache_made_under_one_tool_config_is_never_read_under_another() {
    let sim = start_simulator().await;
    let proxy = proxy_for(sim, "gemini-cc-tc", "").await;
    let config = |mode: &str| Some(json!({"functionCallingConfig": {"mode": mode}}));
    for q in ["a?", "b?", "c?"] {
        let body = request_with(q, config("AUTO"));
        assert_eq!(
            ask_with(&proxy, "gemini-cc-tc", "key-tc", &body)
                .await
                .status,
            200
        );
    }
    assert_eq!(caches_of(sim, "key-tc").await.len(), 1, "AUTO's cache");
    // The same prefix under another tool config: a cache of its own (reading AUTO's would
    // replace the request's NONE with AUTO).
    let body = request_with("d?", config("NONE"));
    let other = ask_with(&proxy, "gemini-cc-tc", "key-tc", &body).await;
    assert_eq!(other.status, 200);
    assert!(
        other.rewrites.contains("cached_content"),
        "{}",
        other.rewrites
    );
    assert_eq!(caches_of(sim, "key-tc").await.len(), 2);
}

/// A mock Gemini: creates succeed; a request reading a cache gets `error` (status, message).
async fn gemini_mock(error: (u16, &'static str)) -> MockUpstream {
    MockUpstream::start(move |r| {
        let body = String::from_utf8_lossy(&r.body);
        if r.path_and_query.contains("cachedContents") {
            return Reply::json(
                200,
                br#"{"name":"cachedContents/m1","model":"models/gemini-2.5-flash","expireTime":"2099-01-01T00:00:00Z","usageMetadata":{"totalTokenCount":9000}}"#,
            );
        }
        if body.contains("cachedContent") {
            let (status, message) = error;
            let answer = json!({"error": {"code": status, "message": message, "status": "X"}});
            return Reply::json(status, answer.to_string().as_bytes());
        }
        Reply::json(200, fixture!("gemini_generate.json"))
    })
    .await
}

async fn third_request_reads_a_cache_and_gets(error: (u16, &'static str)) -> (MockUpstream, u16) {
    let mock = gemini_mock(error).await;
    let proxy = TestProxy::in_front_of(&mock, "").await;
    for q in ["a?", "b?"] {
        assert_eq!(ask(&proxy, "gemini", "key-m", q).await.status, 200);
    }
    let third = ask(&proxy, "gemini", "key-m", "c?").await;
    (mock, third.status)
}

#[tokio::test]
async fn a_clients_own_400_on_a_cached_request_is_passed_on_once() {
    let (mock, status) =
        third_request_reads_a_cache_and_gets((400, "temperature must be in [0, 2]")).await;
    assert_eq!(
        status, 400,
        "the client's own error, as the upstream sent it"
    );
    let generates: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.path_and_query.contains("generateContent"))
        .collect();
    assert_eq!(generates.len(), 3, "no resend");
    assert!(String::from_utf8_lossy(&generates[2].body).contains("cachedContents/m1"));
    let last = &mock.requests()[mock.requests().len() - 1];
    let body: Value = serde_json::from_slice(&last.body).unwrap();
    assert_eq!(body["cachedContent"], "cachedContents/m1");
}

#[tokio::test]
async fn a_400_about_the_cache_is_resent_without_it() {
    let (mock, status) =
        third_request_reads_a_cache_and_gets((400, "CachedContent not found or expired")).await;
    assert_eq!(status, 200, "resent without the cache");
    let generates: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.path_and_query.contains("generateContent"))
        .collect();
    assert_eq!(generates.len(), 4);
    let resent: Value = serde_json::from_slice(&generates[3].body).unwrap();
    assert!(resent.get("cachedContent").is_none());
    // As the client sent it but for the question after the document, in one turn.
    assert_eq!(resent["contents"].as_array().unwrap().len(), 1);
    assert!(resent["systemInstruction"].is_object());
    // cachet's own create asked for an answer it can read, and carried the caller's key.
    let create = mock
        .requests()
        .into_iter()
        .find(|r| r.path_and_query.contains("cachedContents"))
        .unwrap();
    assert_eq!(create.headers["x-goog-api-key"], "key-m");
    assert_eq!(create.headers["accept-encoding"], "identity");
}
