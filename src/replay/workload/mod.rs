//! The workloads `cachet replay` sends: six built-in generators, frozen, and recorded JSONL files.
//!
//! A built-in workload is generated, never stored: fixed seeds drive the hand-written [`Rng`]
//! through the generators in this folder, and text comes from [`text`], whose token counts are
//! exact by construction. Each generator builds one provider-neutral timeline of
//! [`dialect::Conversation`]s and renders it once per provider it applies to, so the providers
//! see the same text. [`Workload::digest`] pins the result: a test fails when any byte changes.
//!
//! | workload | shape | providers |
//! |---|---|---|
//! | `docqa` | 4 documents × 6 questions, question before the document | anthropic, openai, gemini, deepseek |
//! | `chat` | 6 users × 12 turns on a shared 3k-token system prompt | the same four |
//! | `agent` | 12 tools, 4 sessions × 30 steps of batched tool calls, one session jumps | anthropic, openai, gemini |
//! | `rag` | 5 Zipf-drawn chunks of 600 tokens, then the question; 15% repeat a chunk list | the four |
//! | `volatile` | a timestamp at the top of the system prompt | anthropic, openai, gemini |
//! | `mooncake` | the Mooncake conversation trace, 512-token blocks | vllm |
//!
//! [`Rng`]: super::rng::Rng

mod agent;
mod chat;
pub mod dialect;
mod docqa;
mod file;
mod mooncake;
mod rag;
pub mod text;
mod tools;
mod volatile;

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use dialect::Conversation;

/// One request as the driver sends it: to `{mount of upstream}{path}` at `t` seconds from the
/// start of the replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub t: f64,
    pub upstream: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Anthropic,
    OpenAi,
    Gemini,
    DeepSeek,
    Vllm,
}

impl Provider {
    pub const ALL: [Provider; 5] = [
        Provider::Anthropic,
        Provider::OpenAi,
        Provider::Gemini,
        Provider::DeepSeek,
        Provider::Vllm,
    ];

    /// The upstream name (and default mount) the requests go to.
    pub fn upstream(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::OpenAi => "openai",
            Provider::Gemini => "gemini",
            Provider::DeepSeek => "deepseek",
            Provider::Vllm => "vllm",
        }
    }

    pub fn from_upstream(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.upstream() == name)
    }

    /// The model the built-in workloads ask for.
    pub fn model(self) -> &'static str {
        match self {
            Provider::Anthropic => "claude-sonnet-4-6",
            Provider::OpenAi => "gpt-4.1",
            Provider::Gemini => "gemini-2.5-flash",
            Provider::DeepSeek => "deepseek-chat",
            Provider::Vllm => "mooncake-sim",
        }
    }
}

/// The requests of one workload for one provider, sorted by `t` (equal `t`: sent concurrently).
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub name: String,
    pub provider: Provider,
    pub model: String,
    pub requests: Vec<Request>,
    /// The same requests with every question placed after its context, as the
    /// question-after-context rewrite would send them, known by construction; the oracle
    /// prices this layout. `None` when no request puts a question before its context.
    pub context_first: Option<Vec<Request>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Small enough for CI (only `mooncake` differs: its first 500 requests).
    Ci,
    Full,
}

/// The providers of the workloads that are plain chat (docqa, chat, rag): every dialect but the
/// replica pool's.
const CHAT_PROVIDERS: [Provider; 4] = [
    Provider::Anthropic,
    Provider::OpenAi,
    Provider::Gemini,
    Provider::DeepSeek,
];

pub const BUILT_IN: [&str; 6] = ["docqa", "chat", "agent", "rag", "volatile", "mooncake"];

/// A built-in workload by name, one [`Workload`] per provider it applies to.
pub fn built_in(name: &str, scale: Scale) -> Result<Vec<Workload>, String> {
    match name {
        "docqa" => Ok(docqa::generate()),
        "chat" => Ok(chat::generate()),
        "agent" => Ok(agent::generate()),
        "rag" => Ok(rag::generate()),
        "volatile" => Ok(volatile::generate()),
        "mooncake" => mooncake::generate(scale),
        _ => Err(format!(
            "unknown workload {name:?}; built in: {}",
            BUILT_IN.join(", ")
        )),
    }
}

