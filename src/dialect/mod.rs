//! API dialects: the only code that knows a provider's JSON.
//!
//! For each request the proxy asks a dialect three things: is this path a route cachet models
//! ([`classify`]), what does the body say ([`RequestInfo`]: model, stream), and what usage did
//! the response report ([`usage_from_body`], [`usage_from_event`]). Errors that cachet raises
//! itself are rendered in the caller's [`Dialect`]. The provider is decided by the upstream's
//! configured kind and the route, never by sniffing URLs.

pub mod anthropic;
pub mod deepseek;
pub mod gemini;
pub mod openai;

use http::{Method, StatusCode};
use serde_json::Value;

use crate::config::ProviderKind;
use crate::envelope::{Envelope, top_level_field};
use crate::usage::UsagePatch;

/// The error shape a caller understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Dialect {
    pub fn of(provider: ProviderKind) -> Self {
        match provider {
            ProviderKind::Anthropic => Self::Anthropic,
            ProviderKind::Gemini => Self::Gemini,
            ProviderKind::Openai | ProviderKind::Deepseek | ProviderKind::OpenaiCompatible => {
                Self::OpenAi
            }
        }
    }

    /// For a path under no mount: the dialect its shape suggests, else OpenAI's.
    pub fn guess(path: &str) -> Self {
        if anthropic::looks_like(path) {
            Self::Anthropic
        } else if gemini::looks_like(path) {
            Self::Gemini
        } else {
            Self::OpenAi
        }
    }

    /// The JSON body of an error cachet raises, in this dialect's shape.
    pub fn error_body(self, status: StatusCode, label: &str, message: &str) -> Value {
        match self {
            Self::OpenAi => openai::error_body(status, label, message),
            Self::Anthropic => anthropic::error_body(status, message),
            Self::Gemini => gemini::error_body(status, message),
        }
    }
}

/// A route cachet understands. Everything else is passed through untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// OpenAI-style `chat/completions` (OpenAI, DeepSeek, OpenAI-compatible servers).
    Chat,
    /// OpenAI `responses`.
    Responses,
    AnthropicMessages,
    AnthropicCountTokens,
    /// Gemini `models/{model}:generateContent` or `:streamGenerateContent`.
    GeminiGenerate {
        model: String,
        stream: bool,
    },
    GeminiCountTokens {
        model: String,
    },
    /// Any `cachedContents` call (create, list, get, patch, delete).
    GeminiCachedContents,
}

impl Endpoint {
    /// Whether the request carries a JSON body cachet must read (and so the body limit applies).
    pub fn has_json_body(&self, method: &Method) -> bool {
        *method == Method::POST || *method == Method::PATCH
    }

    /// Whether responses on this route report token usage worth tapping.
    pub fn reports_usage(&self) -> bool {
        matches!(
            self,
            Self::Chat | Self::Responses | Self::AnthropicMessages | Self::GeminiGenerate { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Chat => "chat_completions",
            Self::Responses => "responses",
            Self::AnthropicMessages => "messages",
            Self::AnthropicCountTokens => "count_tokens",
            Self::GeminiGenerate { stream: false, .. } => "generate_content",
            Self::GeminiGenerate { stream: true, .. } => "stream_generate_content",
            Self::GeminiCountTokens { .. } => "count_tokens",
            Self::GeminiCachedContents => "cached_contents",
        }
    }
}

/// Which modelled route, if any, `method path` is on an upstream of this kind.
/// `path` is the part after the mount, still percent-encoded, without the query.
pub fn classify(provider: ProviderKind, method: &Method, path: &str) -> Option<Endpoint> {
    match provider {
        ProviderKind::Openai => openai::classify(method, path),
        ProviderKind::Deepseek | ProviderKind::OpenaiCompatible => deepseek::classify(method, path),
        ProviderKind::Anthropic => anthropic::classify(method, path),
        ProviderKind::Gemini => gemini::classify(method, path),
    }
}

/// What the request body (and path) says about the call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub model: Option<String>,
    pub stream: bool,
}

/// The top-level request fields the proxy reads; the rest of a body is only validated.
pub const HEAD_FIELDS: &[&str] = &["model", "stream", "stream_options", "prompt_cache_key"];

