//! Test helpers: drive the router with `oneshot` and keep the body frames apart, so tests can
//! check that streams really arrive in several chunks.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub(crate) struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub frames: Vec<Bytes>,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.frames.concat()).unwrap()
    }

    /// `(event name, data)` of every SSE event, for either line ending.
    pub fn sse(&self) -> Vec<(Option<String>, Value)> {
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("text/event-stream")
        );
        assert_eq!(self.header("cache-control").as_deref(), Some("no-cache"));
        let text = self.text().replace("\r\n", "\n");
        text.split("\n\n")
            .filter(|block| !block.is_empty())
            .map(|block| {
                let mut event = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event: ") {
                        event = Some(name.to_owned());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = Some(if d == "[DONE]" {
                            Value::String("[DONE]".into())
                        } else {
                            serde_json::from_str(d).unwrap()
                        });
                    } else {
                        panic!("unexpected SSE line {line:?}");
                    }
                }
                (event, data.unwrap())
            })
            .collect()
    }
}

pub(crate) fn json_of(res: &TestResponse) -> Value {
    assert_eq!(
        res.header("content-type").as_deref(),
        Some("application/json")
    );
    serde_json::from_slice(&res.frames.concat()).unwrap()
}

pub(crate) async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> TestResponse {
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Body::from(body.to_owned())).unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let mut body = res.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            frames.push(data);
        }
    }
    TestResponse {
        status,
        headers,
        frames,
    }
}
