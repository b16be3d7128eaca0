//! The OpenAI API and its compatible relatives, which share one handler set and differ only in
//! the routes mounted and the usage fields (see [`Flavor`]):
//!
//! - `/openai`: `POST /v1/chat/completions`, `POST /v1/responses`, `GET /v1/models`,
//!   `POST /v1/embeddings` (the last two exist so pass-through can be tested);
//! - `/vllm/{i}`: the same, plus an `x-cachet-sim-replica: i` response header so routing tests
//!   can see which replica answered;
//! - `/deepseek`: chat completions and models, under both `/` and `/v1/` as DeepSeek serves them,
//!   with `prompt_cache_hit_tokens` / `prompt_cache_miss_tokens` in the usage.

mod chat;
mod responses;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::Sim;
use super::prompt::{Content, Kind, Piece, SimPrompt};
use super::reply::Reply;
use super::tokens::tokenizer;
use super::wire::{Dialect, Meter, SimError, ok_json, parse_object, require_str};
use crate::usage::Usage;

/// Which OpenAI-compatible server a mount imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    OpenAi,
    DeepSeek,
    /// A vLLM-like replica with its index.
    Vllm(usize),
}

impl Flavor {
    /// Chat Completions usage with the cache figures in each flavour's fields (providers.md
    /// §2.6, §4, §6).
    fn chat_usage(self, usage: &Usage, completion: u64) -> Value {
        let prompt = usage.input_total();
        match self {
            Flavor::DeepSeek => json!({
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": usage.cache_read},
                "prompt_cache_hit_tokens": usage.cache_read,
                "prompt_cache_miss_tokens": usage.input_uncached,
            }),
            Flavor::OpenAi | Flavor::Vllm(_) => json!({
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": usage.cache_read, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            }),
        }
    }

    fn models(self) -> (&'static [&'static str], &'static str) {
        match self {
            Flavor::OpenAi => (
                &[
                    "gpt-4o",
                    "gpt-4o-mini",
                    "gpt-4.1",
                    "gpt-5",
                    "text-embedding-3-small",
                ],
                "openai",
            ),
            Flavor::DeepSeek => (&["deepseek-chat", "deepseek-reasoner"], "deepseek"),
            Flavor::Vllm(_) => (&["sim-model"], "vllm"),
        }
    }
}

#[derive(Clone)]
struct Ctx {
    sim: Arc<Sim>,
    flavor: Flavor,
}

/// The input side of one request as the flavour's cache bills it, plus the reply and, for a
/// replica, its in-flight count.
struct Billed {
    usage: Usage,
    reply: Reply,
    in_flight: Option<usize>,
    /// A replica's end of service, for the reply gate.
    end: Option<std::time::SystemTime>,
}

impl Ctx {
    /// Applies the flavour's cache rule to `prompt`: OpenAI's machines, DeepSeek's units, a
    /// replica's LRU. `cap` is the output cap; `exact` asks for exactly `cap` output tokens
    /// (vLLM's `ignore_eos`, as benchmarks send it).
    fn bill(
        &self,
        key: &str,
        model: &str,
        prompt: &SimPrompt,
        req: &Value,
        cap: Option<u64>,
    ) -> Billed {
        let now = self.sim.now();
        let exact = req.get("ignore_eos").and_then(Value::as_bool) == Some(true);
        let reply = match cap {
            Some(n) if exact => Reply::exactly(model, prompt.tokens(), n),
            _ => Reply::new(model, prompt.tokens(), cap),
        };
        let engine = &self.sim.engine;
        let (usage, in_flight, end) = match self.flavor {
            Flavor::OpenAi => {
                let cache_key = req.get("prompt_cache_key").and_then(Value::as_str);
                (
                    engine.openai(key, model, prompt, cache_key, now),
                    None,
                    None,
                )
            }
            Flavor::DeepSeek => {
                let with_output = prompt.concat(&SimPrompt::build([Piece {
                    role: Some("assistant"),
                    content: Content::Text(&reply.text),
                    kind: Kind::Text,
                    mark: None,
                    turn_end: true,
                }]));
                (
                    engine.deepseek(key, model, prompt, &with_output, now),
                    None,
                    None,
                )
            }
            Flavor::Vllm(i) => {
                let out = engine.replica(i, prompt, reply.output_tokens, now);
                let usage = Usage {
                    input_uncached: prompt.tokens() - out.cached,
                    cache_read: out.cached,
                    ..Usage::default()
                };
                engine.bill_input(key, model, &usage, now);
                (usage, Some(out.in_flight), Some(out.end))
            }
        };
        Billed {
            usage,
            reply,
            in_flight,
            end,
        }
    }

