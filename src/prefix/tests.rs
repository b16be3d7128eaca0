use std::collections::HashSet;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::dialect::Endpoint;
use crate::prompt::{Content, prompt};
use crate::tenant::{Credential, TenantSecret};

fn tenant() -> Tenant {
    let credential = Credential {
        key: Some(b"sk-test"),
        ..Credential::default()
    };
    Tenant::of(&TenantSecret::from_bytes([7; 32]), "main", &credential)
}

fn keys_of(endpoint: &Endpoint, body: &Value) -> Vec<Boundary> {
    keys(&prompt(endpoint, body).unwrap(), &tenant())
}

fn gemini() -> Endpoint {
    Endpoint::GeminiGenerate {
        model: "gemini-2.5-flash".into(),
        stream: false,
    }
}

fn last(boundaries: &[Boundary]) -> (String, String) {
    let b = boundaries.last().unwrap();
    (b.key.to_string(), b.model_free.to_string())
}

#[test]
fn golden_keys_of_the_four_request_shapes() {
    let chat = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello"}]});
    let responses = json!({"model": "gpt-5", "instructions": "You are terse.",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hello"}]}]});
    let anthropic = json!({"model": "claude-sonnet-4-5", "system": "You are terse.",
        "tools": [{"name": "get_time", "description": "Now", "input_schema": {"type": "object", "properties": {}}}],
        "messages": [{"role": "user", "content": "Hello"}]});
    let gemini_body = json!({"systemInstruction": {"parts": [{"text": "You are terse."}]},
        "contents": [{"role": "user", "parts": [{"text": "Hello"}]}]});
    let cases = [
        (Endpoint::Chat, chat, 2, GOLDEN_CHAT),
        (Endpoint::Responses, responses, 2, GOLDEN_RESPONSES),
        (Endpoint::AnthropicMessages, anthropic, 3, GOLDEN_ANTHROPIC),
        (gemini(), gemini_body, 2, GOLDEN_GEMINI),
    ];
    for (endpoint, body, count, (key, model_free)) in cases {
        let got = keys_of(&endpoint, &body);
        assert_eq!(got.len(), count, "{endpoint:?}");
        assert_eq!(
            last(&got),
            (key.to_owned(), model_free.to_owned()),
            "{endpoint:?}"
        );
    }
    assert_eq!(
        keys_of(
            &Endpoint::Chat,
            &json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello"}]})
        )[0]
        .key
        .short(),
        GOLDEN_CHAT_FIRST_SHORT
    );
}

// (last key, last model-free key). Responses and Gemini render the same system text and user
// message here, so under one tenant their model-free keys agree.
const GOLDEN_CHAT: (&str, &str) = (
    "a424d116cd9cd65378fd38d2d7464f733ad11ff219af636afe058f6e8daae966",
    "eaa66c64546e7e810536407b0e1871ce2ff8c180ce258ca9a604b5b4c8893811",
);
const GOLDEN_RESPONSES: (&str, &str) = (
    "34cd7ca17b5cc3c97692c26d80d54dd31eb6ab9a03ada5f5de5273f8bc02fe4b",
    "df10dc4e6cf01ef5a24bc76c42a8719c64f35c9af1c21d4311e28f523710028a",
);
const GOLDEN_ANTHROPIC: (&str, &str) = (
    "97d6eceb5781904e6a3c51a9c73b19e6dc049648243f79e7794a2026e843e17f",
    "3b36edf461647b39334e9899a95c18b41b8907b9ad21d4d14971d800a6fd3137",
);
const GOLDEN_GEMINI: (&str, &str) = (
    "523e7c91b4000f46e6c1450ae9cca727b4bd0dec50ecc933a03396169242f44f",
    "df10dc4e6cf01ef5a24bc76c42a8719c64f35c9af1c21d4311e28f523710028a",
);
const GOLDEN_CHAT_FIRST_SHORT: &str = "6a939012d5db77bc";

/// The chat golden, recomputed from the formula in the module doc.
#[test]
fn the_chain_is_the_documented_formula() {
    let hash = |parts: &[&[u8]]| {
        let mut h = blake3::Hasher::new();
        for p in parts {
            h.update(p);
        }
        *h.finalize().as_bytes()
    };
    let model = b"gpt-4o-mini";
    let h0 = hash(&[
        b"cachet/prefix/v2\0\x01",
        &(model.len() as u64).to_le_bytes(),
        model,
        tenant().as_bytes(),
    ]);
    let first = |role: &[u8]| {
        let mut frame = vec![1, b'x', b'M'];
        frame.extend_from_slice(&(role.len() as u64).to_le_bytes());
        frame.extend_from_slice(role);
        frame
    };
    let link = |prev: &[u8; 32], digest: [u8; 32]| *blake3::keyed_hash(prev, &digest).as_bytes();
    let h1 = link(&h0, hash(&[&first(b"system"), b"You are terse."]));
    let h2 = link(&h1, hash(&[&first(b"user"), b"Hello"]));
    assert_eq!(PrefixKey(h2).to_string(), GOLDEN_CHAT.0);
}

fn anthropic(body: &str) -> Vec<Boundary> {
    keys_of(
        &Endpoint::AnthropicMessages,
        &serde_json::from_str(body).unwrap(),
    )
}

#[test]
fn keys_ignore_json_whitespace_but_not_key_order() {
    let compact = r#"{"model":"m","tools":[{"name":"t","input_schema":{"type":"object","properties":{"a":{"type":"string"}}}}],"messages":[{"role":"user","content":"hi \u00e9"}]}"#;
    let pretty = "{\n  \"model\": \"m\",\n  \"tools\": [ { \"name\" : \"t\", \"input_schema\": {\"type\": \"object\",\n \"properties\": { \"a\": {\"type\":\"string\"} } } } ],\n  \"messages\": [ {\"role\":\"user\", \"content\": \"hi é\"} ]\n}\n";
    assert_eq!(anthropic(compact), anthropic(pretty));
    let reordered = r#"{"model":"m","tools":[{"name":"t","input_schema":{"properties":{"a":{"type":"string"}},"type":"object"}}],"messages":[{"role":"user","content":"hi \u00e9"}]}"#;
    let (a, b) = (anthropic(compact), anthropic(reordered));
    assert_eq!(a.len(), b.len());
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.key != y.key),
        "a schema's key order is rendered, so every key after it changes"
    );
    let body_order = r#"{"messages":[{"content":"hi \u00e9","role":"user"}],"tools":[{"name":"t","input_schema":{"type":"object","properties":{"a":{"type":"string"}}}}],"model":"m"}"#;
    assert_eq!(
        anthropic(compact),
        anthropic(body_order),
        "the order of request fields is not rendered"
    );
}

