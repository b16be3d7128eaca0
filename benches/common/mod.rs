//! Request shapes shared by the prefix engine benchmarks (`prefix_engine`, `prefix_alloc`).
//!
//! Every body is built deterministically (a fixed-seed generator of English-like prose), so two
//! runs measure the same bytes. Sizes are in the engine's own estimate: a token per 4 bytes.
//!
//! - `anthropic-{1k,100k,1M}`: Anthropic Messages with three tools, a system prompt block, two
//!   turns of history, and a last user message of two text blocks: a short question, then the
//!   document it asks about. The rewrite (shipped defaults) moves the question after the
//!   document. The smallest is ~2k tokens: a document under 1 024 (`context_min_tokens`) would
//!   leave the rewrite nothing to do.
//! - `anthropic-split-100k`: the same, the last user message one text block, question first and
//!   a blank line before the document: the rewrite splits it in two blocks, context first.
//! - `openai-100k`: OpenAI chat with the same parts, the last user message one string, question
//!   first and a blank line before the document: the rewrite swaps the two pieces.

use cachet::dialect::Endpoint;
use cachet::tenant::{Credential, Tenant, TenantSecret};
use serde_json::{Value, json};

/// One benchmarked request: its route and its body as a client sends it (compact JSON).
pub struct Case {
    /// `shape-size`, e.g. `anthropic-100k`: criterion's group name and the table's row.
    pub name: String,
    pub endpoint: Endpoint,
    pub body: Vec<u8>,
}

/// The sizes the issue asks for, in estimated tokens of the whole body.
const SIZES: [(&str, usize); 3] = [("1k", 1_000), ("100k", 100_000), ("1M", 1_000_000)];

/// The smallest document the default rewrite takes for context (`context_min_tokens` = 1024,
/// so 4 096 bytes), with some margin: below it the 1k request would have nothing to rewrite.
const MIN_DOCUMENT_BYTES: usize = 4_300;

pub fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = SIZES
        .iter()
        .map(|&(size, tokens)| anthropic(size, tokens, false))
        .collect();
    cases.push(anthropic("100k", 100_000, true));
    cases.push(openai_chat("100k", 100_000));
    cases
}

/// A fixed tenant, as a request with no credential to one upstream has.
pub fn tenant() -> Tenant {
    Tenant::of(
        &TenantSecret::from_bytes([7; 32]),
        "bench",
        &Credential::default(),
    )
}

/// `split`: the question and the document in one text block rather than two.
fn anthropic(size: &str, tokens: usize, split: bool) -> Case {
    let mut words = Words::new(0x5eed_0001 ^ tokens as u64);
    let parts = Parts::new(&mut words, tokens);
    let build = |document: &str| {
        let mut messages = Vec::new();
        for (question, answer) in &parts.history {
            messages.push(json!({"role": "user", "content": question}));
            messages.push(json!({"role": "assistant", "content": answer}));
        }
        let content = if split {
            json!([{"type": "text", "text": format!("{}\n\n{document}", parts.question)}])
        } else {
            json!([
                {"type": "text", "text": parts.question},
                {"type": "text", "text": document},
            ])
        };
        messages.push(json!({"role": "user", "content": content}));
        let tools: Vec<Value> = TOOLS
            .iter()
            .map(|(name, description)| {
                json!({
                    "name": name,
                    "description": description,
                    "input_schema": {
                        "type": "object",
                        "properties": {"query": {"type": "string", "description": "What to look up."}},
                        "required": ["query"],
                    },
                })
            })
            .collect();
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "tools": tools,
            "system": [{"type": "text", "text": parts.system, "cache_control": {"type": "ephemeral"}}],
            "messages": messages,
        })
    };
    let shape = if split {
        "anthropic-split"
    } else {
        "anthropic"
    };
    sized(
        format!("{shape}-{size}"),
        Endpoint::AnthropicMessages,
        tokens,
        &mut words,
        build,
    )
}

fn openai_chat(size: &str, tokens: usize) -> Case {
    let mut words = Words::new(0x5eed_0002 ^ tokens as u64);
    let parts = Parts::new(&mut words, tokens);
    let build = |document: &str| {
        let mut messages = vec![json!({"role": "system", "content": parts.system})];
        for (question, answer) in &parts.history {
            messages.push(json!({"role": "user", "content": question}));
            messages.push(json!({"role": "assistant", "content": answer}));
        }
        messages.push(json!({
            "role": "user",
            "content": format!("{}\n\n{document}", parts.question),
        }));
        let tools: Vec<Value> = TOOLS
            .iter()
            .map(|(name, description)| {
                json!({
                    "type": "function",
                    "function": {
                        "name": name,
                        "description": description,
                        "parameters": {
                            "type": "object",
                            "properties": {"query": {"type": "string", "description": "What to look up."}},
                            "required": ["query"],
                        },
                    },
                })
            })
            .collect();
        json!({
            "model": "gpt-4.1",
            "max_tokens": 1024,
            "messages": messages,
            "tools": tools,
        })
    };
    sized(
        format!("openai-{size}"),
        Endpoint::Chat,
        tokens,
        &mut words,
        build,
    )
}

/// Builds the body around an empty document first, then with a document that brings the whole
/// body to `tokens` × 4 bytes (never below [`MIN_DOCUMENT_BYTES`]).
fn sized(
    name: String,
    endpoint: Endpoint,
    tokens: usize,
    words: &mut Words,
    build: impl Fn(&str) -> Value,
) -> Case {
    let frame = serde_json::to_vec(&build("")).map_or(0, |b| b.len());
    let document = words.text((tokens * 4).saturating_sub(frame).max(MIN_DOCUMENT_BYTES));
    let body = serde_json::to_vec(&build(&document)).unwrap_or_default();
    Case {
        name,
        endpoint,
        body,
    }
}

