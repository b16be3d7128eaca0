use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::clock::{Clock, parse_rfc3339};
use crate::sim::gemini::render;
use crate::sim::test_support::{TestResponse, call, json_of};
use crate::sim::{Sim, build};

const KEY: (&str, &str) = ("x-goog-api-key", "key-a");
const GEN: &str = "/gemini/v1beta/models/gemini-2.5-flash:generateContent";

fn sim() -> (Arc<Sim>, Router) {
    let sim = Arc::new(Sim::new(Arc::new(Clock::system()), Default::default(), 0));
    (sim.clone(), build(sim))
}

fn request() -> (Value, u64) {
    let req = json!({
        "contents": [{"role": "user", "parts": [{"text": "hello"}]}],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "tools": [{"functionDeclarations": [{"name": "f"}]}],
    });
    let n = render(&req).tokens();
    (req, n)
}

async fn post(app: &Router, path: &str, body: &Value) -> TestResponse {
    call(app, "POST", path, &[KEY], &body.to_string()).await
}

fn error_status(res: &TestResponse, status: StatusCode, google: &str) {
    assert_eq!(res.status, status);
    let body = json_of(res);
    assert_eq!(body["error"]["code"], status.as_u16());
    assert_eq!(body["error"]["status"], google);
    assert!(body["error"]["message"].is_string());
}

#[tokio::test]
async fn generate_content_shape_under_both_versions() {
    let (_, app) = sim();
    let (req, n) = request();
    for path in [
        GEN,
        "/gemini/v1/models/gemini-2.5-flash:generateContent",
        "/gemini/v1beta/models/models/gemini-2.5-flash:generateContent",
    ] {
        let res = post(&app, path, &req).await;
        assert_eq!(res.status, StatusCode::OK, "{path}");
        let body = json_of(&res);
        let candidate = &body["candidates"][0];
        assert_eq!(candidate["content"]["role"], "model");
        assert_eq!(
            candidate["content"]["parts"],
            json!([{"text": format!("cachet-sim reply from gemini-2.5-flash to {n} prompt tokens.")}])
        );
        assert_eq!(candidate["finishReason"], "STOP");
        assert_eq!(candidate["index"], 0);
        assert_eq!(
            body["usageMetadata"],
            json!({
                "promptTokenCount": n,
                "candidatesTokenCount": 8,
                "totalTokenCount": n + 8,
                "cachedContentTokenCount": 0,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": n}],
            })
        );
        assert_eq!(body["modelVersion"], "gemini-2.5-flash");
        assert!(
            body["responseId"]
                .as_str()
                .unwrap()
                .starts_with("gemini-sim-")
        );
    }
}

#[tokio::test]
async fn max_output_tokens_in_either_case() {
    let (_, app) = sim();
    for config in [
        json!({"generationConfig": {"maxOutputTokens": 2}}),
        json!({"generation_config": {"max_output_tokens": 2}}),
    ] {
        let (mut req, _) = request();
        req.as_object_mut()
            .unwrap()
            .extend(config.as_object().unwrap().clone());
        let body = json_of(&post(&app, GEN, &req).await);
        assert_eq!(
            body["candidates"][0]["content"]["parts"][0]["text"],
            "cachet-sim reply"
        );
        assert_eq!(body["candidates"][0]["finishReason"], "MAX_TOKENS");
        assert_eq!(body["usageMetadata"]["candidatesTokenCount"], 2);
    }
}

