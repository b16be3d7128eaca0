//! The request rewrites through the proxy: question after context, stable tools, the
//! `x-cachet-rewrite: off` opt-out and the `x-cachet-rewrites` vocabulary.

use serde_json::{Value, json};

use crate::common::*;

fn document() -> String {
    "The quarterly report covers revenue, costs and outlook in detail. ".repeat(80)
}

async fn post(
    proxy: &TestProxy,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> reqwest::Response {
    let mut req = client()
        .post(proxy.url(path))
        .header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(body.to_owned()).send().await.unwrap()
}

#[tokio::test]
async fn a_leading_question_moves_after_its_document() {
    let mock = MockUpstream::start(|_| Reply::json(200, fixture!("anthropic_messages.json"))).await;
    let proxy = TestProxy::in_front_of(&mock, "").await;
    let doc = document();
    let body = json!({"model": "claude-sonnet-4-6", "max_tokens": 64, "x_unknown": {"b": 1, "a": 2},
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What changed this quarter?"},
            {"type": "text", "text": doc}]}]});
    let r = post(&proxy, "/anthropic/v1/messages", &[], &body.to_string()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cachet-rewrites"], "question_last");
    let sent: Value = serde_json::from_slice(&mock.last().body).unwrap();
    let content = &sent["messages"][0]["content"];
    assert_eq!(content[0]["text"], doc);
    assert_eq!(content[1]["text"], "What changed this quarter?");
    // Everything else as sent, key order included.
    let keys: Vec<&String> = sent.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["model", "max_tokens", "x_unknown", "messages"]);
    assert_eq!(sent["x_unknown"], json!({"b": 1, "a": 2}));
}

#[tokio::test]
async fn off_sends_the_clients_bytes_but_still_asks_for_stream_usage() {
    let mock = MockUpstream::start(|r| {
        if r.path_and_query.contains("chat") {
            Reply::sse(fixture!("openai_chat.sse"), 64)
        } else {
            Reply::json(200, fixture!("anthropic_messages.json"))
        }
    })
    .await;
    let proxy = TestProxy::in_front_of(&mock, "").await;
    let doc = document();
    let raw = format!(
        "{{ \"model\": \"claude-sonnet-4-6\", \"max_tokens\": 64, \"messages\": [{{\"role\": \"user\", \"content\": [{{\"type\": \"text\", \"text\": \"Why?\"}}, {{\"type\": \"text\", \"text\": \"{doc}\"}}]}}] }}"
    );
    let r = post(
        &proxy,
        "/anthropic/v1/messages",
        &[("x-cachet-rewrite", "off")],
        &raw,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-cachet-rewrites").is_none());
    assert_eq!(mock.last().body, raw.as_bytes(), "byte for byte");
    assert!(
        mock.last().headers.get("x-cachet-rewrite").is_none(),
        "x-cachet-* stripped"
    );

    let chat = json!({"model": "gpt-4.1", "stream": true,
        "messages": [{"role": "user", "content": format!("Why?\n\n{doc}")}]});
    let r = post(
        &proxy,
        "/openai/v1/chat/completions",
        &[("x-cachet-rewrite", "OFF")],
        &chat.to_string(),
    )
    .await;
    assert_eq!(r.headers()["x-cachet-rewrites"], "include_usage");
    r.bytes().await.unwrap();
    let sent: Value = serde_json::from_slice(&mock.last().body).unwrap();
    assert_eq!(
        sent["messages"][0]["content"],
        format!("Why?\n\n{doc}"),
        "not moved"
    );
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn a_gemini_question_goes_after_its_document_in_one_turn_when_no_cache_holds_it() {
    let mock = MockUpstream::start(|_| Reply::json(200, fixture!("gemini_generate.json"))).await;
    let proxy = TestProxy::in_front_of(&mock, "[rewrite]\nstable_tools = true\n").await;
    let doc = document();
    let body = json!({
        "tools": [{"functionDeclarations": [{"name": "zeta"}, {"name": "alpha"}]}],
        "contents": [{"role": "user", "parts": [{"text": format!("What changed?\n\n{doc}")}]}],
    });
    let r = post(
        &proxy,
        "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
        &[],
        &body.to_string(),
    )
    .await;
    assert_eq!(r.status(), 200);
    // A turn of its own (`gemini_split_turn`) only for a document that goes into a cached
    // content (tests/it/gemini_cache.rs): a first request swaps the text, no token more.
    assert_eq!(
        r.headers()["x-cachet-rewrites"],
        "question_last,stable_tools"
    );
    let sent: Value = serde_json::from_slice(&mock.last().body).unwrap();
    assert_eq!(sent["contents"].as_array().unwrap().len(), 1);
    assert_eq!(
        sent["contents"][0]["parts"][0]["text"],
        format!("{doc}\n\nWhat changed?")
    );
    assert_eq!(sent["tools"][0]["functionDeclarations"][0]["name"], "alpha");
}

#[tokio::test]
async fn ground_question_prefixes_the_moved_question() {
    let mock = MockUpstream::start(|_| Reply::json(200, fixture!("openai_chat.json"))).await;
    let proxy = TestProxy::in_front_of(&mock, "[rewrite]\nground_question = true\n").await;
    let doc = document();
    let body = json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What changed?"}, {"type": "text", "text": doc}]}]});
    let r = post(
        &proxy,
        "/openai/v1/chat/completions",
        &[],
        &body.to_string(),
    )
    .await;
    // The document-first prompt is also long enough for OpenAI's cache: a key comes too.
    assert_eq!(
        r.headers()["x-cachet-rewrites"],
        "question_last,ground_question,prompt_cache_key"
    );
    let sent: Value = serde_json::from_slice(&mock.last().body).unwrap();
    assert_eq!(
        sent["messages"][0]["content"][1]["text"],
        "Based on the information above, answer: What changed?"
    );
}

#[tokio::test]
async fn the_reusable_prefix_key_is_shared_by_questions_on_one_document_of_one_tenant() {
    let mock = MockUpstream::start(|_| Reply::json(200, fixture!("anthropic_messages.json"))).await;
    let proxy = TestProxy::in_front_of(&mock, "").await;
    let doc = document();
    let ask = |q: &str| {
        json!({"model": "claude-sonnet-4-6", "max_tokens": 64, "system": "Answer from the report.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": q}, {"type": "text", "text": doc}]}]})
        .to_string()
    };
    let prefix =
        |r: &reqwest::Response| r.headers()["x-cachet-prefix"].to_str().unwrap().to_owned();
    let a = post(
        &proxy,
        "/anthropic/v1/messages",
        &[("x-api-key", "sk-one")],
        &ask("What changed?"),
    )
    .await;
    let b = post(
        &proxy,
        "/anthropic/v1/messages",
        &[("x-api-key", "sk-one")],
        &ask("Who wrote it?"),
    )
    .await;
    let c = post(
        &proxy,
        "/anthropic/v1/messages",
        &[("x-api-key", "sk-two")],
        &ask("What changed?"),
    )
    .await;
    assert_eq!(prefix(&a).len(), 64);
    assert!(prefix(&a).bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        prefix(&a),
        prefix(&b),
        "the document is the shared prefix, wherever the question was"
    );
    assert_ne!(
        prefix(&a),
        prefix(&c),
        "another credential is another tenant"
    );
    // A lone short question has nothing reusable.
    let lone = json!({"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi?"}]});
    let r = post(&proxy, "/anthropic/v1/messages", &[], &lone.to_string()).await;
    assert!(r.headers().get("x-cachet-prefix").is_none());
}

