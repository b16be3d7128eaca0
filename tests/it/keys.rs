//! cachet keys (DESIGN.md auth row): with `api_key_env` on an upstream, clients present a key
//! cachet gave their team, in the header their SDK uses; the upstream gets cachet's own key and
//! never the client's; an unknown key gets 401 in the caller's dialect; the key names the team.

use serde_json::Value;
use sha2::Digest;

use crate::common::*;

fn sha256_hex(key: &str) -> String {
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn proxy_with_keys(mock: &MockUpstream) -> TestProxy {
    let url = mock.url();
    let config = format!(
        r#"
[[keys]]
key_sha256 = "{search}"
team = "search"
[[keys]]
key_sha256 = "{ads}"
team = "ads"
[[upstreams]]
name = "openai"
base_url = "{url}/openai"
api_key_env = "TEST_OPENAI_KEY"
[[upstreams]]
name = "anthropic"
base_url = "{url}/anthropic"
api_key_env = "TEST_ANTHROPIC_KEY"
[[upstreams]]
name = "gemini"
base_url = "{url}/gemini"
api_key_env = "TEST_GEMINI_KEY"
"#,
        search = sha256_hex("ck-search-1"),
        ads = sha256_hex("ck-ads-2"),
    );
    TestProxy::spawn_with_env(
        &config,
        &[
            ("TEST_OPENAI_KEY", "sk-upstream-openai"),
            ("TEST_ANTHROPIC_KEY", "sk-ant-upstream"),
            ("TEST_GEMINI_KEY", "AIza-upstream"),
        ],
    )
    .await
}

fn mock_replies(r: &Recorded) -> Reply {
    match r.path_and_query.as_str() {
        p if p.starts_with("/anthropic") => Reply::json(200, fixture!("anthropic_messages.json")),
        p if p.starts_with("/gemini") => Reply::json(200, fixture!("gemini_generate.json")),
        _ => Reply::json(200, fixture!("openai_chat.json")),
    }
}

#[tokio::test]
async fn each_dialect_presents_a_cachet_key_and_the_upstream_sees_only_cachets() {
    let mock = MockUpstream::start(mock_replies).await;
    let proxy = proxy_with_keys(&mock).await;
    let http = client();
    let chat = r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}"#;
    let r = http
        .post(proxy.url("/openai/v1/chat/completions"))
        .header("authorization", "Bearer ck-search-1")
        .header("x-cachet-team", "spoofed")
        .body(chat)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = mock.last();
    assert_eq!(seen.headers["authorization"], "Bearer sk-upstream-openai");

    let messages = r#"{"model":"claude-sonnet-4-6","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = http
        .post(proxy.url("/anthropic/v1/messages"))
        .header("x-api-key", "ck-ads-2")
        .body(messages)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = mock.last();
    assert_eq!(seen.headers["x-api-key"], "sk-ant-upstream");
    assert!(seen.headers.get("authorization").is_none());

    let generate = r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#;
    let r =
        http.post(proxy.url(
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent?key=ck-search-1&alt=json",
        ))
        .body(generate)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = mock.last();
    assert_eq!(seen.headers["x-goog-api-key"], "AIza-upstream");
    assert_eq!(
        seen.path_and_query, "/gemini/v1beta/models/gemini-2.5-flash:generateContent?alt=json",
        "the client's key= never goes upstream"
    );
    for request in mock.requests() {
        let all = format!("{:?} {}", request.headers, request.path_and_query);
        assert!(
            !all.contains("ck-search-1") && !all.contains("ck-ads-2"),
            "{all}"
        );
    }

    // The key's team, not the header's, is the records' team.
    let ledger = proxy.state.telemetry().ledger().unwrap();
    assert!(ledger.flush(std::time::Duration::from_secs(10)).await);
    let usage = ledger
        .store()
        .usage(0, i64::MAX, cachet::ledger::usage::GroupBy::Team)
        .await
        .unwrap();
    let teams: Vec<(&str, i64)> = usage
        .rows
        .iter()
        .map(|r| (r.key.as_str(), r.requests))
        .collect();
    assert!(teams.contains(&("search", 2)), "{teams:?}");
    assert!(teams.contains(&("ads", 1)), "{teams:?}");
}

#[tokio::test]
async fn an_unknown_or_missing_key_gets_401_in_the_callers_dialect() {
    let mock = MockUpstream::start(mock_replies).await;
    let proxy = proxy_with_keys(&mock).await;
    let http = client();
    let send = |path: &'static str, header: Option<(&'static str, &'static str)>| {
        let mut req = http.post(proxy.url(path)).body("{}");
        if let Some((name, value)) = header {
            req = req.header(name, value);
        }
        req.send()
    };
    let body = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["x-cachet-error"], "unknown_key");
        serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).unwrap()
    };
    let openai = body(
        send(
            "/openai/v1/chat/completions",
            Some(("authorization", "Bearer sk-real-openai-key")),
        )
        .await
        .unwrap(),
    )
    .await;
    assert!(
        openai["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cachet key")
    );
    let anthropic = body(send("/anthropic/v1/messages", None).await.unwrap()).await;
    assert_eq!(anthropic["type"], "error");
    let gemini = body(
        send(
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent?key=nope",
            None,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(gemini["error"]["code"], 401);
    assert!(mock.requests().is_empty(), "nothing reached the upstream");
}

#[test]
fn a_missing_upstream_key_variable_is_a_config_error() {
    let config = "[[upstreams]]\nname = \"openai\"\nbase_url = \"http://x\"\napi_key_env = \"NOPE_NOT_SET\"\n";
    let err = cachet::config::Config::load_from(Some(config), Vec::new()).unwrap_err();
    assert!(
        err.to_string()
            .contains("api_key_env: NOPE_NOT_SET is not set"),
        "{err}"
    );
    let bad = "[[keys]]\nkey_sha256 = \"abc\"\nteam = \"t\"\n";
    let err = cachet::config::Config::load_from(Some(bad), Vec::new()).unwrap_err();
    assert!(err.to_string().contains("keys[0].key_sha256"), "{err}");
}