pub fn request_info(endpoint: &Endpoint, env: Option<&Envelope>) -> RequestInfo {
    let field = |name: &str| env.and_then(|e| e.field(name));
    match endpoint {
        Endpoint::GeminiGenerate { model, stream } => RequestInfo {
            model: Some(model.clone()),
            stream: *stream,
        },
        Endpoint::GeminiCountTokens { model } => RequestInfo {
            model: Some(model.clone()),
            stream: false,
        },
        Endpoint::GeminiCachedContents => RequestInfo {
            model: field("model")
                .and_then(Value::as_str)
                .map(|m| m.trim_start_matches("models/").to_owned()),
            stream: false,
        },
        _ => RequestInfo {
            model: field("model").and_then(Value::as_str).map(str::to_owned),
            stream: field("stream").and_then(Value::as_bool).unwrap_or(false),
        },
    }
}

/// Usage reported by a complete (non-streamed) JSON response body. Only the usage field is
/// built; the rest of the body (the generated text) is skipped over.
pub fn usage_from_body(
    provider: ProviderKind,
    endpoint: &Endpoint,
    body: &[u8],
) -> Option<UsagePatch> {
    let field = |name| top_level_field(body, name);
    match endpoint {
        Endpoint::Chat => chat_usage(provider, &field("usage")?),
        Endpoint::Responses => openai::responses_usage(&field("usage")?),
        Endpoint::AnthropicMessages => anthropic::usage(&field("usage")?),
        Endpoint::GeminiGenerate { .. } => gemini::usage(&field("usageMetadata")?),
        _ => None,
    }
}

/// What one stream event means to the proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventUsage {
    pub patch: Option<UsagePatch>,
    /// The event is the usage-only chunk that cachet asked for on the client's behalf.
    pub is_usage_only_chunk: bool,
}

/// Usage carried by one SSE event (or one element of Gemini's streamed JSON array, `event`
/// being `None`). Cheap for the common case: events that cannot carry usage are not parsed.
pub fn usage_from_event(
    provider: ProviderKind,
    endpoint: &Endpoint,
    event: Option<&str>,
    data: &[u8],
) -> EventUsage {
    match endpoint {
        Endpoint::Chat => openai::chat_event(data, |usage| chat_usage(provider, usage)),
        Endpoint::Responses => EventUsage {
            patch: openai::responses_event(event, data),
            is_usage_only_chunk: false,
        },
        Endpoint::AnthropicMessages => EventUsage {
            patch: anthropic::event_usage(event, data),
            is_usage_only_chunk: false,
        },
        Endpoint::GeminiGenerate { .. } => EventUsage {
            patch: gemini::event_usage(data),
            is_usage_only_chunk: false,
        },
        _ => EventUsage::default(),
    }
}

fn chat_usage(provider: ProviderKind, usage: &Value) -> Option<UsagePatch> {
    match provider {
        ProviderKind::Deepseek => deepseek::usage(usage),
        _ => openai::chat_usage(usage),
    }
}

/// True when `data` holds `"<field>"` followed by an object (not `null`). A byte scan, so that
/// the many delta events of a stream are not parsed as JSON.
pub(crate) fn has_object_field(data: &[u8], quoted_field: &[u8]) -> bool {
    let mut from = 0;
    while let Some(at) = memchr::memmem::find(&data[from..], quoted_field) {
        let rest = &data[from + at + quoted_field.len()..];
        let mut bytes = rest.iter().copied().skip_while(u8::is_ascii_whitespace);
        if bytes.next() == Some(b':') && bytes.find(|b| !b.is_ascii_whitespace()) == Some(b'{') {
            return true;
        }
        from += at + quoted_field.len();
    }
    false
}

