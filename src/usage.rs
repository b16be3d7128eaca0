//! Token usage normalised across providers.
//!
//! Every dialect maps its own fields onto the four kinds below (`../shared/providers.md` §7):
//!
//! | provider          | input_uncached                         | cache_read                           | cache_write                      |
//! |-------------------|----------------------------------------|--------------------------------------|----------------------------------|
//! | Anthropic         | `input_tokens` (already excludes cache)| `cache_read_input_tokens`            | `cache_creation_input_tokens` (5m/1h split from `cache_creation`) |
//! | OpenAI chat       | `prompt_tokens − cached − cache_write` | `prompt_tokens_details.cached_tokens`| `prompt_tokens_details.cache_write_tokens` |
//! | OpenAI Responses  | `input_tokens − cached − cache_write`  | `input_tokens_details.cached_tokens` | `input_tokens_details.cache_write_tokens` |
//! | Gemini            | `promptTokenCount − cachedContentTokenCount` | `cachedContentTokenCount`      | — (explicit create is its own call) |
//! | DeepSeek          | `prompt_cache_miss_tokens`             | `prompt_cache_hit_tokens`            | — |
//!
//! OpenAI and Gemini count cached tokens *inside* their input figure, Anthropic does not: getting
//! this wrong bills cached tokens twice. Each input token lands in exactly one kind, so
//! `input_total()` is what the provider billed as input.
//!
//! Streams report usage piecemeal (Anthropic `message_start` then cumulative `message_delta`s,
//! Gemini a running total on every chunk): a [`UsagePatch`] carries the fields one event
//! reported, and the latest reported value of each field wins, as in the official SDKs.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_uncached: u64,
    pub cache_read: u64,
    /// Tokens written to cache at the 5-minute (or provider default) TTL.
    pub cache_write_5m: u64,
    /// Tokens written to cache at the 1-hour TTL.
    pub cache_write_1h: u64,
    pub output: u64,
}

impl Usage {
    pub fn cache_write(&self) -> u64 {
        self.cache_write_5m + self.cache_write_1h
    }

    pub fn input_total(&self) -> u64 {
        self.input_uncached + self.cache_read + self.cache_write()
    }

    /// cache_read / (input_uncached + cache_read + cache_write); None when there was no input.
    pub fn hit_rate(&self) -> Option<f64> {
        let total = self.input_total();
        (total > 0).then(|| self.cache_read as f64 / total as f64)
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        self.input_uncached += other.input_uncached;
        self.cache_read += other.cache_read;
        self.cache_write_5m += other.cache_write_5m;
        self.cache_write_1h += other.cache_write_1h;
        self.output += other.output;
    }
}

/// Fields reported by one body or stream event; `None` = not reported there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsagePatch {
    pub input_uncached: Option<u64>,
    pub cache_read: Option<u64>,
    pub cache_write_5m: Option<u64>,
    pub cache_write_1h: Option<u64>,
    /// A write total reported without its TTL split (Anthropic `message_delta`): the part not
    /// already known to be 1h counts as 5m.
    pub cache_write_total: Option<u64>,
    pub output: Option<u64>,
}

impl UsagePatch {
    /// A patch reporting every field, from a complete usage object.
    pub fn full(usage: Usage) -> Self {
        Self {
            input_uncached: Some(usage.input_uncached),
            cache_read: Some(usage.cache_read),
            cache_write_5m: Some(usage.cache_write_5m),
            cache_write_1h: Some(usage.cache_write_1h),
            cache_write_total: None,
            output: Some(usage.output),
        }
    }
}

/// Accumulates patches over a response; `None` until any usage was seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageAcc {
    seen: bool,
    usage: Usage,
}

impl UsageAcc {
    pub fn apply(&mut self, patch: UsagePatch) {
        let u = &mut self.usage;
        let fields = [
            (&mut u.input_uncached, patch.input_uncached),
            (&mut u.cache_read, patch.cache_read),
            (&mut u.cache_write_5m, patch.cache_write_5m),
            (&mut u.cache_write_1h, patch.cache_write_1h),
            (&mut u.output, patch.output),
        ];
        for (slot, value) in fields {
            if let Some(v) = value {
                *slot = v;
                self.seen = true;
            }
        }
        if let Some(total) = patch.cache_write_total {
            u.cache_write_1h = u.cache_write_1h.min(total);
            u.cache_write_5m = total - u.cache_write_1h;
            self.seen = true;
        }
    }

    pub fn get(&self) -> Option<Usage> {
        self.seen.then_some(self.usage)
    }
}

/// Reads a JSON number as u64 (providers send integers; anything else counts as absent).
pub fn count(v: Option<&serde_json::Value>) -> Option<u64> {
    v?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_fields_replace_earlier_ones_and_absent_fields_keep_theirs() {
        let mut acc = UsageAcc::default();
        assert_eq!(acc.get(), None);
        acc.apply(UsagePatch {
            input_uncached: Some(10),
            cache_read: Some(90),
            output: Some(1),
            ..Default::default()
        });
        acc.apply(UsagePatch {
            output: Some(42),
            ..Default::default()
        });
        let u = acc.get().unwrap();
        assert_eq!((u.input_uncached, u.cache_read, u.output), (10, 90, 42));
        assert_eq!(u.hit_rate(), Some(0.9));
    }

    #[test]
    fn hit_rate_counts_writes_in_the_denominator() {
        let u = Usage {
            input_uncached: 10,
            cache_read: 50,
            cache_write_5m: 30,
            cache_write_1h: 10,
            output: 5,
        };
        assert_eq!(u.input_total(), 100);
        assert_eq!(u.hit_rate(), Some(0.5));
        assert_eq!(Usage::default().hit_rate(), None);
    }
}