/// Three tools, not in name order (`stable_tools`, off by default, would sort them).
const TOOLS: [(&str, &str); 3] = [
    (
        "search_documents",
        "Search the attached documents for passages about a topic.",
    ),
    ("fetch_page", "Fetch one page of a document by its number."),
    (
        "lookup_definition",
        "Look up the definition of a term used in the documents.",
    ),
];

/// Everything but the document, scaled to the request's size: the system prompt about a tenth
/// of it (200 B to 8 KB), four history messages each a fiftieth (100 B to 4 KB).
struct Parts {
    system: String,
    history: Vec<(String, String)>,
    question: String,
}

impl Parts {
    fn new(words: &mut Words, tokens: usize) -> Self {
        let bytes = tokens * 4;
        let system = words.text((bytes / 10).clamp(200, 8_000));
        let turn = (bytes / 50).clamp(100, 4_000);
        let history = (0..2)
            .map(|_| {
                let mut question = words.text(turn);
                question.push_str(" What does it say about this?");
                (question, words.text(turn))
            })
            .collect();
        let mut question = String::from("Read the report below. ");
        words.sentence(&mut question);
        question.pop();
        question.push('?');
        Self {
            system,
            history,
            question,
        }
    }
}

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "this",
    "are",
    "or",
    "from",
    "at",
    "which",
    "an",
    "have",
    "has",
    "had",
    "but",
    "were",
    "their",
    "they",
    "one",
    "all",
    "more",
    "been",
    "would",
    "there",
    "some",
    "system",
    "report",
    "market",
    "committee",
    "analysis",
    "results",
    "growth",
    "quarter",
    "revenue",
    "customer",
    "network",
    "policy",
    "section",
    "model",
    "process",
    "research",
    "evidence",
    "question",
    "approach",
    "increase",
    "decrease",
    "significant",
    "previous",
    "annual",
    "regional",
    "management",
    "development",
    "production",
    "investment",
    "performance",
    "environment",
    "information",
    "operations",
    "structure",
    "capacity",
    "distribution",
    "requirements",
    "agreement",
    "contract",
    "supplier",
    "service",
    "delivery",
    "pricing",
    "budget",
    "forecast",
    "estimate",
    "risk",
    "exposure",
    "compliance",
    "audit",
    "board",
    "director",
    "team",
    "employees",
    "training",
    "safety",
    "quality",
    "standard",
    "review",
    "assessment",
    "strategy",
    "objective",
    "target",
    "measure",
    "indicator",
    "data",
    "survey",
    "sample",
    "period",
    "year",
    "month",
    "week",
    "north",
    "south",
    "central",
    "café",
    "naïve",
    "résumé",
    "déjà",
    "approximately",
    "however",
    "therefore",
    "although",
    "because",
    "during",
    "between",
    "across",
    "within",
    "without",
    "under",
    "above",
    "below",
    "higher",
    "lower",
    "stable",
    "volatile",
    "expected",
    "reported",
    "observed",
    "proposed",
    "approved",
    "delayed",
    "completed",
    "remaining",
    "additional",
    "initial",
    "final",
];

/// xorshift64*: a fixed sequence, no dependency.
struct Words {
    state: u64,
    paragraphs: usize,
}

impl Words {
    fn new(seed: u64) -> Self {
        Self {
            state: seed | 1,
            paragraphs: 0,
        }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// 6 to 22 words, capitalised, with the odd comma, figure or quotation; ends in a period.
    fn sentence(&mut self, out: &mut String) {
        let n = 6 + self.below(17);
        for i in 0..n {
            if i > 0 {
                out.push(' ');
            }
            match self.below(40) {
                0 => out.push_str(&format!("{}.{}%", self.below(100), self.below(10))),
                1 => out.push_str(&format!("\"{}\"", WORDS[self.below(WORDS.len())])),
                2 => out.push_str(&format!("{}", 1990 + self.below(36))),
                _ => {
                    let word = WORDS[self.below(WORDS.len())];
                    if i == 0 {
                        let mut chars = word.chars();
                        if let Some(first) = chars.next() {
                            out.extend(first.to_uppercase());
                            out.push_str(chars.as_str());
                        }
                    } else {
                        out.push_str(word);
                    }
                }
            }
            if i + 1 < n && self.below(8) == 0 {
                out.push(',');
            }
        }
        out.push('.');
    }

    /// Paragraphs of 3 to 7 sentences separated by blank lines, with a heading every eighth,
    /// until at least `bytes` long (a sentence past it at most); ends in a period.
    fn text(&mut self, bytes: usize) -> String {
        let mut out = String::with_capacity(bytes + 256);
        let mut left_in_paragraph = 0;
        while out.len() < bytes {
            if left_in_paragraph == 0 {
                if !out.is_empty() {
                    out.push_str("\n\n");
                }
                self.paragraphs += 1;
                if self.paragraphs % 8 == 0 {
                    out.push_str(&format!("Section {}\n\n", self.paragraphs / 8));
                }
                left_in_paragraph = 3 + self.below(5);
            } else {
                out.push(' ');
            }
            self.sentence(&mut out);
            left_in_paragraph -= 1;
        }
        out
    }
}