#[test]
fn cache_control_markers_do_not_change_keys() {
    let bare = json!({"model": "claude-haiku-4-5",
        "tools": [{"name": "t", "input_schema": {"type": "object"}}],
        "system": [{"type": "text", "text": "sys"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "doc"}, {"type": "text", "text": "q"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "u", "name": "t", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "u",
                "content": [{"type": "text", "text": "r"}]}]}]});
    let eph = json!({"type": "ephemeral"});
    let mut marked = bare.clone();
    marked["cache_control"] = eph.clone();
    marked["tools"][0]["cache_control"] = eph.clone();
    marked["system"][0]["cache_control"] = json!({"type": "ephemeral", "ttl": "1h"});
    marked["messages"][0]["content"][0]["cache_control"] = eph.clone();
    marked["messages"][1]["content"][0]["cache_control"] = eph.clone();
    marked["messages"][2]["content"][0]["cache_control"] = eph.clone();
    marked["messages"][2]["content"][0]["content"][0]["cache_control"] = eph;
    let e = Endpoint::AnthropicMessages;
    assert_eq!(keys_of(&e, &bare), keys_of(&e, &marked));
}

#[test]
fn equivalent_spellings_share_keys_and_different_renderings_do_not() {
    let e = Endpoint::AnthropicMessages;
    let with = |system: Value, messages: Value| {
        keys_of(
            &e,
            &json!({"model": "m", "system": system, "messages": messages}),
        )
    };
    let user_hi = json!([{"role": "user", "content": "hi"}]);
    assert_eq!(
        with(json!("sys"), user_hi.clone()),
        with(json!([{"type": "text", "text": "sys"}]), user_hi.clone()),
        "a string is one text block"
    );
    let as_assistant = with(
        json!("sys"),
        json!([{"role": "assistant", "content": "hi"}]),
    );
    assert_ne!(
        with(json!("sys"), user_hi).last(),
        as_assistant.last(),
        "roles are rendered"
    );
    let two_messages = with(
        json!("s"),
        json!([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]),
    );
    let two_parts = with(
        json!("s"),
        json!([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]),
    );
    assert_eq!(two_messages.len(), two_parts.len());
    assert_ne!(two_messages.last(), two_parts.last());
}

