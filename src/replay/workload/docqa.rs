//! `docqa`: questions about long documents, each asked with the question before the document.
//!
//! 4 documents (3k, 6k, 9k and 12k tokens), 6 questions each, 1–70 minutes apart per document,
//! the 24 requests on one timeline. Each request is a single turn: a short system prompt and one
//! user message holding the question and the whole document. Per document, 3 requests send them
//! as two text parts `[question, document]` and 3 as one string `"question\n\ndocument"`, in a
//! seeded order.
//!
//! The context-first twin is what the question-after-context rewrite would send
//! (`../shared/DESIGN.md`, "Question after context"): two parts become `[document, question]`;
//! the one string is split at its first blank line, the separator bytes kept and going with the
//! document: `"document\n\n"` then `"question"`. That is two text blocks for Anthropic, the
//! swapped string `"document\n\nquestion"` for OpenAI and DeepSeek, and two consecutive user
//! Contents for Gemini (see [`Content::Split`]). The separator stays with the document so that
//! every question on a document shares the same cacheable prefix, separator included, and the
//! three renderings hold the same bytes in the same order.

use super::dialect::{Content, Conversation, Message, Part};
use super::{Provider, Step, Workload, render, text};
use crate::replay::rng::Rng;

const SEED: u64 = 0x646f_6371_6101;
const DOCUMENT_TOKENS: [usize; 4] = [3_000, 6_000, 9_000, 12_000];
const QUESTIONS_PER_DOCUMENT: usize = 6;
/// Gap between two questions on one document (and each later document's first question after
/// t = 0): 1 to 70 minutes, uniform, in ms.
const GAP_MS: (u64, u64) = (60_000, 4_200_000);
const SYSTEM: &str = "You answer questions about documents.";
const MAX_TOKENS: u64 = 300;
const PROVIDERS: [Provider; 4] = super::CHAT_PROVIDERS;

pub fn generate() -> Vec<Workload> {
    let mut rng = Rng::new(SEED);
    let documents: Vec<String> = DOCUMENT_TOKENS
        .iter()
        .map(|&tokens| text::document(&mut rng, tokens))
        .collect();
    let mut steps = Vec::with_capacity(documents.len() * QUESTIONS_PER_DOCUMENT);
    for (i, document) in documents.iter().enumerate() {
        let mut as_parts = [true, true, true, false, false, false];
        rng.shuffle(&mut as_parts);
        let mut at_ms = if i == 0 { 0 } else { gap(&mut rng) };
        for (j, &parts) in as_parts.iter().enumerate() {
            if j > 0 {
                at_ms += gap(&mut rng);
            }
            let question = text::question(&mut rng);
            steps.push(step(at_ms, document, &question, parts));
        }
    }
    render("docqa", &PROVIDERS, steps)
}

fn gap(rng: &mut Rng) -> u64 {
    rng.between(GAP_MS.0, GAP_MS.1)
}

fn step(at_ms: u64, document: &str, question: &str, as_parts: bool) -> Step {
    let text = |s: &str| Part::Text(s.to_owned());
    let (asked, context_first) = if as_parts {
        (
            Content::Parts(vec![text(question), text(document)]),
            Content::Parts(vec![text(document), text(question)]),
        )
    } else {
        (
            Content::Text(format!("{question}\n\n{document}")),
            Content::Split(format!("{document}\n\n"), question.to_owned()),
        )
    };
    let conversation = |content| Conversation {
        system: vec![SYSTEM.to_owned()],
        tools: Vec::new(),
        messages: vec![Message::user(content)],
        max_tokens: MAX_TOKENS,
    };
    Step {
        at_ms,
        conversation: conversation(asked),
        context_first: Some(conversation(context_first)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::replay::workload::Request;
    use crate::replay::workload::tests::generated;

    /// Every text string of the user turn(s), whatever the dialect's shape.
    fn user_texts(request: &Request) -> Vec<String> {
        let body = &request.body;
        let turns = body
            .get("messages")
            .or_else(|| body.get("contents"))
            .and_then(Value::as_array)
            .unwrap();
        let mut out = Vec::new();
        for turn in turns.iter().filter(|t| t["role"] == "user") {
            collect_strings(
                turn.get("content").or_else(|| turn.get("parts")).unwrap(),
                &mut out,
            );
        }
        out
    }

    fn collect_strings(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
            Value::Object(map) => {
                if let Some(text) = map.get("text") {
                    collect_strings(text, out);
                }
            }
            _ => {}
        }
    }

    fn paragraphs(texts: &[String]) -> Vec<String> {
        let mut out: Vec<String> = texts
            .iter()
            .flat_map(|t| t.split("\n\n"))
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        out.sort();
        out
    }

    #[test]
    fn layouts_question_first_and_context_first() {
        let workloads = generated("docqa");
        assert_eq!(workloads.len(), 4);
        for workload in workloads {
            let context_first = workload.context_first.as_ref().unwrap();
            assert_eq!(workload.requests.len(), 24);
            assert_eq!(context_first.len(), 24);
            let mut strings = 0;
            for (asked, twin) in workload.requests.iter().zip(context_first) {
                assert_eq!(asked.t, twin.t);
                let before = user_texts(asked);
                let after = user_texts(twin);
                // Same text, paragraph for paragraph.
                assert_eq!(paragraphs(&before), paragraphs(&after));
                let question = |s: &String| s.ends_with('?') && !s.contains("\n\n");
                match before.as_slice() {
                    [one] => {
                        strings += 1;
                        let (q, rest) = one.split_once("\n\n").unwrap();
                        assert!(q.ends_with('?') && rest.ends_with('.'));
                        if workload.provider == Provider::OpenAi
                            || workload.provider == Provider::DeepSeek
                        {
                            assert_eq!(after, [format!("{rest}\n\n{q}")]);
                        } else {
                            assert_eq!(after, [format!("{rest}\n\n"), q.to_owned()]);
                        }
                    }
                    [q, document] => {
                        assert!(question(q) && document.ends_with('.'));
                        assert_eq!(after, [document.clone(), q.clone()]);
                    }
                    other => panic!("unexpected user texts: {}", other.len()),
                }
            }
            assert_eq!(strings, 12, "{:?}", workload.provider);
        }
    }

    #[test]
    fn gemini_splits_the_string_into_two_user_contents() {
        let gemini = generated("docqa")
            .iter()
            .find(|w| w.provider == Provider::Gemini)
            .unwrap();
        let twins = gemini.context_first.as_ref().unwrap();
        let split = gemini
            .requests
            .iter()
            .zip(twins)
            .filter(|(asked, _)| asked.body["contents"][0]["parts"].as_array().unwrap().len() == 1)
            .map(|(_, twin)| twin.body["contents"].as_array().unwrap().len());
        assert!(split.clone().count() == 12 && split.into_iter().all(|n| n == 2));
    }

    #[test]
    fn timeline_interleaves_the_documents() {
        let workload = &generated("docqa")[0];
        let t: Vec<f64> = workload.requests.iter().map(|r| r.t).collect();
        assert_eq!(t[0], 0.0);
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
        // Not one document after another: the document changes more than three times.
        let doc_of = |r: &Request| match user_texts(r).as_slice() {
            [one] => one.split_once("\n\n").unwrap().1.len(),
            [_, document] => document.len(),
            _ => 0,
        };
        let changes = workload
            .requests
            .windows(2)
            .filter(|w| doc_of(&w[0]) != doc_of(&w[1]))
            .count();
        assert!(changes > 3, "{changes}");
    }
}