#[tokio::test]
async fn sse_stream_with_running_usage() {
    let (_, app) = sim();
    let (req, n) = request();
    let path = "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
    let res = post(&app, path, &req).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(res.text().contains("\r\n\r\n"), "Google's CRLF framing");
    let events = res.sse();
    assert_eq!(events.len(), 8);
    assert_eq!(res.frames.len(), 8);
    let mut text = String::new();
    for (i, (event, chunk)) in events.iter().enumerate() {
        assert!(event.is_none());
        text.push_str(
            chunk["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap(),
        );
        let usage = &chunk["usageMetadata"];
        assert_eq!(usage["promptTokenCount"], n);
        assert_eq!(usage["candidatesTokenCount"], i + 1);
        let finish = &chunk["candidates"][0]["finishReason"];
        assert_eq!(finish.is_null(), i < 7);
    }
    assert_eq!(
        text,
        format!("cachet-sim reply from gemini-2.5-flash to {n} prompt tokens.")
    );
    assert_eq!(events[7].1["candidates"][0]["finishReason"], "STOP");
    assert_eq!(events[7].1["usageMetadata"]["totalTokenCount"], n + 8);
}

#[tokio::test]
async fn json_array_stream_without_alt() {
    let (_, app) = sim();
    let (req, n) = request();
    let path = "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent";
    let res = post(&app, path, &req).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        res.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(res.frames.len(), 9);
    let text = res.text();
    assert!(text.starts_with("[{") && text.ends_with("}\n]"));
    assert!(text.contains("}\n,\r\n{"));
    let chunks: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(chunks.len(), 8);
    assert_eq!(chunks[7]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(chunks[7]["usageMetadata"]["promptTokenCount"], n);
}

#[tokio::test]
async fn count_tokens_both_forms() {
    let (_, app) = sim();
    let (req, n) = request();
    let path = "/gemini/v1beta/models/gemini-2.5-flash:countTokens";
    let contents_only = json!({"contents": req["contents"]});
    let body = json_of(&post(&app, path, &contents_only).await);
    assert_eq!(
        body["totalTokens"],
        render(&json!({"contents": req["contents"]})).tokens()
    );
    let wrapped = json!({"generateContentRequest": req});
    let body = json_of(&post(&app, path, &wrapped).await);
    assert_eq!(body["totalTokens"], n);
}

#[tokio::test]
async fn errors_in_google_shape() {
    let (_, app) = sim();
    let res = call(&app, "POST", GEN, &[KEY], "{nope").await;
    error_status(&res, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    let res = call(
        &app,
        "POST",
        "/gemini/v1beta/models/:generateContent",
        &[KEY],
        "{}",
    )
    .await;
    error_status(&res, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    let res = call(
        &app,
        "POST",
        "/gemini/v1beta/models/gemini-2.5-flash:embed",
        &[KEY],
        "{}",
    )
    .await;
    error_status(&res, StatusCode::NOT_FOUND, "NOT_FOUND");
    let res = call(
        &app,
        "POST",
        "/gemini/v1beta/models/gemini-2.5-flash",
        &[KEY],
        "{}",
    )
    .await;
    error_status(&res, StatusCode::NOT_FOUND, "NOT_FOUND");
    let res = call(&app, "GET", "/gemini/v2/models", &[KEY], "").await;
    error_status(&res, StatusCode::NOT_FOUND, "NOT_FOUND");
    let res = call(&app, "GET", "/gemini/v1beta/files", &[KEY], "").await;
    error_status(&res, StatusCode::NOT_FOUND, "NOT_FOUND");
}

fn cache_body() -> (Value, u64) {
    let body = json!({
        "model": "models/gemini-2.5-flash",
        "displayName": "doc",
        "contents": [{"role": "user", "parts": [{"text": "a long document. ".repeat(700)}]}],
        "systemInstruction": {"parts": [{"text": "you answer questions"}]},
    });
    let n = render(&body).tokens();
    (body, n)
}

#[tokio::test]
async fn a_cache_below_the_models_minimum_is_refused() {
    let (_, app) = sim();
    let small = json!({
        "model": "models/gemini-2.5-flash",
        "contents": [{"role": "user", "parts": [{"text": "a short document"}]}],
    });
    let res = post(&app, "/gemini/v1beta/cachedContents", &small).await;
    error_status(&res, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    assert!(
        json_of(&res)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("min_total_token_count=2048")
    );
    let (_, n) = cache_body();
    assert!(n >= 2048, "the tests' cache is large enough: {n}");
}

async fn create_cache(app: &Router, extra: Value) -> Value {
    let (mut body, _) = cache_body();
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let res = post(app, "/gemini/v1beta/cachedContents", &body).await;
    assert_eq!(res.status, StatusCode::OK);
    json_of(&res)
}

fn secs_between(from: &Value, to: &Value) -> u64 {
    let from = parse_rfc3339(from.as_str().unwrap()).unwrap();
    let to = parse_rfc3339(to.as_str().unwrap()).unwrap();
    to.duration_since(from).unwrap().as_secs()
}

#[tokio::test]
async fn create_get_list_patch_delete() {
    let (_, app) = sim();
    let (_, n) = cache_body();
    let created = create_cache(&app, json!({})).await;
    let name = created["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("cachedContents/"));
    assert_eq!(created["model"], "models/gemini-2.5-flash");
    assert_eq!(created["displayName"], "doc");
    assert_eq!(created["usageMetadata"]["totalTokenCount"], n);
    assert_eq!(created["createTime"], created["updateTime"]);
    assert_eq!(
        secs_between(&created["createTime"], &created["expireTime"]),
        3600
    );

    let path = format!("/gemini/v1beta/{name}");
    let got = json_of(&call(&app, "GET", &path, &[KEY], "").await);
    assert_eq!(got, created);

    let short = create_cache(&app, json!({"model": "gemini-2.5-flash", "ttl": "300s"})).await;
    assert_eq!(short["model"], "models/gemini-2.5-flash");
    assert_eq!(
        secs_between(&short["createTime"], &short["expireTime"]),
        300
    );
    let at = create_cache(&app, json!({"expireTime": "2999-01-01T00:00:00Z"})).await;
    assert_eq!(at["expireTime"], "2999-01-01T00:00:00.000000Z");

    let list = json_of(&call(&app, "GET", "/gemini/v1beta/cachedContents", &[KEY], "").await);
    let names: Vec<&Value> = list["cachedContents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert_eq!(names, vec![&created["name"], &short["name"], &at["name"]]);
    assert!(list.get("nextPageToken").is_none());
    let page = json_of(
        &call(
            &app,
            "GET",
            "/gemini/v1beta/cachedContents?pageSize=2",
            &[KEY],
            "",
        )
        .await,
    );
    assert_eq!(page["cachedContents"].as_array().unwrap().len(), 2);
    let token = page["nextPageToken"].as_str().unwrap();
    let rest = format!("/gemini/v1/cachedContents?pageSize=2&pageToken={token}");
    let rest = json_of(&call(&app, "GET", &rest, &[KEY], "").await);
    assert_eq!(rest["cachedContents"][0]["name"], at["name"]);
    assert!(rest.get("nextPageToken").is_none());

    let patched = call(
        &app,
        "PATCH",
        &format!("{path}?updateMask=ttl"),
        &[KEY],
        r#"{"ttl":"60s"}"#,
    )
    .await;
    let patched = json_of(&patched);
    assert_eq!(
        secs_between(&patched["updateTime"], &patched["expireTime"]),
        60
    );
    assert_eq!(patched["createTime"], created["createTime"]);

    let deleted = call(&app, "DELETE", &path, &[KEY], "").await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(json_of(&deleted), json!({}));
    let res = call(&app, "GET", &path, &[KEY], "").await;
    error_status(&res, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn caches_belong_to_their_key() {
    let (_, app) = sim();
    let created = create_cache(&app, json!({})).await;
    let path = format!("/gemini/v1beta/{}", created["name"].as_str().unwrap());
    let other = [("x-goog-api-key", "key-b")];
    let res = call(&app, "GET", &path, &other, "").await;
    error_status(&res, StatusCode::FORBIDDEN, "PERMISSION_DENIED");
    let res = call(&app, "DELETE", &path, &other, "").await;
    error_status(&res, StatusCode::FORBIDDEN, "PERMISSION_DENIED");
    // The query parameter is the same key as the header.
    let res = call(&app, "GET", &format!("{path}?key=key-a"), &[], "").await;
    assert_eq!(res.status, StatusCode::OK);
    let list = json_of(&call(&app, "GET", "/gemini/v1beta/cachedContents", &other, "").await);
    assert_eq!(list["cachedContents"], json!([]));
    let res = call(
        &app,
        "GET",
        "/gemini/v1beta/cachedContents/unknown",
        &[KEY],
        "",
    )
    .await;
    error_status(&res, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn caches_expire_on_the_clock() {
    let (sim, app) = sim();
    let created = create_cache(&app, json!({"ttl": "10s"})).await;
    let path = format!("/gemini/v1beta/{}", created["name"].as_str().unwrap());
    assert_eq!(
        call(&app, "GET", &path, &[KEY], "").await.status,
        StatusCode::OK
    );
    sim.clock.advance(Duration::from_secs(11));
    let res = call(&app, "GET", &path, &[KEY], "").await;
    error_status(&res, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn bad_cache_requests() {
    let (_, app) = sim();
    let (body, _) = cache_body();
    for (field, value) in [
        ("model", json!(null)),
        ("ttl", json!("ten minutes")),
        ("expireTime", json!("tomorrow")),
    ] {
        let mut bad = body.clone();
        bad[field] = value;
        let res = post(&app, "/gemini/v1beta/cachedContents", &bad).await;
        error_status(&res, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    }
    let mut both = body.clone();
    both["ttl"] = json!("60s");
    both["expireTime"] = json!("2999-01-01T00:00:00Z");
    let res = post(&app, "/gemini/v1beta/cachedContents", &both).await;
    error_status(&res, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    let created = create_cache(&app, json!({})).await;
    let path = format!("/gemini/v1beta/{}", created["name"].as_str().unwrap());
    let res = call(&app, "PATCH", &path, &[KEY], r#"{"displayName":"x"}"#).await;
    error_status(&res, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    let res = call(
        &app,
        "GET",
        "/gemini/v1beta/cachedContents?pageToken=zz",
        &[KEY],
        "",
    )
    .await;
    error_status(&res, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn generate_with_cached_content_counts_its_tokens() {
    let (_, app) = sim();
    let (_, cached) = cache_body();
    let created = create_cache(&app, json!({})).await;
    let name = created["name"].clone();
    let contents = json!([{"role": "user", "parts": [{"text": "what does it say?"}]}]);
    let own = render(&json!({"contents": contents})).tokens();
    let req = json!({"contents": contents, "cachedContent": name});
    let body = json_of(&post(&app, GEN, &req).await);
    assert_eq!(body["usageMetadata"]["promptTokenCount"], cached + own);
    // An explicit cache is always read in full (providers.md §3.7).
    assert_eq!(body["usageMetadata"]["cachedContentTokenCount"], cached);
    let text = body["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap();
    assert!(text.contains(&format!("to {} prompt tokens.", cached + own)));

    // snake_case field and a streamed call behave the same.
    let snake = json!({"contents": contents, "cached_content": name});
    let path = "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
    let events = post(&app, path, &snake).await.sse();
    assert_eq!(
        events[0].1["usageMetadata"]["promptTokenCount"],
        cached + own
    );

    let count = json!({"generateContentRequest": req});
    let path = "/gemini/v1beta/models/gemini-2.5-flash:countTokens";
    assert_eq!(
        json_of(&post(&app, path, &count).await)["totalTokens"],
        cached + own
    );
}

#[tokio::test]
async fn cached_content_rejections() {
    let (_, app) = sim();
    let created = create_cache(&app, json!({})).await;
    let name = created["name"].clone();
    let contents = json!([{"role": "user", "parts": [{"text": "q"}]}]);
    for (field, value) in [
        ("systemInstruction", json!({"parts": [{"text": "s"}]})),
        ("tools", json!([])),
        ("toolConfig", json!({})),
        ("system_instruction", json!({"parts": [{"text": "s"}]})),
    ] {
        let req = json!({"contents": contents, "cachedContent": name, field: value});
        let res = post(&app, GEN, &req).await;
        error_status(&res, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    }
    let req = json!({"contents": contents, "cachedContent": name});
    let other_model = "/gemini/v1beta/models/gemini-2.5-pro:generateContent";
    error_status(
        &post(&app, other_model, &req).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
    );
    let res = call(
        &app,
        "POST",
        GEN,
        &[("x-goog-api-key", "key-b")],
        &req.to_string(),
    )
    .await;
    error_status(&res, StatusCode::FORBIDDEN, "PERMISSION_DENIED");
    let unknown = json!({"contents": contents, "cachedContent": "cachedContents/nope"});
    error_status(
        &post(&app, GEN, &unknown).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
}
