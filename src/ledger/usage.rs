//! Aggregates of the ledger for `/api/usage`: requests, tokens by kind and money per group,
//! over a time range, from the store (SQLite or PostgreSQL, the same SQL but for the dates).

use serde::Serialize;
use sqlx::Row;

use super::Store;
use super::store::{on_pool, placeholder};

/// What rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Team,
    Model,
    Upstream,
    Day,
    Hour,
    Prefix,
    MissReason,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        Some(match s {
            "team" => GroupBy::Team,
            "model" => GroupBy::Model,
            "upstream" => GroupBy::Upstream,
            "day" => GroupBy::Day,
            "hour" => GroupBy::Hour,
            "prefix" => GroupBy::Prefix,
            "miss_reason" => GroupBy::MissReason,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Team => "team",
            GroupBy::Model => "model",
            GroupBy::Upstream => "upstream",
            GroupBy::Day => "day",
            GroupBy::Hour => "hour",
            GroupBy::Prefix => "prefix",
            GroupBy::MissReason => "miss_reason",
        }
    }

    /// The SQL of the group key (UTC dates as `YYYY-MM-DD` and `YYYY-MM-DDTHH:00Z`). Only these
    /// fixed strings reach the SQL; the range is bound.
    fn key_sql(self, postgres: bool) -> &'static str {
        match (self, postgres) {
            (GroupBy::Team, _) => "COALESCE(team, '')",
            (GroupBy::Model, _) => "COALESCE(model, '')",
            (GroupBy::Upstream, _) => "upstream",
            (GroupBy::Prefix, _) => "COALESCE(prefix_key, '')",
            (GroupBy::MissReason, _) => "COALESCE(miss_reason, '')",
            (GroupBy::Day, false) => "strftime('%Y-%m-%d', at_ms / 1000, 'unixepoch')",
            (GroupBy::Hour, false) => "strftime('%Y-%m-%dT%H:00Z', at_ms / 1000, 'unixepoch')",
            (GroupBy::Day, true) => {
                "to_char(to_timestamp(at_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
            }
            (GroupBy::Hour, true) => {
                "to_char(to_timestamp(at_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:00\"Z\"')"
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tokens {
    pub input_uncached: i64,
    pub cache_read: i64,
    pub cache_write: i64,
    pub output: i64,
}

/// One group's totals. Money in nano-USD over the records whose cost is known.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageRow {
    pub key: String,
    pub requests: i64,
    pub tokens: Tokens,
    pub cost_nusd: i64,
    pub cost_uncached_nusd: i64,
    pub saved_nusd: i64,
    /// Requests left out of the money figures: a price they need is missing.
    pub unpriced: i64,
    /// cache_read ÷ (input_uncached + cache_read + cache_write); `None` with no input.
    pub hit_rate: Option<f64>,
}

impl UsageRow {
    fn add(&mut self, other: &UsageRow) {
        self.requests += other.requests;
        self.tokens.input_uncached += other.tokens.input_uncached;
        self.tokens.cache_read += other.tokens.cache_read;
        self.tokens.cache_write += other.tokens.cache_write;
        self.tokens.output += other.tokens.output;
        self.cost_nusd += other.cost_nusd;
        self.cost_uncached_nusd += other.cost_uncached_nusd;
        self.saved_nusd += other.saved_nusd;
        self.unpriced += other.unpriced;
        self.hit_rate = hit_rate(&self.tokens);
    }
}

pub(super) fn hit_rate(t: &Tokens) -> Option<f64> {
    let input = t.input_uncached + t.cache_read + t.cache_write;
    (input > 0).then(|| t.cache_read as f64 / input as f64)
}

/// The answer of `/api/usage`.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub from: i64,
    pub to: i64,
    pub group_by: &'static str,
    pub rows: Vec<UsageRow>,
    pub totals: UsageRow,
}

/// One record as a row of the sums, in the shape `ledger_hourly` keeps them (migration 0003
/// computes the same per record): money counts only where both costs are known (a null is a
/// missing price, not 0), and `unpriced` counts the others.
const RECORD_ROW: &str = "at_ms, COALESCE(team, '') AS team, COALESCE(model, '') AS model, \
    upstream, instance_id, COALESCE(miss_reason, '') AS miss_reason, \
    COALESCE(prefix_key, '') AS prefix_key, 1 AS requests, input_uncached AS iu, \
    cache_read AS cr, cache_write_5m + cache_write_1h AS cw, output AS out, \
    CASE WHEN cost_uncached_nusd IS NOT NULL THEN COALESCE(cost_nusd, 0) ELSE 0 END AS cost, \
    CASE WHEN cost_nusd IS NOT NULL THEN COALESCE(cost_uncached_nusd, 0) ELSE 0 END AS unc, \
    CASE WHEN cost_nusd IS NULL OR cost_uncached_nusd IS NULL THEN 1 ELSE 0 END AS unpriced, \
    COALESCE(miss_tokens, 0) AS miss_tokens, COALESCE(miss_cost_nusd, 0) AS miss_cost, \
    at_ms AS first_ms, at_ms AS last_ms";