#[test]
fn the_model_free_chain_tells_a_changed_model() {
    let body =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let a = keys_of(&Endpoint::Chat, &body("gpt-4o"));
    let b = keys_of(&Endpoint::Chat, &body("gpt-4.1"));
    assert_ne!(a[0].key, b[0].key);
    assert_eq!(a[0].model_free, b[0].model_free);
    let sent = body("gpt-4o");
    let p = prompt(&Endpoint::Chat, &sent).unwrap();
    let other = Tenant::from_bytes([1; 32]);
    let c = keys(&p, &other);
    assert_ne!(a[0].key, c[0].key);
    assert_ne!(a[0].model_free, c[0].model_free, "tenants never share");
}

#[test]
fn stored_context_is_part_of_the_prefix() {
    let body = |cache: Option<&str>| {
        let mut b = json!({"contents": [{"role": "user", "parts": [{"text": "q"}]}]});
        if let Some(name) = cache {
            b["cachedContent"] = json!(name);
        }
        b
    };
    let none = keys_of(&gemini(), &body(None));
    let a = keys_of(&gemini(), &body(Some("cachedContents/a")));
    let b = keys_of(&gemini(), &body(Some("cachedContents/b")));
    assert_ne!(none[0].key, a[0].key);
    assert_ne!(a[0].key, b[0].key);
    assert_ne!(a[0].model_free, b[0].model_free);
}

fn chat_text(text: &str) -> Vec<Boundary> {
    keys_of(
        &Endpoint::Chat,
        &json!({"model": "m", "messages": [{"role": "user", "content": text}]}),
    )
}

fn ends(boundaries: &[Boundary]) -> Vec<usize> {
    boundaries.iter().map(|b| b.end).collect()
}

#[test]
fn long_segments_are_cut_at_whitespace_and_character_boundaries() {
    assert_eq!(ends(&chat_text(&"x".repeat(300))), vec![256, 300]);
    assert_eq!(ends(&chat_text(&"x".repeat(256))), vec![256]);
    assert_eq!(ends(&chat_text(&"x".repeat(257))), vec![256, 257]);
    let spaced = format!("{} {}", "x".repeat(230), "y".repeat(100));
    assert_eq!(ends(&chat_text(&spaced)), vec![231, 331], "after the space");
    let early = format!("{} {}", "x".repeat(100), "y".repeat(300));
    assert_eq!(
        ends(&chat_text(&early)),
        vec![256, 401],
        "a space too early is not used"
    );
    assert_eq!(ends(&chat_text(&"é".repeat(200))), vec![256, 400]);
    assert_eq!(
        ends(&chat_text(&"日".repeat(100))),
        vec![255, 300],
        "never inside a character"
    );
    let b = chat_text(&"x".repeat(600));
    assert_eq!(
        b.iter().map(|b| b.segment_end).collect::<Vec<_>>(),
        vec![false, false, true]
    );
    assert_eq!(
        b.iter().map(|b| b.tokens).collect::<Vec<_>>(),
        vec![64, 128, 150]
    );
    let empty = chat_text("");
    assert_eq!(
        (empty.len(), empty[0].end, empty[0].tokens),
        (1, 0, 0),
        "an empty segment still has its key"
    );
}

#[test]
fn json_segments_are_cut_on_character_boundaries_only() {
    // The space is in the last 32 bytes of the first window: prose would be cut after it.
    let text = format!("{} {}", "a".repeat(215), "日".repeat(30));
    let body = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": text, "citations": []}]}]});
    let p = prompt(&Endpoint::Chat, &body).unwrap();
    assert!(matches!(p.segments[0].content, Content::Json(_)));
    let canonical = p.segments[0].canonical();
    let b = keys(&p, &tenant());
    for boundary in &b {
        assert!(std::str::from_utf8(&canonical[..boundary.end]).is_ok());
    }
    assert_eq!(b.last().unwrap().end, canonical.len());
    assert_eq!(
        b[0].end, 254,
        "not after the space, before the character at 256"
    );
}

#[test]
fn an_image_counts_as_an_image_not_as_its_base64() {
    let data = "A".repeat(400_000);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}]}]});
    let b = keys_of(&Endpoint::AnthropicMessages, &body);
    let tokens = b.last().unwrap().tokens;
    assert!(b.len() == 1, "the digest is short: {}", b.len());
    assert!((1_600..1_700).contains(&tokens), "{tokens}");
    let mut other = body.clone();
    other["messages"][0]["content"][0]["source"]["data"] = json!("B".repeat(400_000));
    assert_ne!(
        keys_of(&Endpoint::AnthropicMessages, &other).last(),
        b.last()
    );
}

#[test]
fn a_megabyte_of_text_hashes_in_chunks() {
    let b = chat_text(&"word ".repeat(200_000));
    assert!((3_900..4_600).contains(&b.len()), "{}", b.len());
    assert_eq!(b.last().unwrap().tokens, 250_000);
    assert!(b.windows(2).all(|w| w[0].end < w[1].end));
}

