//! The canonical prompt: what a request asks the model to read, as ordered segments in the
//! provider's render order (tools, system, then each message's parts, tool calls and tool
//! results), borrowed from the request's parsed JSON.
//!
//! Building a [`Prompt`] copies no content: a text segment is a `&str` into the `Value`, a
//! structured part is a `&Value`. The dialect modules build it (`dialect::*::prompt`); everything
//! after them (prefix keys, rewrites, the miss explainer) reads only this type.
//!
//! Each segment has canonical bytes ([`Segment::render`]), streamed to a [`Sink`]:
//! - text: its UTF-8 bytes;
//! - a structured part: its compact JSON in the key order sent, without `cache_control` on a
//!   block (a marker, not content), where media data (a `data` or `file_data` string, or a
//!   `data:` URL under `url` / `image_url`, of at least [`MEDIA_MIN_BYTES`]) is replaced by
//!   `"blake3:<hex digest>"`. The digest keeps a 5 MB image from becoming 20 000 chunks of
//!   prefix key while still telling two images apart.
//!
//! The proxy does not tokenize: the token estimate counts canonical bytes, a digest standing
//! for the bytes it replaced (at most [`IMAGE_ESTIMATE_BYTES`] in an image, which no provider
//! bills above ~1 600 tokens).

use serde_json::{Map, Value};

use crate::dialect::{Endpoint, anthropic, gemini, openai};

/// Media strings shorter than this stay as they are: digesting them would save nothing.
pub const MEDIA_MIN_BYTES: usize = 128;

/// The most an image's data counts for in the token estimate (1 600 tokens of 4 bytes).
pub const IMAGE_ESTIMATE_BYTES: u64 = 6_400;

/// A request's prompt in render order. Invariant: `segments` is in the order the provider
/// renders them, which is the order prefix keys chain them.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt<'a> {
    pub model: Option<&'a str>,
    /// Content the provider keeps and renders before this request's own segments.
    pub context: Option<StoredContext<'a>>,
    pub segments: Vec<Segment<'a>>,
}

/// A reference to content held by the provider, read before the request's own segments: two
/// requests with the same segments but different stored context do not share a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredContext<'a> {
    /// Gemini `cachedContent` (`cachedContents/…`).
    GeminiCachedContent(&'a str),
    /// OpenAI Responses `previous_response_id`.
    PreviousResponse(&'a str),
    /// OpenAI Responses `conversation` (its id).
    Conversation(&'a str),
}

/// One rendered piece of the prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment<'a> {
    pub place: Place,
    /// The message's role as sent (`user`, `assistant`, `model`, `tool`, …); `None` for tools,
    /// system segments and role-less items (Responses `function_call`, say).
    pub role: Option<&'a str>,
    pub kind: SegmentKind,
    pub content: Content<'a>,
}

/// Where a segment sits in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Place {
    /// The i-th tool definition.
    Tools(usize),
    /// The j-th block of the system prompt (Anthropic `system`, Gemini `systemInstruction`,
    /// Responses `instructions`). Chat `system` / `developer` messages are messages.
    System(usize),
    /// `part` counts the message's segments: its content parts in order (so, for array
    /// content, the index into that array), then its tool calls.
    Message { index: usize, part: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    Text,
    ToolDef,
    ToolCall,
    ToolResult,
    /// Data by digest.
    Image,
    /// A document, file or audio clip; data by digest.
    File,
    /// Anything else a provider renders (thinking blocks, reasoning items, code results…).
    Other,
}

impl SegmentKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::ToolDef => "tool_def",
            Self::ToolCall => "tool_call",
            Self::ToolResult => "tool_result",
            Self::Image => "image",
            Self::File => "file",
            Self::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Content<'a> {
    /// Plain text: canonical bytes are the text itself.
    Text(&'a str),
    /// A structured part: canonical bytes are its compact JSON (see the module doc).
    Json(&'a Value),
}

/// The prompt of a modelled request; `None` for routes (or bodies) that carry none.
pub fn prompt<'a>(endpoint: &'a Endpoint, body: &'a Value) -> Option<Prompt<'a>> {
    let prompt = match endpoint {
        Endpoint::Chat => openai::prompt::chat(body),
        Endpoint::Responses => openai::prompt::responses(body),
        Endpoint::AnthropicMessages | Endpoint::AnthropicCountTokens => {
            anthropic::prompt::messages(body)
        }
        Endpoint::GeminiGenerate { model, .. } | Endpoint::GeminiCountTokens { model } => {
            gemini::prompt::generate(model, body)
        }
        Endpoint::GeminiCachedContents => gemini::prompt::cached_content(body),
    }?;
    (!prompt.segments.is_empty()).then_some(prompt)
}

impl<'a> Prompt<'a> {
    pub fn new(model: Option<&'a str>) -> Self {
        Self {
            model,
            context: None,
            segments: Vec::new(),
        }
    }

    /// Gemini's `cachedContent`, when the request reads one.
    pub fn cached_content(&self) -> Option<&'a str> {
        match self.context {
            Some(StoredContext::GeminiCachedContent(name)) => Some(name),
            _ => None,
        }
    }

    /// Each element is one tool definition.
    pub(crate) fn tools(&mut self, defs: &'a [Value]) {
        for (i, def) in defs.iter().enumerate() {
            self.segments.push(Segment {
                place: Place::Tools(i),
                role: None,
                kind: SegmentKind::ToolDef,
                content: Content::Json(def),
            });
        }
    }

    pub(crate) fn system(&mut self, kind: SegmentKind, content: Content<'a>) {
        let j = self
            .segments
            .iter()
            .filter(|s| matches!(s.place, Place::System(_)))
            .count();
        self.segments.push(Segment {
            place: Place::System(j),
            role: None,
            kind,
            content,
        });
    }

    /// Pushes the segments `parts` yields for message `index`. A message that yields none is
    /// kept whole, as one `Other` segment, so that it still shows in the keys.
    pub(crate) fn message(
        &mut self,
        index: usize,
        role: Option<&'a str>,
        whole: &'a Value,
        parts: impl FnOnce(&mut MessageParts<'_, 'a>),
    ) {
        let mut message = MessageParts {
            prompt: self,
            index,
            role,
            next: 0,
        };
        parts(&mut message);
        if message.next == 0 {
            message.push(SegmentKind::Other, Content::Json(whole));
        }
    }
}

/// The segments of one message, numbered as they are pushed.
pub(crate) struct MessageParts<'p, 'a> {
    prompt: &'p mut Prompt<'a>,
    index: usize,
    role: Option<&'a str>,
    next: usize,
}

impl<'a> MessageParts<'_, 'a> {
    pub(crate) fn push(&mut self, kind: SegmentKind, content: Content<'a>) {
        self.prompt.segments.push(Segment {
            place: Place::Message {
                index: self.index,
                part: self.next,
            },
            role: self.role,
            kind,
            content,
        });
        self.next += 1;
    }
}