/// An hour of `ledger_hourly` as a row of the same shape (it has no prefix keys).
const HOUR_ROW: &str = "hour_ms AS at_ms, team, model, upstream, instance_id, miss_reason, \
    '' AS prefix_key, requests, iu, cr, cw, out, cost, unc, unpriced, miss_tokens, miss_cost, \
    first_ms, last_ms";

/// The columns a `UsageRow` is read from, summed over the rows of `rows_sql`.
pub(super) const SUMS: &str = "CAST(COALESCE(SUM(requests), 0) AS BIGINT) AS requests, \
    CAST(COALESCE(SUM(iu), 0) AS BIGINT) AS iu, \
    CAST(COALESCE(SUM(cr), 0) AS BIGINT) AS cr, \
    CAST(COALESCE(SUM(cw), 0) AS BIGINT) AS cw, \
    CAST(COALESCE(SUM(out), 0) AS BIGINT) AS out, \
    CAST(COALESCE(SUM(cost), 0) AS BIGINT) AS cost, \
    CAST(COALESCE(SUM(unc), 0) AS BIGINT) AS unc, \
    CAST(COALESCE(SUM(unpriced), 0) AS BIGINT) AS unpriced";

const HOUR_MS: i64 = 3_600_000;

/// Where the rows over a range `[from, to)` come from: its whole hours from `ledger_hourly`, the
/// part-hours at its ends from the ledger; or all of it from the ledger, for what the hours do
/// not keep (prefix keys) or a range without a whole hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    hours: (i64, i64),
    records: [(i64, i64); 2],
}

impl Span {
    pub(super) fn of(from: i64, to: i64) -> Span {
        let first = from.div_euclid(HOUR_MS) * HOUR_MS;
        let first = if first < from { first + HOUR_MS } else { first };
        let last = to.div_euclid(HOUR_MS) * HOUR_MS;
        if first < last {
            Span {
                hours: (first, last),
                records: [(from, first), (last, to)],
            }
        } else {
            Span::records(from, to)
        }
    }

    pub(super) fn records(from: i64, to: i64) -> Span {
        Span {
            hours: (0, 0),
            records: [(from, to), (0, 0)],
        }
    }

    /// The values bound to `rows_sql`'s six placeholders.
    pub(super) fn binds(self) -> [i64; 6] {
        let Span {
            hours: (h0, h1),
            records: [(a0, a1), (b0, b1)],
        } = self;
        [h0, h1, a0, a1, b0, b1]
    }
}

/// The rows of a span (`Span::binds` fills its placeholders 1 to 6), as a table named `r` with
/// the columns of `RECORD_ROW`.
pub(super) fn rows_sql(postgres: bool) -> String {
    let p = |n| placeholder(postgres, n);
    format!(
        "(SELECT {HOUR_ROW} FROM ledger_hourly WHERE hour_ms >= {} AND hour_ms < {} \
         UNION ALL SELECT {RECORD_ROW} FROM ledger WHERE at_ms >= {} AND at_ms < {} \
         UNION ALL SELECT {RECORD_ROW} FROM ledger WHERE at_ms >= {} AND at_ms < {}) AS r",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(6)
    )
}

/// A `UsageRow` from a result row of either database (the SQL casts every sum to BIGINT:
/// PostgreSQL's SUM of a bigint is NUMERIC).
macro_rules! usage_row {
    ($r:expr) => {{
        let int = |column: &str| $r.try_get::<i64, _>(column).unwrap_or_default();
        let tokens = $crate::ledger::usage::Tokens {
            input_uncached: int("iu"),
            cache_read: int("cr"),
            cache_write: int("cw"),
            output: int("out"),
        };
        let (cost, uncached) = (int("cost"), int("unc"));
        $crate::ledger::usage::UsageRow {
            key: $r.try_get::<String, _>("k").unwrap_or_default(),
            requests: int("requests"),
            hit_rate: $crate::ledger::usage::hit_rate(&tokens),
            tokens,
            cost_nusd: cost,
            cost_uncached_nusd: uncached,
            saved_nusd: uncached - cost,
            unpriced: int("unpriced"),
        }
    }};
}
pub(super) use usage_row;

impl Store {
    /// Totals per group of the records with `from ≤ at_ms < to`, the costliest first.
    pub async fn usage(&self, from: i64, to: i64, group_by: GroupBy) -> Result<Usage, sqlx::Error> {
        let span = match group_by {
            GroupBy::Prefix => Span::records(from, to),
            _ => Span::of(from, to),
        };
        self.usage_in(from, to, group_by, span).await
    }

