//! The Gemini API under `/v1beta` and `/v1`:
//!
//! - `POST models/{model}:generateContent`, `:streamGenerateContent` (SSE with `?alt=sse`, as
//!   the SDKs ask; otherwise Google's streamed JSON array) and `:countTokens`;
//! - the `cachedContents` resource (`caches.rs`), kept in memory per API key.
//!
//! The API key is the `x-goog-api-key` header or the `?key=` parameter. Request fields are read
//! in camelCase or snake_case, as Google's JSON parser accepts both. A `cachedContent` reference
//! puts the cache's tokens in `promptTokenCount` (its contents are a prefix of the prompt) and in
//! `cachedContentTokenCount` (read in full, billed at the caching price).

mod caches;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::Uri;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::Sim;
use super::openai::{json_piece, text_piece};
use super::prompt::{Kind, Piece, SimPrompt};
use super::reply::Reply;
use super::wire::{
    Chunk, Dialect, JSON, Meter, SSE, SimError, ok_json, parse_object, sse_event, stream_response,
};
use crate::usage::Usage;

const D: Dialect = Dialect::Gemini;

pub(crate) use caches::Store;

#[derive(Clone)]
struct Ctx {
    sim: Arc<Sim>,
}

impl Ctx {
    fn caches(&self) -> MutexGuard<'_, caches::Store> {
        self.sim.gemini_caches()
    }
}

pub(crate) fn router(sim: Arc<Sim>) -> Router {
    let ctx = Ctx { sim };
    let api = Router::new()
        .route("/models/{*rest}", post(models_action))
        .route("/cachedContents", post(caches::create).get(caches::list))
        .route(
            "/cachedContents/{id}",
            get(caches::get).patch(caches::patch).delete(caches::delete),
        )
        .fallback(not_found)
        .with_state(ctx);
    Router::new()
        .nest("/v1beta", api.clone())
        .nest("/v1", api)
        .fallback(not_found)
}

async fn not_found(uri: Uri) -> SimError {
    SimError::not_found(D, format!("Method not found: {}", uri.path()))
}

/// Who is calling (the API key, `""` when none is sent) and the query parameters.
struct Caller {
    key: String,
    query: HashMap<String, String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        // An unparsable query string carries no key and no options; treat it as empty.
        let query = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .map(|q| q.0)
            .unwrap_or_default();
        let key = key_of(&parts.headers, &query);
        Ok(Caller { key, query })
    }
}

/// The caller's key: `x-goog-api-key`, else the `key` query parameter.
fn key_of(headers: &axum::http::HeaderMap, query: &HashMap<String, String>) -> String {
    let header = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok());
    header
        .or_else(|| query.get("key").map(String::as_str))
        .unwrap_or_default()
        .to_owned()
}

/// The key a request to the Gemini mount is billed to and owns caches under.
pub(crate) fn caller_key(headers: &axum::http::HeaderMap, uri: &axum::http::Uri) -> String {
    let query = Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default();
    key_of(headers, &query)
}

/// `field` in camelCase, or else in snake_case; `null` counts as absent.
fn field<'a>(body: &'a Value, camel: &str) -> Option<&'a Value> {
    let value = body.get(camel).or_else(|| {
        let mut snake = String::with_capacity(camel.len() + 4);
        for c in camel.chars() {
            if c.is_ascii_uppercase() {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        }
        body.get(&snake)
    })?;
    (!value.is_null()).then_some(value)
}

/// The prompt in Gemini's order: tools, the system instruction, then each content's parts,
/// with the role on a content's first part and a turn end after each content.
fn prompt_parts(body: &Value) -> Vec<Piece<'_>> {
    let list = |name| {
        field(body, name)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    };
    let mut pieces: Vec<Piece<'_>> = list("tools")
        .map(|tool| json_piece(None, tool, Kind::Tool))
        .collect();
    let system = field(body, "systemInstruction").and_then(|s| field(s, "parts"));
    for (i, part) in system
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        pieces.push(part_piece((i == 0).then_some("system"), part));
    }
    for content in list("contents") {
        let role = content
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("user");
        let parts = content
            .get("parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        let first = pieces.len();
        pieces.extend(
            parts
                .enumerate()
                .map(|(i, part)| part_piece((i == 0).then_some(role), part)),
        );
        if pieces.len() > first {
            if let Some(last) = pieces.last_mut() {
                last.turn_end = true;
            }
        }
    }
    pieces
}