/// The text of a block that holds nothing else the model reads: every key is in `allowed`
/// and `text_key` is a string. Such a block and a bare string render alike.
pub(crate) fn text_only<'a>(block: &'a Value, text_key: &str, allowed: &[&str]) -> Option<&'a str> {
    let object: &Map<String, Value> = block.as_object()?;
    if !object.keys().all(|k| allowed.contains(&k.as_str())) {
        return None;
    }
    object.get(text_key)?.as_str()
}

/// Receives canonical bytes as they are produced.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);

    /// Estimate bytes beyond those put: a digest stands for the data it replaced.
    fn weigh(&mut self, _extra: u64) {}
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Segment<'_> {
    /// Streams this segment's canonical bytes into `sink`, without building them.
    pub fn render(&self, sink: &mut impl Sink) {
        match self.content {
            Content::Text(text) => sink.put(text.as_bytes()),
            Content::Json(value) => {
                let mut writer = Canonical {
                    sink,
                    image: self.kind == SegmentKind::Image,
                };
                writer.value(value, None, true);
            }
        }
    }

    /// The canonical bytes, collected (for tests and excerpts; the key chain streams them).
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.render(&mut out);
        out
    }

    /// Prose may be cut at whitespace; JSON is cut anywhere on a character boundary.
    pub fn is_prose(&self) -> bool {
        matches!(self.content, Content::Text(_))
    }
}

/// Compact JSON, as `serde_json` writes it, less block markers and media data.
struct Canonical<'s, S> {
    sink: &'s mut S,
    image: bool,
}

impl<S: Sink> Canonical<'_, S> {
    /// `key` is the value's key in its parent object; `block` says whether `cache_control` is
    /// a marker here (the segment's root, or an element of a `content` array) rather than,
    /// say, a property of a tool's schema.
    fn value(&mut self, value: &Value, key: Option<&str>, block: bool) {
        match value {
            Value::Null => self.sink.put(b"null"),
            Value::Bool(true) => self.sink.put(b"true"),
            Value::Bool(false) => self.sink.put(b"false"),
            Value::Number(n) => self.sink.put(n.to_string().as_bytes()),
            Value::String(s) if is_media(key, s) => self.digest(s),
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                let blocks = key == Some("content");
                self.sink.put(b"[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.sink.put(b",");
                    }
                    self.value(item, None, blocks);
                }
                self.sink.put(b"]");
            }
            Value::Object(map) => self.object(map, block),
        }
    }

    fn object(&mut self, map: &Map<String, Value>, block: bool) {
        self.sink.put(b"{");
        let mut first = true;
        for (k, v) in map {
            if block && k == "cache_control" {
                continue;
            }
            if !first {
                self.sink.put(b",");
            }
            first = false;
            self.string(k);
            self.sink.put(b":");
            self.value(v, Some(k), false);
        }
        self.sink.put(b"}");
    }

    /// A JSON string with `serde_json`'s escapes, written in runs of unescaped bytes.
    fn string(&mut self, s: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.sink.put(b"\"");
        let bytes = s.as_bytes();
        let mut run = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let unicode;
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0x00..=0x1f => {
                    unicode = [
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 0xf)],
                    ];
                    &unicode
                }
                _ => continue,
            };
            self.sink.put(&bytes[run..i]);
            self.sink.put(escape);
            run = i + 1;
        }
        self.sink.put(&bytes[run..]);
        self.sink.put(b"\"");
    }

    fn digest(&mut self, data: &str) {
        const PUT: u64 = 73; // `"blake3:` + 64 hex digits + `"`
        self.sink.put(b"\"blake3:");
        self.sink
            .put(blake3::hash(data.as_bytes()).to_hex().as_bytes());
        self.sink.put(b"\"");
        let len = data.len() as u64;
        let stands_for = if self.image {
            len.min(IMAGE_ESTIMATE_BYTES)
        } else {
            len
        };
        self.sink.weigh(stands_for.saturating_sub(PUT));
    }
}

/// Base64 data (`source.data`, `inline_data.data`, `input_audio.data`, `file_data`) or a
/// `data:` URL (`image_url.url`, Responses `image_url`).
fn is_media(key: Option<&str>, s: &str) -> bool {
    if s.len() < MEDIA_MIN_BYTES {
        return false;
    }
    match key {
        Some("data" | "file_data") => true,
        Some("url" | "image_url") => s.starts_with("data:"),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
