//! `POST /v1/chat/completions` (and DeepSeek's `/chat/completions`): a `chat.completion`, or
//! with `"stream": true` the SSE sequence the SDKs expect: a role chunk, one content chunk per
//! word, a chunk with `finish_reason`, the usage chunk (`"choices": []`) when
//! `stream_options.include_usage` is set (every other chunk then carries `"usage": null`), and
//! `data: [DONE]`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use serde_json::{Value, json};

use super::{Ctx, render_messages};
use crate::sim::prompt::SimPrompt;
use crate::sim::reply::{Reply, output_cap};
use crate::sim::wire::{
    Chunk, Dialect, SSE, SimError, api_key, ok_json, parse_object, require_messages, require_str,
    sse_event, stream_response, wants_stream,
};
use crate::usage::Usage;

/// Identity shared by the completion and each of its chunks.
struct Head<'a> {
    id: String,
    created: u64,
    model: &'a str,
}

pub(super) async fn handle(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SimError> {
    let req = parse_object(Dialect::OpenAi, &body)?;
    let model = require_str(Dialect::OpenAi, &req, "model")?;
    let messages = require_messages(Dialect::OpenAi, &req, "messages")?;
    let prompt = SimPrompt::build(render_messages(req.get("tools"), messages));
    let cap = output_cap(&req, &["/max_completion_tokens", "/max_tokens"]);
    let key = api_key(&headers);
    let billed = ctx.bill(&key, model, &prompt, &req, cap);
    if let (Some(gate), Some(end)) = (ctx.sim.gate(), billed.end) {
        gate.park(end).await;
    }
    let reply = &billed.reply;
    let head = Head {
        id: format!("chatcmpl-sim-{}", ctx.sim.next_id()),
        created: ctx.sim.unix_now(),
        model,
    };
    let usage = ctx.flavor.chat_usage(&billed.usage, reply.output_tokens);
    let told = Usage {
        output: reply.output_tokens,
        ..billed.usage
    };
    let meter = ctx.meter(key, model, &headers);
    let mut res = if wants_stream(&req) {
        let include_usage = req
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let chunks = stream_chunks(&head, reply, include_usage.then_some((usage, told)));
        stream_response(SSE, chunks, meter)
    } else {
        meter.whole(told);
        ok_json(&completion(&head, reply, usage))
    };
    if let Some(n) = billed.in_flight {
        res.headers_mut()
            .insert("x-cachet-sim-in-flight", HeaderValue::from(n));
    }
    Ok(res)
}

fn finish_reason(reply: &Reply) -> &'static str {
    if reply.truncated { "length" } else { "stop" }
}

fn completion(head: &Head<'_>, reply: &Reply, usage: Value) -> Value {
    json!({
        "id": head.id,
        "object": "chat.completion",
        "created": head.created,
        "model": head.model,
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": reply.text,
                "refusal": null,
                "annotations": [],
            },
            "logprobs": null,
            "finish_reason": finish_reason(reply),
        }],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": "fp_cachet_sim",
    })
}

/// The SSE body, one event per chunk with the output tokens it carries. `usage` is `Some` when
/// the client asked for it.
/// The chunks of a streamed completion; with `usage` (its JSON and what it tells), a last
/// `choices: []` chunk carries it, as `stream_options.include_usage` asks.
fn stream_chunks(head: &Head<'_>, reply: &Reply, usage: Option<(Value, Usage)>) -> Vec<Chunk> {
    let with_usage = usage.is_some();
    let choice = |delta: Value, finish: Value| json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
    let mut chunks = vec![chunk(
        head,
        choice(
            json!({"role": "assistant", "content": "", "refusal": null}),
            Value::Null,
        ),
        with_usage.then_some(Value::Null),
    )];
    for delta in reply.deltas() {
        chunks.push(chunk(
            head,
            choice(json!({"content": delta}), Value::Null),
            with_usage.then_some(Value::Null),
        ));
    }
    chunks.push(chunk(
        head,
        choice(json!({}), json!(finish_reason(reply))),
        with_usage.then_some(Value::Null),
    ));
    let told = usage.as_ref().map(|(_, told)| *told);
    if let Some((usage, _)) = usage {
        chunks.push(chunk(head, json!([]), Some(usage)));
    }
    let words = reply.deltas().count();
    let last = chunks.len() - 1;
    let mut events: Vec<Chunk> = chunks
        .iter()
        .enumerate()
        // Chunk 0 opens the message; chunks 1..=words carry one word each.
        .map(|(i, chunk)| {
            let reports = told.filter(|_| i == last);
            Chunk::new(
                sse_event(None, chunk, "\n"),
                u64::from((1..=words).contains(&i)),
                reports,
            )
        })
        .collect();
    events.push(Chunk::new(Bytes::from_static(b"data: [DONE]\n\n"), 0, None));
    events
}

