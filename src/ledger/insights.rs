//! The dashboard's readings of the ledger beyond the totals of `/api/usage`: why requests
//! missed, which prefixes cost most and how well their writes paid off, advice, and which
//! proxy instances wrote the records. Each is one pass over a time range `[from, to)` of the
//! store (SQLite or PostgreSQL, the same SQL but for the placeholders).
//!
//! Some readings follow writes to the reads that used them. A record only says how many tokens
//! it wrote after how many it read, so a write is taken as *used* when a later call of the same
//! tenant and model read at least as many tokens as the written prefix ended at, before the
//! write's TTL ran out. The written prefix is a prefix of anything that long the tenant sent
//! next in practice (the same conversation or document), which is what the dashboard needs to
//! tell paying writes from wasted ones.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::TryStreamExt;

use serde::Serialize;
use sqlx::Row;

use super::Store;
use super::store::{on_pool, placeholder as p};
use super::usage::{SUMS, Span, rows_sql, usage_row};
use crate::explain::Reason;
use crate::pricing::Rates;

/// Most records one reading follows; of a longer range the newest are followed, and the answer
/// says so.
pub const SCAN_LIMIT: i64 = 500_000;

const FIVE_MINUTES_MS: i64 = 5 * 60 * 1000;
const HOUR_MS: i64 = 60 * 60 * 1000;

/// One miss reason over the range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MissRow {
    pub reason: String,
    pub count: i64,
    /// Tokens the misses could have read.
    pub tokens: i64,
    /// Those tokens at the input price less the cache-read price (over the priced misses).
    pub cost_nusd: i64,
    /// The latest such miss: its prefix key and the segment where it diverged (never text).
    pub example_prefix: Option<String>,
    pub example_segment: Option<String>,
    /// What to change.
    pub fix: &'static str,
}

/// One prefix over the range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrefixRow {
    pub prefix_key: String,
    pub team: String,
    pub model: String,
    pub requests: i64,
    pub tokens: super::usage::Tokens,
    pub cost_nusd: i64,
    pub hit_rate: Option<f64>,
    /// Calls that read from cache, and that wrote to it.
    pub reads: i64,
    pub writes: i64,
    pub reads_per_write: Option<f64>,
    /// Writes never read before their TTL ran out (see the module's note).
    pub wasted_writes: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prefixes {
    pub rows: Vec<PrefixRow>,
    /// The range held more records than one reading follows: wasted writes count over the
    /// newest `SCAN_LIMIT` only.
    pub truncated: bool,
    /// When it was read: the answer is kept a while (see `http::admin`).
    pub as_of_ms: i64,
}

/// A prefix whose 5-minute writes were written again 5 to 60 minutes later: a 1h TTL would have
/// turned those re-writes into reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OneHourAdvice {
    pub prefix_key: String,
    pub model: String,
    pub rewrites: i64,
    /// The re-writes' cost over reads, less the 1h premium on the writes before them.
    pub saving_nusd: i64,
}

/// Prompts a little under their model's minimum cacheable length, with no cache activity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnderMinimum {
    pub model: String,
    pub min_cacheable_tokens: i64,
    pub requests: i64,
    pub tokens: i64,
}

/// A team whose requests to a provider that takes cache markers carry none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoMarkers {
    pub team: String,
    pub upstream: String,
    pub requests: i64,
    /// Breakpoints cachet added for them.
    pub breakpoints_added: i64,
}

