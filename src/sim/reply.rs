//! The simulator's deterministic reply and its token rule.
//!
//! Reply: `cachet-sim reply from {model} to {n} prompt tokens.`, one output token per
//! whitespace-separated word, cut to the first k words when the request caps output below that.
//! Tokens: `ceil(bytes / 4)` of the compact JSON of the prompt-bearing fields. Both are stand-ins
//! (the next issue brings a BPE tokenizer); what callers rely on is that they are pure, so a test
//! can predict every usage figure from the request alone.

use std::io;

use serde_json::Value;

/// Prompt tokens of the prompt-bearing fields: `ceil(total bytes / 4)` of their compact JSON
/// (`serde_json::to_vec`), summed over `parts` before rounding up.
pub fn estimate_tokens(parts: &[&Value]) -> u64 {
    parts
        .iter()
        .map(|part| json_len(part))
        .sum::<u64>()
        .div_ceil(4)
}

/// Length of the compact JSON of `value`, counted without building the bytes.
fn json_len(value: &Value) -> u64 {
    struct Count(u64);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // A `Value` always serialises (its keys are strings) and `Count` never fails to write.
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => 0,
    }
}

/// The present, non-null fields of `body` among `names`, in the order given: the prompt-bearing
/// parts for [`estimate_tokens`]. A `null` counts as absent, as the providers treat it.
pub(crate) fn present<'a>(body: &'a Value, names: &[&str]) -> Vec<&'a Value> {
    names
        .iter()
        .filter_map(|name| body.get(*name))
        .filter(|value| !value.is_null())
        .collect()
}

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
    fn tokens_are_ceil_quarter_bytes_of_compact_json() {
        assert_eq!(estimate_tokens(&[]), 0);
        // `"abc"` is 5 bytes → 2 tokens; `[1,2]` adds 5 → 10 bytes → 3 tokens.
        let a = json!("abc");
        let b = json!([1, 2]);
        assert_eq!(estimate_tokens(&[&a]), 2);
        assert_eq!(estimate_tokens(&[&a, &b]), 3);
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let bytes = serde_json::to_vec(&msgs).unwrap().len() as u64;
        assert_eq!(estimate_tokens(&[&msgs]), bytes.div_ceil(4));
    }

    #[test]
    fn present_skips_absent_and_null_fields_in_order() {
        let body = json!({"messages": [1], "tools": null, "system": "s"});
        let parts = present(&body, &["tools", "system", "messages"]);
        assert_eq!(parts, vec![&json!("s"), &json!([1])]);
    }

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
