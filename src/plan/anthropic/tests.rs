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
    // New and not stable: wait for its second request, even beside a prefix cached now (a new
    // set of retrieved chunks after a cached system prompt).
    let fresh = Candidate {
        stable: false,
        ..candidate(1, 5000)
    };
    let cached = Candidate {
        cached: true,
        gap: Some(Duration::from_secs(30)),
        ..candidate(0, 3000)
    };
    assert!(place(&[fresh], &ClientMarkers::default(), 1024, 5, None).is_empty());
    assert_eq!(
        place(&[cached, fresh], &ClientMarkers::default(), 1024, 5, None).len(),
        1
    );
    // …unless the request continues a live conversation: its new turn is the next one's history.
    let turn = Candidate {
        pace: Some(Pace { gaps: 1, slow: 0 }),
        ..fresh
    };
    assert_eq!(
        place(&[cached, turn], &ClientMarkers::default(), 1024, 5, None).len(),
        2
    );
}

#[test]
fn a_new_system_prompt_is_written_only_by_a_tenants_first_request() {
    let tools = Candidate {
        gap: Some(Duration::from_secs(60)),
        cached: true,
        ..candidate(0, 3000)
    };
    // A system prompt that changes with every request (a timestamp) after known tools.
    let system = candidate(1, 5000);
    let placed = place(&[tools, system], &ClientMarkers::default(), 1024, 5, None);
    assert_eq!(placed.len(), 1, "{placed:?}");
    // The very first request of a tenant writes both.
    let cold_tools = candidate(0, 3000);
    let placed = place(
        &[cold_tools, system],
        &ClientMarkers::default(),
        1024,
        5,
        None,
    );
    assert_eq!(placed.len(), 2);
    // Seen again within the hour, a system prompt is written for the hour.
    let again = Candidate {
        gap: Some(Duration::from_secs(350)),
        ..system
    };
    let placed = place(&[again], &ClientMarkers::default(), 1024, 5, None);
    assert_eq!(placed, [(again.place, Ttl::OneHour)]);
}

#[test]
fn a_conversation_turn_is_written_for_the_hour_when_its_user_is_slow() {
    let system = Candidate {
        cached: true,
        gap: Some(Duration::from_secs(20)),
        ..candidate(0, 4000)
    };
    let turn = |slow: u32, tokens: u64| Candidate {
        stable: false,
        pace: Some(Pace { gaps: 3, slow }),
        ..candidate(1, tokens)
    };
    let placed = |c: Candidate| place(&[system, c], &ClientMarkers::default(), 1024, 5, None);
    // A chat whose user took more than 5 minutes once in three turns: 1h for the few new
    // tokens; and the cached system prompt before it is raised to 1h (a read, free).
    assert_eq!(
        placed(turn(1, 4300)),
        [
            (system.place, Ttl::OneHour),
            (turn(1, 4300).place, Ttl::OneHour)
        ]
    );
    // Brisk agent steps: 5m.
    assert!(
        placed(turn(0, 4300))
            .iter()
            .all(|p| p.1 == Ttl::FiveMinutes)
    );
    // One pause in three, but a long history written now (an agent resuming after steps sent
    // elsewhere): 5m, the 1h premium on it would outweigh the risk.
    assert!(
        placed(turn(1, 60_000))
            .iter()
            .all(|p| p.1 == Ttl::FiveMinutes)
    );
}

#[test]
fn a_client_five_minute_marker_still_caps_ours_after_it() {
    let client = ClientMarkers {
        blocks: vec![(Place::System(0), Ttl::FiveMinutes)],
        top_level: None,
    };
    let turn = Candidate {
        stable: false,
        pace: Some(Pace { gaps: 1, slow: 1 }),
        ..candidate(1, 5000)
    };
    let placed = place(&[turn], &client, 1024, 5, None);
    assert_eq!(placed, [(turn.place, Ttl::FiveMinutes)]);
    // Before a client's 1h marker, ours is raised to 1h rather than dropped.
    let client = ClientMarkers {
        blocks: vec![(Place::Message { index: 0, part: 4 }, Ttl::OneHour)],
        top_level: None,
    };
    let early = Candidate {
        gap: Some(Duration::from_secs(30)),
        ..candidate(1, 5000)
    };
    let placed = place(&[early], &client, 1024, 5, None);
    assert_eq!(placed, [(early.place, Ttl::OneHour)]);
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
        pace: Some(Pace { gaps: 2, slow: 2 }),
        stable: false,
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
            age: Some(Duration::from_secs(1800)),
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

/// A chat's third turn: the message ends of the first two turns tell its pace (each first seen
/// by the turn that sent it), the time since the second turn the current gap.
#[test]
fn a_conversations_pace_comes_from_its_turns_first_sightings() {
    let text = |w: &str| format!("{w} ").repeat(300);
    let request = json!({"model": "claude-sonnet-4-6", "max_tokens": 10,
        "system": text("system"),
        "messages": [
            {"role": "user", "content": text("u1")}, {"role": "assistant", "content": text("a1")},
            {"role": "user", "content": text("u2")}, {"role": "assistant", "content": text("a2")},
            {"role": "user", "content": text("u3")}]});
    let tenant = Tenant::of(
        &TenantSecret::from_bytes([1; 32]),
        "anthropic",
        &Credential::default(),
    );
    let p = prompt(&Endpoint::AnthropicMessages, &request).unwrap();
    let boundaries = keys(&p, &tenant);
    let segment_of = |key: &PrefixKey| {
        boundaries
            .iter()
            .find(|b| b.segment_end && b.key == *key)
            .map(|b| b.segment)
    };
    let secs = |s: u64| Some(Duration::from_secs(s));
    // Turn 1 (u1) 900 s ago, turn 2 (a1, u2) 400 s ago.
    let known = |key: &PrefixKey| match segment_of(key) {
        Some(1) => Known {
            gap: secs(400),
            age: secs(900),
            reuses: 1,
            cached: false,
        },
        Some(2 | 3) => Known {
            gap: secs(400),
            age: secs(400),
            reuses: 0,
            cached: false,
        },
        _ => Known::default(),
    };
    let cs = candidates(&p, &boundaries, None, known);
    let last = cs.last().unwrap();
    assert_eq!(last.pace, Some(Pace { gaps: 2, slow: 2 }));
    let placed = place(&cs, &ClientMarkers::default(), 1024, 5, None);
    assert!(placed.contains(&(last.place, Ttl::OneHour)), "{placed:?}");
    // Gone for more than an hour, it is no longer a live conversation.
    let stale = |key: &PrefixKey| Known {
        gap: secs(4000),
        ..known(key)
    };
    assert!(
        candidates(&p, &boundaries, None, stale)
            .iter()
            .all(|c| c.pace.is_none())
    );
}
