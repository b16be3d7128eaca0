use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::tenant::{Credential, TenantSecret};

fn tenant(upstream: &str) -> Tenant {
    Tenant::of(
        &TenantSecret::from_bytes([3; 32]),
        upstream,
        &Credential::default(),
    )
}

fn marks(ids: &[(u8, u64)]) -> Vec<Mark> {
    ids.iter()
        .map(|&(id, tokens)| Mark {
            key: PrefixKey([id; 32]),
            tokens,
        })
        .collect()
}

fn registry() -> (Arc<Clock>, MemoryRegistry) {
    let clock = Arc::new(Clock::manual(
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    (clock.clone(), MemoryRegistry::new(clock, 1 << 20))
}

fn automatic(input_total: u64, cache_read: u64) -> Report {
    Report {
        input_total,
        cache_read,
        cache_write: None,
        retention: Duration::from_secs(300),
    }
}

#[test]
fn first_sight_then_reuse_with_times_and_counts() {
    let (clock, reg) = registry();
    let t = tenant("openai");
    let m = marks(&[(1, 1000), (2, 1200)]);
    let out = reg.observe(&t, &m, automatic(1200, 0));
    assert_eq!(
        out,
        Outcome {
            predicted: 0,
            actual: 0,
            dropped: 0
        }
    );
    let first = reg.get(&t, &m[0].key).unwrap();
    assert_eq!((first.tokens, first.reuses), (1000, 0));
    assert!(
        first.believed_cached(clock.now()),
        "an automatic cache keeps what it saw"
    );

    clock.advance(Duration::from_secs(60));
    let next = marks(&[(1, 1000), (3, 1100)]);
    assert_eq!(reg.longest_known(&t, &next).map(|(i, _)| i), Some(0));
    let out = reg.observe(&t, &next, automatic(1100, 1000));
    assert_eq!(out.predicted, 1000);
    assert_eq!(out.actual, 1000);
    let again = reg.get(&t, &m[0].key).unwrap();
    assert_eq!(again.reuses, 1);
    assert_eq!(again.first_seen, first.first_seen);
    assert_eq!(again.last_seen, clock.now());
}

#[test]
fn tenants_never_share_prefixes() {
    let (_, reg) = registry();
    let m = marks(&[(1, 1000)]);
    reg.observe(&tenant("openai"), &m, automatic(1000, 0));
    assert!(reg.longest_known(&tenant("anthropic"), &m).is_none());
    assert!(reg.longest_known(&tenant("openai"), &m).is_some());
}

#[test]
fn beliefs_expire_with_the_providers_retention() {
    let (clock, reg) = registry();
    let t = tenant("openai");
    let m = marks(&[(1, 1000)]);
    reg.observe(&t, &m, automatic(1000, 0));
    clock.advance(Duration::from_secs(301));
    assert!(!reg.get(&t, &m[0].key).unwrap().believed_cached(clock.now()));
    assert_eq!(reg.observe(&t, &m, automatic(1000, 0)).predicted, 0);
}

#[test]
fn a_belief_the_provider_contradicts_is_dropped() {
    let (clock, reg) = registry();
    let t = tenant("anthropic");
    let m = marks(&[(1, 1000), (2, 2000), (3, 2100)]);
    // Anthropic wrote through the second mark only.
    let wrote = Report {
        input_total: 2100,
        cache_read: 0,
        cache_write: Some(2000),
        retention: Duration::from_secs(300),
    };
    reg.observe(&t, &m, wrote);
    assert!(reg.get(&t, &m[1].key).unwrap().believed_cached(clock.now()));
    assert!(
        !reg.get(&t, &m[2].key).unwrap().believed_cached(clock.now()),
        "not written"
    );
    clock.advance(Duration::from_secs(10));
    // The provider then reads only 1000: the belief in the 2000-token prefix was wrong.
    let read = Report {
        input_total: 2100,
        cache_read: 1000,
        cache_write: Some(0),
        retention: Duration::from_secs(300),
    };
    let out = reg.observe(&t, &m, read);
    assert_eq!(out.predicted, 2000);
    assert_eq!(out.actual, 1000);
    assert_eq!(out.dropped, 1);
    assert!(!reg.get(&t, &m[1].key).unwrap().believed_cached(clock.now()));
    assert!(reg.get(&t, &m[0].key).unwrap().believed_cached(clock.now()));
}

#[test]
fn estimates_and_reported_tokens_are_converted_by_the_requests_totals() {
    let (clock, reg) = registry();
    let t = tenant("anthropic");
    // cachet estimated 2000 tokens where the provider counted 1000: a write of 500 reported
    // tokens covers 1000 estimated ones.
    let m = marks(&[(1, 1000), (2, 2000)]);
    let report = Report {
        input_total: 1000,
        cache_read: 0,
        cache_write: Some(500),
        retention: Duration::from_secs(300),
    };
    reg.observe(&t, &m, report);
    assert!(reg.get(&t, &m[0].key).unwrap().believed_cached(clock.now()));
    assert!(!reg.get(&t, &m[1].key).unwrap().believed_cached(clock.now()));
    // Predictions come back in the provider's tokens.
    let out = reg.observe(
        &t,
        &m,
        Report {
            cache_read: 500,
            cache_write: Some(0),
            ..report
        },
    );
    assert_eq!(out.predicted, 500);
}

#[test]
fn the_memory_bound_holds() {
    let clock = Arc::new(Clock::manual(UNIX_EPOCH));
    let reg = MemoryRegistry::new(clock, 100 * u64::from(ENTRY_BYTES));
    let t = tenant("openai");
    for i in 0..1000u32 {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&i.to_le_bytes());
        reg.observe(
            &t,
            &[Mark {
                key: PrefixKey(key),
                tokens: 10,
            }],
            automatic(10, 0),
        );
    }
    reg.entries.run_pending_tasks();
    assert!(
        reg.entries.entry_count() <= 100,
        "{}",
        reg.entries.entry_count()
    );
}

#[test]
fn content_caches_are_per_tenant_expire_and_are_forgotten_by_name() {
    let caches = ContentCaches::new();
    let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let (a, b) = (tenant("a"), tenant("b"));
    let key = PrefixKey([9; 32]);
    let held = |name: &str, secs| Held {
        live: Live {
            name: name.into(),
            expires: t0 + Duration::from_secs(secs),
        },
        tokens: 4000,
        created: t0,
        owner: Arc::new(Owner {
            upstream: "gemini".into(),
            provider: "gemini",
            model: "gemini-2.5-flash".into(),
            team: None,
            request_id: format!("create-{name}"),
        }),
    };
    assert!(
        caches
            .insert(&a, &key, held("cachedContents/x", 600))
            .is_none()
    );
    assert_eq!(
        caches.get(&a, &key, t0).map(|l| l.name),
        Some("cachedContents/x".into())
    );
    assert!(caches.get(&b, &key, t0).is_none(), "never another tenant's");
    assert!(
        caches
            .get(&a, &key, t0 + Duration::from_secs(600))
            .is_none(),
        "expired"
    );
    // A replaced cache has ended: it comes back to be billed.
    let replaced = caches.insert(&a, &key, held("cachedContents/y", 600));
    assert_eq!(
        replaced.map(|h| h.live.name),
        Some("cachedContents/x".into())
    );
    // A stale name does not drop the cache that replaced it.
    assert!(caches.forget(&a, &key, "cachedContents/x").is_none());
    assert!(caches.get(&a, &key, t0).is_some());
    caches.extend(&a, &key, "cachedContents/y", t0 + Duration::from_secs(900));
    assert!(
        caches
            .get(&a, &key, t0 + Duration::from_secs(700))
            .is_some(),
        "extended"
    );
    let gone = caches.forget(&a, &key, "cachedContents/y");
    assert_eq!(gone.map(|h| h.tokens), Some(4000));
    assert!(caches.get(&a, &key, t0).is_none());
    // Expired caches stay until their storage is taken for billing.
    caches.insert(&b, &key, held("cachedContents/z", 60));
    assert!(
        caches
            .take_ended(Some(t0 + Duration::from_secs(59)))
            .is_empty()
    );
    let ended = caches.take_ended(Some(t0 + Duration::from_secs(60)));
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].0, b);
    assert!(caches.take_ended(None).is_empty());
    caches.refuse(&a, &key, t0 + Duration::from_secs(60));
    assert!(caches.is_refused(&a, &key, t0));
    assert!(!caches.is_refused(&b, &key, t0));
    assert!(!caches.is_refused(&a, &key, t0 + Duration::from_secs(60)));
}