    /// `usage` over `span`, which covers `[from, to)`.
    pub(super) async fn usage_in(
        &self,
        from: i64,
        to: i64,
        group_by: GroupBy,
        span: Span,
    ) -> Result<Usage, sqlx::Error> {
        let postgres = matches!(self, Store::Postgres(_));
        let key = group_by.key_sql(postgres);
        let sql = format!(
            "SELECT {key} AS k, {SUMS} FROM {rows} GROUP BY k ORDER BY cost DESC, k",
            rows = rows_sql(postgres),
        );
        let [b1, b2, b3, b4, b5, b6] = span.binds();
        let rows: Vec<UsageRow> = on_pool!(self, pool => sqlx::query(&sql)
            .bind(b1)
            .bind(b2)
            .bind(b3)
            .bind(b4)
            .bind(b5)
            .bind(b6)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| usage_row!(r))
            .collect());
        let mut totals = UsageRow {
            key: "total".into(),
            ..UsageRow::default()
        };
        for row in &rows {
            totals.add(row);
        }
        Ok(Usage {
            from,
            to,
            group_by: group_by.as_str(),
            rows,
            totals,
        })
    }
}

/// The whole ledger over a range, for reconciling it with a provider's bill: every token kind
/// (writes by TTL), money over the records whose costs are known, and how many records are
/// unpriced, cancelled, or say their usage is incomplete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub records: i64,
    pub usage: crate::usage::Usage,
    pub cost_nusd: i64,
    pub cost_uncached_nusd: i64,
    pub storage_nusd: i64,
    pub unpriced: i64,
    pub cancelled: i64,
    pub incomplete: i64,
}

/// A `Summary` from the result row of either database.
macro_rules! summary_row {
    ($r:expr) => {{
        let int = |column: &str| $r.try_get::<i64, _>(column).unwrap_or_default();
        let count = |column: &str| u64::try_from(int(column)).unwrap_or_default();
        Summary {
            records: int("records"),
            usage: crate::usage::Usage {
                input_uncached: count("iu"),
                cache_read: count("cr"),
                cache_write_5m: count("w5"),
                cache_write_1h: count("w1"),
                output: count("out"),
            },
            cost_nusd: int("cost"),
            cost_uncached_nusd: int("unc"),
            storage_nusd: int("storage"),
            unpriced: int("unpriced"),
            cancelled: int("cancelled"),
            incomplete: int("incomplete"),
        }
    }};
}

impl Store {
    /// The [`Summary`] of the records with `from ≤ at_ms < to`.
    pub async fn summary(&self, from: i64, to: i64) -> Result<Summary, sqlx::Error> {
        let postgres = matches!(self, Store::Postgres(_));
        let sql = format!(
            "SELECT CAST(COUNT(*) AS BIGINT) AS records, \
             CAST(COALESCE(SUM(input_uncached), 0) AS BIGINT) AS iu, \
             CAST(COALESCE(SUM(cache_read), 0) AS BIGINT) AS cr, \
             CAST(COALESCE(SUM(cache_write_5m), 0) AS BIGINT) AS w5, \
             CAST(COALESCE(SUM(cache_write_1h), 0) AS BIGINT) AS w1, \
             CAST(COALESCE(SUM(output), 0) AS BIGINT) AS out, \
             CAST(COALESCE(SUM(CASE WHEN cost_uncached_nusd IS NOT NULL THEN cost_nusd END), 0) \
                AS BIGINT) AS cost, \
             CAST(COALESCE(SUM(CASE WHEN cost_nusd IS NOT NULL THEN cost_uncached_nusd END), 0) \
                AS BIGINT) AS unc, \
             CAST(COALESCE(SUM(storage_nusd), 0) AS BIGINT) AS storage, \
             CAST(COALESCE(SUM(CASE WHEN cost_nusd IS NULL OR cost_uncached_nusd IS NULL \
                THEN 1 ELSE 0 END), 0) AS BIGINT) AS unpriced, \
             CAST(COALESCE(SUM(CASE WHEN outcome = 'cancelled' THEN 1 ELSE 0 END), 0) AS BIGINT) \
                AS cancelled, \
             CAST(COALESCE(SUM(CASE WHEN usage_complete THEN 0 ELSE 1 END), 0) AS BIGINT) \
                AS incomplete \
             FROM ledger WHERE at_ms >= {p1} AND at_ms < {p2}",
            p1 = placeholder(postgres, 1),
            p2 = placeholder(postgres, 2),
        );
        Ok(on_pool!(self, pool => {
            let row = sqlx::query(&sql).bind(from).bind(to).fetch_one(pool).await?;
            summary_row!(row)
        }))
    }
}
