//! The miss explainer (DESIGN.md "Miss explainer"): when a request reads less from the
//! provider's cache than its tenant's history made possible, or its prefix is new, find the
//! nearest earlier prompt of the same tenant and say where they diverge — which segment, which
//! byte — and why: `tools_changed`, `system_changed`, `timestamp_in_prefix`,
//! `question_before_context`, `history_edited`, `model_changed`, `expired`, `below_minimum`;
//! and flag `duplicate_context` when one large part appears twice in a request.
//!
//! No prompt text is kept. Per tenant, bounded and in memory only, a [`Fingerprint`] holds each
//! chunk's prefix keys (with and without the model), and per segment an 8-byte hash of every
//! 16-byte piece and a 2-bit character class of every byte (digit, letter, space, other). The
//! divergence is found by the chunk keys, narrowed to a piece by the piece hashes, and to a
//! byte by the classes where they differ; a changed run of digits and date/time separators is
//! widened to the whole token, so a timestamp is reported where it starts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::config::RewriteConfig;
use crate::mix::splitmix64 as mix;
use crate::prefix::Boundary;
use crate::prompt::{Content, Place, Prompt, Segment, SegmentKind, Sink};
use crate::rewrite::{self, PartView};
use crate::tenant::Tenant;

/// Bytes per piece hash.
const PIECE: usize = 16;
/// Earlier prompts kept per tenant.
const PER_TENANT: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    ToolsChanged,
    SystemChanged,
    TimestampInPrefix,
    QuestionBeforeContext,
    HistoryEdited,
    ModelChanged,
    Expired,
    BelowMinimum,
    DuplicateContext,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ToolsChanged => "tools_changed",
            Reason::SystemChanged => "system_changed",
            Reason::TimestampInPrefix => "timestamp_in_prefix",
            Reason::QuestionBeforeContext => "question_before_context",
            Reason::HistoryEdited => "history_edited",
            Reason::ModelChanged => "model_changed",
            Reason::Expired => "expired",
            Reason::BelowMinimum => "below_minimum",
            Reason::DuplicateContext => "duplicate_context",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub const ALL: [Reason; 9] = [
        Reason::ToolsChanged,
        Reason::SystemChanged,
        Reason::TimestampInPrefix,
        Reason::QuestionBeforeContext,
        Reason::HistoryEdited,
        Reason::ModelChanged,
        Reason::Expired,
        Reason::BelowMinimum,
        Reason::DuplicateContext,
    ];

    /// What the client can change so that the prefix is read from cache next time.
    pub fn fix(self) -> &'static str {
        match self {
            Reason::ToolsChanged => {
                "keep the tool definitions byte-identical between requests: same tools, same \
                 order, same schemas"
            }
            Reason::SystemChanged => {
                "keep the system prompt stable; put what changes per request after the cached \
                 prefix, in the last message"
            }
            Reason::TimestampInPrefix => {
                "move the timestamp out of the system prompt (or round it to the day), after \
                 the cached prefix"
            }
            Reason::QuestionBeforeContext => {
                "put the question after the document (cachet's question_last rewrite does this \
                 when it is on)"
            }
            Reason::HistoryEdited => {
                "append to the conversation instead of editing or trimming earlier turns"
            }
            Reason::ModelChanged => "caches are per model: keep one model per conversation",
            Reason::Expired => {
                "the prefix expired between uses: a 1h TTL pays off for prefixes reused every \
                 5 to 60 minutes"
            }
            Reason::BelowMinimum => {
                "the shared prefix is under the model's minimum cacheable length: grow the \
                 stable part (shared instructions, examples) past it, or expect no caching"
            }
            Reason::DuplicateContext => {
                "the same document is sent twice in one prompt: send it once"
            }
        }
    }
}

/// Why a request missed, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub reason: Reason,
    /// `tools 0`, `system 1`, `message 3 part 1`.
    pub segment: String,
    /// Index of that segment in the request's prompt.
    pub segment_index: usize,
    /// Byte offset within that segment's canonical bytes.
    pub offset: usize,
    /// Tokens (cachet's estimate) the earlier prompt shared, which the request could have read.
    pub tokens: u64,
    /// At most 40 characters of the request around the divergence, digits and letters masked;
    /// only when `log.excerpts` is on.
    pub excerpt: Option<String>,
}

