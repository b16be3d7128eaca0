//! The body rewrites that make a prompt's context a reusable prefix: the question after its
//! context (`../shared/DESIGN.md`, "Question after context") and a stable tool order.
//!
//! The decisions are provider-neutral: a dialect shows one user message as a list of
//! [`PartView`]s, [`plan`] decides, and the dialect's own `rewrite` module applies the [`Plan`]
//! to its JSON (only the dialect modules know the shapes). Every rewrite is deterministic and
//! idempotent, and keeps every field it does not move and the key order of every object; a body
//! that needs none is not touched at all.
//!
//! A single text is split only when its first paragraph asks (ends in `?` or `:`) and its
//! context does not end in such a paragraph or in a blank line: by size alone, a text that is
//! context-first already (or the first piece of a split) whose document opens with a short
//! paragraph would be split again, that paragraph moved to the end.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::config::RewriteConfig;
use crate::dialect::{Endpoint, anthropic, gemini, openai};

/// One rewrite, as the `x-cachet-rewrites` header names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rewrite {
    /// A question moved after its context, or split off and placed after it.
    QuestionLast,
    /// A Gemini user turn split in two, context first.
    GeminiSplitTurn,
    /// Tool definitions sorted by name.
    StableTools,
    /// The moved question prefixed with the ground sentence.
    GroundQuestion,
}

impl Rewrite {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QuestionLast => "question_last",
            Self::GeminiSplitTurn => "gemini_split_turn",
            Self::StableTools => "stable_tools",
            Self::GroundQuestion => "ground_question",
        }
    }
}

/// The rewrites applied to one body; a set, so they come out in [`Rewrite`]'s order.
pub type Applied = BTreeSet<Rewrite>;

/// Rewrites `body` for `endpoint` as `config` asks; returns what was applied, in a fixed order.
/// Empty: the body is exactly as it was. Only generating routes are rewritten: counting tokens
/// or creating a Gemini cache must see what the client wrote.
pub fn rewrite(endpoint: &Endpoint, body: &mut Value, config: &RewriteConfig) -> Vec<Rewrite> {
    rewrite_turns(endpoint, body, config, Turns::Split)
}

/// What the question-after-context rewrite does with a Gemini text "question, blank line,
/// document": two user Contents, so the document can go into a cached content
/// (`gemini_split_turn`), or — when it is not going into one — one text, document first, which
/// costs no tokens more than the client's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turns {
    Split,
    Keep,
}

pub fn rewrite_turns(
    endpoint: &Endpoint,
    body: &mut Value,
    config: &RewriteConfig,
    turns: Turns,
) -> Vec<Rewrite> {
    let mut applied = Applied::new();
    if config.question_last {
        move_questions(endpoint, body, config, turns, &mut applied);
    }
    if config.stable_tools && sort_tools(endpoint, body) {
        applied.insert(Rewrite::StableTools);
    }
    applied.into_iter().collect()
}

fn move_questions(
    endpoint: &Endpoint,
    body: &mut Value,
    config: &RewriteConfig,
    turns: Turns,
    applied: &mut Applied,
) {
    match endpoint {
        Endpoint::Chat => openai::rewrite::chat_questions(body, config, applied),
        Endpoint::Responses => openai::rewrite::responses_questions(body, config, applied),
        Endpoint::AnthropicMessages => anthropic::rewrite::questions(body, config, applied),
        Endpoint::GeminiGenerate { .. } => gemini::rewrite::questions(body, config, turns, applied),
        Endpoint::AnthropicCountTokens
        | Endpoint::GeminiCountTokens { .. }
        | Endpoint::GeminiCachedContents => {}
    }
}

fn sort_tools(endpoint: &Endpoint, body: &mut Value) -> bool {
    match endpoint {
        Endpoint::Chat => openai::rewrite::sort_chat_tools(body),
        Endpoint::Responses => openai::rewrite::sort_responses_tools(body),
        Endpoint::AnthropicMessages => anthropic::rewrite::sort_tools(body),
        Endpoint::GeminiGenerate { .. } => gemini::rewrite::sort_tools(body),
        Endpoint::AnthropicCountTokens
        | Endpoint::GeminiCountTokens { .. }
        | Endpoint::GeminiCachedContents => false,
    }
}

