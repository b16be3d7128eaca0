//! `POST /v1/responses`: a `response` object, or with `"stream": true` the typed SSE events
//! (`event: <type>` + `data:`) with increasing `sequence_number`:
//!
//! ```text
//! response.created → response.in_progress → response.output_item.added
//!   → response.content_part.added → response.output_text.delta (one per word)
//!   → response.output_text.done → response.content_part.done → response.output_item.done
//!   → response.completed (or response.incomplete when max_output_tokens cut the reply)
//! ```

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::{Ctx, json_piece, text_piece};
use crate::sim::prompt::{Kind, Piece, SimPrompt};
use crate::sim::reply::{Reply, output_cap};
use crate::sim::wire::{
    Chunk, Dialect, SSE, SimError, api_key, ok_json, parse_object, require_str, sse_event,
    stream_response, wants_stream,
};
use crate::usage::Usage;

/// Everything one response is built from.
struct Draft<'a> {
    id: String,
    item_id: String,
    created_at: u64,
    model: &'a str,
    req: &'a Value,
    reply: Reply,
    usage: Usage,
}

pub(super) async fn handle(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SimError> {
    let req = parse_object(Dialect::OpenAi, &body)?;
    let model = require_str(Dialect::OpenAi, &req, "model")?;
    let prompt = render(&req);
    let key = api_key(&headers);
    let billed = ctx.bill(
        &key,
        model,
        &prompt,
        &req,
        output_cap(&req, &["/max_output_tokens"]),
    );
    let n = ctx.sim.next_id();
    let draft = Draft {
        id: format!("resp_sim_{n}"),
        item_id: format!("msg_sim_{n}"),
        created_at: ctx.sim.unix_now(),
        model,
        req: &req,
        reply: billed.reply,
        usage: billed.usage,
    };
    let meter = ctx.meter(key, model, &headers);
    if wants_stream(&req) {
        Ok(stream_response(SSE, draft.events(), meter))
    } else {
        meter.whole(draft.told());
        Ok(ok_json(&draft.response(true)))
    }
}

/// A Responses request in render order: tools, `instructions`, then `input` (a string, or items:
/// messages with string or part-list content, function calls and their outputs).
pub(crate) fn render(req: &Value) -> SimPrompt {
    let mut pieces: Vec<Piece<'_>> = req
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|tool| json_piece(None, tool, Kind::Tool))
        .collect();
    if let Some(text) = req.get("instructions").and_then(Value::as_str) {
        pieces.push(text_piece(Some("system"), text));
    }
    match req.get("input") {
        Some(Value::String(text)) => pieces.push(text_piece(Some("user"), text)),
        Some(Value::Array(items)) => {
            for item in items {
                let role = item.get("role").and_then(Value::as_str);
                match item.get("content") {
                    Some(Value::String(text)) => pieces.push(text_piece(role, text)),
                    Some(Value::Array(parts)) => {
                        for (i, part) in parts.iter().enumerate() {
                            let role = if i == 0 { role } else { None };
                            pieces.push(match part.get("text").and_then(Value::as_str) {
                                Some(text) => text_piece(role, text),
                                None => json_piece(role, part, Kind::Other),
                            });
                        }
                    }
                    _ => pieces.push(json_piece(role, item, Kind::ToolUse)),
                }
                if let Some(last) = pieces.last_mut() {
                    last.turn_end = true;
                }
            }
        }
        _ => {}
    }
    SimPrompt::build(pieces)
}

