//! The Gemini API under `/v1beta` and `/v1`:
//!
//! - `POST models/{model}:generateContent`, `:streamGenerateContent` (SSE with `?alt=sse`, as
//!   the SDKs ask; otherwise Google's streamed JSON array) and `:countTokens`;
//! - the `cachedContents` resource (`caches.rs`), kept in memory per API key.
//!
//! The API key is the `x-goog-api-key` header or the `?key=` parameter. Request fields are read
//! in camelCase or snake_case, as Google's JSON parser accepts both. A `cachedContent` reference
//! puts the cache's tokens in `promptTokenCount` (its contents are a prefix of the prompt);
//! `cachedContentTokenCount` stays 0 until caching is billed.

mod caches;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::Uri;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::Sim;
use super::reply::{Reply, estimate_tokens};
use super::wire::{
    Dialect, JSON, SSE, SimError, ok_json, parse_object, sse_event, stream_response,
};

const D: Dialect = Dialect::Gemini;
/// The prompt-bearing fields, in the order Gemini renders them.
const PROMPT: [&str; 3] = ["tools", "systemInstruction", "contents"];

#[derive(Clone)]
struct Ctx {
    sim: Arc<Sim>,
    caches: Arc<Mutex<caches::Store>>,
}

impl Ctx {
    fn caches(&self) -> MutexGuard<'_, caches::Store> {
        // A panic while holding the lock leaves the store consistent (every update is one
        // insert or remove), so a poisoned lock is safe to keep using.
        self.caches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(crate) fn router(sim: Arc<Sim>) -> Router {
    let ctx = Ctx {
        sim,
        caches: Arc::default(),
    };
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
        let header = parts
            .headers
            .get("x-goog-api-key")
            .and_then(|v| v.to_str().ok());
        let key = header
            .or_else(|| query.get("key").map(String::as_str))
            .unwrap_or_default()
            .to_owned();
        Ok(Caller { key, query })
    }
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

fn prompt_parts(body: &Value) -> Vec<&Value> {
    PROMPT.iter().filter_map(|name| field(body, name)).collect()
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
    let prompt_tokens = prompt_tokens(&ctx, &caller.key, model, &req)?;
    let cap = field(&req, "generationConfig")
        .and_then(|config| field(config, "maxOutputTokens"))
        .and_then(Value::as_u64);
    let answer = Answer {
        response_id: format!("gemini-sim-{}", ctx.sim.next_id()),
        model,
        prompt_tokens,
        reply: Reply::new(model, prompt_tokens, cap),
    };
    Ok(match mode {
        Mode::Sse => stream_response(SSE, answer.sse()),
        Mode::JsonArray => stream_response(JSON, answer.json_array()),
        Mode::Json | Mode::Count => {
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

/// Prompt tokens of a `GenerateContentRequest`: with `cachedContent`, the cache's own tokens
/// plus the request's, which then must not set what the cache already fixes.
fn prompt_tokens(ctx: &Ctx, key: &str, model: &str, req: &Value) -> Result<u64, SimError> {
    let own = estimate_tokens(&prompt_parts(req));
    let Some(cached) = field(req, "cachedContent") else {
        return Ok(own);
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
    let cached_tokens = ctx.caches().tokens_for(key, name, model, now)?;
    Ok(cached_tokens + own)
}

/// `countTokens` takes either `contents` or a whole `generateContentRequest`.
fn count_tokens(ctx: &Ctx, key: &str, model: &str, req: &Value) -> Result<Response, SimError> {
    let total = match field(req, "generateContentRequest") {
        Some(inner) => prompt_tokens(ctx, key, model, inner)?,
        None => estimate_tokens(&prompt_parts(req)),
    };
    Ok(ok_json(&json!({
        "totalTokens": total,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}],
    })))
}

struct Answer<'a> {
    response_id: String,
    model: &'a str,
    prompt_tokens: u64,
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
        let prompt = self.prompt_tokens;
        json!({
            "candidates": [candidate],
            "usageMetadata": {
                "promptTokenCount": prompt,
                "candidatesTokenCount": candidates,
                "totalTokenCount": prompt + candidates,
                "cachedContentTokenCount": 0,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
            },
            "modelVersion": self.model,
            "responseId": self.response_id,
        })
    }

    /// The stream's chunks: one word each, running usage, the finish reason on the last.
    fn chunks(&self) -> Vec<Value> {
        let deltas: Vec<&str> = self.reply.deltas().collect();
        if deltas.is_empty() {
            return vec![self.chunk("", 0, true)];
        }
        let last = deltas.len() - 1;
        deltas
            .iter()
            .enumerate()
            .map(|(i, delta)| self.chunk(delta, i as u64 + 1, i == last))
            .collect()
    }

    /// `data: {chunk}\r\n\r\n`, with the CRLF line endings Google's servers use.
    fn sse(&self) -> Vec<Bytes> {
        self.chunks()
            .iter()
            .map(|chunk| sse_event(None, chunk, "\r\n"))
            .collect()
    }

    /// Google's streamed JSON array, `[{…}\n,\r\n{…}\n]`, one element per body chunk.
    fn json_array(&self) -> Vec<Bytes> {
        let mut out: Vec<Bytes> = self
            .chunks()
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let lead = if i == 0 { "[" } else { ",\r\n" };
                Bytes::from(format!("{lead}{chunk}\n"))
            })
            .collect();
        out.push(Bytes::from_static(b"]"));
        out
    }
}

#[cfg(test)]
mod tests;
