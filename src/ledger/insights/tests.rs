use super::*;
use crate::ledger::LedgerRecord;
use crate::ledger::tests::{postgres_store, record};
use crate::usage::Usage;

const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60 * 1000;

fn activity(prefix: &str, at_ms: i64, read: i64, w5: i64, w1h: i64) -> Activity {
    Activity {
        tenant: "t".into(),
        model: "claude-sonnet-4-6".into(),
        prefix_key: Some(prefix.into()),
        at_ms,
        cache_read: read,
        write_5m: w5,
        write_1h: w1h,
    }
}

fn sonnet(_: &str) -> Option<Rates> {
    // $3 in, $0.30 read, $3.75 5m write, $6 1h write per MTok, in pico-USD per token.
    Some(Rates {
        input: Some(3_000_000),
        output: Some(15_000_000),
        cache_read: Some(300_000),
        cache_write_5m: Some(3_750_000),
        cache_write_1h: Some(6_000_000),
        storage: None,
    })
}

#[test]
fn a_write_is_used_by_a_later_read_that_covers_it_within_its_ttl() {
    let rows = [
        // a: 2000 written, read 2000 at +4 min: used.
        activity("a", T0, 0, 2000, 0),
        activity("a", T0 + 4 * MIN, 2000, 0, 0),
        // b: 3000 written, read only 1000 (a shorter prefix) at +1 min, then nothing: wasted.
        activity("b", T0 + 10 * MIN, 0, 3000, 0),
        activity("x", T0 + 11 * MIN, 1000, 0, 0),
        // c: written at 1h, read 30 minutes later: used.
        activity("c", T0 + 20 * MIN, 500, 2500, 0).clone(),
        activity("c2", T0 + 21 * MIN, 0, 0, 4000),
        activity("c2", T0 + 51 * MIN, 4000, 0, 0),
    ];
    let followed = follow(&rows, T0 + 24 * 60 * MIN, &|_| None);
    assert_eq!(followed.wasted.get("a"), None);
    assert_eq!(followed.wasted.get("b"), Some(&1));
    // c's 5m write (ending at 3000) was never read at 3000 or more within 5 minutes.
    assert_eq!(followed.wasted.get("c"), Some(&1));
    assert_eq!(followed.wasted.get("c2"), None);
}

#[test]
fn a_write_whose_ttl_outlasts_the_range_is_not_yet_wasted() {
    let rows = [activity("a", T0, 0, 2000, 0)];
    assert!(follow(&rows, T0 + 2 * MIN, &|_| None).wasted.is_empty());
    assert_eq!(
        follow(&rows, T0 + 6 * MIN, &|_| None).wasted.get("a"),
        Some(&1)
    );
}

#[test]
fn rewrites_five_to_sixty_minutes_apart_are_priced_as_a_one_hour_ttl_saving() {
    // The same 10,000-token prefix written at 5m three times, 20 minutes apart.
    let rows = [
        activity("doc", T0, 0, 10_000, 0),
        activity("doc", T0 + 20 * MIN, 0, 10_000, 0),
        activity("doc", T0 + 40 * MIN, 0, 10_000, 0),
        // Rewritten after 2 hours: a 1h TTL would not have helped.
        activity("doc", T0 + 160 * MIN, 0, 10_000, 0),
    ];
    let followed = follow(&rows, T0 + 24 * 60 * MIN, &sonnet);
    let (rewrites, saving) = followed.one_hour[&("doc".to_owned(), "claude-sonnet-4-6".to_owned())];
    assert_eq!(rewrites, 2);
    // Each re-write would have been a read: 10,000 × (3.75 − 0.30) $/MTok = $0.0345, twice;
    // the chain's first write would have paid the 1h premium once, 10,000 × (6 − 3.75) =
    // $0.0225: $0.0465 = 46,500,000 nano.
    assert_eq!(saving, 46_500_000);
    // Without a 1h price nothing is guessed.
    let no_1h = |m: &str| {
        sonnet(m).map(|r| Rates {
            cache_write_1h: None,
            ..r
        })
    };
    assert!(
        follow(&rows, T0 + 24 * 60 * MIN, &no_1h)
            .one_hour
            .is_empty()
    );
}

