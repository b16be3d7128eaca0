//! The simulator's view of a prompt: the token sequence a provider would build, cut into the
//! blocks its cache rules talk about, with a hash of every token prefix.
//!
//! Every provider caches prefixes of the rendered prompt; what differs is where a cached prefix
//! may end (Anthropic: at blocks; OpenAI: every 128 tokens; vLLM: every 16; DeepSeek: at units).
//! So the dialect modules render a request into [`Block`]s once, and every rule works on
//! `prefix_hash(n)`, the identity of "the first n tokens", which two prompts share exactly when
//! their first n tokens are equal.
//!
//! Rendering: each block is its own text (the text of a text part; the compact JSON of anything
//! else, without `cache_control`, because markers are not content), tokenized on its own. The
//! first block of a message also carries a role header (`<|user|>` in text), as chat templates
//! do, so that the same words in another role are another prefix.

use serde_json::Value;

use super::tokens::tokenizer;
use crate::mix::splitmix64 as mix;

/// How a block counts for Anthropic's lookback: a run of consecutive `tool_use` blocks is one
/// position, and so is a run of `tool_result` blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Tool,
    System,
    Text,
    ToolUse,
    ToolResult,
    Other,
}

/// Time-to-live of a cache marker (Anthropic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ttl {
    FiveMinutes,
    OneHour,
}

