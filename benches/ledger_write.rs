//! Sustained records per second into the ledger's stores (issue 6, "Benchmark"): figures, not a
//! test. Run by `./scripts/bench-ledger` (or `cargo bench --bench ledger_write`).
//!
//! Method: for each store (a SQLite file in WAL mode, as `serve` opens it by default; the
//! machine's PostgreSQL at 127.0.0.1:5432, database `test`, in a schema of its own), the ledger
//! is started with a queue as large as the run, `N` realistic records are queued as fast as
//! the producer can, and the clock stops when `flush` returns, i.e. when the writer has put every
//! one of them in the store in its batches of 500. Each store is measured `ROUNDS` times and the
//! median and the spread are printed, with the count read back from the store (it must be
//! exactly `N` per round: nothing dropped, nothing doubled).

#![expect(
    clippy::expect_used,
    reason = "a benchmark stops at the first broken step; no request data here"
)]

use std::time::{Duration, Instant};

use cachet::ledger::{Ledger, LedgerRecord, Store};
use cachet::usage::Usage;

const N: usize = 50_000;
const ROUNDS: usize = 3;

fn record(round: usize, i: usize) -> LedgerRecord {
    LedgerRecord {
        at_ms: 1_800_000_000_000 + i as i64,
        request_id: format!("0193b1c2-{round:04}-7000-8000-{i:012}"),
        call: "client",
        instance_id: "bench-ledger".into(),
        tenant: "3f9a1c2b7d4e".into(),
        team: Some("search".into()),
        upstream: "anthropic".into(),
        provider: "anthropic",
        model: Some("claude-sonnet-4-6".into()),
        endpoint: "messages",
        stream: i % 4 == 1,
        status: 200,
        outcome: "ok",
        usage_complete: true,
        usage: Usage {
            input_uncached: 412,
            cache_read: 18_304,
            cache_write_5m: 1_210,
            cache_write_1h: 0,
            output: 230,
        },
        cost_nusd: Some(13_221_300),
        cost_uncached_nusd: Some(63_228_000),
        write_premium_nusd: Some(907_500),
        prefix_key: Some("b3:9f1e2d3c4b5a69788796a5b4c3d2e1f0".into()),
        plan_branch: Some("cache_control"),
        rewrites: "question_last,cache_control".into(),
        breakpoints: 2,
        latency_ms: 842.125,
        ttfb_ms: Some(311.5),
        overhead_ms: 0.412,
        ..LedgerRecord::default()
    }
}

async fn postgres() -> Store {
    let base = "postgres://postgres@127.0.0.1:5432/test";
    let admin = sqlx::PgPool::connect(base)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 (database test)");
    let schema = format!("cachet_bench_ledger_{}", std::process::id());
    for sql in [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("CREATE SCHEMA {schema}"),
    ] {
        sqlx::query(&sql).execute(&admin).await.expect("schema");
    }
    Store::open(&format!("{base}?options=-c%20search_path%3D{schema}"))
        .await
        .expect("open the PostgreSQL store")
}

async fn drop_schema() {
    if let Ok(admin) = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/test").await {
        let schema = format!("cachet_bench_ledger_{}", std::process::id());
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&admin)
            .await;
    }
}

/// Records per second of each round into `store`.
async fn measure(store: Store) -> Vec<f64> {
    let mut rates = Vec::new();
    let mut stored = store.count().await.expect("count");
    for round in 0..ROUNDS {
        let records: Vec<LedgerRecord> = (0..N).map(|i| record(round, i)).collect();
        let ledger = Ledger::start(store.clone(), N, Duration::from_secs(1));
        let start = Instant::now();
        for r in records {
            ledger.record(r);
        }
        assert!(ledger.flush(Duration::from_secs(600)).await, "flushed");
        let secs = start.elapsed().as_secs_f64();
        let now = store.count().await.expect("count");
        assert_eq!(now - stored, N as i64, "every record stored once");
        stored = now;
        rates.push(N as f64 / secs);
    }
    rates
}

fn line(name: &str, rates: &mut [f64]) -> String {
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let spread = (rates[rates.len() - 1] - rates[0]) / median * 100.0;
    format!(
        "{name:<10} {median:>9.0} records/s  (median of {ROUNDS} rounds of {N}; min {:.0}, max {:.0}, spread {spread:.1}%)",
        rates[0],
        rates[rates.len() - 1]
    )
}

fn main() {
    // `cargo bench` passes --bench; there are no options.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile_dir();
        let url = format!("sqlite://{}/cachet.db", dir.display());
        let sqlite = Store::open(&url).await.expect("open the SQLite store");
        let mut sqlite_rates = measure(sqlite).await;
        let _ = std::fs::remove_dir_all(&dir);
        let mut pg_rates = measure(postgres().await).await;
        drop_schema().await;
        println!("ledger writes, sustained (queue → batches of 500 → store):");
        println!("{}", line("sqlite", &mut sqlite_rates));
        println!("{}", line("postgres", &mut pg_rates));
    });
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cachet-bench-ledger-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