fn at(mut r: LedgerRecord, at_ms: i64) -> LedgerRecord {
    r.at_ms = at_ms;
    r
}

/// A ledger of a few calls: two misses of one reason and one of another, a prefix written and
/// read, one written and wasted, a prompt just under the minimum, and two instances.
fn records() -> Vec<LedgerRecord> {
    let miss = |id: &str, t: i64, reason: &'static str, segment: &str, tokens: i64| {
        let mut r = at(record(id, "client"), t);
        r.miss_reason = Some(reason);
        r.miss_segment = Some(segment.into());
        r.miss_tokens = Some(tokens);
        r.miss_cost_nusd = Some(tokens * 2700 / 1000);
        r.prefix_key = Some(format!("p-{id}"));
        r
    };
    let cached = |id: &str, t: i64, prefix: &str, read: u64, w5: u64| {
        let mut r = at(record(id, "client"), t);
        r.usage = Usage {
            input_uncached: 10,
            cache_read: read,
            cache_write_5m: w5,
            cache_write_1h: 0,
            output: 5,
        };
        r.prefix_key = Some(prefix.into());
        r.cost_nusd = Some(1000 + i64::try_from(w5).unwrap_or(0));
        r.cost_uncached_nusd = Some(50_000);
        r
    };
    let mut under = at(record("under", "client"), T0 + 30 * MIN);
    under.usage = Usage {
        input_uncached: 900,
        ..Usage::default()
    };
    under.model = Some("claude-sonnet-4-6".into());
    under.instance_id = "i-2".into();
    vec![
        miss("m1", T0, "timestamp_in_prefix", "system 0", 1000),
        miss("m2", T0 + MIN, "timestamp_in_prefix", "system 0", 3000),
        miss(
            "m3",
            T0 + 2 * MIN,
            "question_before_context",
            "message 0 part 0",
            500,
        ),
        cached("w1", T0 + 3 * MIN, "doc", 0, 2000),
        cached("r1", T0 + 4 * MIN, "doc", 2000, 0),
        cached("w2", T0 + 5 * MIN, "lost", 0, 5000),
        under,
    ]
}

async fn insights_of(store: Store) {
    store.insert(&records()).await.expect("insert");
    let (from, to) = (T0 - 1, T0 + 24 * 60 * MIN);

    let misses = store.misses(from, to).await.expect("misses");
    assert_eq!(misses.len(), 2);
    assert_eq!(misses[0].reason, "timestamp_in_prefix");
    assert_eq!((misses[0].count, misses[0].tokens), (2, 4000));
    assert_eq!(misses[0].cost_nusd, 2700 + 8100);
    assert_eq!(
        misses[0].example_prefix.as_deref(),
        Some("p-m2"),
        "the latest"
    );
    assert_eq!(misses[0].example_segment.as_deref(), Some("system 0"));
    assert!(misses[0].fix.contains("timestamp out of the system prompt"));
    assert!(misses[1].fix.contains("question after the document"));

    let prefixes = store.prefixes(from, to, 10, to).await.expect("prefixes");
    assert!(!prefixes.truncated);
    let doc = prefixes
        .rows
        .iter()
        .find(|p| p.prefix_key == "doc")
        .expect("doc");
    assert_eq!((doc.reads, doc.writes, doc.wasted_writes), (1, 1, 0));
    assert_eq!(doc.reads_per_write, Some(1.0));
    assert_eq!(doc.tokens.cache_read, 2000);
    let lost = prefixes
        .rows
        .iter()
        .find(|p| p.prefix_key == "lost")
        .expect("lost");
    assert_eq!((lost.reads, lost.writes, lost.wasted_writes), (0, 1, 1));
    assert_eq!(prefixes.rows[0].prefix_key, "lost", "the costliest first");
    assert_eq!(
        store
            .prefixes(from, to, 1, to)
            .await
            .expect("limit")
            .rows
            .len(),
        1
    );

    let minimums = [("claude-sonnet-4-6".to_owned(), 1024)];
    let advice = store
        .advice(from, to, to, &sonnet, &minimums)
        .await
        .expect("advice");
    assert_eq!(advice.under_minimum.len(), 1);
    assert_eq!(
        (
            advice.under_minimum[0].requests,
            advice.under_minimum[0].tokens
        ),
        (1, 900)
    );
    // The sample records carry no markers and no breakpoints, on an anthropic upstream.
    assert_eq!(advice.no_markers.len(), 1);
    assert_eq!(advice.no_markers[0].requests, 7);
    assert!(advice.silent_upstreams.is_empty(), "no marked requests");

    let instances = store.instances(from, to).await.expect("instances");
    let ids: Vec<(&str, i64)> = instances
        .iter()
        .map(|i| (i.instance_id.as_str(), i.requests))
        .collect();
    assert_eq!(ids, [("i-1", 6), ("i-2", 1)]);
    assert!(store.misses(to, to + 1).await.expect("empty").is_empty());
}

