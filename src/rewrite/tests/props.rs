//! Properties over generated conversations, rendered into each dialect with fields cachet does
//! not know: the rewrite only reorders or splits what a user message holds, keeps everything
//! else, and is deterministic and idempotent.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{config, document};
use crate::dialect::Endpoint;
use crate::rewrite::rewrite;

#[derive(Debug, Clone)]
enum Atom {
    /// Text; `tagged` adds a field of its own, so the part is more than its text.
    Text {
        text: String,
        tagged: bool,
    },
    Image,
    Tool,
}

#[derive(Debug, Clone)]
struct Message {
    user: bool,
    /// A single untagged text goes as string content where the dialect has one.
    as_string: bool,
    atoms: Vec<Atom>,
}

fn question() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..50usize).prop_map(|n| format!("What does paragraph {n} report?")),
        (0..9usize).prop_map(|n| format!("Doc {n}:")),
        (0..9usize).prop_map(|n| format!("Note {n}.")),
    ]
}

fn text() -> impl Strategy<Value = String> {
    let doc = (1..80usize).prop_map(document);
    prop_oneof![
        question(),
        doc.clone(),
        (question(), doc.clone(), 2..4usize)
            .prop_map(|(q, d, n)| format!("{q}{}{d}", "\n".repeat(n))),
        (doc.clone(), question()).prop_map(|(d, q)| format!("{d}\n\n{q}")),
        (doc, question()).prop_map(|(d, q)| format!("Agenda:\n\n{d}\n\n{q}")),
    ]
}

fn atom() -> impl Strategy<Value = Atom> {
    prop_oneof![
        6 => text_atom(text()),
        2 => Just(Atom::Image),
        1 => Just(Atom::Tool),
    ]
}

fn text_atom(text: impl Strategy<Value = String>) -> impl Strategy<Value = Atom> {
    (text, prop::bool::weighted(0.2)).prop_map(|(text, tagged)| Atom::Text { text, tagged })
}

/// Questions, then context: the layout the rewrite moves.
fn question_first() -> impl Strategy<Value = Vec<Atom>> {
    let context = prop_oneof![
        text_atom((55..80usize).prop_map(document)),
        Just(Atom::Image)
    ];
    (
        prop::collection::vec(text_atom(question()), 1..3),
        prop::collection::vec(context, 1..3),
    )
        .prop_map(|(mut questions, context)| {
            questions.extend(context);
            questions
        })
}

fn message() -> impl Strategy<Value = Message> {
    let atoms = prop_oneof![
        prop::collection::vec(atom(), 1..5),
        question_first(),
        text_atom(text()).prop_map(|atom| vec![atom]),
    ];
    (prop::bool::weighted(0.7), any::<bool>(), atoms).prop_map(|(user, as_string, atoms)| Message {
        user,
        as_string,
        atoms,
    })
}

fn conversation() -> impl Strategy<Value = Vec<Message>> {
    prop::collection::vec(message(), 1..5)
}

fn single_text(message: &Message) -> Option<&str> {
    match message.atoms.as_slice() {
        [
            Atom::Text {
                text,
                tagged: false,
            },
        ] if message.as_string => Some(text),
        _ => None,
    }
}

fn body(messages_key: &str, messages: Vec<Value>) -> Value {
    let mut body = Map::new();
    body.insert("x_first".into(), json!({"z": 1, "a": [2, 1]}));
    body.insert("model".into(), json!("m"));
    body.insert(messages_key.into(), Value::Array(messages));
    body.insert("x_last".into(), json!({"b": null, "a": 0.5}));
    Value::Object(body)
}

fn with_tag(mut part: Value, tagged: bool) -> Value {
    if let (true, Some(object)) = (tagged, part.as_object_mut()) {
        object.insert("x_tag".into(), json!({"y": 1, "x": 2}));
    }
    part
}

fn anthropic(conversation: &[Message]) -> Value {
    let message = |m: &Message| {
        let role = if m.user { "user" } else { "assistant" };
        let content = match single_text(m) {
            Some(text) => json!(text),
            None => m
                .atoms
                .iter()
                .map(|atom| match atom {
                    Atom::Text { text, tagged } => {
                        with_tag(json!({"type": "text", "text": text}), *tagged)
                    }
                    Atom::Image => json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}),
                    Atom::Tool if m.user => json!({"type": "tool_result", "tool_use_id": "t", "content": "ok"}),
                    Atom::Tool => json!({"type": "tool_use", "id": "t", "name": "f", "input": {}}),
                })
                .collect(),
        };
        json!({"role": role, "x_meta": {"k": 1}, "content": content})
    };
    body("messages", conversation.iter().map(message).collect())
}

