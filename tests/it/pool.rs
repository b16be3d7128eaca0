//! Replica pools (`base_urls`): affinity, passive health with failover, and plain balancing,
//! against recording mock replicas.

use crate::common::{MockUpstream, Reply, TestProxy, client, eventually, metric, metrics_of};

const COMPLETION: &[u8] = br#"{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":900,"completion_tokens":1,"total_tokens":901,"prompt_tokens_details":{"cached_tokens":0}}}"#;

async fn replicas(n: usize) -> Vec<MockUpstream> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(MockUpstream::start(|_| Reply::json(200, COMPLETION)).await);
    }
    out
}

async fn pool_proxy(urls: &[String], extra: &str) -> TestProxy {
    let list: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    TestProxy::spawn(&format!(
        r#"
[[upstreams]]
name = "vllm"
provider = "openai-compatible"
base_urls = [{}]
{extra}
"#,
        list.join(", ")
    ))
    .await
}

/// A chat request whose prompt is a long document `doc` (shared by equal `doc`s), then `turn`.
fn chat(doc: u32, turn: &str) -> String {
    let document = format!("document {doc}: ") + &"lorem ipsum dolor sit amet ".repeat(200);
    serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": document},
            {"type": "text", "text": turn},
        ]}],
    })
    .to_string()
}

async fn send(proxy: &TestProxy, body: String) -> reqwest::Response {
    client()
        .post(proxy.url("/vllm/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

fn counts(mocks: &[MockUpstream]) -> Vec<usize> {
    mocks.iter().map(|m| m.requests().len()).collect()
}

/// `cachet_plan_branch_total{branch}` (process-wide: tests compare before and after).
async fn branch_count(proxy: &TestProxy, branch: &str) -> f64 {
    let series = format!("cachet_plan_branch_total{{branch=\"{branch}\"}}");
    metric(&metrics_of(proxy).await, &series).unwrap_or(0.0)
}

/// Waits until the pool has nothing in flight (the guard drops when the body ends).
async fn idle(proxy: &TestProxy) {
    let pool = proxy.state.pool("vllm").unwrap().clone();
    eventually("the pool is idle", || {
        pool.in_flight().iter().all(|&n| n == 0)
    })
    .await;
}

#[tokio::test]
async fn pool_sends_repeated_prefixes_to_the_replica_that_holds_them() {
    let mocks = replicas(3).await;
    let urls: Vec<String> = mocks.iter().map(MockUpstream::url).collect();
    let proxy = pool_proxy(&urls, "").await;
    let before = branch_count(&proxy, "replica_affinity").await;
    for doc in 0..3 {
        for turn in ["what is it?", "and then?", "why?"] {
            let res = send(&proxy, chat(doc, turn)).await;
            assert_eq!(res.status(), 200);
            res.bytes().await.unwrap();
            idle(&proxy).await;
        }
    }
    // Each document's three questions went to one replica, and the documents to different
    // ones (cold prefixes go to the least loaded, in turn).
    for mock in &mocks {
        let docs: Vec<String> = mock
            .requests()
            .iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                v["messages"][0]["content"][0]["text"].as_str().unwrap()[..11].to_owned()
            })
            .collect();
        assert_eq!(docs.len(), 3, "{:?}", counts(&mocks));
        assert!(docs.iter().all(|d| *d == docs[0]), "{docs:?}");
    }
    let after = branch_count(&proxy, "replica_affinity").await;
    assert!(after - before >= 6.0, "{before} → {after}");
    // The request bodies reach the replicas unchanged.
    let sent = chat(2, "why?");
    assert!(
        mocks
            .iter()
            .any(|m| m.requests().iter().any(|r| r.body == sent.as_bytes()))
    );
}

#[tokio::test]
async fn pool_fails_over_from_a_replica_that_refuses_connections() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let live = replicas(1).await;
    let proxy = pool_proxy(&[dead, live[0].url()], "").await;
    for doc in 0..4 {
        let res = send(&proxy, chat(doc, "q?")).await;
        assert_eq!(res.status(), 200, "answered by the live replica");
        res.bytes().await.unwrap();
        idle(&proxy).await;
    }
    assert_eq!(live[0].requests().len(), 4);
    // Unmodelled paths too.
    let res = client()
        .get(proxy.url("/vllm/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(live[0].last().path_and_query, "/v1/models");
}

#[tokio::test]
async fn pool_fails_over_on_5xx_and_passes_the_replica_over_while_it_cools_down() {
    let sick = MockUpstream::start(|_| Reply::json(503, br#"{"error":"overloaded"}"#)).await;
    let well = replicas(1).await;
    let proxy = pool_proxy(&[sick.url(), well[0].url()], "").await;
    for doc in 0..4 {
        let res = send(&proxy, chat(doc, "q?")).await;
        assert_eq!(res.status(), 200);
        res.bytes().await.unwrap();
        idle(&proxy).await;
    }
    assert_eq!(sick.requests().len(), 1, "tried once, then passed over");
    assert_eq!(well[0].requests().len(), 4);
    // With every replica failing, the client gets the replica's own answer, unchanged.
    let proxy = pool_proxy(&[sick.url()], "").await;
    let res = send(&proxy, chat(9, "q?")).await;
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.bytes().await.unwrap().as_ref(),
        br#"{"error":"overloaded"}"#
    );
}

#[tokio::test]
async fn pool_without_replica_affinity_balances_plainly() {
    let mocks = replicas(2).await;
    let urls: Vec<String> = mocks.iter().map(MockUpstream::url).collect();
    let proxy = pool_proxy(&urls, "strategies = []").await;
    let before = branch_count(&proxy, "replica_balanced").await;
    for turn in ["a?", "b?", "c?", "d?"] {
        let res = send(&proxy, chat(0, turn)).await;
        res.bytes().await.unwrap();
        idle(&proxy).await;
    }
    assert_eq!(counts(&mocks), [2, 2], "round-robin, the prefix ignored");
    let after = branch_count(&proxy, "replica_balanced").await;
    assert!(after - before >= 4.0, "{before} → {after}");
}
