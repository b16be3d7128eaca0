use super::*;
use crate::usage::Usage;

pub(crate) fn record(id: &str, call: &'static str) -> LedgerRecord {
    LedgerRecord {
        at_ms: 1_800_000_000_000,
        request_id: id.into(),
        call,
        instance_id: "i-1".into(),
        tenant: "t".into(),
        upstream: "anthropic".into(),
        provider: "anthropic",
        model: Some("claude-sonnet-4-6".into()),
        endpoint: "messages",
        status: 200,
        outcome: "ok",
        usage_complete: true,
        usage: Usage {
            input_uncached: 10,
            cache_read: 2000,
            cache_write_5m: 300,
            cache_write_1h: 40,
            output: 7,
        },
        cost_nusd: Some(123),
        rewrites: "question_last,cache_control".into(),
        latency_ms: 12.5,
        ..LedgerRecord::default()
    }
}

/// A PostgreSQL store in a schema of its own, in the machine's `test` database.
pub(crate) async fn postgres_store(name: &str) -> Store {
    let base = "postgres://postgres@127.0.0.1:5432/test";
    let admin = sqlx::PgPool::connect(base)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 (database test) must be reachable");
    let schema = format!("cachet_{name}_{}", std::process::id());
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&admin)
        .await
        .expect("drop schema");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .expect("create schema");
    Store::open(&format!("{base}?options=-c%20search_path%3D{schema}"))
        .await
        .expect("open the store")
}

async fn stores_each_record_once(store: Store) {
    store
        .insert(&[
            record("a", "client"),
            record("a", "resend"),
            record("b", "client"),
        ])
        .await
        .expect("insert");
    // The same batch again (a retry): nothing doubles.
    store
        .insert(&[record("a", "client"), record("c", "client")])
        .await
        .expect("insert again");
    assert_eq!(store.count().await.expect("count"), 4);
}

#[tokio::test]
async fn sqlite_stores_each_record_once() {
    let dir = std::env::temp_dir().join(format!("cachet-ledger-{}", std::process::id()));
    let path = dir.join("nested/cachet.db");
    let _ = std::fs::remove_file(&path);
    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    stores_each_record_once(store).await;
    assert!(path.exists(), "the file and its directory are created");
}

#[tokio::test]
async fn postgres_stores_each_record_once() {
    stores_each_record_once(postgres_store("once").await).await;
}

#[tokio::test]
async fn the_writer_flushes_on_request_and_on_its_interval() {
    let store = Store::open("sqlite::memory:").await.expect("open");
    let ledger = Ledger::start(store.clone(), 1000, Duration::from_secs(3600));
    for i in 0..10 {
        ledger.record(record(&format!("r{i}"), "client"));
    }
    assert!(ledger.flush(Duration::from_secs(10)).await);
    assert_eq!(store.count().await.expect("count"), 10);
    // Periodic flush: records reach the store without being asked.
    let ticking = Ledger::start(store.clone(), 1000, Duration::from_millis(20));
    ticking.record(record("tick", "client"));
    let mut stored = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        stored = store.count().await.expect("count");
        if stored == 11 {
            break;
        }
    }
    assert_eq!(stored, 11);
}

#[tokio::test]
async fn a_full_queue_drops_records_instead_of_waiting() {
    let store = Store::open("sqlite::memory:").await.expect("open");
    // A current-thread runtime: the writer cannot drain while this loop runs.
    let ledger = Ledger::start(store.clone(), 3, Duration::from_secs(3600));
    for i in 0..10 {
        ledger.record(record(&format!("full{i}"), "client"));
    }
    assert!(ledger.flush(Duration::from_secs(10)).await);
    assert_eq!(
        store.count().await.expect("count"),
        3,
        "only what the queue held"
    );
    assert_eq!(ledger.dropped(), 7, "the rest dropped and counted");
}

/// The writer has a thread and connections of its own: records still reach the store after the
/// runtime that opened it is gone (a test's runtime, which ends with the test).
#[test]
fn the_writer_outlives_the_runtime_that_opened_the_store() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    let schema = format!("cachet_outlive_{}", std::process::id());
    let url =
        format!("postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D{schema}");
    let opening = runtime();
    let ledger = opening.block_on(async {
        let store = postgres_store("outlive").await;
        let ledger = Ledger::start(store, 100, Duration::from_secs(3600));
        // The writer opens its own connections before the opening runtime goes.
        ledger.record(record("first", "client"));
        assert!(ledger.flush(Duration::from_secs(10)).await);
        ledger
    });
    drop(opening);
    runtime().block_on(async {
        ledger.record(record("after", "client"));
        assert!(ledger.flush(Duration::from_secs(10)).await);
        let store = Store::open(&url).await.expect("open");
        assert_eq!(store.count().await.expect("count"), 2);
    });
}