#[tokio::test]
async fn insights_on_sqlite() {
    insights_of(Store::open("sqlite::memory:").await.expect("open")).await;
}

#[tokio::test]
async fn insights_on_postgres() {
    insights_of(postgres_store("insights").await).await;
}

/// `n` marked requests to `upstream` for `model`, the i-th of `tokens(i)` uncached input tokens,
/// none of them cached, in a fresh store; and the advice on them with the given minimums.
async fn silent_advice(
    n: i64,
    upstream: &str,
    model: &str,
    tokens: impl Fn(i64) -> u64,
    minimums: &[(String, u64)],
) -> Advice {
    let store = Store::open("sqlite::memory:").await.expect("open");
    let marked: Vec<LedgerRecord> = (0..n)
        .map(|i| {
            let mut r = at(record(&format!("s{i}"), "client"), T0 + i);
            r.upstream = upstream.into();
            r.model = Some(model.into());
            r.breakpoints = 2;
            r.usage = Usage {
                input_uncached: tokens(i),
                ..Usage::default()
            };
            r
        })
        .collect();
    store.insert(&marked).await.expect("insert");
    store
        .advice(T0 - 1, T0 + MIN, T0 + MIN, &sonnet, minimums)
        .await
        .expect("advice")
}

#[tokio::test]
async fn an_upstream_whose_marked_requests_never_cache_is_named() {
    let minimums = [("claude-sonnet-4-6".to_owned(), 1024)];
    let advice = silent_advice(12, "gateway", "claude-sonnet-4-6", |_| 5000, &minimums).await;
    assert_eq!(
        advice.silent_upstreams,
        [SilentUpstream {
            upstream: "gateway".into(),
            marked_requests: 12
        }]
    );
}

#[tokio::test]
async fn marked_prompts_under_the_minimum_do_not_make_an_upstream_silent() {
    // 30 marked prompts under sonnet's 1024-token minimum (under a dated snapshot's name) and 5
    // over it: none cached, but too few could have.
    let model = "claude-sonnet-4-6-20260101";
    let tokens = |i| if i < 30 { 600 } else { 3000 };
    let minimums = [("claude-sonnet-4-6".to_owned(), 1024)];
    let advice = silent_advice(35, "direct", model, tokens, &minimums).await;
    assert!(advice.silent_upstreams.is_empty(), "{advice:?}");
    // Without a known minimum every marked prompt counts.
    let advice = silent_advice(35, "direct", model, tokens, &[]).await;
    assert_eq!(advice.silent_upstreams.len(), 1);
    assert_eq!(advice.silent_upstreams[0].marked_requests, 35);
}

#[tokio::test]
async fn a_long_range_follows_its_newest_records() {
    let store = Store::open("sqlite::memory:").await.expect("open");
    let rows: Vec<LedgerRecord> = (0..5)
        .map(|i| at(record(&format!("r{i}"), "client"), T0 + i * MIN))
        .collect();
    store.insert(&rows).await.expect("insert");
    let (kept, truncated) = store
        .activity(T0, T0 + 10 * MIN, 3)
        .await
        .expect("activity");
    assert!(truncated);
    let at: Vec<i64> = kept.iter().map(|a| (a.at_ms - T0) / MIN).collect();
    assert_eq!(at, [2, 3, 4], "the newest three, in time order");
    let (all, truncated) = store
        .activity(T0, T0 + 10 * MIN, 5)
        .await
        .expect("activity");
    assert!(!truncated);
    assert_eq!(all.len(), 5);
}
