use std::time::{Duration, SystemTime};

use serde_json::json;

use super::*;
use crate::dialect::Endpoint;
use crate::prefix::keys;
use crate::prompt::prompt;
use crate::tenant::{Credential, Tenant, TenantSecret};

/// Gemini 2.5 Flash: $0.30 input, $0.03 read, $1.00 per 1M token-hours, in pico-USD.
const FLASH: Prices = Prices {
    input: 300_000.0,
    read: 30_000.0,
    storage: 1_000_000.0,
};

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn known(first: u64, reuses: u64) -> Known {
    Known {
        tokens: 0,
        first_seen: t(first),
        last_seen: t(first),
        reuses,
        cached_until: None,
    }
}

fn cut(contents: usize, tokens: u64) -> Cut {
    let mut bytes = [0u8; 32];
    bytes[0] = contents as u8;
    bytes[1] = (tokens % 251) as u8;
    Cut {
        contents,
        key: PrefixKey(bytes),
        tokens,
    }
}

fn live(name: &str, expires: SystemTime) -> Option<Live> {
    Some(Live {
        name: name.into(),
        expires,
    })
}

#[test]
fn cuts_are_content_ends_but_the_last_and_the_system_end() {
    let doc = "d".repeat(8000);
    let body = json!({
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "contents": [
            {"role": "user", "parts": [{"text": doc}, {"text": "more"}]},
            {"role": "model", "parts": [{"text": "ok"}]},
            {"role": "user", "parts": [{"text": "question?"}]},
        ],
    });
    let endpoint = Endpoint::GeminiGenerate {
        model: "gemini-2.5-flash".into(),
        stream: false,
    };
    let p = prompt(&endpoint, &body).expect("a prompt");
    let secret = TenantSecret::from_bytes([1; 32]);
    let tenant = Tenant::of(&secret, "gemini", &Credential::default());
    let b = keys(&p, &tenant);
    let cs = cuts(&p, &b);
    let contents: Vec<usize> = cs.iter().map(|c| c.contents).collect();
    assert_eq!(contents, [2, 1, 0], "longest first; never the last Content");
    assert!(cs.windows(2).all(|w| w[0].tokens > w[1].tokens));
    // The first Content's cut is after its second part, not inside it.
    let first_end = b
        .iter()
        .filter(|b| b.segment_end)
        .find(|b| p.segments[b.segment].place == Place::Message { index: 0, part: 1 })
        .expect("end of the first Content");
    assert_eq!(cs[1].key, first_end.key);
    // A request with one Content has only the system cut.
    let single = json!({"systemInstruction": {"parts": [{"text": "x"}]},
        "contents": [{"parts": [{"text": "q"}]}]});
    let p = prompt(&endpoint, &single).expect("a prompt");
    let cs = cuts(&p, &keys(&p, &tenant));
    assert_eq!(cs.iter().map(|c| c.contents).collect::<Vec<_>>(), [0]);
}

#[test]
fn a_prefix_seen_once_is_never_cached() {
    let c = cut(1, 10_000);
    let facts = Facts::default();
    assert_eq!(decide(&[(c, facts)], FLASH, 2048, t(0)), Decision::Nothing);
}

/// Flash's break-even hold: 0.27 / 1.00 of an hour.
const FLASH_TTL: Duration = Duration::from_secs(972);

#[test]
fn the_ttl_is_the_break_even_hold() {
    assert_eq!(ttl(FLASH), FLASH_TTL);
    let pro = Prices {
        input: 1_250_000.0,
        read: 125_000.0,
        storage: 4_500_000.0,
    };
    assert_eq!(ttl(pro), Duration::from_secs(900));
    let free_storage = Prices {
        storage: 0.0,
        ..FLASH
    };
    assert_eq!(ttl(free_storage), Duration::from_secs(3600));
}

#[test]
fn a_prefix_back_often_and_soon_is_cached_and_one_back_late_is_not() {
    let c = cut(1, 10_000);
    let facts = |first, reuses| Facts {
        known: Some(known(first, reuses)),
        live: None,
    };
    let now = t(3600);
    // Sent twice over the last 4 minutes: two more uses pay for the create, the reads and
    // the storage (saved 2 × 2700, spent 300 + 10k × (240 + 972) s / 3600 s).
    assert_eq!(
        decide(&[(c, facts(3600 - 240, 1))], FLASH, 2048, now),
        Decision::Create {
            cut: c,
            ttl: FLASH_TTL
        }
    );
    // Sent once before: one more use does not pay for the hold after it.
    assert_eq!(
        decide(&[(c, facts(3600 - 120, 0))], FLASH, 2048, now),
        Decision::Nothing
    );
    // Twice, but 30 minutes apart: holding it that long costs more than the reads save.
    assert_eq!(
        decide(&[(c, facts(3600 - 3600, 1))], FLASH, 2048, now),
        Decision::Nothing
    );
    // The system instruction and tools alone, seen once before a minute ago: shared by every
    // conversation, they are cached from the second sight.
    let system = cut(0, 3_000);
    assert!(matches!(
        decide(&[(system, facts(3600 - 60, 0))], FLASH, 2048, now),
        Decision::Create { .. }
    ));
    // Below the model's minimum: nothing, however often it comes back.
    let small = cut(1, 1000);
    assert_eq!(
        decide(&[(small, facts(3590, 9))], FLASH, 2048, now),
        Decision::Nothing
    );
}