/// An upstream whose marked requests, long enough to cache, report no cache activity at all: a
/// path that silently loses the markers (a gateway that strips them, a model without caching).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SilentUpstream {
    pub upstream: String,
    pub marked_requests: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Advice {
    pub one_hour_ttl: Vec<OneHourAdvice>,
    pub under_minimum: Vec<UnderMinimum>,
    pub no_markers: Vec<NoMarkers>,
    pub silent_upstreams: Vec<SilentUpstream>,
    pub truncated: bool,
    /// When it was read: the answer is kept a while (see `http::admin`).
    pub as_of_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instance {
    pub instance_id: String,
    pub requests: i64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// Marked requests an upstream must have answered, all without cache activity, to be named.
const SILENT_AFTER: i64 = 10;

/// A prompt this close under its model's minimum (as a fraction of it) is "just under".
const JUST_UNDER: f64 = 0.75;

/// The price table's minimum cacheable prompts, for counting prompts against them in SQL: one
/// column per distinct minimum (numbers from the table, never request data), and each model's
/// column.
struct Minimums<'a> {
    named: &'a [(String, u64)],
    distinct: Vec<u64>,
}

impl<'a> Minimums<'a> {
    fn new(named: &'a [(String, u64)]) -> Self {
        let mut distinct: Vec<u64> = named.iter().map(|(_, min)| *min).collect();
        distinct.sort_unstable();
        distinct.dedup();
        Minimums { named, distinct }
    }

    /// `column(i, min)` for each distinct minimum, joined.
    fn columns(&self, column: impl Fn(usize, u64) -> String) -> String {
        self.distinct
            .iter()
            .enumerate()
            .map(|(i, min)| column(i, *min))
            .collect()
    }

    /// The priced model `model` is (itself, or the one it is a dated snapshot of, as
    /// `claude-sonnet-4-6-20260101` is of `claude-sonnet-4-6`), its minimum, and its column.
    fn of(&self, model: &str) -> Option<(&'a str, u64, usize)> {
        let (name, min) = self
            .named
            .iter()
            .filter(|(name, _)| model == name || crate::pricing::is_snapshot_of(model, name))
            .max_by_key(|(name, _)| name.len())?;
        let column = self.distinct.iter().position(|t| t == min)?;
        Some((name.as_str(), *min, column))
    }
}

/// One record with cache activity, in time order, for following writes to their reads. Its
/// names are shared with every other record of the reading that carries them: a long range has
/// hundreds of thousands of records but few tenants, models and prefixes.
#[derive(Debug, Clone)]
struct Activity {
    tenant: Arc<str>,
    model: Arc<str>,
    prefix_key: Option<Arc<str>>,
    at_ms: i64,
    cache_read: i64,
    write_5m: i64,
    write_1h: i64,
}

/// What following writes to reads found.
#[derive(Debug, Default)]
struct Followed {
    /// Prefix key → writes never read before they expired.
    wasted: HashMap<String, i64>,
    /// (prefix key, model) → (re-writes a 1h TTL would have avoided, their saving).
    one_hour: HashMap<(String, String), (i64, i64)>,
}

/// A written prefix's last use, for pricing its re-writes as a 1h TTL's reads.
#[derive(Clone, Copy)]
struct LastUse {
    at_ms: i64,
    /// Its last write was at the 1h TTL.
    one_hour: bool,
    /// Tokens its last write wrote.
    written: i64,
    /// Its chain's 1h premium is already counted.
    premium_paid: bool,
}

/// A write still waiting for a read.
struct Pending {
    prefix_key: Option<Arc<str>>,
    /// The written prefix ends here (tokens read before it + tokens written).
    end: i64,
    expires_ms: i64,
}

/// Follows every write to the reads that used it (see the module's note). `to` is the range's
/// end: a write whose TTL outlasts it is neither used nor wasted yet. `rates` prices a model.
fn follow(rows: &[Activity], to: i64, rates: &(dyn Fn(&str) -> Option<Rates> + Sync)) -> Followed {
    let mut out = Followed::default();
    let mut pending: HashMap<(&str, &str), Vec<Pending>> = HashMap::new();
    // (tenant, model, end) → the prefix's last use.
    let mut last_use: HashMap<(&str, &str, i64), LastUse> = HashMap::new();
    for row in rows {
        let stream = (&*row.tenant, &*row.model);
        let waiting = pending.entry(stream).or_default();
        waiting.retain(|w| {
            let used = row.cache_read > 0 && row.cache_read >= w.end && row.at_ms <= w.expires_ms;
            let expired = w.expires_ms < row.at_ms;
            if expired && !used {
                if let Some(key) = &w.prefix_key {
                    *out.wasted.entry(key.to_string()).or_default() += 1;
                }
            }
            !(used || expired)
        });
        if row.cache_read > 0 {
            // A read refreshes the TTL of every prefix it covers; only its own end is tracked.
            if let Some(use_) = last_use.get_mut(&(stream.0, stream.1, row.cache_read)) {
                use_.at_ms = row.at_ms;
            }
        }
        let written = row.write_5m + row.write_1h;
        if written == 0 {
            continue;
        }
        let end = row.cache_read + written;
        let one_hour = row.write_1h > 0;
        let ttl = if one_hour { HOUR_MS } else { FIVE_MINUTES_MS };
        waiting.push(Pending {
            prefix_key: row.prefix_key.clone(),
            end,
            expires_ms: row.at_ms + ttl,
        });
        let key = (stream.0, stream.1, end);
        // Whether this re-write continues a chain a 1h TTL would have kept cached (and so
        // whether the chain's first write has already been charged the 1h premium).
        let mut charged = false;
        let previous = last_use.get(&key).filter(|u| !u.one_hour);
        if let (
            Some(&LastUse {
                at_ms: last,
                written: before,
                premium_paid,
                ..
            }),
            Some(key_name),
        ) = (previous, row.prefix_key.as_ref())
        {
            let gap = row.at_ms - last;
            let prices = rates(&row.model)
                .and_then(|r| Some((r.cache_read?, r.cache_write_5m?, r.cache_write_1h?)));
            if let (true, Some((read, w5, w1h))) = (gap > FIVE_MINUTES_MS && gap <= HOUR_MS, prices)
            {
                // This write would have been a read; the chain's first write would have paid
                // the 1h premium instead of the 5m one, once.
                let saved = i128::from(written) * (i128::from(w5) - i128::from(read));
                let premium = if premium_paid {
                    0
                } else {
                    i128::from(before) * (i128::from(w1h) - i128::from(w5))
                };
                let nano = i64::try_from((saved - premium) / 1000).unwrap_or(0);
                let entry = out
                    .one_hour
                    .entry((key_name.to_string(), row.model.to_string()))
                    .or_default();
                entry.0 += 1;
                entry.1 += nano;
                charged = true;
            }
        }
        last_use.insert(
            key,
            LastUse {
                at_ms: row.at_ms,
                one_hour,
                written,
                premium_paid: charged,
            },
        );
    }
    for (_, waiting) in pending {
        for w in waiting.into_iter().filter(|w| w.expires_ms <= to) {
            if let Some(key) = w.prefix_key {
                *out.wasted.entry(key.to_string()).or_default() += 1;
            }
        }
    }
    out
}

/// Rows of a query as values of either database (`$f` turns a row into a value).
macro_rules! fetch {
    ($store:expr, $sql:expr, [$($bind:expr),*], |$r:ident| $f:expr) => {
        on_pool!($store, pool => {
            let rows = sqlx::query($sql)$(.bind($bind))*.fetch_all(pool).await?;
            rows.iter().map(|$r| $f).collect::<Vec<_>>()
        })
    };
}

impl Store {
    /// Miss reasons over `[from, to)`, the most frequent first.
    pub async fn misses(&self, from: i64, to: i64) -> Result<Vec<MissRow>, sqlx::Error> {
        let pg = matches!(self, Store::Postgres(_));
        let sql = format!(
            "SELECT miss_reason AS reason, CAST(COALESCE(SUM(requests), 0) AS BIGINT) AS n, \
             CAST(COALESCE(SUM(miss_tokens), 0) AS BIGINT) AS tokens, \
             CAST(COALESCE(SUM(miss_cost), 0) AS BIGINT) AS cost \
             FROM {} WHERE miss_reason <> '' GROUP BY miss_reason ORDER BY n DESC, reason",
            rows_sql(pg)
        );
        let [b1, b2, b3, b4, b5, b6] = Span::of(from, to).binds();
        let mut rows = fetch!(self, &sql, [b1, b2, b3, b4, b5, b6], |r| (
            r.try_get::<String, _>("reason").unwrap_or_default(),
            r.try_get::<i64, _>("n").unwrap_or_default(),
            r.try_get::<i64, _>("tokens").unwrap_or_default(),
            r.try_get::<i64, _>("cost").unwrap_or_default(),
        ));
        let example = format!(
            "SELECT prefix_key, miss_segment FROM ledger WHERE miss_reason = {} \
             AND at_ms >= {} AND at_ms < {} ORDER BY at_ms DESC LIMIT 1",
            p(pg, 1),
            p(pg, 2),
            p(pg, 3)
        );
        let mut out = Vec::with_capacity(rows.len());
        for (reason, count, tokens, cost) in rows.drain(..) {
            let latest = fetch!(self, &example, [reason.clone(), from, to], |r| (
                r.try_get::<Option<String>, _>("prefix_key").ok().flatten(),
                r.try_get::<Option<String>, _>("miss_segment")
                    .ok()
                    .flatten(),
            ));
            let (example_prefix, example_segment) = latest.into_iter().next().unwrap_or_default();
            out.push(MissRow {
                fix: Reason::parse(&reason).map_or("", Reason::fix),
                reason,
                count,
                tokens,
                cost_nusd: cost,
                example_prefix,
                example_segment,
            });
        }
        Ok(out)
    }

    /// The newest `limit` records with cache activity over `[from, to)`, in time order, and
    /// whether there were more.
    async fn activity(
        &self,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<(Vec<Activity>, bool), sqlx::Error> {
        let pg = matches!(self, Store::Postgres(_));
        let sql = format!(
            "SELECT tenant, COALESCE(model, '') AS model, prefix_key, at_ms, cache_read, \
             cache_write_5m, cache_write_1h FROM ledger WHERE at_ms >= {} AND at_ms < {} \
             AND (cache_read > 0 OR cache_write_5m > 0 OR cache_write_1h > 0) \
             ORDER BY at_ms DESC, id DESC LIMIT {}",
            p(pg, 1),
            p(pg, 2),
            p(pg, 3)
        );
        // Streamed, not fetched whole: only the compact records are held.
        let mut names: HashSet<Arc<str>> = HashSet::new();
        let mut name = |text: &str| -> Arc<str> {
            if let Some(shared) = names.get(text) {
                return shared.clone();
            }
            let shared: Arc<str> = text.into();
            names.insert(shared.clone());
            shared
        };
        let rows = on_pool!(self, pool => {
            let mut stream = sqlx::query(&sql).bind(from).bind(to).bind(limit + 1).fetch(pool);
            let mut rows = Vec::new();
            while let Some(r) = stream.try_next().await? {
                let int = |c: &str| r.try_get::<i64, _>(c).unwrap_or_default();
                rows.push(Activity {
                    tenant: name(r.try_get::<&str, _>("tenant").unwrap_or_default()),
                    model: name(r.try_get::<&str, _>("model").unwrap_or_default()),
                    prefix_key: r.try_get::<Option<&str>, _>("prefix_key").ok().flatten().map(&mut name),
                    at_ms: int("at_ms"),
                    cache_read: int("cache_read"),
                    write_5m: int("cache_write_5m"),
                    write_1h: int("cache_write_1h"),
                });
            }
            rows
        });
        let truncated = rows.len() as i64 > limit;
        let mut rows = rows;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        rows.reverse();
        Ok((rows, truncated))
    }

    /// The `limit` costliest prefixes over `[from, to)`; writes whose TTL outlasts `now` are
    /// neither used nor wasted yet.
    pub async fn prefixes(
        &self,
        from: i64,
        to: i64,
        limit: i64,
        now: i64,
    ) -> Result<Prefixes, sqlx::Error> {
        let pg = matches!(self, Store::Postgres(_));
        let sql = format!(
            "SELECT prefix_key AS k, MAX(team) AS team, MAX(model) AS model, {SUMS}, \
             CAST(COALESCE(SUM(CASE WHEN cr > 0 THEN 1 ELSE 0 END), 0) AS BIGINT) AS reads, \
             CAST(COALESCE(SUM(CASE WHEN cw > 0 THEN 1 ELSE 0 END), 0) AS BIGINT) AS writes \
             FROM {} WHERE prefix_key <> '' GROUP BY prefix_key ORDER BY cost DESC, k LIMIT {}",
            rows_sql(pg),
            p(pg, 7),
        );
        let [b1, b2, b3, b4, b5, b6] = Span::records(from, to).binds();
        let mut rows = fetch!(self, &sql, [b1, b2, b3, b4, b5, b6, limit], |r| {
            let totals = usage_row!(r);
            let (reads, writes) = (
                r.try_get::<i64, _>("reads").unwrap_or_default(),
                r.try_get::<i64, _>("writes").unwrap_or_default(),
            );
            PrefixRow {
                prefix_key: totals.key,
                team: r.try_get("team").unwrap_or_default(),
                model: r.try_get("model").unwrap_or_default(),
                requests: totals.requests,
                tokens: totals.tokens,
                cost_nusd: totals.cost_nusd,
                hit_rate: totals.hit_rate,
                reads,
                writes,
                reads_per_write: (writes > 0).then(|| reads as f64 / writes as f64),
                wasted_writes: 0,
            }
        });
        let (activity, truncated) = self.activity(from, to, SCAN_LIMIT).await?;
        let followed = follow(&activity, to.min(now), &|_| None);
        for row in &mut rows {
            row.wasted_writes = followed.wasted.get(&row.prefix_key).copied().unwrap_or(0);
        }
        Ok(Prefixes {
            rows,
            truncated,
            as_of_ms: now,
        })
    }

    /// The advisor's findings over `[from, to)` as of `now`. `rates` prices a model; `minimums`
    /// are the price table's minimum cacheable prompts per model.
    pub async fn advice(
        &self,
        from: i64,
        to: i64,
        now: i64,
        rates: &(dyn Fn(&str) -> Option<Rates> + Sync),
        minimums: &[(String, u64)],
    ) -> Result<Advice, sqlx::Error> {
        let pg = matches!(self, Store::Postgres(_));
        let (activity, truncated) = self.activity(from, to, SCAN_LIMIT).await?;
        let followed = follow(&activity, to.min(now), rates);
        let mut one_hour_ttl: Vec<OneHourAdvice> = followed
            .one_hour
            .into_iter()
            .filter(|(_, (_, saving))| *saving > 0)
            .map(
                |((prefix_key, model), (rewrites, saving_nusd))| OneHourAdvice {
                    prefix_key,
                    model,
                    rewrites,
                    saving_nusd,
                },
            )
            .collect();
        one_hour_ttl.sort_by(|a, b| {
            b.saving_nusd
                .cmp(&a.saving_nusd)
                .then(a.prefix_key.cmp(&b.prefix_key))
        });

        let under_minimum = self.under_minimum(from, to, minimums).await?;

        let markers_sql = format!(
            "SELECT COALESCE(team, '') AS team, upstream, CAST(COUNT(*) AS BIGINT) AS n, \
             CAST(COALESCE(SUM(client_markers), 0) AS BIGINT) AS markers, \
             CAST(COALESCE(SUM(breakpoints), 0) AS BIGINT) AS added \
             FROM ledger WHERE provider = 'anthropic' AND call = 'client' \
             AND at_ms >= {} AND at_ms < {} GROUP BY COALESCE(team, ''), upstream \
             ORDER BY n DESC, team",
            p(pg, 1),
            p(pg, 2)
        );
        let no_markers = fetch!(self, &markers_sql, [from, to], |r| (
            NoMarkers {
                team: r.try_get("team").unwrap_or_default(),
                upstream: r.try_get("upstream").unwrap_or_default(),
                requests: r.try_get("n").unwrap_or_default(),
                breakpoints_added: r.try_get("added").unwrap_or_default(),
            },
            r.try_get::<i64, _>("markers").unwrap_or_default(),
        ))
        .into_iter()
        .filter(|(_, markers)| *markers == 0)
        .map(|(row, _)| row)
        .collect();

        let silent_upstreams = self.silent_upstreams(from, to, minimums).await?;
        Ok(Advice {
            one_hour_ttl,
            under_minimum,
            no_markers,
            silent_upstreams,
            truncated,
            as_of_ms: now,
        })
    }

    /// Prompts of each priced model a little under its minimum, that cached nothing.
    async fn under_minimum(
        &self,
        from: i64,
        to: i64,
        minimums: &[(String, u64)],
    ) -> Result<Vec<UnderMinimum>, sqlx::Error> {
        let pg = matches!(self, Store::Postgres(_));
        let minimums = Minimums::new(minimums);
        // Per distinct minimum, the prompts just under it and their tokens.
        let columns = minimums.columns(|i, min| {
            let low = (min as f64 * JUST_UNDER) as u64;
            let under = format!("input_uncached >= {low} AND input_uncached < {min}");
            format!(
                ", CAST(COALESCE(SUM(CASE WHEN {under} THEN 1 ELSE 0 END), 0) AS BIGINT) AS n{i}\
                 , CAST(COALESCE(SUM(CASE WHEN {under} THEN input_uncached ELSE 0 END), 0) \
                 AS BIGINT) AS t{i}"
            )
        });
        let sql = format!(
            "SELECT COALESCE(model, '') AS model{columns} FROM ledger \
             WHERE at_ms >= {} AND at_ms < {} AND call = 'client' \
             AND cache_read = 0 AND cache_write_5m = 0 AND cache_write_1h = 0 \
             GROUP BY COALESCE(model, '')",
            p(pg, 1),
            p(pg, 2)
        );
        let groups = fetch!(self, &sql, [from, to], |r| {
            let model: String = r.try_get("model").unwrap_or_default();
            let int = |c: String| r.try_get::<i64, _>(c.as_str()).unwrap_or_default();
            minimums
                .of(&model)
                .map(|(name, min, i)| (name, min, int(format!("n{i}")), int(format!("t{i}"))))
        });
        let mut out: Vec<UnderMinimum> = Vec::new();
        for (model, min, requests, tokens) in groups.into_iter().flatten() {
            match out.iter_mut().find(|u| u.model == model) {
                Some(u) => {
                    u.requests += requests;
                    u.tokens += tokens;
                }
                None => out.push(UnderMinimum {
                    model: model.to_owned(),
                    min_cacheable_tokens: i64::try_from(min).unwrap_or(i64::MAX),
                    requests,
                    tokens,
                }),
            }
        }
        out.retain(|u| u.requests > 0);
        out.sort_by(|a, b| a.model.cmp(&b.model));
        Ok(out)
    }

    /// Upstreams whose marked requests, long enough to cache, reported no cache activity. A
    /// prompt under its model's minimum never caches, marked or not: it proves nothing.
    async fn silent_upstreams(
        &self,
        from: i64,
        to: i64,
        minimums: &[(String, u64)],
    ) -> Result<Vec<SilentUpstream>, sqlx::Error> {
        let pg = matches!(self, Store::Postgres(_));
        let minimums = Minimums::new(minimums);
        let above = minimums.columns(|i, min| {
            format!(
                ", CAST(COALESCE(SUM(CASE WHEN input_uncached + cache_read + cache_write_5m \
                 + cache_write_1h >= {min} THEN 1 ELSE 0 END), 0) AS BIGINT) AS above{i}"
            )
        });
        let sql = format!(
            "SELECT upstream, COALESCE(model, '') AS model, CAST(COUNT(*) AS BIGINT) AS n, \
             CAST(COALESCE(SUM(cache_read + cache_write_5m + cache_write_1h), 0) AS BIGINT) \
             AS cached{above} FROM ledger WHERE (breakpoints > 0 OR client_markers > 0) \
             AND outcome = 'ok' AND at_ms >= {} AND at_ms < {} GROUP BY upstream, \
             COALESCE(model, '') ORDER BY upstream",
            p(pg, 1),
            p(pg, 2)
        );
        let groups = fetch!(self, &sql, [from, to], |r| {
            let int = |c: &str| r.try_get::<i64, _>(c).unwrap_or_default();
            let model: String = r.try_get("model").unwrap_or_default();
            let cacheable = match minimums.of(&model) {
                Some((_, _, i)) => int(&format!("above{i}")),
                None => int("n"),
            };
            (
                r.try_get::<String, _>("upstream").unwrap_or_default(),
                cacheable,
                int("cached"),
            )
        });
        let mut by_upstream: Vec<(String, i64, i64)> = Vec::new();
        for (upstream, cacheable, cached) in groups {
            match by_upstream.last_mut() {
                Some(last) if last.0 == upstream => {
                    last.1 += cacheable;
                    last.2 += cached;
                }
                _ => by_upstream.push((upstream, cacheable, cached)),
            }
        }
        Ok(by_upstream
            .into_iter()
            .filter(|(_, n, cached)| *n >= SILENT_AFTER && *cached == 0)
            .map(|(upstream, marked_requests, _)| SilentUpstream {
                upstream,
                marked_requests,
            })
            .collect())
    }

    /// The proxy instances that wrote records over `[from, to)`.
    pub async fn instances(&self, from: i64, to: i64) -> Result<Vec<Instance>, sqlx::Error> {
        let pg = matches!(self, Store::Postgres(_));
        let sql = format!(
            "SELECT instance_id, CAST(COALESCE(SUM(requests), 0) AS BIGINT) AS n, \
             MIN(first_ms) AS first, MAX(last_ms) AS last FROM {} \
             GROUP BY instance_id ORDER BY instance_id",
            rows_sql(pg)
        );
        let [b1, b2, b3, b4, b5, b6] = Span::of(from, to).binds();
        Ok(fetch!(self, &sql, [b1, b2, b3, b4, b5, b6], |r| Instance {
            instance_id: r.try_get("instance_id").unwrap_or_default(),
            requests: r.try_get("n").unwrap_or_default(),
            first_ms: r.try_get("first").unwrap_or_default(),
            last_ms: r.try_get("last").unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests;