/// Tool atoms make a `tool` message: OpenAI has no tool part in a user message.
fn chat(conversation: &[Message]) -> Value {
    let message = |m: &Message| {
        let tool = m.atoms.iter().any(|a| matches!(a, Atom::Tool));
        let role = match (tool, m.user) {
            (true, _) => "tool",
            (false, true) => "user",
            (false, false) => "assistant",
        };
        let content = match single_text(m) {
            Some(text) => json!(text),
            None => m
                .atoms
                .iter()
                .map(|atom| match atom {
                    Atom::Text { text, tagged } => {
                        with_tag(json!({"type": "text", "text": text}), *tagged)
                    }
                    Atom::Image | Atom::Tool => {
                        json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}})
                    }
                })
                .collect(),
        };
        json!({"role": role, "content": content, "x_meta": [1]})
    };
    body("messages", conversation.iter().map(message).collect())
}

fn gemini(conversation: &[Message]) -> Value {
    let content = |m: &Message| {
        let role = if m.user { "user" } else { "model" };
        let parts: Vec<Value> = m
            .atoms
            .iter()
            .map(|atom| match atom {
                Atom::Text { text, tagged } => with_tag(json!({"text": text}), *tagged),
                Atom::Image => json!({"inlineData": {"mimeType": "image/png", "data": "AA"}}),
                Atom::Tool if m.user => {
                    json!({"functionResponse": {"name": "f", "response": {}}})
                }
                Atom::Tool => json!({"functionCall": {"name": "f", "args": {}}}),
            })
            .collect();
        json!({"role": role, "parts": parts})
    };
    body("contents", conversation.iter().map(content).collect())
}

/// What a message holds, order aside: its non-text parts (as JSON) and its text paragraphs.
fn holdings(message: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let content = message.get("content").or_else(|| message.get("parts"));
    let parts = match content {
        Some(Value::String(text)) => vec![json!({"text": text})],
        Some(Value::Array(parts)) => parts.clone(),
        _ => Vec::new(),
    };
    for part in parts {
        let Some(text) = part.get("text").and_then(Value::as_str) else {
            out.push(part.to_string());
            continue;
        };
        let paragraphs = text.split("\n\n").map(|p| p.trim_matches('\n'));
        out.extend(paragraphs.filter(|p| !p.is_empty()).map(str::to_owned));
        // A field beside the text travels with it.
        if let Some(tag) = part.get("x_tag") {
            out.push(tag.to_string());
        }
    }
    out.sort();
    out
}

fn keys(value: &Value) -> Vec<String> {
    value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn without(value: &Value, key: &str) -> Value {
    let mut value = value.clone();
    if let Some(object) = value.as_object_mut() {
        object.shift_remove(key);
    }
    value
}

fn is_user(message: &Value) -> bool {
    matches!(
        message.get("role").and_then(Value::as_str),
        None | Some("user")
    )
}

/// Rewritten once, twice, and once more from scratch: the same bytes, and the holdings kept.
fn check_common(endpoint: &Endpoint, before: &Value, messages_key: &str) -> Value {
    let config = config();
    let mut once = before.clone();
    rewrite(endpoint, &mut once, &config);
    let mut twice = once.clone();
    let second = rewrite(endpoint, &mut twice, &config);
    assert!(second.is_empty(), "not idempotent: {second:?}");
    assert_eq!(twice.to_string(), once.to_string());
    let mut again = before.clone();
    rewrite(endpoint, &mut again, &config);
    assert_eq!(again.to_string(), once.to_string(), "not deterministic");
    assert_eq!(keys(&once), keys(before), "top-level key order");
    assert_eq!(without(&once, messages_key), without(before, messages_key));
    once
}

/// Anthropic and OpenAI: one message in, one message out, in place.
fn check_message_by_message(endpoint: &Endpoint, before: &Value) {
    let after = check_common(endpoint, before, "messages");
    let (Some(old), Some(new)) = (before["messages"].as_array(), after["messages"].as_array())
    else {
        panic!("no messages");
    };
    assert_eq!(old.len(), new.len());
    for (old, new) in old.iter().zip(new) {
        assert_eq!(keys(old), keys(new));
        assert_eq!(without(old, "content"), without(new, "content"));
        if is_user(old) {
            assert_eq!(holdings(old), holdings(new));
        } else {
            assert_eq!(old, new);
        }
    }
}

/// Gemini: a user turn may become two; the model's turns and all holdings stay.
fn check_gemini(before: &Value) {
    let endpoint = Endpoint::GeminiGenerate {
        model: "m".into(),
        stream: false,
    };
    let after = check_common(&endpoint, before, "contents");
    let (Some(old), Some(new)) = (before["contents"].as_array(), after["contents"].as_array())
    else {
        panic!("no contents");
    };
    let model = |contents: &[Value]| -> Vec<Value> {
        contents.iter().filter(|c| !is_user(c)).cloned().collect()
    };
    assert_eq!(model(old), model(new));
    let all = |contents: &[Value]| -> Vec<String> {
        let mut all: Vec<String> = contents.iter().flat_map(holdings).collect();
        all.sort();
        all
    };
    assert_eq!(all(old), all(new));
    assert!(new.len() >= old.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn rewrites_keep_what_they_do_not_move(conversation in conversation()) {
        check_message_by_message(&Endpoint::AnthropicMessages, &anthropic(&conversation));
        check_message_by_message(&Endpoint::Chat, &chat(&conversation));
        check_gemini(&gemini(&conversation));
    }
}