#[test]
fn the_rule_follows_the_module_docs_formula() {
    // P = 10k, S = 0, n = 2, g = 2 min: saved 2 × 10k × 0.27 = 5400;
    // spent 10k × 0.03 + 10k × 1.0 × (240 + 972) / 3600 = 300 + 3367 = 3667.
    assert!(worth_creating(
        10_000,
        0,
        2,
        Duration::from_secs(120),
        FLASH
    ));
    // n = 1: saved 2700 < 300 + 10k × (120 + 972) / 3600 = 3333.
    assert!(!worth_creating(
        10_000,
        0,
        1,
        Duration::from_secs(120),
        FLASH
    ));
    // g = 10 min: storage 10k × (1200 + 972) / 3600 = 6033, + 300 > 5400.
    assert!(!worth_creating(
        10_000,
        0,
        2,
        Duration::from_secs(600),
        FLASH
    ));
    // Extending a live 3k cache by 1k more does not pay for re-billing the 3k, even often.
    assert!(!worth_creating(
        4_000,
        3_000,
        3,
        Duration::from_secs(30),
        FLASH
    ));
    // Growing it past three times its size does, when it comes back as often.
    assert!(worth_creating(
        10_000,
        3_000,
        3,
        Duration::from_secs(30),
        FLASH
    ));
    assert!(!worth_creating(
        10_000,
        3_000,
        1,
        Duration::from_secs(30),
        FLASH
    ));
}

#[test]
fn a_live_cache_is_referenced_and_extended_when_half_spent() {
    let c = cut(1, 10_000);
    let now = t(3600);
    // Sent 3 times over the last 3 minutes.
    let k = known(3600 - 180, 2);
    let fresh = Facts {
        known: Some(k),
        live: live("cachedContents/a", now + Duration::from_secs(600)),
    };
    assert_eq!(
        decide(&[(c, fresh)], FLASH, 2048, now),
        Decision::Reference {
            cut: c,
            name: "cachedContents/a".into(),
            extend: None
        }
    );
    let spent = Facts {
        known: Some(k),
        live: live("cachedContents/a", now + Duration::from_secs(400)),
    };
    assert_eq!(
        decide(&[(c, spent)], FLASH, 2048, now),
        Decision::Reference {
            cut: c,
            name: "cachedContents/a".into(),
            extend: Some(FLASH_TTL)
        }
    );
    // About to expire: not referenced (the request might arrive too late), re-created.
    let ending = Facts {
        known: Some(k),
        live: live("cachedContents/a", now + Duration::from_secs(2)),
    };
    assert!(matches!(
        decide(&[(c, ending)], FLASH, 2048, now),
        Decision::Create { .. }
    ));
}

#[test]
fn a_longer_prefix_replaces_a_shorter_cache_only_when_it_pays() {
    let now = t(3600);
    let system = cut(0, 3_000);
    let system_live = Facts {
        known: Some(known(0, 40)),
        live: live("cachedContents/sys", now + Duration::from_secs(900)),
    };
    // One more turn of history on top: read the system cache.
    let turn = cut(3, 3_400);
    let plan = decide(
        &[
            (
                turn,
                Facts {
                    known: Some(known(3570, 0)),
                    live: None,
                },
            ),
            (system, system_live.clone()),
        ],
        FLASH,
        2048,
        now,
    );
    assert_eq!(
        plan,
        Decision::Reference {
            cut: system,
            name: "cachedContents/sys".into(),
            extend: None
        }
    );
    // A history grown past three times the system prompt, at a brisk pace: a cache of it pays.
    let long = cut(9, 10_000);
    let plan = decide(
        &[
            (
                long,
                Facts {
                    known: Some(known(3600 - 90, 2)),
                    live: None,
                },
            ),
            (system, system_live),
        ],
        FLASH,
        2048,
        now,
    );
    assert!(matches!(plan, Decision::Create { cut, .. } if cut == long));
}
