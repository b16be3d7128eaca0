//! `mooncake`: the Mooncake conversation trace (FAST'25), for routing across vLLM replicas.
//!
//! The trace (`traces/mooncake/conversation_trace.jsonl`, Apache-2.0, built into the binary so
//! `cachet replay` works from anywhere; or the file `CACHET_MOONCAKE` names) has one request a
//! line:
//! `{"timestamp": ms, "input_length", "output_length", "hash_ids": [...]}`, where each hash id
//! stands for a 512-token block that requests sharing a prefix share. A block here is 512 words
//! of the vocabulary drawn by an [`Rng`] seeded with the id, joined by single spaces, so it is
//! 512 o200k tokens. A request is one user message whose content holds one text part per hash
//! id, in order, the last one cut so that the words add up to `input_length` exactly (each part
//! is tokenized on its own, so words are tokens); `max_tokens` is `output_length` and `t` the
//! timestamp in seconds. [`Scale::Ci`] takes the first 500 requests, [`Scale::Full`] all 12,031.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::dialect::{self, Content, Conversation, Message, Part};
use super::{Provider, Scale, Workload, api_key, text};
use crate::replay::rng::Rng;

const NAME: &str = "mooncake";
const BLOCK_WORDS: usize = 512;
const CI_REQUESTS: usize = 500;
/// Overrides the trace's path.
pub const PATH_ENV: &str = "CACHET_MOONCAKE";

/// The trace as shipped (3 MB).
const TRACE: &str = include_str!("../../../traces/mooncake/conversation_trace.jsonl");

pub fn generate(scale: Scale) -> Result<Vec<Workload>, String> {
    let owned;
    let trace = match std::env::var_os(PATH_ENV) {
        Some(path) => {
            owned = read_trace(Path::new(&path))?;
            owned.as_str()
        }
        None => TRACE,
    };
    let limit = match scale {
        Scale::Ci => CI_REQUESTS,
        Scale::Full => usize::MAX,
    };
    Ok(vec![from_trace(trace, limit)?])
}

fn read_trace(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|err| {
        format!(
            "mooncake trace {}: {err} (set {PATH_ENV} to the file's path)",
            path.display()
        )
    })
}

#[derive(Debug, Deserialize)]
struct Entry {
    timestamp: u64,
    input_length: usize,
    output_length: u64,
    hash_ids: Vec<u64>,
}

fn from_trace(trace: &str, limit: usize) -> Result<Workload, String> {
    let key = api_key(NAME);
    let model = Provider::Vllm.model();
    let mut blocks = Blocks::default();
    let mut requests = Vec::new();
    let lines = trace
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty());
    for (i, line) in lines.take(limit) {
        let at = |err: String| format!("mooncake trace line {}: {err}", i + 1);
        let entry: Entry = serde_json::from_str(line).map_err(|err| at(err.to_string()))?;
        let conversation = conversation(&mut blocks, &entry).map_err(at)?;
        let t = entry.timestamp as f64 / 1_000.0;
        let mut request = dialect::render(Provider::Vllm, model, &key, t, &conversation);
        // Generate exactly `output_length` tokens, as vLLM benchmarks replay traces, so each
        // request occupies its replica for the trace's decode time.
        request.body["ignore_eos"] = serde_json::Value::Bool(true);
        requests.push(request);
    }
    requests.sort_by(|a, b| a.t.total_cmp(&b.t));
    Ok(Workload {
        name: NAME.to_owned(),
        provider: Provider::Vllm,
        model: model.to_owned(),
        requests,
        context_first: None,
    })
}

/// One text part per hash id while words remain; ids past `input_length` add nothing.
fn conversation(blocks: &mut Blocks, entry: &Entry) -> Result<Conversation, String> {
    let capacity = entry.hash_ids.len() * BLOCK_WORDS;
    if entry.input_length > capacity {
        return Err(format!(
            "input_length {} exceeds {} hash ids of {BLOCK_WORDS} tokens",
            entry.input_length,
            entry.hash_ids.len()
        ));
    }
    let mut parts = Vec::with_capacity(entry.hash_ids.len());
    let mut remaining = entry.input_length;
    for &id in &entry.hash_ids {
        if remaining == 0 {
            break;
        }
        let words = remaining.min(BLOCK_WORDS);
        parts.push(Part::Text(first_words(blocks.get(id), words).to_owned()));
        remaining -= words;
    }
    Ok(Conversation {
        system: Vec::new(),
        tools: Vec::new(),
        messages: vec![Message::user(Content::Parts(parts))],
        max_tokens: entry.output_length,
    })
}

/// The text of each block seen so far: requests share blocks heavily (a conversation resends its
/// earlier blocks), so each is generated once.
#[derive(Default)]
struct Blocks(HashMap<u64, String>);

impl Blocks {
    fn get(&mut self, id: u64) -> &str {
        self.0
            .entry(id)
            .or_insert_with(|| text::words(&mut Rng::new(id), BLOCK_WORDS))
    }
}

