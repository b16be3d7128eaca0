//! `agent`: tool-using agent loops, with many tool calls and results per step.
//!
//! 12 tools (about 3k tokens of definitions), 4 sessions, steps 5–90 s apart, sessions starting
//! within the first 90 s. The request for step k carries the task and the turns of steps
//! 1..k-1; each step appends an assistant turn and a user turn:
//!
//! - assistant: 5–8 pairs of (text, run of 1–3 parallel `tool_use`), `text, tool_use,
//!   tool_use, text, tool_use, …`: 2 × pairs positions;
//! - user: all the `tool_result`s, in call order, then 3 or more short text blocks (notes a
//!   harness adds, such as reminders): 1 + notes positions. Anthropic wants a user turn's
//!   `tool_result` blocks first, so the results form one run and the texts follow.
//!
//! A position is what Anthropic's 20-block breakpoint lookback counts here: each text block, and
//! each run of consecutive `tool_use` (or `tool_result`) blocks. The number of notes is chosen so
//! that a step adds 20–30 positions in all, far more than the lookback reaches.
//!
//! Session 3 jumps: it has 55 steps but sends the requests of steps 1–5 and 31–55 only (30, like
//! every session). Steps 6–30 happened elsewhere (time passes for them all the same), so its
//! sixth request carries 26 steps more than its fifth: the 25 never sent, and the usual one.

use super::dialect::{Content, Conversation, Message, Part, Tool};
use super::{Provider, Step, Workload, render, text, tools};
use crate::replay::rng::Rng;

pub(super) const SEED: u64 = 0x6167_656e_7403;
const SESSIONS: usize = 4;
/// Requests each session sends.
const STEPS: usize = 30;
/// The session (1-based) that jumps, and the steps whose requests it does not send.
const JUMPING_SESSION: usize = 3;
const SKIPPED: std::ops::RangeInclusive<usize> = 6..=30;
const GAP_MS: (u64, u64) = (5_000, 90_000);
const PAIRS: (u64, u64) = (5, 8);
const PARALLEL_CALLS: (u64, u64) = (1, 3);
const POSITIONS: (u64, u64) = (20, 30);
const TASK_TOKENS: (u64, u64) = (40, 120);
const NOTE_TOKENS: (u64, u64) = (8, 30);
const RESULT_TOKENS: (u64, u64) = (15, 80);
const REMINDER_TOKENS: (u64, u64) = (6, 20);
const SYSTEM: &str = "You are an agent. Work on the user's task with the tools provided, and \
                      call several tools at once when their calls are independent.";
const MAX_TOKENS: u64 = 1_024;
const PROVIDERS: [Provider; 3] = [Provider::Anthropic, Provider::OpenAi, Provider::Gemini];

pub fn generate() -> Vec<Workload> {
    let mut rng = Rng::new(SEED);
    let tools = tools::catalog(&mut rng);
    let mut steps = Vec::with_capacity(SESSIONS * STEPS);
    for session in 1..=SESSIONS {
        push_session(&mut rng, &tools, session, &mut steps);
    }
    render("agent", &PROVIDERS, steps)
}

fn push_session(rng: &mut Rng, tools: &[Tool], session: usize, out: &mut Vec<Step>) {
    let jumps = session == JUMPING_SESSION;
    let total = if jumps {
        STEPS + SKIPPED.count()
    } else {
        STEPS
    };
    let mut at_ms = if session == 1 {
        0
    } else {
        rng.between(0, GAP_MS.1)
    };
    let task = text::sized(rng, TASK_TOKENS);
    let mut history = vec![Message::user(Content::Text(task))];
    for step in 1..=total {
        if step > 1 {
            at_ms += rng.between(GAP_MS.0, GAP_MS.1);
            history.extend(turns(rng, tools, session, step - 1));
        }
        if jumps && SKIPPED.contains(&step) {
            continue;
        }
        out.push(Step {
            at_ms,
            conversation: Conversation {
                system: vec![SYSTEM.to_owned()],
                tools: tools.to_vec(),
                messages: history.clone(),
                max_tokens: MAX_TOKENS,
            },
            context_first: None,
        });
    }
}