    fn meter(&self, key: String, model: &str, headers: &HeaderMap) -> Meter {
        Meter::new(self.sim.clone(), key, model, headers)
    }
}

/// The prompt of a Chat Completions or Responses body.
pub(crate) fn render_request(path: &str, body: &Value) -> SimPrompt {
    if path.ends_with("/responses") {
        return responses::render(body);
    }
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    SimPrompt::build(render_messages(body.get("tools"), messages))
}

/// A chat message list in order, one block per string content, content part and tool call,
/// with the role on each message's first block and a turn end after every user and assistant
/// message (DeepSeek persists units there).
pub(crate) fn render_messages<'a>(
    tools: Option<&'a Value>,
    messages: &'a [Value],
) -> Vec<Piece<'a>> {
    let tools = tools.and_then(Value::as_array).into_iter().flatten();
    let mut pieces: Vec<Piece<'a>> = tools
        .map(|tool| json_piece(None, tool, Kind::Tool))
        .collect();
    for message in messages {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("user");
        let first = pieces.len();
        match message.get("content") {
            Some(Value::String(text)) => pieces.push(text_piece(None, text)),
            Some(Value::Array(parts)) => {
                pieces.extend(parts.iter().map(
                    |part| match part.get("text").and_then(Value::as_str) {
                        Some(text) => text_piece(None, text),
                        None => json_piece(None, part, Kind::Other),
                    },
                ))
            }
            _ => {}
        }
        for call in message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            pieces.push(json_piece(None, call, Kind::ToolUse));
        }
        if pieces.len() == first {
            // A message with no content still has its role in the template.
            pieces.push(text_piece(None, ""));
        }
        pieces[first].role = Some(role);
        if let Some(last) = pieces.last_mut() {
            last.turn_end = matches!(role, "user" | "assistant" | "tool");
        }
    }
    pieces
}

pub(crate) fn text_piece<'a>(role: Option<&'a str>, text: &'a str) -> Piece<'a> {
    Piece {
        role,
        content: Content::Text(text),
        kind: Kind::Text,
        mark: None,
        turn_end: false,
    }
}

pub(crate) fn json_piece<'a>(role: Option<&'a str>, value: &'a Value, kind: Kind) -> Piece<'a> {
    Piece {
        role,
        content: Content::Json(value),
        kind,
        mark: None,
        turn_end: false,
    }
}

pub(crate) fn router(sim: Arc<Sim>, flavor: Flavor) -> Router {
    let routes = Router::new()
        .route("/v1/chat/completions", post(chat::handle))
        .route("/v1/models", get(models));
    let routes = match flavor {
        Flavor::DeepSeek => routes
            .route("/chat/completions", post(chat::handle))
            .route("/models", get(models)),
        Flavor::OpenAi | Flavor::Vllm(_) => routes
            .route("/v1/responses", post(responses::handle))
            .route("/v1/embeddings", post(embeddings)),
    };
    let routes = routes.fallback(not_found).with_state(Ctx { sim, flavor });
    match flavor {
        Flavor::Vllm(i) => routes.layer(axum::middleware::map_response(
            move |mut res: Response| async move {
                res.headers_mut()
                    .insert("x-cachet-sim-replica", HeaderValue::from(i));
                res
            },
        )),
        Flavor::OpenAi | Flavor::DeepSeek => routes,
    }
}

/// OpenAI's own wording for an unknown route.
async fn not_found(method: Method, uri: Uri) -> SimError {
    SimError::not_found(
        Dialect::OpenAi,
        format!("Invalid URL ({method} {})", uri.path()),
    )
}

async fn models(State(ctx): State<Ctx>) -> Response {
    let (ids, owner) = ctx.flavor.models();
    let data: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": owner}))
        .collect();
    ok_json(&json!({"object": "list", "data": data}))
}