impl Draft<'_> {
    /// `done` false: the in-progress snapshot of `response.created`, without output or usage.
    fn response(&self, done: bool) -> Value {
        let echo = |field: &str, default: Value| {
            self.req
                .get(field)
                .filter(|v| !v.is_null())
                .cloned()
                .unwrap_or(default)
        };
        let (status, incomplete, output, usage) = if !done {
            ("in_progress", Value::Null, json!([]), Value::Null)
        } else if self.reply.truncated {
            let reason = json!({"reason": "max_output_tokens"});
            ("incomplete", reason, json!([self.item(true)]), self.usage())
        } else {
            (
                "completed",
                Value::Null,
                json!([self.item(true)]),
                self.usage(),
            )
        };
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": incomplete,
            "instructions": echo("instructions", Value::Null),
            "max_output_tokens": echo("max_output_tokens", Value::Null),
            "max_tool_calls": null,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": echo("parallel_tool_calls", json!(true)),
            "previous_response_id": echo("previous_response_id", Value::Null),
            "prompt_cache_key": echo("prompt_cache_key", Value::Null),
            "reasoning": {"effort": null, "summary": null},
            "safety_identifier": null,
            "service_tier": "default",
            "store": echo("store", json!(true)),
            "temperature": echo("temperature", json!(1.0)),
            "text": echo("text", json!({"format": {"type": "text"}, "verbosity": "medium"})),
            "tool_choice": echo("tool_choice", json!("auto")),
            "tools": echo("tools", json!([])),
            "top_logprobs": 0,
            "top_p": echo("top_p", json!(1.0)),
            "truncation": echo("truncation", json!("disabled")),
            "usage": usage,
            "user": null,
            "metadata": echo("metadata", json!({})),
        })
    }

    fn usage(&self) -> Value {
        let output = self.reply.output_tokens;
        let input = self.usage.input_total();
        json!({
            "input_tokens": input,
            "input_tokens_details": {"cached_tokens": self.usage.cache_read},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input + output,
        })
    }

    fn item_status(&self) -> &'static str {
        if self.reply.truncated {
            "incomplete"
        } else {
            "completed"
        }
    }

    /// The assistant message: empty while streaming starts, with its text part when `done`.
    fn item(&self, done: bool) -> Value {
        let (status, content) = if done {
            (self.item_status(), json!([self.part(&self.reply.text)]))
        } else {
            ("in_progress", json!([]))
        };
        json!({
            "id": self.item_id,
            "type": "message",
            "status": status,
            "content": content,
            "role": "assistant",
        })
    }

    fn part(&self, text: &str) -> Value {
        json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text})
    }

    /// The SSE events, each with the output tokens it delivers (one per text delta).
    /// The usage the finished response reports.
    fn told(&self) -> Usage {
        Usage {
            output: self.reply.output_tokens,
            ..self.usage
        }
    }

    /// The SSE events, each with the output tokens it delivers; the terminal one reports the
    /// usage.
    fn events(&self) -> Vec<Chunk> {
        let text_at = json!({"item_id": self.item_id, "output_index": 0, "content_index": 0});
        let with = |extra: Value| merge(&text_at, extra);
        let mut events = vec![
            (
                "response.created",
                json!({"response": self.response(false)}),
            ),
            (
                "response.in_progress",
                json!({"response": self.response(false)}),
            ),
            (
                "response.output_item.added",
                json!({"output_index": 0, "item": self.item(false)}),
            ),
            (
                "response.content_part.added",
                with(json!({"part": self.part("")})),
            ),
        ];
        for delta in self.reply.deltas() {
            events.push((
                "response.output_text.delta",
                with(json!({"delta": delta, "logprobs": []})),
            ));
        }
        let terminal = if self.reply.truncated {
            "response.incomplete"
        } else {
            "response.completed"
        };
        events.extend([
            (
                "response.output_text.done",
                with(json!({"text": self.reply.text, "logprobs": []})),
            ),
            (
                "response.content_part.done",
                with(json!({"part": self.part(&self.reply.text)})),
            ),
            (
                "response.output_item.done",
                json!({"output_index": 0, "item": self.item(true)}),
            ),
            (terminal, json!({"response": self.response(true)})),
        ]);
        events
            .into_iter()
            .enumerate()
            .map(|(seq, (kind, fields))| {
                let mut data = Map::new();
                data.insert("type".into(), json!(kind));
                data.insert("sequence_number".into(), json!(seq));
                if let Value::Object(fields) = fields {
                    data.extend(fields);
                }
                let tokens = u64::from(kind == "response.output_text.delta");
                let reports = (kind == terminal).then(|| self.told());
                Chunk::new(
                    sse_event(Some(kind), &Value::Object(data), "\n"),
                    tokens,
                    reports,
                )
            })
            .collect()
    }
}

