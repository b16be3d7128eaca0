//! The simulator's tokenizer: OpenAI's o200k_base BPE (tiktoken-rs), so that every usage figure
//! the simulator bills is a real token count rather than a byte estimate.
//!
//! BPE is the slow part of a replay (a Mooncake request is 12k tokens on average, and the same
//! documents come back request after request), so text is cut into pieces at points where the
//! BPE pre-tokenizer splits anyway, and each piece's tokens are cached by its blake3 digest.
//! Cutting only where the pre-tokenizer already splits keeps the result identical to encoding
//! the whole text (a test checks this on every kind of boundary).

use std::sync::{Arc, LazyLock};

use moka::sync::Cache;
use tiktoken_rs::CoreBPE;

/// Pieces are cut once they reach this many bytes, at the next safe point.
const PIECE_BYTES: usize = 2048;
/// Bound on the cached tokens (4 bytes each): ~128 MiB, enough for every built-in workload's
/// distinct text at once.
const CACHE_TOKENS: u64 = 32 << 20;

static TOKENIZER: LazyLock<Tokenizer> = LazyLock::new(Tokenizer::new);

/// The process-wide tokenizer (loading the o200k table takes a few hundred milliseconds).
pub fn tokenizer() -> &'static Tokenizer {
    &TOKENIZER
}

pub struct Tokenizer {
    bpe: &'static CoreBPE,
    pieces: Cache<[u8; 32], Arc<[u32]>>,
}

impl Tokenizer {
    fn new() -> Self {
        Tokenizer {
            bpe: tiktoken_rs::o200k_base_singleton(),
            pieces: Cache::builder()
                .weigher(|_, tokens: &Arc<[u32]>| u32::try_from(tokens.len()).unwrap_or(u32::MAX))
                .max_capacity(CACHE_TOKENS)
                .build(),
        }
    }

    /// Appends the token ids of `text` to `out`.
    pub fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        for piece in pieces(text) {
            let key = *blake3::hash(piece.as_bytes()).as_bytes();
            let tokens = self
                .pieces
                .get_with(key, || self.bpe.encode_ordinary(piece).into());
            out.extend_from_slice(&tokens);
        }
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        self.encode_into(text, &mut out);
        out
    }

    pub fn count(&self, text: &str) -> u64 {
        pieces(text)
            .map(|piece| {
                let key = *blake3::hash(piece.as_bytes()).as_bytes();
                self.pieces
                    .get_with(key, || self.bpe.encode_ordinary(piece).into())
                    .len() as u64
            })
            .sum()
    }
}

/// Splits `text` into pieces of about [`PIECE_BYTES`], each cut where o200k's pre-tokenizer
/// starts a new pre-token regardless of context:
/// - after a run of newlines that is followed by a letter (`\s*[\r\n]+` ends there and the
///   letter run begins a word), and
/// - before a space that follows an ASCII letter or digit and precedes an ASCII letter (the
///   word pattern `[^\r\n\p{L}\p{N}]?\p{L}+` takes that space as its optional lead, and nothing
///   before it can absorb a trailing space).
///
/// Text with no such point stays one piece, which is always correct.
fn pieces(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= bytes.len() {
            return None;
        }
        let mut i = start + PIECE_BYTES;
        while i < bytes.len() {
            if is_cut(bytes, i) {
                let piece = &text[start..i];
                start = i;
                return Some(piece);
            }
            i += 1;
        }
        let piece = &text[start..];
        start = bytes.len();
        Some(piece)
    })
}

/// Whether a piece may begin at byte `i` (`0 < i < len`). Both rules only look at ASCII bytes,
/// so a cut never falls inside a UTF-8 sequence.
fn is_cut(b: &[u8], i: usize) -> bool {
    let (prev, cur) = (b[i - 1], b[i]);
    let next = b.get(i + 1).copied().unwrap_or(0);
    let after_newlines = prev == b'\n' && cur.is_ascii_alphabetic();
    let before_word = cur == b' ' && prev.is_ascii_alphanumeric() && next.is_ascii_alphabetic();
    after_newlines || before_word
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(text: &str) -> Vec<u32> {
        tiktoken_rs::o200k_base_singleton().encode_ordinary(text)
    }

    #[test]
    fn known_counts() {
        let t = tokenizer();
        assert_eq!(t.count(""), 0);
        assert_eq!(t.encode("hello world"), whole("hello world"));
        assert_eq!(t.count("hello world"), 2);
    }

    #[test]
    fn pieces_cover_the_text_and_are_bounded() {
        let text = "word ".repeat(3000) + "\n\nnext paragraph";
        let parts: Vec<&str> = pieces(&text).collect();
        assert!(parts.len() > 5);
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|p| p.len() < PIECE_BYTES + 64));
    }

    #[test]
    fn cutting_never_changes_the_tokens() {
        // Texts that hit every cut rule next to the tricky cases: contractions, digits,
        // punctuation, multi-space runs, CJK and emoji, CRLF.
        let samples = [
            "It's the user's turn. They'll say: hello world 12345 6789 done",
            "alpha  beta   gamma\n\nDelta epsilon\r\n\r\nzeta eta, theta; iota!",
            "数据 and text 😀 mixed with words and 42 numbers then more words",
            "{\"name\":\"get_weather\",\"description\":\"Look up the weather\"}",
            "x y z\n\n\n   \nQ: what is it?\n\nA: it is a thing that",
        ];
        for sample in samples {
            let text = sample.repeat(400);
            let mut got = Vec::new();
            tokenizer().encode_into(&text, &mut got);
            assert_eq!(got, whole(&text), "sample {sample:?}");
        }
    }

    #[test]
    fn cache_returns_the_same_tokens() {
        let text = "a repeated document sentence. ".repeat(500);
        let first = tokenizer().encode(&text);
        let second = tokenizer().encode(&text);
        assert_eq!(first, second);
        assert_eq!(tokenizer().count(&text), first.len() as u64);
    }
}