fn part_piece<'a>(role: Option<&'a str>, part: &'a Value) -> Piece<'a> {
    if let Some(text) = part.get("text").and_then(Value::as_str) {
        return text_piece(role, text);
    }
    let kind = if field(part, "functionCall").is_some() {
        Kind::ToolUse
    } else if field(part, "functionResponse").is_some() {
        Kind::ToolResult
    } else {
        Kind::Other
    };
    json_piece(role, part, kind)
}

/// The request's own prompt (without any cached content).
pub(crate) fn render(body: &Value) -> SimPrompt {
    SimPrompt::build(prompt_parts(body))
}

/// `models/gemini-2.5-flash` and `gemini-2.5-flash` name the same model.
fn bare_model(model: &str) -> &str {
    model.strip_prefix("models/").unwrap_or(model)
}

/// `POST models/{model}:{action}`: the model and action share one path segment, so one wildcard
/// route takes them and the split happens here.
async fn models_action(
    State(ctx): State<Ctx>,
    Path(rest): Path<String>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, SimError> {
    let Some((model, action)) = rest.rsplit_once(':') else {
        return Err(SimError::not_found(
            D,
            format!("Method not found: models/{rest}"),
        ));
    };
    let model = bare_model(model);
    let mode = match action {
        "generateContent" => Mode::Json,
        "streamGenerateContent" if caller.query.get("alt").map(String::as_str) == Some("sse") => {
            Mode::Sse
        }
        "streamGenerateContent" => Mode::JsonArray,
        "countTokens" => Mode::Count,
        _ => {
            return Err(SimError::not_found(
                D,
                format!("Method not found: {action}"),
            ));
        }
    };
    if model.is_empty() {
        return Err(SimError::bad_request(D, "model is required in the path"));
    }
    let req = parse_object(D, &body)?;
    if mode == Mode::Count {
        return count_tokens(&ctx, &caller.key, model, &req);
    }
    let own = render(&req);
    let explicit = cached_tokens(&ctx, &caller.key, model, &req)?;
    let now = ctx.sim.now();
    let usage = ctx
        .sim
        .engine
        .gemini(&caller.key, model, &own, explicit, now);
    let cap = field(&req, "generationConfig")
        .and_then(|config| field(config, "maxOutputTokens"))
        .and_then(Value::as_u64);
    let answer = Answer {
        response_id: format!("gemini-sim-{}", ctx.sim.next_id()),
        model,
        reply: Reply::new(model, usage.input_total(), cap),
        usage,
    };
    let meter = Meter::new(ctx.sim.clone(), caller.key, model, &headers);
    Ok(match mode {
        Mode::Sse => stream_response(SSE, answer.sse(), meter),
        Mode::JsonArray => stream_response(JSON, answer.json_array(), meter),
        Mode::Json | Mode::Count => {
            meter.whole(answer.told(answer.reply.output_tokens));
            ok_json(&answer.chunk(&answer.reply.text, answer.reply.output_tokens, true))
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Json,
    Sse,
    JsonArray,
    Count,
}

/// Tokens of the `cachedContent` a `GenerateContentRequest` references (`None` when it
/// references none), which then must not set what the cache already fixes (providers.md §3.3).
fn cached_tokens(ctx: &Ctx, key: &str, model: &str, req: &Value) -> Result<Option<u64>, SimError> {
    let Some(cached) = field(req, "cachedContent") else {
        return Ok(None);
    };
    let name = cached
        .as_str()
        .ok_or_else(|| SimError::bad_request(D, "cachedContent must be a string"))?;
    if ["systemInstruction", "tools", "toolConfig"]
        .iter()
        .any(|name| field(req, name).is_some())
    {
        return Err(SimError::bad_request(
            D,
            "CachedContent can not be used with GenerateContent request setting \
             system_instruction, tools or tool_config.\n\nProposed fix: move those values to \
             CachedContent from GenerateContent request.",
        ));
    }
    let now = ctx.sim.now();
    let tokens = ctx
        .caches()
        .tokens_for(&ctx.sim.engine, key, name, model, now)?;
    Ok(Some(tokens))
}

/// `countTokens` takes either `contents` or a whole `generateContentRequest`.
fn count_tokens(ctx: &Ctx, key: &str, model: &str, req: &Value) -> Result<Response, SimError> {
    let total = match field(req, "generateContentRequest") {
        Some(inner) => render(inner).tokens() + cached_tokens(ctx, key, model, inner)?.unwrap_or(0),
        None => render(req).tokens(),
    };
    Ok(ok_json(&json!({
        "totalTokens": total,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}],
    })))
}

struct Answer<'a> {
    response_id: String,
    model: &'a str,
    usage: Usage,
    reply: Reply,
}

impl Answer<'_> {
    /// One `GenerateContentResponse` carrying `text`, with usage counting `candidates` output
    /// tokens so far; `last` adds the finish reason (streams: only the final chunk has it).
    fn chunk(&self, text: &str, candidates: u64, last: bool) -> Value {
        let content = json!({"parts": [{"text": text}], "role": "model"});
        let candidate = if last {
            let reason = if self.reply.truncated {
                "MAX_TOKENS"
            } else {
                "STOP"
            };
            json!({"content": content, "finishReason": reason, "index": 0})
        } else {
            json!({"content": content, "index": 0})
        };
        // promptTokenCount includes the cached tokens (providers.md §3.5).
        let prompt = self.usage.input_total();
        let mut usage = json!({
            "promptTokenCount": prompt,
            "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + candidates,
            "cachedContentTokenCount": self.usage.cache_read,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        });
        if self.usage.cache_read > 0 {
            usage["cacheTokensDetails"] =
                json!([{"modality": "TEXT", "tokenCount": self.usage.cache_read}]);
        }
        json!({
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": self.model,
            "responseId": self.response_id,
        })
    }

    /// The stream's chunks: one word each, running usage, the finish reason on the last.
    /// The streamed chunks, each with the running usage its `usageMetadata` reports.
    fn chunks(&self) -> Vec<(Value, Usage)> {
        let deltas: Vec<&str> = self.reply.deltas().collect();
        if deltas.is_empty() {
            return vec![(self.chunk("", 0, true), self.told(0))];
        }
        let last = deltas.len() - 1;
        deltas
            .iter()
            .enumerate()
            .map(|(i, delta)| {
                let candidates = i as u64 + 1;
                (
                    self.chunk(delta, candidates, i == last),
                    self.told(candidates),
                )
            })
            .collect()
    }

    /// The usage a chunk with `candidates` output tokens so far reports.
    fn told(&self, candidates: u64) -> Usage {
        Usage {
            output: candidates,
            ..self.usage
        }
    }

    /// `data: {chunk}\r\n\r\n`, with the CRLF line endings Google's servers use.
    fn sse(&self) -> Vec<Chunk> {
        self.chunks()
            .into_iter()
            .map(|(chunk, told)| {
                let bytes = sse_event(None, &chunk, "\r\n");
                Chunk::new(bytes, self.words_in(&chunk), Some(told))
            })
            .collect()
    }

    /// Output tokens a chunk delivers: one per word of its text.
    fn words_in(&self, chunk: &Value) -> u64 {
        let text = chunk.pointer("/candidates/0/content/parts/0/text");
        text.and_then(Value::as_str)
            .map_or(0, |t| t.split_whitespace().count() as u64)
    }

    /// Google's streamed JSON array, `[{…}\n,\r\n{…}\n]`, one element per body chunk.
    fn json_array(&self) -> Vec<Chunk> {
        let mut out: Vec<Chunk> = self
            .chunks()
            .into_iter()
            .enumerate()
            .map(|(i, (chunk, told))| {
                let lead = if i == 0 { "[" } else { ",\r\n" };
                let bytes = Bytes::from(format!("{lead}{chunk}\n"));
                Chunk::new(bytes, self.words_in(&chunk), Some(told))
            })
            .collect();
        out.push(Chunk::new(Bytes::from_static(b"]"), 0, None));
        out
    }
}

#[cfg(test)]
mod tests;