/// `base` with the fields of `extra` appended (both objects).
fn merge(base: &Value, extra: Value) -> Value {
    let mut out = base.clone();
    if let (Some(out), Value::Object(extra)) = (out.as_object_mut(), extra) {
        out.extend(extra);
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::sim::test_support::{call, json_of};
    use axum::http::StatusCode;
    use serde_json::json;

    const PATH: &str = "/openai/v1/responses";

    #[tokio::test]
    async fn json_response_shape() {
        let app = crate::sim::router(1);
        let req =
            json!({"model": "gpt-4.1", "instructions": "be terse", "input": "hi", "tools": []});
        let n = super::render(&req).tokens();
        for path in [PATH, "/vllm/0/v1/responses"] {
            let body = json_of(&call(&app, "POST", path, &[], &req.to_string()).await);
            assert_eq!(body["object"], "response");
            assert!(body["id"].as_str().unwrap().starts_with("resp_sim_"));
            assert_eq!(body["status"], "completed");
            assert!(body["incomplete_details"].is_null());
            assert_eq!(body["instructions"], "be terse");
            let item = &body["output"][0];
            assert_eq!(item["type"], "message");
            assert_eq!(item["role"], "assistant");
            assert_eq!(item["status"], "completed");
            assert!(item["id"].as_str().unwrap().starts_with("msg_sim_"));
            let part = &item["content"][0];
            assert_eq!(part["type"], "output_text");
            assert_eq!(part["annotations"], json!([]));
            assert_eq!(
                part["text"],
                format!("cachet-sim reply from gpt-4.1 to {n} prompt tokens.")
            );
            assert_eq!(
                body["usage"],
                json!({
                    "input_tokens": n,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": 8,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": n + 8,
                })
            );
        }
    }

    #[tokio::test]
    async fn max_output_tokens_makes_it_incomplete() {
        let app = crate::sim::router(0);
        let req = json!({"model": "m", "input": "hi", "max_output_tokens": 2});
        let body = json_of(&call(&app, "POST", PATH, &[], &req.to_string()).await);
        assert_eq!(body["status"], "incomplete");
        assert_eq!(body["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(body["output"][0]["content"][0]["text"], "cachet-sim reply");
        assert_eq!(body["usage"]["output_tokens"], 2);
        assert_eq!(body["max_output_tokens"], 2);
    }

    #[tokio::test]
    async fn stream_events_in_order() {
        let app = crate::sim::router(0);
        let req = json!({"model": "gpt-4.1", "input": [{"role": "user", "content": "hi"}], "stream": true});
        let n = super::render(&req).tokens();
        let res = call(&app, "POST", PATH, &[], &req.to_string()).await;
        assert_eq!(res.status, StatusCode::OK);
        let events = res.sse();
        assert!(res.frames.len() == events.len() && events.len() > 10);
        let kinds: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
        let mut expected = vec![
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
        ];
        expected.extend(["response.output_text.delta"; 8]);
        expected.extend([
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]);
        assert_eq!(kinds, expected);
        for (seq, (kind, data)) in events.iter().enumerate() {
            assert_eq!(data["type"], kind.as_deref().unwrap());
            assert_eq!(data["sequence_number"], seq);
        }
        assert_eq!(events[0].1["response"]["status"], "in_progress");
        assert!(events[0].1["response"]["usage"].is_null());
        let text: String = events
            .iter()
            .filter(|(e, _)| e.as_deref() == Some("response.output_text.delta"))
            .map(|(_, d)| d["delta"].as_str().unwrap())
            .collect();
        let expected_text = format!("cachet-sim reply from gpt-4.1 to {n} prompt tokens.");
        assert_eq!(text, expected_text);
        assert_eq!(events[12].1["text"], expected_text);
        assert_eq!(events[13].1["part"]["text"], expected_text);
        assert_eq!(events[14].1["item"]["status"], "completed");
        let done = &events[15].1["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["usage"]["input_tokens"], n);
        assert_eq!(done["usage"]["output_tokens"], 8);
        assert_eq!(done["output"][0]["content"][0]["text"], expected_text);
    }

    #[tokio::test]
    async fn capped_stream_ends_incomplete() {
        let app = crate::sim::router(0);
        let req = json!({"model": "m", "input": "x", "stream": true, "max_output_tokens": 1});
        let events = call(&app, "POST", PATH, &[], &req.to_string()).await.sse();
        let (kind, last) = events.last().unwrap();
        assert_eq!(kind.as_deref(), Some("response.incomplete"));
        assert_eq!(last["response"]["status"], "incomplete");
        assert_eq!(last["response"]["output"][0]["status"], "incomplete");
    }

    #[tokio::test]
    async fn missing_model_is_400() {
        let app = crate::sim::router(0);
        let res = call(&app, "POST", PATH, &[], r#"{"input":"hi"}"#).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST);
        assert_eq!(json_of(&res)["error"]["type"], "invalid_request_error");
    }
}
