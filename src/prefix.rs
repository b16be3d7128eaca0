//! Prefix keys: a blake3 chain over a prompt's canonical bytes, one key per chunk boundary.
//!
//! Two requests share a key exactly when they share the prompt up to that boundary: same
//! model, tenant, stored context and canonical bytes, in the same segments. The planner looks
//! keys up in the registry; the miss explainer compares chains.
//!
//! ```text
//! h0 = blake3(DOMAIN ‖ 0 ‖ model ‖ tenant [‖ stored context])
//! di = blake3(frame ‖ chunk_i)
//! hi = blake3_keyed(hi-1, di)
//! ```
//!
//! Each chunk is hashed once (`di`) and both chains link its digest with one compression
//! each: hashing `hi-1 ‖ frame ‖ chunk` per chain cost 40% more than the engine's budget (1 ms
//! per 100k tokens) allows, blake3 being nearly all of the time.
//!
//! - Each segment's canonical bytes (see `prompt`) are cut at [`CHUNK_BYTES`] (on a UTF-8
//!   character boundary; prose at the last whitespace of the window's final
//!   [`WHITESPACE_LOOKBACK`] bytes, so that an edit shifts fewer cuts) and at the segment's end.
//!   A cut depends only on the segment's own bytes, so segments chunk independently.
//! - The frame of a segment's first chunk holds its kind, its place (tools, system, first or
//!   later part of a message) and its role: the same text as a user and as a tool result, or
//!   as one message of two parts and two messages, gives different keys. Later chunks' frame
//!   is one byte that sets them apart from first chunks.
//! - A second chain, `model_free`, starts without the model; the miss explainer tells a
//!   changed model by a match there alone.
//!
//! Cost: one pass over the canonical bytes per chain, no copy of a text (media is digested
//! once). [`keys`] is a pure function of the prompt and tenant. [`Chain`] is its state
//! between segments: a caller that keeps the chain of a conversation's earlier segments
//! pushes only the new ones, and hashes only the new bytes.
//!
//! Changing [`DOMAIN`], the framing, the chunking or any segment's canonical bytes changes
//! every key: the golden tests pin them.

use std::fmt;

use crate::prompt::{Place, Prompt, Segment, SegmentKind, Sink, StoredContext};
use crate::tenant::Tenant;

pub const DOMAIN: &str = "cachet/prefix/v2";
const MODEL_FREE_DOMAIN: &str = "cachet/prefix/v2/model-free";

/// Chunk length inside a long segment.
pub const CHUNK_BYTES: usize = 256;

/// Prose is cut after the last whitespace within this many bytes of a window's end.
pub const WHITESPACE_LOOKBACK: usize = 32;

const FIRST_CHUNK: u8 = 1;
const LATER_CHUNK: u8 = 0;

/// The key of a prompt prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrefixKey(pub [u8; 32]);

impl PrefixKey {
    /// 16 hex digits: enough to tell keys apart in a log line.
    pub fn short(&self) -> String {
        let hex = blake3::Hash::from_bytes(self.0).to_hex();
        hex[..16].to_owned()
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for PrefixKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&blake3::Hash::from_bytes(self.0).to_hex())
    }
}

impl fmt::Debug for PrefixKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrefixKey({})", self.short())
    }
}

/// The end of one chunk: the key of the prompt up to here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boundary {
    pub key: PrefixKey,
    /// The same chain started without the model.
    pub model_free: PrefixKey,
    /// Index into `Prompt::segments`.
    pub segment: usize,
    /// Byte offset within the segment's canonical bytes where the chunk ends.
    pub end: usize,
    /// Whether the chunk ends its segment (the only places a provider breakpoint can go).
    pub segment_end: bool,
    /// Estimated tokens of the prompt up to here: ceil(bytes / 4), a digest counting for the
    /// media it replaced.
    pub tokens: u64,
}

/// Every boundary of `prompt`, in order.
pub fn keys(prompt: &Prompt<'_>, tenant: &Tenant) -> Vec<Boundary> {
    let mut chain = Chain::start(prompt, tenant);
    let mut out = Vec::new();
    for segment in &prompt.segments {
        chain.push(segment, &mut out);
    }
    out
}

/// The chain's state after some segments: small, `Clone`, and enough to go on hashing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    key: [u8; 32],
    model_free: [u8; 32],
    /// Estimate bytes so far.
    weight: u64,
    segments: usize,
}

impl Chain {
    /// `h0` of both chains, from the prompt's model and stored context and the tenant.
    pub fn start(prompt: &Prompt<'_>, tenant: &Tenant) -> Self {
        let mut key = blake3::Hasher::new();
        key.update(DOMAIN.as_bytes());
        key.update(&[0]);
        match prompt.model {
            Some(model) => {
                key.update(&[1]);
                field(&mut key, model.as_bytes());
            }
            None => {
                key.update(&[0]);
            }
        }
        key.update(tenant.as_bytes());
        let mut model_free = blake3::Hasher::new();
        model_free.update(MODEL_FREE_DOMAIN.as_bytes());
        model_free.update(&[0]);
        model_free.update(tenant.as_bytes());
        if let Some(context) = prompt.context {
            stored_context(&mut key, context);
            stored_context(&mut model_free, context);
        }
        Self {
            key: *key.finalize().as_bytes(),
            model_free: *model_free.finalize().as_bytes(),
            weight: 0,
            segments: 0,
        }
    }

