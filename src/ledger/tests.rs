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