#[test]
fn a_kept_chain_hashes_only_the_new_segments() {
    let body = json!({"model": "m", "tools": [{"type": "function", "function": {"name": "f"}}],
        "messages": [{"role": "user", "content": "a ".repeat(300)},
            {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]});
    let p = prompt(&Endpoint::Chat, &body).unwrap();
    let whole = keys(&p, &tenant());
    let mut chain = Chain::start(&p, &tenant());
    let mut earlier = Vec::new();
    for s in &p.segments[..2] {
        chain.push(s, &mut earlier);
    }
    let kept = chain.clone();
    let mut later = Vec::new();
    let mut resumed = kept;
    for s in &p.segments[2..] {
        resumed.push(s, &mut later);
    }
    assert_eq!(resumed.segments(), p.segments.len());
    earlier.extend(later);
    assert_eq!(earlier, whole);
}

#[test]
fn prefix_keys_print_as_hex() {
    let key = PrefixKey([0xab; 32]);
    assert_eq!(key.to_string(), "ab".repeat(32));
    assert_eq!(key.short(), "ab".repeat(8));
}

fn text_strategy(max: usize) -> impl Strategy<Value = String> {
    let chars = prop::sample::select(vec!['a', 'b', 'c', ' ', '\n', 'é', '日', '"']);
    prop::collection::vec(chars, 0..max).prop_map(String::from_iter)
}

fn chat_of(texts: &[String]) -> Value {
    let messages: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": t}))
        .collect();
    json!({"model": "m", "messages": messages})
}

fn chat_keys(texts: &[String]) -> Vec<Boundary> {
    keys_of(&Endpoint::Chat, &chat_of(texts))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_changed_segment_changes_every_key_from_its_own_on(
        texts in prop::collection::vec(text_strategy(60), 1..6),
        at in any::<prop::sample::Index>(),
        replacement in text_strategy(60),
    ) {
        let i = at.index(texts.len());
        prop_assume!(texts[i] != replacement);
        let mut changed = texts.clone();
        changed[i] = replacement;
        // At most 180 bytes a segment: one chunk each.
        let (old, new) = (chat_keys(&texts), chat_keys(&changed));
        prop_assert_eq!(old.len(), texts.len());
        prop_assert_eq!(new.len(), texts.len());
        for (j, (a, b)) in old.iter().zip(&new).enumerate() {
            if j < i {
                prop_assert_eq!(a, b);
            } else {
                prop_assert_ne!(a.key, b.key);
                prop_assert_ne!(a.model_free, b.model_free);
            }
        }
    }

    #[test]
    fn an_edit_inside_a_long_segment_changes_every_key_that_covers_it(
        texts in prop::collection::vec(text_strategy(700), 1..4),
        at in any::<prop::sample::Index>(),
        position in any::<prop::sample::Index>(),
        insert in prop::sample::select(vec!['x', ' ', 'ü']),
    ) {
        let i = at.index(texts.len());
        let offset = texts[i]
            .char_indices()
            .map(|(o, _)| o)
            .nth(position.index(texts[i].chars().count() + 1))
            .unwrap_or(texts[i].len());
        let mut changed = texts.clone();
        changed[i].insert(offset, insert);
        // The first byte that differs (inserting `x` into `xx` changes only the end).
        let d = texts[i]
            .bytes()
            .zip(changed[i].bytes())
            .take_while(|(a, b)| a == b)
            .count();
        let (old, new) = (chat_keys(&texts), chat_keys(&changed));
        let before = old.iter().take_while(|b| b.segment < i).count();
        prop_assert_eq!(&old[..before], &new[..before]);
        let covers = |b: &Boundary| b.segment > i || (b.segment == i && b.end > d);
        let old_keys: HashSet<_> = old.iter().map(|b| b.key).collect();
        let new_keys: HashSet<_> = new.iter().map(|b| b.key).collect();
        prop_assert!(old.iter().filter(|b| covers(b)).all(|b| !new_keys.contains(&b.key)));
        prop_assert!(new.iter().filter(|b| covers(b)).all(|b| !old_keys.contains(&b.key)));
        prop_assert!(new.iter().any(covers), "the edit is in some chunk");
    }

    #[test]
    fn appending_a_message_keeps_every_earlier_key(
        texts in prop::collection::vec(text_strategy(700), 1..5),
        extra in text_strategy(300),
    ) {
        let old = chat_keys(&texts);
        let mut longer = texts.clone();
        longer.push(extra);
        let new = chat_keys(&longer);
        prop_assert!(new.len() > old.len());
        prop_assert_eq!(&new[..old.len()], &old[..]);
    }
}
