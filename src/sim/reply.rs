//! The simulator's deterministic reply: `cachet-sim reply from {model} to {n} prompt tokens.`,
//! one output token per whitespace-separated word, cut to the first k words when the request
//! caps output below that. It is pure, so a test can predict every output figure from the
//! request alone (prompt tokens come from `tokens.rs` through `prompt.rs`).

use serde_json::Value;

/// The tightest output cap among the JSON pointers given (`/max_tokens`,
/// `/generationConfig/maxOutputTokens`, …); `None` when the request sets none.
pub(crate) fn output_cap(body: &Value, pointers: &[&str]) -> Option<u64> {
    pointers
        .iter()
        .filter_map(|pointer| body.pointer(pointer).and_then(Value::as_u64))
        .min()
}

/// The reply to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The words kept, joined by single spaces.
    pub text: String,
    /// One per word of `text`.
    pub output_tokens: u64,
    /// True when the output cap cut the reply (each dialect's "length" stop reason).
    pub truncated: bool,
}

impl Reply {
    /// The reply from `model` to a prompt of `prompt_tokens`, keeping at most `cap` words.
    pub fn new(model: &str, prompt_tokens: u64, cap: Option<u64>) -> Self {
        let full = format!("cachet-sim reply from {model} to {prompt_tokens} prompt tokens.");
        let mut words: Vec<&str> = full.split_whitespace().collect();
        let all = words.len();
        let keep = cap.map_or(all, |cap| {
            usize::try_from(cap).unwrap_or(usize::MAX).min(all)
        });
        words.truncate(keep);
        Reply {
            text: words.join(" "),
            output_tokens: keep as u64,
            truncated: keep < all,
        }
    }

    /// A reply of exactly `n` words: the sentence repeated as often as needed, as a model told
    /// to ignore its end-of-sequence token (vLLM's `ignore_eos`) generates up to its cap.
    pub fn exactly(model: &str, prompt_tokens: u64, n: u64) -> Self {
        let full = format!("cachet-sim reply from {model} to {prompt_tokens} prompt tokens.");
        let words: Vec<&str> = full.split_whitespace().collect();
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let text: Vec<&str> = words.iter().copied().cycle().take(n).collect();
        Reply {
            text: text.join(" "),
            output_tokens: text.len() as u64,
            truncated: true,
        }
    }

    /// The stream deltas: each word with its following space, the last without, so that the
    /// deltas concatenate to `text` exactly. Empty when the cap kept no word.
    pub fn deltas(&self) -> impl Iterator<Item = &str> {
        self.text.split_inclusive(' ')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn output_cap_takes_the_smallest_integer() {
        let body = json!({"max_tokens": 5, "max_completion_tokens": 3, "x": {"y": "7"}});
        assert_eq!(output_cap(&body, &["/max_tokens"]), Some(5));
        assert_eq!(
            output_cap(&body, &["/max_tokens", "/max_completion_tokens"]),
            Some(3)
        );
        assert_eq!(output_cap(&body, &["/x/y", "/nope"]), None);
    }

    #[test]
    fn reply_has_eight_words_uncapped() {
        let reply = Reply::new("gpt-4o", 12, None);
        assert_eq!(
            reply.text,
            "cachet-sim reply from gpt-4o to 12 prompt tokens."
        );
        assert_eq!(reply.output_tokens, 8);
        assert!(!reply.truncated);
        assert_eq!(Reply::new("gpt-4o", 12, Some(8)), reply);
    }

    #[test]
    fn exactly_repeats_to_the_cap() {
        let reply = Reply::exactly("m", 3, 20);
        assert_eq!(reply.output_tokens, 20);
        assert_eq!(reply.deltas().count(), 20);
        assert!(
            reply
                .text
                .starts_with("cachet-sim reply from m to 3 prompt tokens. cachet-sim")
        );
    }

    #[test]
    fn cap_keeps_first_words() {
        let reply = Reply::new("gpt-4o", 12, Some(3));
        assert_eq!(reply.text, "cachet-sim reply from");
        assert_eq!(reply.output_tokens, 3);
        assert!(reply.truncated);
        let none = Reply::new("m", 1, Some(0));
        assert_eq!((none.text.as_str(), none.output_tokens), ("", 0));
        assert_eq!(none.deltas().count(), 0);
    }

    #[test]
    fn deltas_are_words_with_trailing_space_and_concatenate() {
        let reply = Reply::new("m", 3, None);
        let deltas: Vec<&str> = reply.deltas().collect();
        assert_eq!(deltas.len(), 8);
        assert_eq!(deltas[0], "cachet-sim ");
        assert_eq!(deltas[7], "tokens.");
        assert_eq!(deltas.concat(), reply.text);
    }
}
