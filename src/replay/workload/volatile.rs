//! `volatile`: a system prompt that opens with the current time.
//!
//! 12 tools (about 3k tokens), then a system prompt whose first line is
//! `Current time: 2026-11-29T10:00:07Z` (the request's `t` after 10:00:00 UTC on that day, to the
//! second) followed by about 1.5k tokens of instructions that never change, then one user
//! question. 40 requests, 10–120 s apart, so the first line differs in every request: only the
//! tools, which providers render before the system prompt, form a stable prefix as sent.

use super::dialect::{Content, Conversation, Message};
use super::{Provider, Step, Workload, render, text, tools};
use crate::replay::rng::Rng;

pub(super) const SEED: u64 = 0x766f_6c61_0005;
const REQUESTS: usize = 40;
const GAP_MS: (u64, u64) = (10_000, 120_000);
const INSTRUCTION_TOKENS: usize = 1_500;
/// 10:00:00 on the day the timestamps carry; 40 gaps of at most 120 s end well before midnight.
const START_SECONDS_OF_DAY: u64 = 10 * 3_600;
const DATE: &str = "2026-11-29";
const MAX_TOKENS: u64 = 300;
const PROVIDERS: [Provider; 3] = [Provider::Anthropic, Provider::OpenAi, Provider::Gemini];

pub fn generate() -> Vec<Workload> {
    let mut rng = Rng::new(SEED);
    let tools = tools::catalog(&mut rng);
    let instructions = text::document(&mut rng, INSTRUCTION_TOKENS);
    let mut at_ms = 0;
    let mut steps = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        if i > 0 {
            at_ms += rng.between(GAP_MS.0, GAP_MS.1);
        }
        let system = format!("Current time: {}\n{instructions}", timestamp(at_ms));
        let question = text::question(&mut rng);
        steps.push(Step {
            at_ms,
            conversation: Conversation {
                system: vec![system],
                tools: tools.clone(),
                messages: vec![Message::user(Content::Text(question))],
                max_tokens: MAX_TOKENS,
            },
            context_first: None,
        });
    }
    render("volatile", &PROVIDERS, steps)
}

/// ISO 8601 UTC, to the second, of `at_ms` after the start.
fn timestamp(at_ms: u64) -> String {
    let seconds = START_SECONDS_OF_DAY + at_ms / 1_000;
    let (h, m, s) = (seconds / 3_600, seconds / 60 % 60, seconds % 60);
    format!("{DATE}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::workload::tests::generated;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "2026-11-29T10:00:00Z");
        assert_eq!(timestamp(7_999), "2026-11-29T10:00:07Z");
        assert_eq!(timestamp(3_725_000), "2026-11-29T11:02:05Z");
    }

    #[test]
    fn first_line_changes_every_request_and_nothing_else_does() {
        let workloads = generated("volatile");
        assert_eq!(workloads.len(), 3);
        let gemini = &workloads[2];
        assert_eq!(gemini.provider, Provider::Gemini);
        assert_eq!(gemini.requests.len(), REQUESTS);
        let systems: Vec<&str> = gemini
            .requests
            .iter()
            .map(|r| {
                r.body["systemInstruction"]["parts"][0]["text"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        let (first_lines, rests): (Vec<&str>, Vec<&str>) =
            systems.iter().map(|s| s.split_once('\n').unwrap()).unzip();
        assert!(
            first_lines
                .iter()
                .all(|l| l.starts_with("Current time: 2026-11-29T"))
        );
        assert!(first_lines.windows(2).all(|w| w[0] != w[1]));
        assert!(rests.windows(2).all(|w| w[0] == w[1]));
        let last = first_lines.last().unwrap();
        assert!(last.as_bytes() < b"Current time: 2026-11-29T23:59:59Z".as_slice());
        let tools = &gemini.requests[0].body["tools"];
        assert!(gemini.requests.iter().all(|r| &r.body["tools"] == tools));
    }
}