/// Deterministic embeddings: each input's vector comes from the BLAKE3 hash of its JSON, so equal
/// inputs embed equally. Honours `encoding_format: "base64"`, which the official SDKs request by
/// default (little-endian f32, as OpenAI sends).
async fn embeddings(body: Bytes) -> Result<Response, SimError> {
    let req = parse_object(Dialect::OpenAi, &body)?;
    let model = require_str(Dialect::OpenAi, &req, "model")?;
    let input = req
        .get("input")
        .filter(|v| !v.is_null())
        .ok_or_else(|| SimError::bad_request(Dialect::OpenAi, "input: field required"))?;
    // A list of strings (or of token lists) is several inputs; a string or one token list is one.
    let items: Vec<&Value> = match input {
        Value::Array(list) if list.first().is_some_and(|first| !first.is_number()) => {
            list.iter().collect()
        }
        single => vec![single],
    };
    let dims = req
        .get("dimensions")
        .and_then(Value::as_u64)
        .map_or(16, |d| d.clamp(1, 4096));
    let base64 = req.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let vector = embed(item, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64_encode(&bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens = embedding_tokens(input);
    Ok(ok_json(&json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

/// `dims` values in [-1, 1] from the BLAKE3 output stream of the input's compact JSON.
/// Tokens of an embeddings `input`: a string, or the sum over a list of strings.
fn embedding_tokens(input: &Value) -> u64 {
    let count = |v: &Value| match v {
        Value::String(text) => tokenizer().count(text),
        other => tokenizer().count(&other.to_string()),
    };
    match input {
        Value::Array(items) => items.iter().map(count).sum(),
        other => count(other),
    }
}

fn embed(item: &Value, dims: u64) -> Vec<f32> {
    let bytes = serde_json::to_vec(item).unwrap_or_default();
    let mut reader = blake3::Hasher::new().update(&bytes).finalize_xof();
    (0..dims)
        .map(|_| {
            let mut word = [0u8; 4];
            reader.fill(&mut word);
            let unit = f64::from(u32::from_le_bytes(word)) / f64::from(u32::MAX);
            (unit * 2.0 - 1.0) as f32
        })
        .collect()
}

/// Standard base64 with padding (RFC 4648), enough for embedding payloads.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::test_support::{call, json_of};
    use axum::http::StatusCode;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (raw, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(raw.as_bytes()), encoded);
        }
    }

    #[tokio::test]
    async fn models_list_per_flavor() {
        let app = crate::sim::router(1);
        for (path, first) in [
            ("/openai/v1/models", "gpt-4o"),
            ("/deepseek/models", "deepseek-chat"),
            ("/deepseek/v1/models", "deepseek-chat"),
            ("/vllm/0/v1/models", "sim-model"),
        ] {
            let res = call(&app, "GET", path, &[], "").await;
            assert_eq!(res.status, StatusCode::OK, "{path}");
            let body = json_of(&res);
            assert_eq!(body["object"], "list");
            assert_eq!(body["data"][0]["id"], first);
            assert_eq!(body["data"][0]["object"], "model");
        }
    }

    #[tokio::test]
    async fn embeddings_are_deterministic_lists() {
        let app = crate::sim::router(0);
        let req = r#"{"model":"text-embedding-3-small","input":["a","b","a"],"dimensions":4}"#;
        let body = json_of(&call(&app, "POST", "/openai/v1/embeddings", &[], req).await);
        assert_eq!(body["object"], "list");
        let data = body["data"].as_array().unwrap();
        assert_eq!(data.len(), 3);
        assert_eq!(data[1]["index"], 1);
        assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 4);
        assert_eq!(data[0]["embedding"], data[2]["embedding"]);
        assert_ne!(data[0]["embedding"], data[1]["embedding"]);
        let expected = 3; // "a", "b", "a": one o200k token each
        assert_eq!(body["usage"]["prompt_tokens"], expected);
    }

    #[tokio::test]
    async fn embeddings_base64_is_little_endian_f32() {
        let app = crate::sim::router(0);
        let floats = r#"{"model":"e","input":"hello","dimensions":3}"#;
        let b64 = r#"{"model":"e","input":"hello","dimensions":3,"encoding_format":"base64"}"#;
        let floats = json_of(&call(&app, "POST", "/openai/v1/embeddings", &[], floats).await);
        let b64 = json_of(&call(&app, "POST", "/openai/v1/embeddings", &[], b64).await);
        let vector: Vec<f32> = floats["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(b64["data"][0]["embedding"], base64_encode(&bytes));
    }

    #[tokio::test]
    async fn embeddings_need_input() {
        let app = crate::sim::router(0);
        let res = call(
            &app,
            "POST",
            "/openai/v1/embeddings",
            &[],
            r#"{"model":"e"}"#,
        )
        .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn unknown_paths_are_openai_404s() {
        let app = crate::sim::router(1);
        for path in [
            "/openai/v1/nope",
            "/deepseek/v1/responses",
            "/vllm/0/v2/chat",
        ] {
            let res = call(&app, "POST", path, &[], "{}").await;
            assert_eq!(res.status, StatusCode::NOT_FOUND, "{path}");
            let body = json_of(&res);
            assert_eq!(body["error"]["type"], "invalid_request_error");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("Invalid URL (POST /")
            );
        }
    }
}