/// The assistant turn of `step` and the user turn answering its calls.
fn turns(rng: &mut Rng, tools: &[Tool], session: usize, step: usize) -> [Message; 2] {
    let pairs = rng.between(PAIRS.0, PAIRS.1) as usize;
    let positions = rng.between(POSITIONS.0, POSITIONS.1) as usize;
    let mut assistant = Vec::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    for _ in 0..pairs {
        assistant.push(Part::Text(text::sized(rng, NOTE_TOKENS)));
        for _ in 0..rng.between(PARALLEL_CALLS.0, PARALLEL_CALLS.1) {
            let Some(tool) = rng.pick(tools) else {
                continue;
            };
            let id = format!("call_{session}_{step}_{}", calls.len() + 1);
            let input = tools::arguments(rng, tool);
            assistant.push(Part::ToolUse {
                id: id.clone(),
                name: tool.name.clone(),
                input,
            });
            calls.push((id, tool.name.clone()));
        }
    }
    let mut user: Vec<Part> = calls
        .into_iter()
        .map(|(id, name)| Part::ToolResult {
            id,
            name,
            content: text::sized(rng, RESULT_TOKENS),
        })
        .collect();
    // PAIRS.1 ≤ 8 and POSITIONS.0 ≥ 20 leave room for at least 3 notes.
    let notes = positions.saturating_sub(2 * pairs + 1);
    for _ in 0..notes {
        user.push(Part::Text(text::sized(rng, REMINDER_TOKENS)));
    }
    [
        Message::assistant(Content::Parts(assistant)),
        Message::user(Content::Parts(user)),
    ]
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::replay::workload::tests::generated;

    /// Positions of one Anthropic message: text blocks, and runs of same-typed tool blocks.
    fn positions(message: &Value) -> usize {
        let blocks = message["content"].as_array().unwrap();
        let kinds: Vec<&str> = blocks.iter().map(|b| b["type"].as_str().unwrap()).collect();
        kinds
            .iter()
            .enumerate()
            .filter(|&(i, kind)| *kind == "text" || i == 0 || kinds[i - 1] != *kind)
            .count()
    }

    /// Requests grouped by session (the task, the first message, names it).
    fn sessions(workload: &Workload) -> Vec<Vec<&Value>> {
        let mut sessions: Vec<Vec<&Value>> = Vec::new();
        for request in &workload.requests {
            let messages = &request.body["messages"];
            match sessions.iter_mut().find(|s| s[0][0] == messages[0]) {
                Some(session) => session.push(messages),
                None => sessions.push(vec![messages]),
            }
        }
        sessions
    }

    #[test]
    fn every_step_adds_twenty_to_thirty_positions() {
        let workloads = generated("agent");
        assert_eq!(workloads.len(), 3);
        let anthropic = &workloads[0];
        assert_eq!(anthropic.provider, Provider::Anthropic);
        let mut steps = 0;
        for session in sessions(anthropic) {
            let last = session.last().unwrap().as_array().unwrap();
            for turn in last[1..].chunks(2) {
                let [assistant, user] = turn else {
                    panic!("a step is two turns")
                };
                assert_eq!(assistant["role"], "assistant");
                assert_eq!(user["role"], "user");
                let added = positions(assistant) + positions(user);
                assert!((20..=30).contains(&added), "{added}");
                steps += 1;
            }
        }
        // 3 sessions of 29 completed steps and one of 54.
        assert_eq!(steps, 3 * 29 + 54);
    }

    #[test]
    fn session_three_jumps_once_by_twenty_six_steps() {
        let workloads = generated("agent");
        let sessions = sessions(&workloads[0]);
        assert_eq!(sessions.len(), SESSIONS);
        for (i, session) in sessions.iter().enumerate() {
            assert_eq!(session.len(), STEPS);
            let lengths: Vec<usize> = session
                .iter()
                .map(|m| m.as_array().unwrap().len())
                .collect();
            let growth: Vec<usize> = lengths.windows(2).map(|w| w[1] - w[0]).collect();
            if i + 1 == JUMPING_SESSION {
                assert_eq!(lengths[..6], [1, 3, 5, 7, 9, 61]);
                assert_eq!(growth.iter().filter(|&&g| g != 2).count(), 1);
            } else {
                assert!(growth.iter().all(|&g| g == 2), "{growth:?}");
            }
            // Earlier requests are prefixes of later ones.
            for pair in session.windows(2) {
                let (a, b) = (pair[0].as_array().unwrap(), pair[1].as_array().unwrap());
                assert_eq!(&b[..a.len()], a.as_slice());
            }
        }
    }

    #[test]
    fn tool_calls_are_answered_in_every_dialect() {
        for workload in generated("agent") {
            let last = workload.requests.last().unwrap();
            let body = last.body.to_string();
            let count = |marker: &str| body.matches(marker).count();
            let (calls, results, tools) = match workload.provider {
                Provider::Anthropic => (
                    count(r#""type":"tool_use""#),
                    count(r#""type":"tool_result""#),
                    &last.body["tools"],
                ),
                Provider::OpenAi => (
                    count(r#""arguments":"#),
                    count(r#""tool_call_id":"#),
                    &last.body["tools"],
                ),
                _ => (
                    count(r#""functionCall":"#),
                    count(r#""functionResponse":"#),
                    &last.body["tools"][0]["functionDeclarations"],
                ),
            };
            assert!(calls > 100 && calls == results, "{calls} {results}");
            assert_eq!(tools.as_array().unwrap().len(), 12);
        }
    }
}