/// One `chat.completion.chunk`; `usage` is omitted when `None`, as when the client did not ask.
fn chunk(head: &Head<'_>, choices: Value, usage: Option<Value>) -> Value {
    let mut chunk = json!({
        "id": head.id,
        "object": "chat.completion.chunk",
        "created": head.created,
        "model": head.model,
        "service_tier": "default",
        "system_fingerprint": "fp_cachet_sim",
        "choices": choices,
    });
    if let (Some(usage), Some(fields)) = (usage, chunk.as_object_mut()) {
        fields.insert("usage".into(), usage);
    }
    chunk
}

#[cfg(test)]
mod tests {
    use crate::sim::prompt::SimPrompt;
    use crate::sim::test_support::{call, json_of};
    use axum::http::StatusCode;
    use serde_json::{Value, json};

    const PATHS: [&str; 4] = [
        "/openai/v1/chat/completions",
        "/vllm/0/v1/chat/completions",
        "/deepseek/chat/completions",
        "/deepseek/v1/chat/completions",
    ];

    fn request(extra: Value) -> (Value, u64) {
        let mut req = json!({
            "model": "gpt-4o",
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        });
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        let messages = req["messages"].as_array().unwrap();
        let tokens = SimPrompt::build(super::render_messages(req.get("tools"), messages)).tokens();
        (req, tokens)
    }

