//! The Anthropic Messages API: `POST /v1/messages` (JSON, or SSE with `"stream": true`),
//! `POST /v1/messages/count_tokens` and `GET /v1/models`. Query strings such as Claude Code's
//! `?beta=true` are accepted and ignored, as routing never looks at them.
//!
//! The stream follows the documented event order: `message_start` (cache figures and a
//! placeholder `output_tokens: 1`), `content_block_start`, `ping`, one `content_block_delta` per
//! word, `content_block_stop`, `message_delta` (stop reason and cumulative usage), `message_stop`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::Sim;
use super::prompt::{Content, Kind, Piece, SimPrompt, Ttl};
use super::reply::Reply;
use super::wire::{
    Chunk, Dialect, Meter, SSE, SimError, api_key, ok_json, parse_object, require_messages,
    require_str, sse_event, stream_response, wants_stream,
};
use crate::usage::Usage;

const D: Dialect = Dialect::Anthropic;

pub(crate) fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/models", get(models))
        .fallback(not_found)
        .with_state(sim)
}

async fn not_found(method: Method, uri: Uri) -> SimError {
    SimError::not_found(D, format!("Not found: {method} {}", uri.path()))
}

async fn messages(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SimError> {
    let req = parse_object(D, &body)?;
    let model = require_str(D, &req, "model")?;
    // Anthropic, unlike the others, has no default output budget.
    let max_tokens = req
        .get("max_tokens")
        .and_then(Value::as_u64)
        .ok_or_else(|| SimError::bad_request(D, "max_tokens: Field required"))?;
    require_messages(D, &req, "messages")?;
    let prompt = render(&req);
    let key = api_key(&headers);
    let auto = req.get("cache_control").and_then(ttl_of);
    let usage = sim
        .engine
        .anthropic(&key, model, &prompt, auto, sim.now())
        .map_err(|message| SimError::bad_request(D, message))?;
    let message = Message {
        id: format!("msg_sim_{}", sim.next_id()),
        model,
        usage,
        reply: Reply::new(model, prompt.tokens(), Some(max_tokens)),
    };
    let meter = Meter::new(sim.clone(), key, model, &headers);
    if wants_stream(&req) {
        Ok(stream_response(SSE, message.events(), meter))
    } else {
        meter.whole(message.told(message.reply.output_tokens));
        Ok(ok_json(&message.json()))
    }
}

async fn count_tokens(body: Bytes) -> Result<Response, SimError> {
    let req = parse_object(D, &body)?;
    require_str(D, &req, "model")?;
    require_messages(D, &req, "messages")?;
    Ok(ok_json(&json!({"input_tokens": render(&req).tokens()})))
}

/// The prompt in Anthropic's prefix order, tools → system → messages (providers.md §1.3), one
/// block per tool, system block and content block, each with its `cache_control`.
pub(crate) fn render(req: &Value) -> SimPrompt {
    let tools = req
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let tools = tools.map(|tool| block(None, Content::Json(tool), Kind::Tool, tool));
    let system = match req.get("system") {
        Some(Value::String(text)) => vec![Piece {
            role: Some("system"),
            content: Content::Text(text),
            kind: Kind::System,
            mark: None,
            turn_end: false,
        }],
        Some(Value::Array(blocks)) => blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let role = (i == 0).then_some("system");
                block(role, text_or_json(b), Kind::System, b)
            })
            .collect(),
        _ => Vec::new(),
    };
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let messages = messages.flat_map(|message| {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("user");
        let mut pieces: Vec<Piece<'_>> = match message.get("content") {
            Some(Value::String(text)) => vec![Piece {
                role: Some(role),
                content: Content::Text(text),
                kind: Kind::Text,
                mark: None,
                turn_end: false,
            }],
            Some(Value::Array(blocks)) => blocks
                .iter()
                .enumerate()
                .map(|(i, b)| block((i == 0).then_some(role), text_or_json(b), kind_of(b), b))
                .collect(),
            _ => Vec::new(),
        };
        if let Some(last) = pieces.last_mut() {
            last.turn_end = true;
        }
        pieces
    });
    SimPrompt::build(tools.chain(system).chain(messages))
}

fn block<'a>(role: Option<&'a str>, content: Content<'a>, kind: Kind, raw: &Value) -> Piece<'a> {
    Piece {
        role,
        content,
        kind,
        mark: raw.get("cache_control").and_then(ttl_of),
        turn_end: false,
    }
}

fn text_or_json(block: &Value) -> Content<'_> {
    match (block.get("type").and_then(Value::as_str), block.get("text")) {
        (Some("text"), Some(Value::String(text))) => Content::Text(text),
        _ => Content::Json(block),
    }
}