#[tokio::test]
async fn anthropic_requests_get_breakpoints_where_the_client_left_slots() {
    let mock = MockUpstream::start(|_| Reply::json(200, fixture!("anthropic_messages.json"))).await;
    let proxy = TestProxy::in_front_of(&mock, "").await;
    let tools = json!([{"name": "search", "description": "Search the archive. ".repeat(400), "input_schema": {"type": "object"}}]);
    let body = json!({"model": "claude-sonnet-4-6", "max_tokens": 64, "tools": tools,
        "system": "Answer from the archive.", "messages": [{"role": "user", "content": "What is new?"}]});
    let r = post(
        &proxy,
        "/anthropic/v1/messages",
        &[("x-api-key", "k")],
        &body.to_string(),
    )
    .await;
    assert_eq!(r.headers()["x-cachet-rewrites"], "cache_control");
    let sent: Value = serde_json::from_slice(&mock.last().body).unwrap();
    assert_eq!(
        sent["tools"][0]["cache_control"],
        json!({"type": "ephemeral"}),
        "the stable tools"
    );
    // The system string becomes one block so it can carry the second marker (its prefix, tools
    // included, reaches the minimum); the short question after it gets none.
    assert_eq!(sent["system"][0]["text"], "Answer from the archive.");
    assert_eq!(
        sent["system"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    assert_eq!(sent["messages"][0]["content"], "What is new?");
    // Opted out: no marker.
    let r = post(
        &proxy,
        "/anthropic/v1/messages",
        &[("x-api-key", "k"), ("x-cachet-rewrite", "off")],
        &body.to_string(),
    )
    .await;
    assert!(r.headers().get("x-cachet-rewrites").is_none());
    assert_eq!(mock.last().body, body.to_string().as_bytes());
    // Four client markers already: nothing added.
    let rules: Vec<Value> = (1..=4)
        .map(|i| json!({"type": "text", "text": format!("rule {i}"), "cache_control": {"type": "ephemeral"}}))
        .collect();
    let full = json!({"model": "claude-sonnet-4-6", "max_tokens": 64, "tools": body["tools"].clone(),
        "system": rules, "messages": [{"role": "user", "content": "What is new?"}]});
    let r = post(
        &proxy,
        "/anthropic/v1/messages",
        &[("x-api-key", "k")],
        &full.to_string(),
    )
    .await;
    assert!(r.headers().get("x-cachet-rewrites").is_none());
}

#[tokio::test]
async fn strategies_switch_off_per_upstream_and_branches_are_counted() {
    let mock = MockUpstream::start(|_| Reply::json(200, fixture!("anthropic_messages.json"))).await;
    let url = mock.url();
    let proxy = TestProxy::spawn(&format!(
        "[[upstreams]]\nname = \"anthropic\"\nbase_url = \"{url}/anthropic\"\nstrategies = []\n\
         [[upstreams]]\nname = \"claude\"\nprovider = \"anthropic\"\nbase_url = \"{url}/anthropic\"\n"
    ))
    .await;
    let tools = json!([{"name": "search", "description": "Search the archive. ".repeat(400), "input_schema": {"type": "object"}}]);
    let body = json!({"model": "claude-sonnet-4-6", "max_tokens": 64, "tools": tools,
        "messages": [{"role": "user", "content": "What is new?"}]})
    .to_string();
    let off = post(
        &proxy,
        "/anthropic/v1/messages",
        &[("x-api-key", "k")],
        &body,
    )
    .await;
    assert!(off.headers().get("x-cachet-rewrites").is_none());
    assert_eq!(
        mock.last().body,
        body.as_bytes(),
        "strategies = [] leaves the body alone"
    );
    let on = post(&proxy, "/claude/v1/messages", &[("x-api-key", "k")], &body).await;
    assert_eq!(on.headers()["x-cachet-rewrites"], "cache_control");
    let text = metrics_of(&proxy).await;
    // The recorder is the process's: other tests count too, so at least one each.
    for branch in ["strategy_off", "cache_control"] {
        let series = format!("cachet_plan_branch_total{{branch=\"{branch}\"}} ");
        let count = metric(&text, &series).unwrap_or(0.0);
        assert!(count >= 1.0, "{series} in\n{text}");
    }
}

#[tokio::test]
async fn openai_requests_get_a_prompt_cache_key_where_it_is_accepted() {
    let mock = MockUpstream::start(|_| Reply::json(200, fixture!("openai_chat.json"))).await;
    let proxy = TestProxy::in_front_of(&mock, "").await;
    let doc = document();
    let chat = |q: &str| {
        json!({"model": "gpt-4.1", "messages": [
            {"role": "system", "content": "Answer from the report."},
            {"role": "user", "content": [{"type": "text", "text": doc}, {"type": "text", "text": q}]}]})
    };
    // Sends `body` to `path` with `key` as the credential; the cache key the upstream got and
    // the rewrites header.
    let send = async |path: &str, key: &str, body: Value| {
        let auth = format!("Bearer {key}");
        let r = post(&proxy, path, &[("authorization", &auth)], &body.to_string()).await;
        let rewrites = r
            .headers()
            .get("x-cachet-rewrites")
            .map(|v| v.to_str().unwrap().to_owned());
        let sent: Value = serde_json::from_slice(&mock.last().body).unwrap();
        (sent["prompt_cache_key"].clone(), rewrites)
    };
    const CHAT: &str = "/openai/v1/chat/completions";
    let (first, rewrites) = send(CHAT, "sk-1", chat("What changed?")).await;
    assert_eq!(rewrites.as_deref(), Some("prompt_cache_key"));
    assert!(first.as_str().unwrap().starts_with("cachet-"));
    let (again, _) = send(CHAT, "sk-1", chat("Who wrote it?")).await;
    assert_eq!(again, first, "the same document, the same key");
    let (other, _) = send(CHAT, "sk-2", chat("What changed?")).await;
    assert_ne!(other, first, "another tenant, another key");

    // The client's own key wins; DeepSeek takes none.
    let mut own = chat("Mine?");
    own["prompt_cache_key"] = json!("my-key");
    assert_eq!(send(CHAT, "sk-1", own).await, (json!("my-key"), None));
    let mut ds = chat("Deep?");
    ds["model"] = json!("deepseek-chat");
    assert!(
        send("/deepseek/chat/completions", "sk-1", ds)
            .await
            .0
            .is_null()
    );

    // Above 15 a minute the key is sharded.
    let mut keys = Vec::new();
    for _ in 0..14 {
        keys.push(send(CHAT, "sk-1", chat("Again?")).await.0);
    }
    assert!(
        keys[..13].iter().all(|k| *k == first),
        "15 requests share one key"
    );
    assert_eq!(keys[13], format!("{}-s1", first.as_str().unwrap()));
}
