use proptest::prelude::*;

use super::*;

type Events = Vec<(Option<String>, Vec<u8>)>;

fn collect(chunks: &[&[u8]]) -> (Events, Vec<u8>) {
    let mut d = SseDecoder::new(1 << 20);
    let mut events = Vec::new();
    let mut raw = Vec::new();
    for c in chunks {
        d.feed(c, |e| {
            events.push((e.event.map(str::to_owned), e.data.to_vec()));
            raw.extend_from_slice(e.raw);
        });
    }
    raw.extend(d.finish(|e| events.push((e.event.map(str::to_owned), e.data.to_vec()))));
    (events, raw)
}

#[test]
fn events_names_multiline_data_comments_and_crlf() {
    let body = b": keep-alive\n\nevent: message_start\ndata: {\"a\":1}\n\ndata: x\ndata: y\r\n\r\ndata:[DONE]\n\n";
    let (events, raw) = collect(&[body]);
    assert_eq!(
        events,
        vec![
            (None, Vec::new()),
            (Some("message_start".into()), b"{\"a\":1}".to_vec()),
            (None, b"x\ny".to_vec()),
            (None, b"[DONE]".to_vec()),
        ]
    );
    // Every byte belongs to exactly one block, comment blocks included.
    assert_eq!(raw, body.to_vec());
}

#[test]
fn an_unterminated_last_event_is_reported_at_finish() {
    let (events, raw) = collect(&[b"data: 1\n\ndata: 2"]);
    assert_eq!(events.len(), 2);
    assert_eq!(raw, b"data: 1\n\ndata: 2".to_vec());
}

#[test]
fn a_runaway_event_is_abandoned_not_buffered() {
    let mut d = SseDecoder::new(16);
    d.feed(&[b'a'; 64], |_| panic!("no event"));
    assert!(d.overflowed);
}

const GEMINI_ARRAY: &[u8] = b"[{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a ]}\\\" [\"}]}}],\n\"usageMetadata\": {\"promptTokenCount\": 3}}\n,\r\n{\"usageMetadata\": {\"promptTokenCount\": 3, \"candidatesTokenCount\": 2}}\n]";

#[test]
fn json_array_elements_survive_brackets_inside_strings() {
    let mut s = JsonArraySplitter::new(1 << 20);
    let mut out = Vec::new();
    s.feed(GEMINI_ARRAY, |e| {
        out.push(serde_json::from_slice::<serde_json::Value>(e).unwrap())
    });
    assert_eq!(out.len(), 2);
    assert_eq!(out[1]["usageMetadata"]["candidatesTokenCount"], 2);
    assert_eq!(
        out[0]["candidates"][0]["content"]["parts"][0]["text"],
        "a ]}\" ["
    );
}

fn split_at(body: &[u8], mut cuts: Vec<usize>) -> Vec<&[u8]> {
    cuts.iter_mut().for_each(|c| *c %= body.len() + 1);
    cuts.sort_unstable();
    let mut parts = Vec::new();
    let mut from = 0;
    for c in cuts {
        parts.push(&body[from..c]);
        from = c;
    }
    parts.push(&body[from..]);
    parts
}

proptest! {
    #[test]
    fn sse_split_anywhere_gives_the_same_events_and_bytes(cuts in proptest::collection::vec(0usize..10_000, 0..12)) {
        let body: &[u8] = b"event: a\ndata: {\"k\":\"v\\n\"}\n\n: c\n\nevent: b\r\ndata: 1\r\ndata: 2\r\n\r\ndata: [DONE]\n\n";
        let whole = collect(&[body]);
        let parts = split_at(body, cuts);
        prop_assert_eq!(collect(&parts), whole);
    }

    #[test]
    fn json_array_split_anywhere_gives_the_same_elements(cuts in proptest::collection::vec(0usize..10_000, 0..12)) {
        let mut whole = Vec::new();
        JsonArraySplitter::new(1 << 20).feed(GEMINI_ARRAY, |e| whole.push(e.to_vec()));
        let mut s = JsonArraySplitter::new(1 << 20);
        let mut got = Vec::new();
        for p in split_at(GEMINI_ARRAY, cuts) {
            s.feed(p, |e| got.push(e.to_vec()));
        }
        prop_assert_eq!(got, whole);
    }
}
