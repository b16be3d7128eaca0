//! `chat`: multi-turn conversations on one shared system prompt.
//!
//! 6 users, 12 turns each, on a 3k-token system prompt they all share; a user's turns are 20 s
//! to 15 min apart, and the users' timelines interleave (user 1 starts at t = 0, each other user
//! within the first 15 minutes). Every request carries the user's whole history: the earlier
//! user turns and the assistant's replies to them.
//!
//! The replies in the history are generated text (40–200 tokens), not what the simulator
//! answered during the replay: a client would resend what it received, but the simulator's
//! reply depends on the prompt tokens it counted, which the workload cannot know, and a frozen
//! workload must not depend on a run. The history is therefore fixed in advance; the cache
//! prefix behaviour it exercises (each turn extends the previous request) is the same.

use super::dialect::{Content, Conversation, Message};
use super::{Provider, Step, Workload, render, text};
use crate::replay::rng::Rng;

const SEED: u64 = 0x6368_6174_0002;
const USERS: usize = 6;
const TURNS: usize = 12;
const SYSTEM_TOKENS: usize = 3_000;
/// Gap between two turns of a user: 20 s to 15 min, uniform, in ms.
const GAP_MS: (u64, u64) = (20_000, 900_000);
const USER_TOKENS: (u64, u64) = (10, 80);
const REPLY_TOKENS: (u64, u64) = (40, 200);
const MAX_TOKENS: u64 = 300;
const PROVIDERS: [Provider; 4] = super::CHAT_PROVIDERS;

pub fn generate() -> Vec<Workload> {
    let mut rng = Rng::new(SEED);
    let system = text::document(&mut rng, SYSTEM_TOKENS);
    let mut steps = Vec::with_capacity(USERS * TURNS);
    for user in 0..USERS {
        let mut at_ms = if user == 0 {
            0
        } else {
            rng.between(0, GAP_MS.1)
        };
        let mut history: Vec<Message> = Vec::with_capacity(2 * TURNS);
        for turn in 0..TURNS {
            if turn > 0 {
                at_ms += rng.between(GAP_MS.0, GAP_MS.1);
                let reply = text::sized(&mut rng, REPLY_TOKENS);
                history.push(Message::assistant(Content::Text(reply)));
            }
            let asked = text::sized(&mut rng, USER_TOKENS);
            history.push(Message::user(Content::Text(asked)));
            steps.push(Step {
                at_ms,
                conversation: Conversation {
                    system: vec![system.clone()],
                    tools: Vec::new(),
                    messages: history.clone(),
                    max_tokens: MAX_TOKENS,
                },
                context_first: None,
            });
        }
    }
    render("chat", &PROVIDERS, steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::workload::tests::generated;

    #[test]
    fn each_request_extends_the_users_previous_one() {
        let workloads = generated("chat");
        assert_eq!(workloads.len(), 4);
        let anthropic = &workloads[0];
        assert_eq!(anthropic.requests.len(), USERS * TURNS);
        assert!(anthropic.context_first.is_none());
        let system = &anthropic.requests[0].body["system"];
        // Group by the first user turn, which identifies the user.
        let mut users: Vec<Vec<&serde_json::Value>> = Vec::new();
        for request in &anthropic.requests {
            assert_eq!(&request.body["system"], system);
            let messages = &request.body["messages"];
            match users.iter_mut().find(|u| u[0][0] == messages[0]) {
                Some(user) => user.push(messages),
                None => users.push(vec![messages]),
            }
        }
        assert_eq!(users.len(), USERS);
        for user in users {
            assert_eq!(user.len(), TURNS);
            for (turn, messages) in user.iter().enumerate() {
                let messages = messages.as_array().unwrap();
                assert_eq!(messages.len(), 2 * turn + 1);
                if turn > 0 {
                    let previous = user[turn - 1].as_array().unwrap();
                    assert_eq!(&messages[..previous.len()], previous.as_slice());
                }
            }
        }
    }
}
