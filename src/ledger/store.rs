//! Where ledger records are kept: SQLite (a file, WAL) or PostgreSQL, with the schema
//! migrations embedded in the binary.

use std::str::FromStr;
use std::time::Duration;

use sqlx::QueryBuilder;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::LedgerRecord;

/// The VALUES rows of an insert, the same for both databases (the macro is generic where
/// sqlx's trait bounds for a generic function are not worth their weight).
macro_rules! push_rows {
    ($q:expr, $records:expr) => {
        $q.push_values($records, |mut row, r| {
            let u = &r.usage;
            row.push_bind(r.at_ms)
                .push_bind(r.request_id.clone())
                .push_bind(r.call)
                .push_bind(r.caused_by.clone())
                .push_bind(r.instance_id.clone())
                .push_bind(r.tenant.clone())
                .push_bind(r.team.clone())
                .push_bind(r.upstream.clone())
                .push_bind(r.provider)
                .push_bind(r.model.clone())
                .push_bind(r.endpoint)
                .push_bind(r.stream)
                .push_bind(i32::from(r.status))
                .push_bind(r.outcome)
                .push_bind(r.usage_complete)
                .push_bind(tokens(u.input_uncached))
                .push_bind(tokens(u.cache_read))
                .push_bind(tokens(u.cache_write_5m))
                .push_bind(tokens(u.cache_write_1h))
                .push_bind(tokens(u.output))
                .push_bind(r.cost_nusd)
                .push_bind(r.cost_uncached_nusd)
                .push_bind(r.write_premium_nusd)
                .push_bind(r.storage_nusd)
                .push_bind(r.prefix_key.clone())
                .push_bind(r.plan_branch)
                .push_bind(r.rewrites.clone())
                .push_bind(i32::from(r.client_markers))
                .push_bind(i32::from(r.breakpoints))
                .push_bind(r.miss_reason)
                .push_bind(r.miss_tokens)
                .push_bind(r.miss_segment.clone())
                .push_bind(r.miss_cost_nusd)
                .push_bind(r.latency_ms)
                .push_bind(r.ttfb_ms)
                .push_bind(r.overhead_ms);
        })
    };
}

/// `$body` with `$pool` bound to whichever pool `$store` has: the statements are the same for
/// both databases, and sqlx's bounds for a function generic over them are not worth their
/// weight.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}
pub(super) use on_pool;

/// The n-th bound value's placeholder: `$n` for PostgreSQL, `?` for SQLite.
pub(super) fn placeholder(postgres: bool, n: usize) -> String {
    if postgres {
        format!("${n}")
    } else {
        "?".to_owned()
    }
}

#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Rows per INSERT statement at most.
const ROWS: usize = 64;

/// Columns in insert order.
const COLUMNS: &str = "at_ms, request_id, call, caused_by, instance_id, tenant, team, upstream, \
    provider, model, endpoint, stream, status, outcome, usage_complete, input_uncached, \
    cache_read, cache_write_5m, cache_write_1h, output, cost_nusd, cost_uncached_nusd, \
    write_premium_nusd, storage_nusd, prefix_key, plan_branch, rewrites, client_markers, \
    breakpoints, miss_reason, miss_tokens, miss_segment, miss_cost_nusd, latency_ms, ttfb_ms, \
    overhead_ms";

impl Store {
    /// Opens `url` (`sqlite://PATH`, `sqlite::memory:`, `postgres://…`) and brings its schema
    /// up to date. A SQLite file and its directory are created when missing.
    pub async fn open(url: &str) -> Result<Store, sqlx::Error> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            return Ok(Store::Postgres(pool));
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL cannot corrupt the file and keeps every commit through a
            // crash of the process (SIGKILL included); only a power cut may lose the last
            // commits. FULL would fsync on every batch.
            .synchronous(SqliteSynchronous::Normal)
            // Readers (the dashboard) and the writer share the file; a write waits its turn.
            .busy_timeout(Duration::from_secs(10));
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
        }
        let in_memory = url.contains(":memory:");
        let pool = SqlitePoolOptions::new()
            // One connection holds an in-memory database: a second would open another one.
            .max_connections(if in_memory { 1 } else { 4 })
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(Store::Sqlite(pool))
    }

    /// Inserts `records` in one transaction; a record already stored (same request id and
    /// call) is left as it is. Rows go in statements of at most `ROWS` rows, so that a store
    /// sees at most `ROWS` distinct statements, each prepared once per connection and cached:
    /// batches of varying size would otherwise have every statement parsed and planned anew.
    pub async fn insert(&self, records: &[LedgerRecord]) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in records.chunks(ROWS) {
                let mut q = QueryBuilder::new(format!("INSERT INTO ledger ({COLUMNS}) "));
                push_rows!(q, chunk);
                q.push(" ON CONFLICT (request_id, call) DO NOTHING");
                q.build().persistent(true).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The same store on a pool of its own of at most `connections`, for a background thread
    /// (the ledger's writer, its reader). Its connections are opened when first used, so on that
    /// thread's own runtime: they then belong to that thread alone, so it keeps working whatever
    /// becomes of the runtime that opened `self` (a test's ends with the test), and the thread
    /// sqlx runs a SQLite connection on inherits the opener's low priority. An in-memory
    /// database has only its one connection, which is shared as it is.
    pub fn own_pool(&self, connections: u32) -> Store {
        match self {
            // `open` gives an in-memory database a pool of exactly one connection.
            Store::Sqlite(pool) if pool.options().get_max_connections() > 1 => Store::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(connections)
                    .connect_lazy_with((*pool.connect_options()).clone()),
            ),
            Store::Sqlite(_) => self.clone(),
            Store::Postgres(pool) => Store::Postgres(
                PgPoolOptions::new()
                    .max_connections(connections)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_lazy_with((*pool.connect_options()).clone()),
            ),
        }
    }

    /// Records stored (tests, tools).
    pub async fn count(&self) -> Result<i64, sqlx::Error> {
        let sql = "SELECT COUNT(*) FROM ledger";
        on_pool!(self, pool => sqlx::query_scalar(sql).fetch_one(pool).await)
    }
}

/// Token counts fit an i64 column (no provider counts 2⁶³ tokens).
fn tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