/// A recorded workload (JSONL, one request a line); the format is in [`file`]'s docs and the
/// README ("Replay file format").
pub fn load_file(path: &Path) -> Result<Vec<Workload>, String> {
    file::load(path)
}

/// Domain of the digest; bump the version if the serialisation below ever changes.
const DIGEST_DOMAIN: &[u8] = b"cachet/replay/workload/v1\0";

impl Workload {
    /// Hex blake3 over the requests, then the context-first requests when present. Each request
    /// is serialised as `t` (f64 bits, little endian), upstream, path, the header count and each
    /// name and value, and the compact JSON of the body (keys in their built order), every string
    /// and the body preceded by its length as u64 LE, so no two workloads share a byte stream.
    /// Name, provider and model are left out: they are labels, the requests are the workload.
    pub fn digest(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(DIGEST_DOMAIN);
        let mut buf = String::new();
        hash_requests(&mut hasher, &mut buf, &self.requests);
        if let Some(requests) = &self.context_first {
            hasher.update(&[1]);
            hash_requests(&mut hasher, &mut buf, requests);
        } else {
            hasher.update(&[0]);
        }
        hasher.finalize().to_hex().to_string()
    }
}

fn hash_requests(hasher: &mut blake3::Hasher, buf: &mut String, requests: &[Request]) {
    hasher.update(&(requests.len() as u64).to_le_bytes());
    for request in requests {
        hasher.update(&request.t.to_bits().to_le_bytes());
        hash_bytes(hasher, request.upstream.as_bytes());
        hash_bytes(hasher, request.path.as_bytes());
        hasher.update(&(request.headers.len() as u64).to_le_bytes());
        for (name, value) in &request.headers {
            hash_bytes(hasher, name.as_bytes());
            hash_bytes(hasher, value.as_bytes());
        }
        buf.clear();
        // `Display` is serde_json's compact form. Writing to a String cannot fail.
        let _ = write!(buf, "{}", request.body);
        hash_bytes(hasher, buf.as_bytes());
    }
}

fn hash_bytes(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// One request before rendering: when it is sent (ms from the start) and what it says, plus its
/// context-first twin for workloads that have one.
struct Step {
    at_ms: u64,
    conversation: Conversation,
    context_first: Option<Conversation>,
}

/// API key of a built-in workload: one per workload, the same for every provider (each
/// provider's upstream is a tenant of its own anyway).
fn api_key(name: &str) -> String {
    format!("sk-replay-{name}")
}

/// Renders the neutral timeline once per provider. Steps are sorted by time, stably, so
/// requests due at the same millisecond keep their generation order.
fn render(name: &str, providers: &[Provider], mut steps: Vec<Step>) -> Vec<Workload> {
    steps.sort_by_key(|step| step.at_ms);
    let key = api_key(name);
    let has_context_first = steps.iter().any(|step| step.context_first.is_some());
    providers
        .iter()
        .map(|&provider| {
            let render_one = |at_ms: u64, conversation: &Conversation| {
                dialect::render(
                    provider,
                    provider.model(),
                    &key,
                    seconds(at_ms),
                    conversation,
                )
            };
            let requests = steps
                .iter()
                .map(|step| render_one(step.at_ms, &step.conversation))
                .collect();
            let context_first = has_context_first.then(|| {
                steps
                    .iter()
                    .map(|step| {
                        let twin = step.context_first.as_ref().unwrap_or(&step.conversation);
                        render_one(step.at_ms, twin)
                    })
                    .collect()
            });
            Workload {
                name: name.to_owned(),
                provider,
                model: provider.model().to_owned(),
                requests,
                context_first,
            }
        })
        .collect()
}

fn seconds(at_ms: u64) -> f64 {
    at_ms as f64 / 1000.0
}

#[cfg(test)]
mod tests;