/// What is kept of one prompt.
#[derive(Debug)]
pub struct Fingerprint {
    at: SystemTime,
    chunks: Vec<ChunkPrint>,
    segments: Vec<SegmentPrint>,
    /// Segment content hashes of large parts seen twice in this prompt, with their tokens.
    duplicate: Option<(usize, u64)>,
}

#[derive(Debug, Clone, Copy)]
struct ChunkPrint {
    key: [u8; 16],
    model_free: [u8; 16],
    segment: usize,
    tokens: u64,
}

#[derive(Debug)]
struct SegmentPrint {
    place: Place,
    system_role: bool,
    /// Leading run of short text in the last user message, followed by context.
    question_first: bool,
    pieces: Vec<u64>,
    /// 2 bits per byte.
    classes: Vec<u8>,
    len: usize,
}

impl Fingerprint {
    /// `rewrite` tells a question from context exactly as the question-after-context rewrite
    /// does.
    pub fn of(
        prompt: &Prompt<'_>,
        boundaries: &[Boundary],
        at: SystemTime,
        rewrite: &RewriteConfig,
    ) -> Fingerprint {
        let context_min_tokens = rewrite.context_min_tokens;
        let chunks = boundaries
            .iter()
            .map(|b| ChunkPrint {
                key: first16(b.key.as_bytes()),
                model_free: first16(b.model_free.as_bytes()),
                segment: b.segment,
                tokens: b.tokens,
            })
            .collect();
        let mut content_hashes: HashMap<(u64, usize), usize> = HashMap::new();
        let mut duplicate = None;
        let mut segments = Vec::with_capacity(prompt.segments.len());
        for (i, segment) in prompt.segments.iter().enumerate() {
            let mut sink = PrintSink::default();
            segment.render(&mut sink);
            let print = sink.finish(segment);
            if (print.len as u64).div_ceil(4) >= context_min_tokens && duplicate.is_none() {
                let hash = content_hash(&print);
                if content_hashes.insert(hash, i).is_some() {
                    duplicate = Some((i, (print.len as u64).div_ceil(4)));
                }
            }
            segments.push(print);
        }
        mark_question_first(prompt, &mut segments, rewrite);
        Fingerprint {
            at,
            chunks,
            segments,
            duplicate,
        }
    }

    fn explanation(
        &self,
        reason: Reason,
        segment: usize,
        offset: usize,
        tokens: u64,
    ) -> Explanation {
        let print = &self.segments[segment];
        Explanation {
            reason,
            segment: place_name(print.place, print.system_role),
            segment_index: segment,
            offset,
            tokens,
            excerpt: None,
        }
    }

    /// Approximate heap size, for the history's bound.
    fn weight(&self) -> usize {
        self.chunks.len() * std::mem::size_of::<ChunkPrint>()
            + self
                .segments
                .iter()
                .map(|s| s.pieces.len() * 8 + s.classes.len() + 64)
                .sum::<usize>()
    }
}

fn first16(bytes: &[u8; 32]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&bytes[..16]);
    out
}

/// A segment's content, by its piece hashes and length (for `duplicate_context`).
fn content_hash(print: &SegmentPrint) -> (u64, usize) {
    let hash = print.pieces.iter().fold(0u64, |h, &p| mix(h ^ p));
    (hash, print.len)
}

/// Piece hashes and character classes of a segment's canonical bytes, as they stream by.
/// Whole pieces are hashed two words at a time and classes come from a table, so a
/// fingerprint costs a fraction of the key chain (it runs on every request).
#[derive(Default)]
struct PrintSink {
    pieces: Vec<u64>,
    classes: Vec<u8>,
    /// A piece not yet complete.
    partial: [u8; PIECE],
    filled: usize,
    len: usize,
}