/// One part of a user message, as far as the decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartView<'a> {
    /// Text (or a message's string content). `plain`: the part holds nothing but its text and
    /// type, so it can be split in two without deciding where its other fields go.
    Text { text: &'a str, plain: bool },
    /// An image, a document or a file: context, whatever its size.
    Media,
    /// A tool call or result: the message is never touched.
    Tool,
    /// Anything else: the message's layout is left alone.
    Other,
}

/// What to do with one user message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Move the first `questions` parts after the others, each group in its order.
    QuestionLast { questions: usize },
    /// Split the message's one text in two, context first.
    Split(Split),
}

/// Where a message's one text splits: `text[..question_end]` is the question,
/// `text[question_end..context_start]` the blank line, `text[context_start..]` the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    question_end: usize,
    context_start: usize,
}

/// The two texts a split makes: the context with the blank line after it (so that every
/// question on a document shares one prefix, separator included), then the question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pieces {
    pub context: String,
    pub question: String,
}

impl Pieces {
    /// The pieces as one string, for a dialect whose cache matches any token prefix. The
    /// context's buffer has room for the question already (it was the whole text), unless a
    /// ground sentence was added: then it grows by that much, not by doubling.
    pub fn joined(self) -> String {
        let mut out = self.context;
        out.reserve_exact(self.question.len());
        out.push_str(&self.question);
        out
    }
}

impl Split {
    /// The pieces of `text`, the one the split was planned on, taken from it: the question and
    /// the blank line are copied off its front and the context stays in its buffer (moved down,
    /// not copied into a new one), so a document is never allocated twice. `text` is left
    /// empty.
    pub fn take_pieces(self, text: &mut String, config: &RewriteConfig) -> Pieces {
        let mut context = std::mem::take(text);
        let head = context.get(..self.context_start).unwrap_or_default();
        let question = head.get(..self.question_end).unwrap_or_default();
        let question = format!("{}{question}", grounding(config).unwrap_or_default());
        let blank = head.get(self.question_end..).unwrap_or_default().to_owned();
        context.replace_range(..head.len(), "");
        context.push_str(&blank);
        Pieces { context, question }
    }
}

/// The rewrites a plan stands for (a Gemini turn split adds its own).
pub fn note(config: &RewriteConfig, applied: &mut Applied) {
    applied.insert(Rewrite::QuestionLast);
    if grounding(config).is_some() {
        applied.insert(Rewrite::GroundQuestion);
    }
}

/// The sentence a moved question starts with, when grounding is on.
fn grounding(config: &RewriteConfig) -> Option<&str> {
    let sentence = config.ground_sentence.as_str();
    (config.ground_question && !sentence.is_empty()).then_some(sentence)
}

/// Applies [`Plan::QuestionLast`] to a message's parts: the first `questions` go last, and the
/// first of them starts with the ground sentence when grounding is on.
pub fn move_last<T>(
    parts: &mut [T],
    questions: usize,
    config: &RewriteConfig,
    text_of: impl Fn(&mut T) -> Option<&mut String>,
) {
    parts.rotate_left(questions);
    let first_moved = parts.len().saturating_sub(questions);
    if let (Some(sentence), Some(part)) = (grounding(config), parts.get_mut(first_moved)) {
        if let Some(text) = text_of(part) {
            text.insert_str(0, sentence);
        }
    }
}

/// `item` twice, its text replaced by the context and then by the question. `item`'s text is
/// taken first ([`Split::take_pieces`] leaves it empty), so the clone copies no document.
pub fn split_in_two<T: Clone>(
    mut item: T,
    pieces: Pieces,
    text_of: impl Fn(&mut T) -> Option<&mut String>,
) -> [T; 2] {
    if let Some(text) = text_of(&mut item) {
        *text = pieces.question;
    }
    let mut first = item.clone();
    if let Some(text) = text_of(&mut first) {
        *text = pieces.context;
    }
    [first, item]
}