#[cfg(test)]
mod billing_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_recognises_the_modelled_routes_and_nothing_else() {
        use Endpoint::*;
        let post = Method::POST;
        let cases: &[(ProviderKind, &Method, &str, Option<Endpoint>)] = &[
            (
                ProviderKind::Openai,
                &post,
                "/v1/chat/completions",
                Some(Chat),
            ),
            (
                ProviderKind::Openai,
                &post,
                "/v1/responses",
                Some(Responses),
            ),
            (ProviderKind::Openai, &Method::GET, "/v1/models", None),
            (ProviderKind::Openai, &post, "/v1/embeddings", None),
            (ProviderKind::Openai, &post, "/chat/completions", None),
            (
                ProviderKind::Deepseek,
                &post,
                "/chat/completions",
                Some(Chat),
            ),
            (
                ProviderKind::Deepseek,
                &post,
                "/v1/chat/completions",
                Some(Chat),
            ),
            (
                ProviderKind::OpenaiCompatible,
                &post,
                "/v1/chat/completions",
                Some(Chat),
            ),
            (
                ProviderKind::Anthropic,
                &post,
                "/v1/messages",
                Some(AnthropicMessages),
            ),
            (
                ProviderKind::Anthropic,
                &post,
                "/v1/messages/count_tokens",
                Some(AnthropicCountTokens),
            ),
            (ProviderKind::Anthropic, &post, "/v1/messages/batches", None),
            (
                ProviderKind::Gemini,
                &post,
                "/v1beta/models/gemini-2.5-flash:generateContent",
                Some(GeminiGenerate {
                    model: "gemini-2.5-flash".into(),
                    stream: false,
                }),
            ),
            (
                ProviderKind::Gemini,
                &post,
                "/v1/models/gemini-2.5-pro:streamGenerateContent",
                Some(GeminiGenerate {
                    model: "gemini-2.5-pro".into(),
                    stream: true,
                }),
            ),
            (
                ProviderKind::Gemini,
                &post,
                "/v1beta/models/gemini-2.5-flash:countTokens",
                Some(GeminiCountTokens {
                    model: "gemini-2.5-flash".into(),
                }),
            ),
            (
                ProviderKind::Gemini,
                &post,
                "/v1beta/cachedContents",
                Some(GeminiCachedContents),
            ),
            (
                ProviderKind::Gemini,
                &Method::GET,
                "/v1beta/cachedContents",
                Some(GeminiCachedContents),
            ),
            (
                ProviderKind::Gemini,
                &Method::DELETE,
                "/v1/cachedContents/abc",
                Some(GeminiCachedContents),
            ),
            (
                ProviderKind::Gemini,
                &Method::PATCH,
                "/v1beta/cachedContents/abc",
                Some(GeminiCachedContents),
            ),
            (
                ProviderKind::Gemini,
                &post,
                "/v1beta/models/x:embedContent",
                None,
            ),
            (ProviderKind::Gemini, &Method::GET, "/v1beta/models", None),
            (
                ProviderKind::Gemini,
                &post,
                "/v2/models/x:generateContent",
                None,
            ),
        ];
        for (provider, method, path, want) in cases {
            assert_eq!(
                &classify(*provider, method, path),
                want,
                "{provider:?} {method} {path}"
            );
        }
    }

    #[test]
    fn object_field_scan_skips_nulls_and_spaces() {
        assert!(has_object_field(br#"{"usage":{"a":1}}"#, b"\"usage\""));
        assert!(has_object_field(br#"{"usage" :  {"a":1}}"#, b"\"usage\""));
        assert!(!has_object_field(br#"{"usage":null}"#, b"\"usage\""));
        assert!(has_object_field(
            br#"{"x":"usage","usage":null,"y":{"usage":{}}}"#,
            b"\"usage\""
        ));
        assert!(!has_object_field(b"", b"\"usage\""));
    }

    #[test]
    fn the_dialect_of_an_unknown_path_follows_its_shape() {
        assert_eq!(Dialect::guess("/nope/v1/messages"), Dialect::Anthropic);
        assert_eq!(
            Dialect::guess("/x/v1beta/models/gemini-2.5-flash:generateContent"),
            Dialect::Gemini
        );
        assert_eq!(Dialect::guess("/x/v1beta/cachedContents"), Dialect::Gemini);
        assert_eq!(Dialect::guess("/x/v1/chat/completions"), Dialect::OpenAi);
        assert_eq!(Dialect::guess("/"), Dialect::OpenAi);
    }
}