    /// Chains the next segment, appending its boundaries (at least one) to `out`.
    pub fn push(&mut self, segment: &Segment<'_>, out: &mut Vec<Boundary>) {
        let mut writer = SegmentWriter {
            cursor: Cursor {
                frame: frame(segment),
                segment: self.segments,
                offset: 0,
                extra: 0,
                chain: self,
                out,
            },
            prose: segment.is_prose(),
            window: Vec::with_capacity(CHUNK_BYTES + 1),
        };
        segment.render(&mut writer);
        let SegmentWriter {
            mut cursor, window, ..
        } = writer;
        cursor.emit(&window, true);
        self.segments += 1;
    }

    /// How many segments have been pushed.
    pub fn segments(&self) -> usize {
        self.segments
    }
}

fn field(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn stored_context(h: &mut blake3::Hasher, context: StoredContext<'_>) {
    let (tag, id) = match context {
        StoredContext::GeminiCachedContent(id) => (b'g', id),
        StoredContext::PreviousResponse(id) => (b'r', id),
        StoredContext::Conversation(id) => (b'c', id),
    };
    h.update(&[tag]);
    field(h, id.as_bytes());
}

/// `FIRST_CHUNK ‖ kind ‖ place ‖ len(role) ‖ role`.
fn frame(segment: &Segment<'_>) -> Vec<u8> {
    let role = segment.role.unwrap_or("").as_bytes();
    let mut frame = Vec::with_capacity(11 + role.len());
    frame.extend_from_slice(&[
        FIRST_CHUNK,
        kind_tag(segment.kind),
        place_tag(segment.place),
    ]);
    frame.extend_from_slice(&(role.len() as u64).to_le_bytes());
    frame.extend_from_slice(role);
    frame
}

fn kind_tag(kind: SegmentKind) -> u8 {
    match kind {
        SegmentKind::Text => b'x',
        SegmentKind::ToolDef => b'd',
        SegmentKind::ToolCall => b'c',
        SegmentKind::ToolResult => b'r',
        SegmentKind::Image => b'i',
        SegmentKind::File => b'f',
        SegmentKind::Other => b'o',
    }
}

/// The indices are left out: order is already in the chain.
fn place_tag(place: Place) -> u8 {
    match place {
        Place::Tools(_) => b't',
        Place::System(_) => b's',
        Place::Message { part: 0, .. } => b'M',
        Place::Message { .. } => b'm',
    }
}

/// Cuts one segment's canonical bytes into chunks as they stream in.
struct SegmentWriter<'c> {
    cursor: Cursor<'c>,
    prose: bool,
    /// The bytes not yet chunked; holds at most `CHUNK_BYTES + 1`, the window a cut is chosen in.
    window: Vec<u8>,
}

impl Sink for SegmentWriter<'_> {
    fn put(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (CHUNK_BYTES + 1 - self.window.len()).min(bytes.len());
            self.window.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            // A full window (one byte past the chunk, to see the character boundary) is cut;
            // at least one byte always stays for the segment's final chunk.
            if self.window.len() > CHUNK_BYTES {
                let cut = cut(&self.window, self.prose);
                self.cursor.emit(&self.window[..cut], false);
                self.window.drain(..cut);
            }
        }
    }

    fn weigh(&mut self, extra: u64) {
        self.cursor.extra += extra;
    }
}

/// Where to end the chunk in a full window (`CHUNK_BYTES + 1` bytes of valid UTF-8).
fn cut(window: &[u8], prose: bool) -> usize {
    if prose {
        let after_space = (CHUNK_BYTES - WHITESPACE_LOOKBACK + 1..=CHUNK_BYTES)
            .rev()
            .find(|&i| window[i - 1].is_ascii_whitespace());
        if let Some(i) = after_space {
            return i;
        }
    }
    let is_continuation = |b: u8| b & 0xc0 == 0x80;
    let mut i = CHUNK_BYTES;
    while i > 0 && is_continuation(window[i]) {
        i -= 1;
    }
    // A character is at most 4 bytes: 0 here would mean the bytes were not UTF-8.
    if i == 0 { CHUNK_BYTES } else { i }
}

/// The chain, advanced one chunk at a time.
struct Cursor<'c> {
    chain: &'c mut Chain,
    out: &'c mut Vec<Boundary>,
    /// The first chunk's frame; empty once it has been used.
    frame: Vec<u8>,
    segment: usize,
    offset: usize,
    /// Estimate bytes seen since the last chunk, beyond the chunk's own.
    extra: u64,
}

impl Cursor<'_> {
    fn emit(&mut self, chunk: &[u8], segment_end: bool) {
        let frame = std::mem::take(&mut self.frame);
        let frame = if frame.is_empty() {
            &[LATER_CHUNK][..]
        } else {
            &frame[..]
        };
        let digest = digest(frame, chunk);
        self.chain.key = *blake3::keyed_hash(&self.chain.key, &digest).as_bytes();
        self.chain.model_free = *blake3::keyed_hash(&self.chain.model_free, &digest).as_bytes();
        self.chain.weight += chunk.len() as u64 + std::mem::take(&mut self.extra);
        self.offset += chunk.len();
        self.out.push(Boundary {
            key: PrefixKey(self.chain.key),
            model_free: PrefixKey(self.chain.model_free),
            segment: self.segment,
            end: self.offset,
            segment_end,
            tokens: self.chain.weight.div_ceil(4),
        });
    }
}

fn digest(frame: &[u8], chunk: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(frame);
    h.update(chunk);
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests;