/// Records over 30 hours in varied groups, some unpriced, some missed, from two instances.
fn day_and_a_half() -> Vec<LedgerRecord> {
    (0..400i64)
        .map(|i| {
            let mut r = record(&format!("h{i}"), "client");
            r.at_ms = 1_800_000_000_000 + i * 271_003;
            let n = usize::try_from(i).unwrap_or_default();
            r.team = ["search", "ads", ""].get(n % 3).map(|t| (*t).to_owned());
            r.team = r.team.filter(|t| !t.is_empty());
            r.model = Some(["claude-sonnet-4-6", "gpt-4.1"][n % 2].into());
            r.upstream = ["anthropic", "openai", "gateway"][n % 3].into();
            r.instance_id = ["i-1", "i-2"][n % 2].into();
            r.usage.input_uncached = 10 + (i as u64 % 13) * 100;
            r.usage.cache_read = (i as u64 % 4) * 1000;
            r.cost_nusd = (i % 7 != 0).then_some(1000 + i);
            r.cost_uncached_nusd = (i % 11 != 0).then_some(3000 + i);
            if i % 5 == 0 {
                r.miss_reason = Some(["expired", "history_edited"][n % 2]);
                r.miss_tokens = Some(100 + i);
                r.miss_cost_nusd = Some(7 * i);
            }
            r
        })
        .collect()
}

/// Whole hours read from `ledger_hourly` and part-hours from the ledger add up to what the
/// records alone say, for every grouping and ranges cut anywhere; a batch stored twice counts
/// once.
async fn hours_agree_with_records(store: Store) {
    use super::usage::{GroupBy, Span};
    let records = day_and_a_half();
    store.insert(&records[..250]).await.expect("insert");
    store
        .insert(&records[200..])
        .await
        .expect("insert overlapping");
    store
        .insert(&records[100..150])
        .await
        .expect("insert again");
    let t0 = 1_800_000_000_000i64;
    let hour = 3_600_000;
    let ranges = [
        (t0, t0 + 31 * hour),
        (t0 - 5 * hour, t0 + 40 * hour),
        (t0 + 123_457, t0 + 20 * hour + 1_800_007),
        (t0 + 2_345_678, t0 + 7 * hour + 2_000_000),
        (t0 + 600_000, t0 + 3_000_000),
        (t0 / hour * hour + 2 * hour, t0 / hour * hour + 9 * hour),
        (t0 + 29 * hour, t0 + 29 * hour + 1),
    ];
    let groupings = [
        GroupBy::Team,
        GroupBy::Model,
        GroupBy::Upstream,
        GroupBy::Day,
        GroupBy::Hour,
        GroupBy::MissReason,
    ];
    for (from, to) in ranges {
        // A range of two hours or more holds a whole hour, read from `ledger_hourly`.
        let whole_hour = to - from >= 2 * hour;
        assert_eq!(
            Span::of(from, to) != Span::records(from, to),
            whole_hour,
            "{from}..{to}"
        );
        for group_by in groupings {
            let hours = store.usage(from, to, group_by).await.expect("usage");
            let records = store
                .usage_in(from, to, group_by, Span::records(from, to))
                .await
                .expect("records");
            assert_eq!(hours.rows, records.rows, "{group_by:?} over {from}..{to}");
        }
        let inside: Vec<&LedgerRecord> = records
            .iter()
            .filter(|r| r.at_ms >= from && r.at_ms < to)
            .collect();
        let instances = store.instances(from, to).await.expect("instances");
        for instance in &instances {
            let mine: Vec<i64> = inside
                .iter()
                .filter(|r| r.instance_id == instance.instance_id)
                .map(|r| r.at_ms)
                .collect();
            assert_eq!(instance.requests, mine.len() as i64);
            assert_eq!(Some(instance.first_ms), mine.iter().min().copied());
            assert_eq!(Some(instance.last_ms), mine.iter().max().copied());
        }
        let misses = store.misses(from, to).await.expect("misses");
        for miss in &misses {
            let mine: Vec<&&LedgerRecord> = inside
                .iter()
                .filter(|r| r.miss_reason == Some(miss.reason.as_str()))
                .collect();
            assert_eq!(miss.count, mine.len() as i64);
            assert_eq!(
                miss.tokens,
                mine.iter().filter_map(|r| r.miss_tokens).sum::<i64>()
            );
            assert_eq!(
                miss.cost_nusd,
                mine.iter().filter_map(|r| r.miss_cost_nusd).sum::<i64>()
            );
        }
        let total = store.usage(from, to, GroupBy::Team).await.expect("usage");
        assert_eq!(total.totals.requests, inside.len() as i64);
        let unpriced = inside
            .iter()
            .filter(|r| r.cost_nusd.is_none() || r.cost_uncached_nusd.is_none())
            .count();
        assert_eq!(total.totals.unpriced, unpriced as i64);
    }
    // The whole day and a half from the hours: every record, once.
    let all = store
        .usage(t0 - hour, t0 + 40 * hour, GroupBy::Team)
        .await
        .expect("usage");
    assert_eq!(all.totals.requests, 400);
}

#[tokio::test]
async fn sqlite_hours_agree_with_records() {
    hours_agree_with_records(Store::open("sqlite::memory:").await.expect("open")).await;
}

#[tokio::test]
async fn postgres_hours_agree_with_records() {
    hours_agree_with_records(postgres_store("hours").await).await;
}