    #[tokio::test]
    async fn json_completion_shape_and_usage() {
        let app = crate::sim::router(1);
        for path in PATHS {
            let (req, n) = request(json!({}));
            // A key per path: both DeepSeek paths share one cache, and a repeated prompt would
            // (rightly) hit it.
            let key = format!("Bearer key-{path}");
            let res = call(
                &app,
                "POST",
                path,
                &[("authorization", &key)],
                &req.to_string(),
            )
            .await;
            assert_eq!(res.status, StatusCode::OK);
            let body = json_of(&res);
            assert_eq!(body["object"], "chat.completion");
            assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-sim-"));
            assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
            assert_eq!(body["model"], "gpt-4o");
            let choice = &body["choices"][0];
            assert_eq!(choice["index"], 0);
            assert_eq!(choice["finish_reason"], "stop");
            assert_eq!(choice["message"]["role"], "assistant");
            assert_eq!(
                choice["message"]["content"],
                format!("cachet-sim reply from gpt-4o to {n} prompt tokens.")
            );
            let usage = &body["usage"];
            assert_eq!(usage["prompt_tokens"], n);
            assert_eq!(usage["completion_tokens"], 8);
            assert_eq!(usage["total_tokens"], n + 8);
            assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
            if path.starts_with("/deepseek") {
                assert_eq!(usage["prompt_cache_hit_tokens"], 0);
                assert_eq!(usage["prompt_cache_miss_tokens"], n);
            } else {
                assert_eq!(usage["prompt_tokens_details"]["audio_tokens"], 0);
                assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 0);
                assert!(usage.get("prompt_cache_hit_tokens").is_none());
            }
        }
    }

    #[tokio::test]
    async fn max_tokens_cut_and_length_reason() {
        let app = crate::sim::router(0);
        for cap in [
            json!({"max_tokens": 3}),
            json!({"max_completion_tokens": 3, "max_tokens": 9}),
        ] {
            let (req, _) = request(cap);
            let body = json_of(&call(&app, "POST", PATHS[0], &[], &req.to_string()).await);
            assert_eq!(
                body["choices"][0]["message"]["content"],
                "cachet-sim reply from"
            );
            assert_eq!(body["choices"][0]["finish_reason"], "length");
            assert_eq!(body["usage"]["completion_tokens"], 3);
        }
    }

    #[tokio::test]
    async fn stream_with_usage() {
        let app = crate::sim::router(1);
        for path in PATHS {
            let (req, n) =
                request(json!({"stream": true, "stream_options": {"include_usage": true}}));
            let res = call(&app, "POST", path, &[], &req.to_string()).await;
            assert_eq!(res.status, StatusCode::OK);
            assert!(res.frames.len() > 5, "a real stream, not one buffer");
            let events = res.sse();
            let (last, chunks) = events.split_last().unwrap();
            assert_eq!(last.1, "[DONE]");
            for (event, chunk) in chunks {
                assert!(event.is_none());
                assert_eq!(chunk["object"], "chat.completion.chunk");
                assert!(chunk.get("usage").is_some(), "usage key on every chunk");
            }
            assert_eq!(chunks[0].1["choices"][0]["delta"]["role"], "assistant");
            let text: String = chunks
                .iter()
                .filter_map(|(_, c)| c["choices"][0]["delta"]["content"].as_str())
                .collect();
            assert_eq!(
                text,
                format!("cachet-sim reply from gpt-4o to {n} prompt tokens.")
            );
            let content_chunks = chunks
                .iter()
                .filter(|(_, c)| {
                    c["choices"][0]["delta"]["content"]
                        .as_str()
                        .is_some_and(|s| !s.is_empty())
                })
                .count();
            assert_eq!(content_chunks, 8);
            let finish = &chunks[chunks.len() - 2].1;
            assert_eq!(finish["choices"][0]["finish_reason"], "stop");
            assert!(finish["usage"].is_null());
            let usage_chunk = &chunks[chunks.len() - 1].1;
            assert_eq!(usage_chunk["choices"], json!([]));
            assert_eq!(usage_chunk["usage"]["prompt_tokens"], n);
            assert_eq!(usage_chunk["usage"]["completion_tokens"], 8);
        }
    }

    #[tokio::test]
    async fn stream_without_usage_has_no_usage_key() {
        let app = crate::sim::router(0);
        let (req, _) = request(json!({"stream": true, "max_tokens": 2}));
        let res = call(&app, "POST", PATHS[0], &[], &req.to_string()).await;
        let events = res.sse();
        assert_eq!(events.last().unwrap().1, "[DONE]");
        let chunks = &events[..events.len() - 1];
        assert!(chunks.iter().all(|(_, c)| c.get("usage").is_none()));
        let finish = &chunks.last().unwrap().1;
        assert_eq!(finish["choices"][0]["finish_reason"], "length");
        let text: String = chunks
            .iter()
            .filter_map(|(_, c)| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "cachet-sim reply");
    }

    #[tokio::test]
    async fn bad_requests_are_openai_400s() {
        let app = crate::sim::router(0);
        for body in [
            "{not json",
            r#"{"messages":[]}"#,
            r#"{"model":""}"#,
            "[]",
            r#"{"model":"gpt-4o"}"#,
            r#"{"model":"gpt-4o","messages":[]}"#,
            r#"{"model":"gpt-4o","messages":"not a list"}"#,
        ] {
            let res = call(&app, "POST", PATHS[0], &[], body).await;
            assert_eq!(res.status, StatusCode::BAD_REQUEST, "{body}");
            let err = json_of(&res);
            assert_eq!(err["error"]["type"], "invalid_request_error");
            assert!(err["error"]["param"].is_null());
            assert!(err["error"]["code"].is_null());
            assert!(err["error"]["message"].is_string());
        }
    }
}
