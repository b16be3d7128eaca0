use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::*;
use crate::config::Config;
use crate::dialect::Endpoint;
use crate::prefix::keys;
use crate::tenant::{Credential, Tenant, TenantSecret};

fn tenant() -> Tenant {
    Tenant::of(
        &TenantSecret::from_bytes([5; 32]),
        "anthropic",
        &Credential::default(),
    )
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn print_of(body: &Value, secs: u64) -> Arc<Fingerprint> {
    let rewrite = Config::load_from(None, Vec::new()).unwrap().rewrite;
    let prompt = crate::prompt::prompt(&Endpoint::AnthropicMessages, body).unwrap();
    let boundaries = keys(&prompt, &tenant());
    Arc::new(Fingerprint::of(&prompt, &boundaries, at(secs), &rewrite))
}

fn facts(read: u64, secs: u64) -> Facts {
    Facts {
        read,
        retention: Duration::from_secs(300),
        min_tokens: 0,
        now: at(secs),
    }
}

/// Sends `bodies` in order, one second apart, reading nothing from cache; the last explanation.
fn explain_last(bodies: &[Value]) -> Option<Explanation> {
    let history = History::new(1 << 24);
    let mut last = None;
    for (i, body) in bodies.iter().enumerate() {
        last = history.explain_and_record(tenant(), print_of(body, i as u64), facts(0, i as u64));
    }
    last
}

fn tools() -> Value {
    json!([{"name": "search", "description": "Search the web for pages. ".repeat(30), "input_schema": {"type": "object"}}])
}

const STABLE: &str = "You are a careful assistant. Follow the policy below in every answer.";

fn with_system(first_line: &str, question: &str) -> Value {
    json!({"model": "claude-sonnet-4-6", "tools": tools(),
        "system": format!("{first_line}\n{}", STABLE.repeat(20)),
        "messages": [{"role": "user", "content": question}]})
}

#[test]
fn a_timestamp_in_the_system_prompt_is_named_where_it_starts() {
    let miss = explain_last(&[
        with_system("Current time: 2026-11-29T10:00:07Z", "What is new?"),
        with_system("Current time: 2026-11-29T10:01:19Z", "And now?"),
    ])
    .unwrap();
    assert_eq!(miss.reason, Reason::TimestampInPrefix);
    assert_eq!(miss.segment, "system 0");
    assert_eq!(miss.offset, "Current time: ".len());
    assert!(
        miss.tokens > 0,
        "the stable instructions after the timestamp"
    );
}

#[test]
fn a_changed_system_prompt_without_a_timestamp() {
    let miss = explain_last(&[
        with_system("Be formal.", "What is new?"),
        with_system("Be casual.", "What is new?"),
    ])
    .unwrap();
    assert_eq!(miss.reason, Reason::SystemChanged);
    // Without the text, the offset is that of the 16-byte piece where the prompts part
    // (narrowed further only where character classes differ).
    assert_eq!(miss.offset, 0);
    let miss = explain_last(&[
        with_system("Be formal, always, in every answer.", "Q?"),
        with_system("Be formal, always, in every reply!", "Q?"),
    ])
    .unwrap();
    assert_eq!(
        miss.offset, 16,
        "they part at byte 28, in the piece starting at 16"
    );
    let miss = explain_last(&[
        with_system("Be formal, always: 2 answers.", "Q?"),
        with_system("Be formal, always: a answers.", "Q?"),
    ])
    .unwrap();
    assert_eq!(miss.offset, 19, "a digit became a letter: exact");
}

#[test]
fn changed_tools() {
    let mut other = with_system("Be formal.", "Q?");
    other["tools"][0]["description"] = json!("Search the web. ".repeat(30));
    let miss = explain_last(&[with_system("Be formal.", "Q?"), other]).unwrap();
    assert_eq!(miss.reason, Reason::ToolsChanged);
    assert_eq!(miss.segment, "tools 0");
}

fn docqa(question: &str, doc: &str) -> Value {
    json!({"model": "claude-sonnet-4-6", "system": "Answer from the document.",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": question}, {"type": "text", "text": doc}]}]})
}

#[test]
fn a_question_before_its_document_in_parts_or_one_string() {
    let doc = "The report covers revenue and costs in detail. ".repeat(120);
    let miss = explain_last(&[docqa("What changed?", &doc), docqa("Who wrote it?", &doc)]).unwrap();
    assert_eq!(miss.reason, Reason::QuestionBeforeContext);
    assert_eq!(miss.segment, "message 0 part 0");
    let one = |q: &str| {
        json!({"model": "m", "system": "Answer.", "messages": [
            {"role": "user", "content": format!("{q}\n\n{doc}")}]})
    };
    let miss = explain_last(&[one("What changed?"), one("Who wrote it?")]).unwrap();
    assert_eq!(miss.reason, Reason::QuestionBeforeContext);
}

#[test]
fn edited_history_and_a_plain_new_turn() {
    let turn = |first: &str, last: &str| {
        json!({"model": "m", "system": STABLE.repeat(10), "messages": [
            {"role": "user", "content": first}, {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": last}]})
    };
    let miss = explain_last(&[turn("Hello there", "Next?"), turn("Hello here", "Next?")]).unwrap();
    assert_eq!(miss.reason, Reason::HistoryEdited);
    assert_eq!(miss.segment, "message 0 part 0");
    // Only the newest turn differs: that is a new question, not a miss.
    assert_eq!(
        explain_last(&[turn("Hello there", "Next?"), turn("Hello there", "Other?")]),
        None
    );
    // The next turn extends the whole earlier prompt by a reply and a question: nothing was
    // edited, however little the provider read.
    let mut longer = turn("Hello there", "Next?");
    longer["messages"]
        .as_array_mut()
        .expect("messages")
        .extend([
            json!({"role": "assistant", "content": "Gladly."}),
            json!({"role": "user", "content": "And then?"}),
        ]);
    assert_eq!(explain_last(&[turn("Hello there", "Next?"), longer]), None);
}

#[test]
fn a_changed_model_is_told_by_the_model_free_chain() {
    let mut other = with_system("Be formal.", "Q?");
    other["model"] = json!("claude-haiku-4-5");
    let miss = explain_last(&[with_system("Be formal.", "Q?"), other]).unwrap();
    assert_eq!(miss.reason, Reason::ModelChanged);
}

#[test]
fn expired_below_minimum_and_read_enough() {
    let a = with_system("Be formal.", "Q?");
    let history = History::new(1 << 24);
    history.explain_and_record(tenant(), print_of(&a, 0), facts(0, 0));
    // Ten minutes later the provider's 5-minute cache is gone.
    let miss = history
        .explain_and_record(tenant(), print_of(&a, 600), facts(0, 600))
        .unwrap();
    assert_eq!(miss.reason, Reason::Expired);
    // Below the model's minimum.
    let small = Facts {
        min_tokens: 100_000,
        ..facts(0, 601)
    };
    let miss = history
        .explain_and_record(tenant(), print_of(&a, 601), small)
        .unwrap();
    assert_eq!(miss.reason, Reason::BelowMinimum);
    // Read all that was shared: nothing to explain.
    assert_eq!(
        history.explain_and_record(tenant(), print_of(&a, 602), facts(1_000_000, 602)),
        None
    );
}

#[test]
fn the_same_large_part_twice_is_paid_twice() {
    let doc = "A long appendix of tables and notes. ".repeat(150);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": doc}, {"type": "text", "text": "Compare."}, {"type": "text", "text": doc}]}]});
    let miss = explain_last(&[body]).unwrap();
    assert_eq!(miss.reason, Reason::DuplicateContext);
    assert_eq!(miss.segment, "message 0 part 2");
    assert!(miss.tokens >= 1024);
}

#[test]
fn tenants_and_the_memory_bound_are_respected() {
    let a = with_system("Be formal.", "Q?");
    let history = History::new(1 << 24);
    history.explain_and_record(tenant(), print_of(&a, 0), facts(0, 0));
    let other = Tenant::of(
        &TenantSecret::from_bytes([5; 32]),
        "openai",
        &Credential::default(),
    );
    // Another tenant has no history to compare with.
    assert_eq!(
        history.explain_and_record(other, print_of(&a, 1), facts(0, 1)),
        None
    );
    let tiny = History::new(1);
    for i in 0..5 {
        tiny.explain_and_record(tenant(), print_of(&a, i), facts(0, i));
    }
    assert!(
        tiny.inner().bytes <= 1
            || tiny
                .inner()
                .by_tenant
                .values()
                .map(VecDeque::len)
                .sum::<usize>()
                <= 1
    );
}

#[test]
fn excerpts_are_short_and_mask_digits() {
    assert_eq!(
        excerpt(
            b"Current time: 2026-11-29T10:00:07Z and more text after it",
            14
        ),
        "####-##-##T##:##:##Z and more text after"
    );
    assert_eq!(excerpt(b"ab", 5), "");
}

#[test]
fn a_fingerprint_does_not_depend_on_how_the_bytes_arrive() {
    let text = "Current time: 2026-11-29T10:00:07Z and the rest of a long line. ".repeat(9);
    let mut whole = PrintSink::default();
    whole.put(text.as_bytes());
    let mut sliced = PrintSink::default();
    let mut rest = text.as_bytes();
    let mut step = 1;
    while !rest.is_empty() {
        let take = step.min(rest.len());
        sliced.put(&rest[..take]);
        rest = &rest[take..];
        step = step % 23 + 5;
    }
    assert_eq!(whole.pieces, sliced.pieces);
    assert_eq!(whole.classes, sliced.classes);
    assert_eq!(whole.len, text.len());
    assert_eq!(
        (whole.filled, sliced.filled),
        (text.len() % PIECE, text.len() % PIECE)
    );
}