impl Ttl {
    pub fn secs(self) -> u64 {
        match self {
            Ttl::FiveMinutes => 300,
            Ttl::OneHour => 3600,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Block {
    /// Token position just after this block.
    pub end: usize,
    pub kind: Kind,
    /// The block's `cache_control`, when it carries one.
    pub mark: Option<Ttl>,
    /// The block ends a user input or a model output (DeepSeek persists units there).
    pub turn_end: bool,
    /// Empty text and thinking blocks cannot carry a breakpoint.
    pub markable: bool,
}

/// A rendered prompt. `hashes[n]` identifies the first `n` tokens.
#[derive(Clone, Debug, Default)]
pub struct SimPrompt {
    tokens: Vec<u32>,
    hashes: Vec<u64>,
    pub blocks: Vec<Block>,
}

/// One input to [`SimPrompt::build`]: a block's text (or JSON), its kind and marks.
pub struct Piece<'a> {
    pub role: Option<&'a str>,
    pub content: Content<'a>,
    pub kind: Kind,
    pub mark: Option<Ttl>,
    pub turn_end: bool,
}

pub enum Content<'a> {
    Text(&'a str),
    Json(&'a Value),
}

impl SimPrompt {
    pub fn build<'a>(pieces: impl IntoIterator<Item = Piece<'a>>) -> SimPrompt {
        let mut prompt = SimPrompt {
            tokens: Vec::new(),
            hashes: vec![SEED],
            blocks: Vec::new(),
        };
        let mut tokens = Vec::new();
        for piece in pieces {
            tokens.clear();
            if let Some(role) = piece.role {
                tokenizer().encode_into(&format!("<|{role}|>\n"), &mut tokens);
            }
            let markable = match piece.content {
                Content::Text(text) => {
                    tokenizer().encode_into(text, &mut tokens);
                    !text.is_empty()
                }
                Content::Json(value) => {
                    tokenizer().encode_into(&render_json(value), &mut tokens);
                    value.get("type").and_then(Value::as_str) != Some("thinking")
                }
            };
            prompt.extend(&tokens);
            prompt.blocks.push(Block {
                end: prompt.len(),
                kind: piece.kind,
                mark: piece.mark,
                turn_end: piece.turn_end,
                markable,
            });
        }
        prompt
    }

    fn extend(&mut self, tokens: &[u32]) {
        let mut h = self.hashes.last().copied().unwrap_or(SEED);
        self.hashes.reserve(tokens.len());
        for &token in tokens {
            h = mix(h ^ u64::from(token));
            self.hashes.push(h);
        }
        self.tokens.extend_from_slice(tokens);
    }

    /// Total tokens.
    pub fn len(&self) -> usize {
        self.hashes.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn tokens(&self) -> u64 {
        self.len() as u64
    }

    /// Identity of the first `n` tokens (`n` is clamped to the prompt's length).
    pub fn prefix_hash(&self, n: usize) -> u64 {
        self.hashes[n.min(self.len())]
    }

    /// This prompt followed by `other`'s tokens: a cached prefix followed by the request's own
    /// contents (Gemini), or the prompt followed by the model's reply (DeepSeek's output unit).
    pub fn concat(&self, other: &SimPrompt) -> SimPrompt {
        let mut out = self.clone();
        let offset = self.len();
        out.extend(&other.tokens);
        out.blocks.extend(other.blocks.iter().map(|b| Block {
            end: b.end + offset,
            ..b.clone()
        }));
        out
    }
}

const SEED: u64 = 0x6361_6368_6574_7369; // "cachetsi"

/// Compact JSON of a non-text block without its `cache_control`.
fn render_json(value: &Value) -> String {
    match value {
        Value::Object(map) if map.contains_key("cache_control") => {
            let mut map = map.clone();
            map.shift_remove("cache_control");
            Value::Object(map).to_string()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(role: Option<&'static str>, t: &'static str) -> Piece<'static> {
        Piece {
            role,
            content: Content::Text(t),
            kind: Kind::Text,
            mark: None,
            turn_end: false,
        }
    }

    #[test]
    fn shared_prefixes_share_hashes() {
        let a = SimPrompt::build([text(Some("user"), "the same document"), text(None, "first")]);
        let b = SimPrompt::build([
            text(Some("user"), "the same document"),
            text(None, "second"),
        ]);
        let doc_end = a.blocks[0].end;
        assert_eq!(doc_end, b.blocks[0].end);
        assert_eq!(a.prefix_hash(doc_end), b.prefix_hash(doc_end));
        assert_ne!(a.prefix_hash(a.len()), b.prefix_hash(b.len()));
        assert_eq!(a.prefix_hash(0), b.prefix_hash(0));
    }

    #[test]
    fn roles_are_part_of_the_prefix() {
        let a = SimPrompt::build([text(Some("user"), "hello")]);
        let b = SimPrompt::build([text(Some("assistant"), "hello")]);
        assert_ne!(a.prefix_hash(a.len()), b.prefix_hash(b.len()));
    }

    #[test]
    fn cache_control_is_not_content() {
        let plain = json!({"type": "image", "source": {"data": "abc"}});
        let marked = json!({"type": "image", "source": {"data": "abc"}, "cache_control": {"type": "ephemeral"}});
        let piece = |v: &'static Value| Piece {
            role: None,
            content: Content::Json(v),
            kind: Kind::Other,
            mark: None,
            turn_end: false,
        };
        let plain: &'static Value = Box::leak(Box::new(plain));
        let marked: &'static Value = Box::leak(Box::new(marked));
        let a = SimPrompt::build([piece(plain)]);
        let b = SimPrompt::build([piece(marked)]);
        assert_eq!(a.prefix_hash(a.len()), b.prefix_hash(b.len()));
    }

    #[test]
    fn concat_is_deterministic_and_keeps_the_head() {
        let head = SimPrompt::build([text(Some("system"), "cached part")]);
        let tail = SimPrompt::build([text(Some("user"), "question")]);
        let one = head.concat(&tail);
        let two = head.concat(&tail);
        assert_eq!(one.len(), head.len() + tail.len());
        assert_eq!(one.prefix_hash(head.len()), head.prefix_hash(head.len()));
        assert_eq!(one.prefix_hash(one.len()), two.prefix_hash(two.len()));
        let whole = SimPrompt::build([
            text(Some("system"), "cached part"),
            text(Some("user"), "question"),
        ]);
        assert_eq!(one.prefix_hash(one.len()), whole.prefix_hash(whole.len()));
        assert_eq!(one.blocks.last().map(|b| b.end), Some(one.len()));
    }
}