/// Sorts `items` by name, stably; false (nothing moved) when they are sorted already or one
/// has no name, as a built-in tool may not: there is no order to put it in.
pub fn sort_by_name<T>(items: &mut [T], name: impl Fn(&T) -> Option<&str>) -> bool {
    let names: Option<Vec<&str>> = items.iter().map(&name).collect();
    let sorted = names.is_none_or(|names| names.is_sorted());
    if sorted {
        return false;
    }
    items.sort_by(|a, b| name(a).cmp(&name(b)));
    true
}

/// The plan for one user message, `None` when its layout is to be left alone.
pub fn plan(parts: &[PartView<'_>], config: &RewriteConfig) -> Option<Plan> {
    let kinds: Vec<Kind> = parts.iter().map(|part| kind(part, config)).collect();
    if kinds.contains(&Kind::Tool) {
        return None;
    }
    match parts {
        [PartView::Text { text, plain: true }] => split(text, config).map(Plan::Split),
        _ => question_last(&kinds),
    }
}

/// What a part is to the question-after-context rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Question,
    Context,
    Tool,
    Other,
}

fn kind(part: &PartView<'_>, config: &RewriteConfig) -> Kind {
    match part {
        // Context first: with thresholds configured to overlap, a text that is context must
        // never count as a question too, or a moved layout could move again.
        PartView::Text { text, .. } if tokens(text) >= config.context_min_tokens => Kind::Context,
        PartView::Text { text, .. } if tokens(text) <= config.question_max_tokens => Kind::Question,
        PartView::Text { .. } | PartView::Other => Kind::Other,
        PartView::Media => Kind::Context,
        PartView::Tool => Kind::Tool,
    }
}

/// A leading run of questions followed by context only, at least one of each.
fn question_last(kinds: &[Kind]) -> Option<Plan> {
    let questions = kinds.iter().take_while(|k| **k == Kind::Question).count();
    let rest = kinds.get(questions..).unwrap_or_default();
    let context_only = !rest.is_empty() && rest.iter().all(|k| *k == Kind::Context);
    (questions > 0 && context_only).then_some(Plan::QuestionLast { questions })
}

const BLANK_LINE: &str = "\n\n";

/// The split of one text at its first blank line (all of its newlines kept as the separator),
/// when what comes before asks and what comes after is context.
fn split(text: &str, config: &RewriteConfig) -> Option<Split> {
    let question_end = text.find(BLANK_LINE)?;
    let rest = text.get(question_end..).unwrap_or_default();
    let newlines = rest.bytes().take_while(|b| *b == b'\n').count();
    let context_start = question_end + newlines;
    let question = text.get(..question_end).unwrap_or_default();
    let context = text.get(context_start..).unwrap_or_default();
    (is_question(question, config) && is_context(context, config)).then_some(Split {
        question_end,
        context_start,
    })
}

fn is_question(paragraph: &str, config: &RewriteConfig) -> bool {
    tokens(paragraph) <= config.question_max_tokens && asks(paragraph)
}

/// Long enough to cache, and not context-first already: it ends neither in a paragraph that
/// asks nor in a blank line (the first piece of a split ends so).
fn is_context(context: &str, config: &RewriteConfig) -> bool {
    let last = context.rsplit(BLANK_LINE).next().unwrap_or(context);
    tokens(context) >= config.context_min_tokens && !last.trim().is_empty() && !asks(last)
}

/// Ends as a question or an instruction about what follows does.
fn asks(paragraph: &str) -> bool {
    matches!(
        paragraph.trim_end().chars().next_back(),
        Some('?' | ':' | '？' | '：')
    )
}

/// The token estimate: a token per 4 bytes, rounded up.
fn tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

#[cfg(test)]
mod tests;
