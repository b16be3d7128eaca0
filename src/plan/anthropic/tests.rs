use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::dialect::Endpoint;
use crate::dialect::anthropic::markers::{apply, client_markers};
use crate::prefix::keys;
use crate::prompt::prompt;
use crate::tenant::{Credential, Tenant, TenantSecret};

fn candidate(segment: usize, tokens: u64) -> Candidate {
    Candidate {
        place: Place::Message {
            index: 0,
            part: segment,
        },
        segment,
        tokens,
        cached: false,
        gap: None,
        reuses: 0,
        pace: None,
        stable: true,
    }
}

#[test]
fn the_best_fill_the_free_slots_in_block_order() {
    let cs: Vec<Candidate> = (0..6)
        .map(|i| candidate(i, 2000 * (i as u64 + 1)))
        .collect();
    let placed = place(&cs, &ClientMarkers::default(), 1024, 9, None);
    assert_eq!(placed.len(), 4);
    let parts: Vec<usize> = placed
        .iter()
        .map(|(p, _)| match p {
            Place::Message { part, .. } => *part,
            _ => usize::MAX,
        })
        .collect();
    assert_eq!(parts, [2, 3, 4, 5], "the longest prefixes, in order");
    // The client's two markers leave two slots; a top-level one takes another.
    let client = ClientMarkers {
        blocks: vec![
            (Place::Tools(0), Ttl::FiveMinutes),
            (Place::System(0), Ttl::FiveMinutes),
        ],
        top_level: Some(Ttl::FiveMinutes),
    };
    assert_eq!(place(&cs, &client, 1024, 9, None).len(), 1);
}

#[test]
fn below_the_minimum_or_unlikely_to_return_is_not_written() {
    let mut small = candidate(0, 500);
    assert!(place(&[small], &ClientMarkers::default(), 1024, 5, None).is_empty());
    small.tokens = 5000;
    // Seen two hours ago: neither TTL would survive until it comes back.
    small.gap = Some(Duration::from_secs(7200));
    assert!(place(&[small], &ClientMarkers::default(), 1024, 5, None).is_empty());
    // New and not stable, in a tenant with nothing cached now: wait for its second request.
    let fresh = Candidate {
        stable: false,
        ..candidate(1, 5000)
    };
    assert!(place(&[fresh], &ClientMarkers::default(), 1024, 5, None).is_empty());
    // …unless the request extends a prefix the provider caches now.
    let cached = Candidate {
        cached: true,
        gap: Some(Duration::from_secs(30)),
        ..candidate(0, 3000)
    };
    assert_eq!(
        place(&[cached, fresh], &ClientMarkers::default(), 1024, 5, None).len(),
        2
    );
}

#[test]
fn ttl_follows_the_reuse_gap() {
    let seen = |gap: u64, reuses: u64| Candidate {
        gap: Some(Duration::from_secs(gap)),
        reuses,
        ..candidate(0, 5000)
    };
    let ttl_of = |c: Candidate| place(&[c], &ClientMarkers::default(), 1024, 5, None)[0].1;
    assert_eq!(ttl_of(seen(60, 1)), Ttl::FiveMinutes);
    assert_eq!(ttl_of(seen(1200, 2)), Ttl::OneHour, "back every 20 minutes");
    // A new prefix in a conversation that comes back every 10 minutes.
    let paced = Candidate {
        pace: Some(Duration::from_secs(600)),
        ..candidate(0, 5000)
    };
    assert_eq!(ttl_of(paced), Ttl::OneHour);
}

/// Five blocks: a tool, a system block and three message blocks, each long enough to cache.
fn body() -> Value {
    let long = |w: &str| format!("{w} ").repeat(1200);
    json!({"model": "claude-sonnet-4-6", "max_tokens": 10,
        "tools": [{"name": "t", "description": long("tool"), "input_schema": {"type": "object"}}],
        "system": [{"type": "text", "text": long("system")}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": long("alpha")}, {"type": "text", "text": long("beta")},
            {"type": "text", "text": "What now?"}]}]})
}

/// Every layout of client markers (none, 5m or 1h on each block, and the top-level marker) that
/// Anthropic accepts stays accepted once cachet adds its own, with every candidate believed
/// cached and due a 1h TTL (the hardest case for the ordering rule).
#[test]
fn cachet_never_turns_a_valid_request_into_a_400() {
    let places = [
        Place::Tools(0),
        Place::System(0),
        Place::Message { index: 0, part: 0 },
        Place::Message { index: 0, part: 1 },
        Place::Message { index: 0, part: 2 },
    ];
    let marker = |t: u32| match t {
        1 => Some(json!({"type": "ephemeral"})),
        2 => Some(json!({"type": "ephemeral", "ttl": "1h"})),
        _ => None,
    };
    let tenant = Tenant::of(
        &TenantSecret::from_bytes([1; 32]),
        "anthropic",
        &Credential::default(),
    );
    let (mut valid, mut added) = (0, 0);
    for layout in 0..3u32.pow(6) {
        let mut request = body();
        let digit = |i: u32| layout / 3u32.pow(i) % 3;
        for (i, place) in places.iter().enumerate() {
            if let Some(m) = marker(digit(i as u32)) {
                let block = match *place {
                    Place::Tools(_) => &mut request["tools"][0],
                    Place::System(_) => &mut request["system"][0],
                    Place::Message { part, .. } => &mut request["messages"][0]["content"][part],
                };
                block["cache_control"] = m;
            }
        }
        if let Some(m) = marker(digit(5)) {
            request["cache_control"] = m;
        }
        let path = "/v1/messages";
        let sim_rules = |body: &Value| {
            let rendered = crate::sim::render_request("anthropic", path, body);
            let auto =
                body.get("cache_control")
                    .map(|c| match c.get("ttl").and_then(Value::as_str) {
                        Some("1h") => crate::sim::prompt::Ttl::OneHour,
                        _ => crate::sim::prompt::Ttl::FiveMinutes,
                    });
            crate::sim::rules::anthropic::breakpoints(&rendered, auto)
        };
        if sim_rules(&request).is_err() {
            continue; // the client's own layout is already a 400
        }
        valid += 1;
        let p = prompt(&Endpoint::AnthropicMessages, &request).unwrap();
        let boundaries = keys(&p, &tenant);
        let all_cached = |_: &PrefixKey| Known {
            cached: true,
            gap: Some(Duration::from_secs(900)),
            reuses: 5,
        };
        let cs = candidates(
            &p,
            &boundaries,
            boundaries.last().map(|b| b.key),
            all_cached,
        );
        let client = client_markers(&request);
        let last = p.segments.len() - 1;
        let placed = place(&cs, &client, 1024, last, p.segments.last().map(|s| s.place));
        drop(p);
        if apply(&mut request, &placed) {
            added += 1;
        }
        assert!(sim_rules(&request).is_ok(), "layout {layout}: {request}");
    }
    assert!(
        valid > 100 && added > 50,
        "{valid} valid layouts, {added} with markers added"
    );
}
