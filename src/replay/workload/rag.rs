//! `rag`: retrieval-augmented questions, chunks first and the question last.
//!
//! A 1.5k-token system prompt; a pool of 200 chunks of about 600 tokens. Each of the 200
//! requests (5–60 s apart) is one user message of 6 text parts: 5 chunks in the retriever's
//! score order, then the question, which is how RAG applications send it. The chunks are drawn
//! from the pool by Zipf (s = 1.1: a few chunks are retrieved very often, most rarely), the
//! first draw ranking highest, until 5 distinct ones are in hand; a request repeats an earlier
//! request's chunk list exactly (same chunks, same order, a new question) with probability 15%,
//! which with this seed happens 29 times (14.6% of the 199 requests that could repeat).

use super::dialect::{Content, Conversation, Message, Part};
use super::{Provider, Step, Workload, render, text};
use crate::replay::rng::{Rng, Zipf};

const SEED: u64 = 0x7261_6700_0004;
const SYSTEM_TOKENS: usize = 1_500;
const POOL: usize = 200;
const CHUNK_TOKENS: usize = 600;
const CHUNKS_PER_REQUEST: usize = 5;
const ZIPF_S: f64 = 1.1;
const REPEAT_CHANCE: f64 = 0.15;
const REQUESTS: usize = 200;
const GAP_MS: (u64, u64) = (5_000, 60_000);
const MAX_TOKENS: u64 = 300;
const PROVIDERS: [Provider; 4] = super::CHAT_PROVIDERS;

pub fn generate() -> Vec<Workload> {
    let mut rng = Rng::new(SEED);
    // Drawn first, so that the lists (and the repeats) depend on the seed alone.
    let lists = chunk_lists(&mut rng);
    let system = text::document(&mut rng, SYSTEM_TOKENS);
    let pool: Vec<String> = (0..POOL)
        .map(|_| text::document(&mut rng, CHUNK_TOKENS))
        .collect();
    let mut at_ms = 0;
    let mut steps = Vec::with_capacity(REQUESTS);
    for (i, list) in lists.iter().enumerate() {
        if i > 0 {
            at_ms += rng.between(GAP_MS.0, GAP_MS.1);
        }
        let mut parts: Vec<Part> = list.iter().map(|&c| Part::Text(pool[c].clone())).collect();
        parts.push(Part::Text(text::question(&mut rng)));
        steps.push(Step {
            at_ms,
            conversation: Conversation {
                system: vec![system.clone()],
                tools: Vec::new(),
                messages: vec![Message::user(Content::Parts(parts))],
                max_tokens: MAX_TOKENS,
            },
            context_first: None,
        });
    }
    render("rag", &PROVIDERS, steps)
}

/// The chunk indices of each request, in score order.
fn chunk_lists(rng: &mut Rng) -> Vec<Vec<usize>> {
    let zipf = Zipf::new(POOL, ZIPF_S);
    let mut lists: Vec<Vec<usize>> = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        let list = if i > 0 && rng.chance(REPEAT_CHANCE) {
            lists[rng.below(i)].clone()
        } else {
            let mut list = Vec::with_capacity(CHUNKS_PER_REQUEST);
            while list.len() < CHUNKS_PER_REQUEST {
                let chunk = zipf.sample(rng);
                if !list.contains(&chunk) {
                    list.push(chunk);
                }
            }
            list
        };
        lists.push(list);
    }
    lists
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::replay::workload::tests::generated;
    use crate::replay::workload::text::o200k;

    /// How many requests repeat an earlier chunk list: the seeded draw of the 15%.
    const REPEATS: usize = 29;

    #[test]
    fn five_chunks_then_the_question() {
        let workloads = generated("rag");
        assert_eq!(workloads.len(), 4);
        let openai = &workloads[1];
        assert_eq!(openai.provider, Provider::OpenAi);
        assert_eq!(openai.requests.len(), REQUESTS);
        assert!(openai.context_first.is_none());
        let system = openai.requests[0].body["messages"][0]["content"]
            .as_str()
            .unwrap();
        assert!((1_500..1_520).contains(&o200k(system)));
        let mut seen: Vec<Vec<&Value>> = Vec::new();
        let mut repeats = 0;
        for request in &openai.requests {
            let parts = request.body["messages"][1]["content"].as_array().unwrap();
            assert_eq!(parts.len(), CHUNKS_PER_REQUEST + 1);
            let question = parts[5]["text"].as_str().unwrap();
            assert!(question.ends_with('?'));
            let chunks: Vec<&Value> = parts[..5].iter().collect();
            if seen.contains(&chunks) {
                repeats += 1;
            }
            seen.push(chunks);
        }
        assert_eq!(repeats, REPEATS);
        let chunk = parts_text(&openai.requests[0], 0);
        assert!((600..620).contains(&o200k(&chunk)));
    }

    fn parts_text(request: &crate::replay::workload::Request, i: usize) -> String {
        request.body["messages"][1]["content"][i]["text"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn repeats_are_about_fifteen_percent() {
        let lists = chunk_lists(&mut Rng::new(SEED));
        let repeats = (0..lists.len())
            .filter(|&i| lists[..i].contains(&lists[i]))
            .count();
        assert_eq!(repeats, REPEATS);
        assert!((20..=40).contains(&repeats), "{repeats}");
        // Popular chunks dominate: chunk 0 is in far more lists than chunk 100.
        let count = |c: usize| lists.iter().filter(|l| l.contains(&c)).count();
        assert!(
            count(0) > 5 * count(100).max(1),
            "{} {}",
            count(0),
            count(100)
        );
    }
}