fn kind_of(block: &Value) -> Kind {
    match block.get("type").and_then(Value::as_str) {
        Some("text") => Kind::Text,
        Some("tool_use") => Kind::ToolUse,
        Some("tool_result") => Kind::ToolResult,
        _ => Kind::Other,
    }
}

/// `{"type": "ephemeral", "ttl": "1h"}` → 1h; `ttl` absent → the default 5m.
fn ttl_of(cache_control: &Value) -> Option<Ttl> {
    if !cache_control.is_object() {
        return None;
    }
    Some(match cache_control.get("ttl").and_then(Value::as_str) {
        Some("1h") => Ttl::OneHour,
        _ => Ttl::FiveMinutes,
    })
}

async fn models() -> Response {
    let data: Vec<Value> = [
        ("claude-opus-4-1", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
        ("claude-sonnet-4-5", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
        ("claude-haiku-4-5", "Claude Haiku 4.5", "2025-10-15T00:00:00Z"),
    ]
    .iter()
    .map(|(id, name, created)| {
        json!({"type": "model", "id": id, "display_name": name, "created_at": created})
    })
    .collect();
    ok_json(&json!({
        "data": data,
        "has_more": false,
        "first_id": "claude-opus-4-1",
        "last_id": "claude-haiku-4-5",
    }))
}

struct Message<'a> {
    id: String,
    model: &'a str,
    usage: Usage,
    reply: Reply,
}

impl Message<'_> {
    fn stop_reason(&self) -> &'static str {
        if self.reply.truncated {
            "max_tokens"
        } else {
            "end_turn"
        }
    }

    /// The full `usage` object (providers.md §1.9): `input_tokens` counts only the tokens after
    /// the last breakpoint.
    fn usage(&self, output_tokens: u64) -> Value {
        let u = &self.usage;
        json!({
            "input_tokens": u.input_uncached,
            "cache_creation_input_tokens": u.cache_write(),
            "cache_read_input_tokens": u.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": u.cache_write_5m,
                "ephemeral_1h_input_tokens": u.cache_write_1h,
            },
            "output_tokens": output_tokens,
            "service_tier": "standard",
        })
    }

    /// `content`, `stop_reason` and `usage` as given: the final message or the stream's opening.
    fn envelope(&self, content: Value, stop_reason: Value, usage: Value) -> Value {
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": usage,
        })
    }

    fn json(&self) -> Value {
        self.envelope(
            json!([{"type": "text", "text": self.reply.text}]),
            json!(self.stop_reason()),
            self.usage(self.reply.output_tokens),
        )
    }

    /// The usage a `usage` object with `output_tokens` tells.
    fn told(&self, output_tokens: u64) -> Usage {
        Usage {
            output: output_tokens,
            ..self.usage
        }
    }

    /// The SSE events, each with the output tokens it delivers (one per text delta) and the
    /// usage it reports (message_start and message_delta).
    fn events(&self) -> Vec<Chunk> {
        // message_start's output_tokens is a placeholder; the docs show 1.
        let start = self.envelope(json!([]), Value::Null, self.usage(1));
        let mut events = vec![
            (
                "message_start",
                json!({"type": "message_start", "message": start}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ("ping", json!({"type": "ping"})),
        ];
        for delta in self.reply.deltas() {
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": delta}}),
            ));
        }
        events.extend([
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "message_delta",
                json!({
                    "type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason(), "stop_sequence": null},
                    // Cumulative, and without the TTL breakdown, as MessageDeltaUsage is.
                    "usage": {
                        "input_tokens": self.usage.input_uncached,
                        "cache_creation_input_tokens": self.usage.cache_write(),
                        "cache_read_input_tokens": self.usage.cache_read,
                        "output_tokens": self.reply.output_tokens,
                    },
                }),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ]);
        events
            .iter()
            .map(|(name, data)| {
                let tokens = u64::from(*name == "content_block_delta");
                let reports = match *name {
                    "message_start" => Some(self.told(1)),
                    "message_delta" => Some(self.told(self.reply.output_tokens)),
                    _ => None,
                };
                Chunk::new(sse_event(Some(name), data, "\n"), tokens, reports)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::test_support::{call, json_of};
    use axum::http::StatusCode;

    const PATH: &str = "/anthropic/v1/messages";

    fn request() -> (Value, u64) {
        let req = json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "hello"}],
        });
        let n = render(&req).tokens();
        (req, n)
    }

    #[tokio::test]
    async fn json_message_shape() {
        let app = crate::sim::router(0);
        let (req, n) = request();
        let res = call(
            &app,
            "POST",
            &format!("{PATH}?beta=true"),
            &[],
            &req.to_string(),
        )
        .await;
        assert_eq!(res.status, StatusCode::OK);
        let body = json_of(&res);
        assert_eq!(body["id"], "msg_sim_1");
        assert_eq!(body["type"], "message");
        assert_eq!(body["role"], "assistant");
        assert_eq!(body["model"], "claude-sonnet-4-5");
        assert_eq!(
            body["content"],
            json!([{"type": "text", "text": format!("cachet-sim reply from claude-sonnet-4-5 to {n} prompt tokens.")}])
        );
        assert_eq!(body["stop_reason"], "end_turn");
        assert!(body["stop_sequence"].is_null());
        assert_eq!(
            body["usage"],
            json!({
                "input_tokens": n,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                "output_tokens": 8,
                "service_tier": "standard",
            })
        );
    }

    #[tokio::test]
    async fn max_tokens_cut_and_stop_reason() {
        let app = crate::sim::router(0);
        let (mut req, _) = request();
        req["max_tokens"] = json!(4);
        let body = json_of(&call(&app, "POST", PATH, &[], &req.to_string()).await);
        assert_eq!(
            body["content"][0]["text"],
            "cachet-sim reply from claude-sonnet-4-5"
        );
        assert_eq!(body["stop_reason"], "max_tokens");
        assert_eq!(body["usage"]["output_tokens"], 4);
    }

    #[tokio::test]
    async fn stream_event_order_and_usage() {
        let app = crate::sim::router(0);
        let (mut req, n) = request();
        req["stream"] = json!(true);
        let res = call(&app, "POST", PATH, &[], &req.to_string()).await;
        assert_eq!(res.status, StatusCode::OK);
        let events = res.sse();
        assert_eq!(res.frames.len(), events.len());
        let kinds: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
        let mut expected = vec!["message_start", "content_block_start", "ping"];
        expected.extend(["content_block_delta"; 8]);
        expected.extend(["content_block_stop", "message_delta", "message_stop"]);
        assert_eq!(kinds, expected);
        for (kind, data) in &events {
            assert_eq!(data["type"], kind.as_deref().unwrap());
        }
        let start = &events[0].1["message"];
        assert_eq!(start["id"], "msg_sim_1");
        assert_eq!(start["content"], json!([]));
        assert!(start["stop_reason"].is_null());
        assert_eq!(start["usage"]["input_tokens"], n);
        assert_eq!(start["usage"]["cache_read_input_tokens"], 0);
        assert_eq!(start["usage"]["cache_creation_input_tokens"], 0);
        assert_eq!(start["usage"]["output_tokens"], 1);
        let text: String = events
            .iter()
            .filter(|(e, _)| e.as_deref() == Some("content_block_delta"))
            .map(|(_, d)| {
                assert_eq!(d["delta"]["type"], "text_delta");
                d["delta"]["text"].as_str().unwrap()
            })
            .collect();
        assert_eq!(
            text,
            format!("cachet-sim reply from claude-sonnet-4-5 to {n} prompt tokens.")
        );
        let delta = &events[12].1;
        assert_eq!(delta["delta"]["stop_reason"], "end_turn");
        assert_eq!(
            delta["usage"],
            json!({"input_tokens": n, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 8})
        );
    }

    #[tokio::test]
    async fn count_tokens_matches_messages() {
        let app = crate::sim::router(0);
        let (mut req, n) = request();
        req.as_object_mut().unwrap().remove("max_tokens");
        let res = call(
            &app,
            "POST",
            "/anthropic/v1/messages/count_tokens?beta=true",
            &[],
            &req.to_string(),
        )
        .await;
        assert_eq!(json_of(&res), json!({"input_tokens": n}));
    }

    #[tokio::test]
    async fn models_list() {
        let app = crate::sim::router(0);
        let body = json_of(&call(&app, "GET", "/anthropic/v1/models", &[], "").await);
        assert_eq!(body["data"][0]["type"], "model");
        assert_eq!(body["has_more"], false);
    }

    #[tokio::test]
    async fn errors_in_anthropic_shape() {
        let app = crate::sim::router(0);
        let (mut no_max, _) = request();
        no_max.as_object_mut().unwrap().remove("max_tokens");
        let no_model = json!({"max_tokens": 5, "messages": []}).to_string();
        let no_messages = json!({"model": "m", "max_tokens": 5}).to_string();
        let empty = json!({"model": "m", "max_tokens": 5, "messages": []}).to_string();
        for body in [
            "{oops".to_owned(),
            no_max.to_string(),
            no_model,
            no_messages,
            empty,
        ] {
            let res = call(&app, "POST", PATH, &[], &body).await;
            assert_eq!(res.status, StatusCode::BAD_REQUEST, "{body}");
            let err = json_of(&res);
            assert_eq!(err["type"], "error");
            assert_eq!(err["error"]["type"], "invalid_request_error");
            assert!(err["error"]["message"].is_string());
        }
        let res = call(&app, "POST", "/anthropic/v1/complete", &[], "{}").await;
        assert_eq!(res.status, StatusCode::NOT_FOUND);
        assert_eq!(json_of(&res)["error"]["type"], "not_found_error");
    }
}