/// The first `n` space-separated words of `block`.
fn first_words(block: &str, n: usize) -> &str {
    match n.checked_sub(1) {
        None => "",
        Some(last) => match block.match_indices(' ').nth(last) {
            Some((end, _)) => &block[..end],
            None => block,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::workload::text::o200k;

    fn words_of(part: &serde_json::Value) -> usize {
        part["text"].as_str().unwrap().split(' ').count()
    }

    #[test]
    fn a_block_is_as_many_tokens_as_words() {
        let mut rng = Rng::new(99);
        let mut blocks = Blocks::default();
        for _ in 0..3 {
            let id = rng.between(0, 200_000);
            let block = blocks.get(id).to_owned();
            assert_eq!(block.split(' ').count(), BLOCK_WORDS);
            assert_eq!(o200k(&block), BLOCK_WORDS, "block {id}");
            let cut = first_words(&block, 100);
            assert_eq!(o200k(cut), 100);
            assert!(block.starts_with(cut) && !cut.starts_with(' '));
        }
        assert_eq!(first_words("a b c", 0), "");
        assert_eq!(first_words("a b c", 2), "a b");
        assert_eq!(first_words("a b c", 3), "a b c");
    }

    #[test]
    fn requests_follow_the_trace() {
        let trace = concat!(
            r#"{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [7, 8]}"#,
            "\n\n",
            r#"{"timestamp": 1500, "input_length": 1024, "output_length": 9, "hash_ids": [7, 8, 9]}"#,
            "\n",
        );
        let workload = from_trace(trace, usize::MAX).unwrap();
        let [first, second] = workload.requests.as_slice() else {
            panic!("two requests")
        };
        assert_eq!((first.t, second.t), (0.0, 1.5));
        assert_eq!(first.path, "/v1/chat/completions");
        assert_eq!(first.upstream, "vllm");
        assert_eq!(first.body["model"], "mooncake-sim");
        assert_eq!(first.body["max_tokens"], 5);
        let parts = |r: &super::super::Request| r.body["messages"][0]["content"].clone();
        let (a, b) = (parts(first), parts(second));
        assert_eq!(
            a.as_array()
                .unwrap()
                .iter()
                .map(words_of)
                .collect::<Vec<_>>(),
            [512, 88]
        );
        // Shared ids give the same text; 1024 words fill two blocks, and id 9 adds nothing.
        assert_eq!(b.as_array().unwrap().len(), 2);
        assert_eq!(a[0], b[0]);
        assert!(
            b[1]["text"]
                .as_str()
                .unwrap()
                .starts_with(a[1]["text"].as_str().unwrap())
        );
        assert!(from_trace(trace, 1).unwrap().requests.len() == 1);
    }

    #[test]
    fn errors_name_the_line() {
        let too_long =
            r#"{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1]}"#;
        let err = from_trace(&format!("\n{too_long}"), usize::MAX).unwrap_err();
        assert!(
            err.starts_with("mooncake trace line 2: input_length 600"),
            "{err}"
        );
        let err = from_trace("{\"timestamp\": 0}", usize::MAX).unwrap_err();
        assert!(
            err.starts_with("mooncake trace line 1: missing field"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_trace_says_where_it_looked_and_how_to_point_elsewhere() {
        let err = read_trace(Path::new("/nonexistent/trace.jsonl")).unwrap_err();
        assert!(
            err.starts_with("mooncake trace /nonexistent/trace.jsonl: "),
            "{err}"
        );
        assert!(
            err.ends_with("(set CACHET_MOONCAKE to the file's path)"),
            "{err}"
        );
    }

    #[test]
    fn the_built_in_trace_is_the_shipped_file() {
        assert_eq!(TRACE.lines().count(), 12_031);
        let shipped = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/traces/mooncake/conversation_trace.jsonl"
        );
        assert_eq!(std::fs::read_to_string(shipped).unwrap(), TRACE);
    }

    #[test]
    fn ci_scale_word_counts_match_input_lengths() {
        let trace = TRACE;
        let workload = &crate::replay::workload::tests::generated(NAME)[0];
        assert_eq!(workload.requests.len(), CI_REQUESTS);
        for (request, line) in workload.requests.iter().zip(trace.lines()) {
            let entry: Entry = serde_json::from_str(line).unwrap();
            let parts = request.body["messages"][0]["content"].as_array().unwrap();
            let words: usize = parts.iter().map(words_of).sum();
            assert_eq!(words, entry.input_length);
            assert_eq!(request.body["max_tokens"], entry.output_length);
        }
    }

    #[test]
    #[ignore = "generates all 12,031 requests (about 145M words); run with --ignored"]
    fn full_scale_has_every_request() {
        let workloads = generate(Scale::Full).unwrap();
        let workload = &workloads[0];
        assert_eq!(workload.requests.len(), 12_031);
        assert!(workload.requests.windows(2).all(|w| w[0].t <= w[1].t));
        assert_eq!(
            workload.digest(),
            "cf3256ce719ed87a9f0b2e9800e5893f60a7874bbe092679ee0dfb4c5afe1038"
        );
    }
}