impl Sink for PrintSink {
    fn put(&mut self, mut bytes: &[u8]) {
        self.classify(bytes);
        if self.filled > 0 {
            let take = (PIECE - self.filled).min(bytes.len());
            self.partial[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled < PIECE {
                return;
            }
            let piece = self.partial;
            self.pieces.push(piece_hash(&piece));
            self.filled = 0;
        }
        let mut whole = bytes.chunks_exact(PIECE);
        for piece in whole.by_ref() {
            self.pieces.push(piece_hash(piece));
        }
        let rest = whole.remainder();
        self.partial[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }
}

impl PrintSink {
    fn classify(&mut self, bytes: &[u8]) {
        self.classes.reserve(bytes.len() / 4 + 1);
        for &b in bytes {
            let slot = self.len % 4;
            if slot == 0 {
                self.classes.push(0);
            }
            if let Some(last) = self.classes.last_mut() {
                *last |= CLASSES[usize::from(b)] << (slot * 2);
            }
            self.len += 1;
        }
    }

    fn finish(&mut self, segment: &Segment<'_>) -> SegmentPrint {
        if self.filled > 0 {
            let piece = self.partial;
            self.pieces.push(piece_hash(&piece[..self.filled]));
            self.filled = 0;
        }
        SegmentPrint {
            place: segment.place,
            system_role: matches!(segment.role, Some("system" | "developer")),
            question_first: false,
            pieces: std::mem::take(&mut self.pieces),
            classes: std::mem::take(&mut self.classes),
            len: self.len,
        }
    }
}

/// An 8-byte hash of a piece of at most 16 bytes (its length included, so a short last piece
/// differs from a padded one).
fn piece_hash(piece: &[u8]) -> u64 {
    let mut words = [0u8; PIECE];
    words[..piece.len()].copy_from_slice(piece);
    let (a, b) = words.split_at(8);
    let a = u64::from_le_bytes(a.try_into().unwrap_or_default());
    let b = u64::from_le_bytes(b.try_into().unwrap_or_default());
    mix(mix(a ^ piece.len() as u64) ^ b)
}

/// The character class of every byte.
const CLASSES: [u8; 256] = {
    let mut table = [3u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = class(b);
        i += 1;
    }
    table
};

const fn class(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => 0,
        b'a'..=b'z' | b'A'..=b'Z' => 1,
        b' ' | b'\t' | b'\n' | b'\r' => 2,
        _ => 3,
    }
}

fn class_at(classes: &[u8], i: usize) -> Option<u8> {
    classes.get(i / 4).map(|c| (c >> ((i % 4) * 2)) & 3)
}

/// Marks the last message's segments when the question-after-context rewrite would have moved
/// its question (a leading question, or a single text asking before its document).
fn mark_question_first(prompt: &Prompt<'_>, prints: &mut [SegmentPrint], rewrite: &RewriteConfig) {
    let Some(Place::Message { index: last, .. }) = prompt.segments.last().map(|s| s.place) else {
        return;
    };
    let in_last: Vec<usize> = (0..prompt.segments.len())
        .filter(
            |&i| matches!(prompt.segments[i].place, Place::Message { index, .. } if index == last),
        )
        .collect();
    if in_last
        .iter()
        .any(|&i| !matches!(prompt.segments[i].role, None | Some("user")))
    {
        return;
    }
    let views: Vec<PartView<'_>> = in_last
        .iter()
        .map(|&i| {
            let segment = &prompt.segments[i];
            match (segment.kind, segment.content) {
                (SegmentKind::Text, Content::Text(text)) => PartView::Text { text, plain: true },
                (SegmentKind::Image | SegmentKind::File, _) => PartView::Media,
                (SegmentKind::ToolCall | SegmentKind::ToolResult, _) => PartView::Tool,
                _ => PartView::Other,
            }
        })
        .collect();
    if rewrite::plan(&views, rewrite).is_some() {
        for &i in &in_last {
            prints[i].question_first = true;
        }
    }
}

/// Per tenant, the most recent fingerprints, within a global byte budget.
pub struct History {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

#[derive(Default)]
struct Inner {
    by_tenant: HashMap<Tenant, VecDeque<Arc<Fingerprint>>>,
    /// Insertion order over all tenants, for eviction.
    order: VecDeque<(Tenant, usize)>,
    bytes: usize,
}

impl History {
    pub fn new(max_bytes: usize) -> Self {
        History {
            inner: Mutex::new(Inner::default()),
            max_bytes,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves the maps consistent enough to keep using.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Explains a request that read `read` tokens (cachet's estimate) with `retention` as the
    /// provider's cache lifetime and `min_tokens` its minimum, then remembers it.
    pub fn explain_and_record(
        &self,
        tenant: Tenant,
        print: Arc<Fingerprint>,
        facts: Facts,
    ) -> Option<Explanation> {
        let explanation = {
            let inner = self.inner();
            let earlier = inner
                .by_tenant
                .get(&tenant)
                .map(|d| d.iter().cloned().collect::<Vec<_>>());
            drop(inner);
            explain(&print, earlier.as_deref().unwrap_or(&[]), &facts)
        };
        self.record(tenant, print);
        explanation
    }

    fn record(&self, tenant: Tenant, print: Arc<Fingerprint>) {
        let mut inner = self.inner();
        let weight = print.weight();
        let list = inner.by_tenant.entry(tenant).or_default();
        list.push_back(print);
        if list.len() > PER_TENANT {
            if let Some(old) = list.pop_front() {
                inner.bytes = inner.bytes.saturating_sub(old.weight());
            }
        }
        inner.order.push_back((tenant, weight));
        inner.bytes += weight;
        while inner.bytes > self.max_bytes {
            let Some((oldest, _)) = inner.order.pop_front() else {
                break;
            };
            let removed = inner
                .by_tenant
                .get_mut(&oldest)
                .and_then(VecDeque::pop_front);
            if let Some(old) = removed {
                inner.bytes = inner.bytes.saturating_sub(old.weight());
            }
            if inner.by_tenant.get(&oldest).is_some_and(VecDeque::is_empty) {
                inner.by_tenant.remove(&oldest);
            }
        }
    }
}

/// What the response said, for the explainer.
#[derive(Clone, Copy, Debug)]
pub struct Facts {
    /// Tokens read from the provider's cache, in cachet's estimate.
    pub read: u64,
    pub retention: Duration,
    /// The model's minimum cacheable prompt, in cachet's estimate (0 when unknown).
    pub min_tokens: u64,
    pub now: SystemTime,
}

/// At most 40 characters of `bytes` from `offset` on, digits masked: enough to see what kind
/// of text diverged, not enough to leak it.
pub fn excerpt(bytes: &[u8], offset: usize) -> String {
    let start = offset.min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[start..]);
    text.chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_digit() {
                '#'
            } else if c.is_control() {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// The explanation for `print` against the tenant's `earlier` prompts (oldest first).
fn explain(
    print: &Fingerprint,
    earlier: &[Arc<Fingerprint>],
    facts: &Facts,
) -> Option<Explanation> {
    if let Some((segment, tokens)) = print.duplicate {
        return Some(print.explanation(Reason::DuplicateContext, segment, 0, tokens));
    }
    // The nearest earlier prompt shares the most chunks (the newest among equals).
    let (nearest, shared) = earlier
        .iter()
        .rev()
        .map(|e| (e, common_chunks(&print.chunks, &e.chunks, |c| c.key)))
        .fold(
            None,
            |best: Option<(&Arc<Fingerprint>, usize)>, (e, n)| match best {
                Some((_, m)) if m >= n => best,
                _ => Some((e, n)),
            },
        )?;
    let tokens_at = |n: usize| {
        if n == 0 {
            0
        } else {
            print.chunks[n - 1].tokens
        }
    };
    let shared_tokens = tokens_at(shared);
    let model_free = earlier
        .iter()
        .map(|e| common_chunks(&print.chunks, &e.chunks, |c| c.model_free))
        .max()
        .unwrap_or(0);
    let possible = shared_tokens.max(tokens_at(model_free));
    // A volatile token caps what any request can share: named even when the provider read
    // everything before it, with the tokens of its segment after it as the loss.
    if let Some((Reason::TimestampInPrefix, segment, offset)) = divergence(print, nearest, shared) {
        let rest = (print.segments[segment].len.saturating_sub(offset) as u64).div_ceil(4);
        return Some(print.explanation(Reason::TimestampInPrefix, segment, offset, rest));
    }
    // The provider read what history allowed: no miss to explain.
    if possible > 0 && facts.read >= possible {
        return None;
    }
    let lost = possible.saturating_sub(facts.read);
    let at = |reason, segment: usize, offset| print.explanation(reason, segment, offset, lost);
    if model_free > shared {
        return Some(at(
            Reason::ModelChanged,
            print.chunks[model_free - 1].segment,
            0,
        ));
    }
    if let Some((reason, segment, offset)) = divergence(print, nearest, shared) {
        return Some(at(reason, segment, offset));
    }
    // The prompts agree up to the new turn: the provider could have read what they share.
    if shared > 0 && shared_tokens < facts.min_tokens {
        return Some(at(
            Reason::BelowMinimum,
            print.chunks[shared - 1].segment,
            0,
        ));
    }
    if shared > 0 && facts.now.duration_since(nearest.at).unwrap_or_default() > facts.retention {
        return Some(at(Reason::Expired, print.chunks[shared - 1].segment, 0));
    }
    None
}

/// Where `print` parts from `nearest` after `shared` common chunks, and why; `None` when they
/// part only in the newest turn (a new question), when `print` extends `nearest`, or not at
/// all.
fn divergence(
    print: &Fingerprint,
    nearest: &Fingerprint,
    shared: usize,
) -> Option<(Reason, usize, usize)> {
    let here = print.chunks.get(shared)?;
    let segment = here.segment;
    // The earlier prompt ends where they part: this one extends it (a new turn, which in a chat
    // dialect is the reply and the next question), so nothing was edited.
    let other_segment = nearest.chunks.get(shared)?.segment;
    let mine = &print.segments[segment];
    let theirs = nearest.segments.get(other_segment);
    let offset = theirs.map_or(0, |t| first_difference(mine, t));
    let volatile = theirs.and_then(|t| volatile_token(mine, t, offset));
    let (reason, offset) = match (mine.place, volatile) {
        (_, Some(start)) => (Reason::TimestampInPrefix, start),
        (Place::Tools(_), None) => (Reason::ToolsChanged, offset),
        (Place::System(_), None) => (Reason::SystemChanged, offset),
        (Place::Message { .. }, None) if mine.system_role => (Reason::SystemChanged, offset),
        (Place::Message { .. }, None) if mine.question_first => {
            (Reason::QuestionBeforeContext, offset)
        }
        (Place::Message { index, .. }, None) => {
            let last = print.segments.iter().filter_map(|s| match s.place {
                Place::Message { index, .. } => Some(index),
                _ => None,
            });
            if last.max().is_some_and(|l| index < l) {
                (Reason::HistoryEdited, offset)
            } else {
                return None;
            }
        }
    };
    Some((reason, segment, offset))
}

fn common_chunks(
    a: &[ChunkPrint],
    b: &[ChunkPrint],
    key: impl Fn(&ChunkPrint) -> [u8; 16],
) -> usize {
    a.iter()
        .zip(b)
        .take_while(|(x, y)| key(x) == key(y))
        .count()
}

/// The first byte where two segments' canonical bytes differ, as far as pieces and classes tell.
fn first_difference(mine: &SegmentPrint, theirs: &SegmentPrint) -> usize {
    let piece = mine
        .pieces
        .iter()
        .zip(&theirs.pieces)
        .take_while(|(a, b)| a == b)
        .count();
    let start = piece * PIECE;
    (start..(start + PIECE).min(mine.len))
        .find(|&i| class_at(&mine.classes, i) != class_at(&theirs.classes, i))
        .unwrap_or(start)
}

/// When the divergence lies in a run of digits and date/time separators (a date, time,
/// counter or UUID) that both prompts have in the same shape, the run's start.
fn volatile_token(mine: &SegmentPrint, theirs: &SegmentPrint, offset: usize) -> Option<usize> {
    // A changed token keeps its shape: same classes around the divergence in both prompts.
    let piece = offset / PIECE;
    let same_shape = (piece * PIECE..((piece + 1) * PIECE).min(mine.len))
        .all(|i| class_at(&mine.classes, i) == class_at(&theirs.classes, i));
    if !same_shape {
        return None;
    }
    // Back over digits and separators to where the token starts; forward also over letters,
    // which ISO markers (T, Z) and hex ids carry.
    let digit = |i: usize| class_at(&mine.classes, i) == Some(0);
    let separator = |i: usize| class_at(&mine.classes, i) == Some(3);
    let letter = |i: usize| class_at(&mine.classes, i) == Some(1);
    let lo = piece * PIECE;
    let hi = ((piece + 1) * PIECE).min(mine.len);
    let first_digit = (lo..hi).find(|&i| digit(i))?;
    let mut start = first_digit;
    while start > 0 && (digit(start - 1) || separator(start - 1)) {
        start -= 1;
    }
    let mut end = first_digit;
    while end < mine.len && (digit(end) || separator(end) || letter(end)) {
        end += 1;
    }
    let digits = (start..end).filter(|&i| digit(i)).count();
    // A word with a digit in it is not a timestamp; a run that is mostly digits is.
    (digits * 2 >= end - start && digits >= 2).then_some(start)
}

fn place_name(place: Place, system_role: bool) -> String {
    match place {
        Place::Tools(i) => format!("tools {i}"),
        Place::System(i) => format!("system {i}"),
        Place::Message { index, part } if system_role => {
            format!("system (message {index} part {part})")
        }
        Place::Message { index, part } => format!("message {index} part {part}"),
    }
}

#[cfg(test)]
mod tests;
