//! The books of a replay's cachet route, held against each other: the proxy's ledger (its
//! store, after a graceful stop), its `/metrics` totals, and what the simulator told its
//! clients (`sim::billing::Told`: the usage each response reported, priced once per response).
//! They must agree exactly, in every token kind and in nano-USD, with no record dropped.
//!
//! The simulator's *told* figures are the yardstick rather than its bill because nobody in
//! front of a provider can know more than the provider reports: a stream the client cancels is
//! billed for output (and, where usage comes only at the end, input) it never reported. That
//! gap is shown beside the audit; the ledger marks those records `usage_complete = false`.

use serde::Serialize;

use crate::sim::billing::Account;
use crate::usage::Usage;

/// One book's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Books {
    pub usage: Usage,
    /// Over the calls whose costs are known (storage included).
    pub cost_nusd: u64,
    pub cost_uncached_nusd: u64,
}

/// The audit of one cachet route.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Audit {
    pub ledger: Books,
    /// `/metrics`, read before and after the route (the counters are process-wide). The token
    /// counters have no TTL split: its cache writes are all under `cache_write_5m`.
    pub metrics: Books,
    pub told: Books,
    /// Records, and of them: unpriced, cancelled by the client, with incomplete usage.
    pub records: u64,
    pub unpriced: u64,
    pub cancelled: u64,
    pub incomplete: u64,
    /// The simulator's count of responses whose cost is unknown, and of streams cut short.
    pub told_unpriced: u64,
    pub cut_streams: u64,
    /// `cachet_ledger_dropped_total` over the route.
    pub dropped: u64,
    /// What the simulator billed beyond what it told (streams cut short).
    pub untold: Usage,
}

impl Audit {
    /// The simulator's side, from its accounts after `settle`.
    pub fn told_from(accounts: &[(String, String, Account)]) -> (Books, u64, u64, Usage) {
        let mut books = Books::default();
        let (mut unpriced, mut cut) = (0, 0);
        let mut billed = Usage::default();
        for (_, _, a) in accounts {
            let t = &a.told;
            books.usage += Usage {
                input_uncached: t.input_uncached,
                cache_read: t.cache_read,
                cache_write_5m: t.cache_write_5m,
                cache_write_1h: t.cache_write_1h,
                output: t.output,
            };
            books.cost_nusd += t.nusd + a.storage_nusd.unwrap_or(0);
            books.cost_uncached_nusd += t.uncached_nusd;
            unpriced += t.unpriced + u64::from(a.storage_nusd.is_none());
            cut += t.cut_streams;
            billed += Usage {
                input_uncached: a.input_uncached,
                cache_read: a.cache_read,
                cache_write_5m: a.cache_write_5m,
                cache_write_1h: a.cache_write_1h,
                output: a.output,
            };
        }
        let untold = Usage {
            input_uncached: billed
                .input_uncached
                .saturating_sub(books.usage.input_uncached),
            cache_read: billed.cache_read.saturating_sub(books.usage.cache_read),
            cache_write_5m: billed
                .cache_write_5m
                .saturating_sub(books.usage.cache_write_5m),
            cache_write_1h: billed
                .cache_write_1h
                .saturating_sub(books.usage.cache_write_1h),
            output: billed.output.saturating_sub(books.usage.output),
        };
        (books, unpriced, cut, untold)
    }

    /// Every way the books disagree; empty when they agree to the token and the nano-dollar.
    pub fn disagreements(&self) -> Vec<String> {
        let mut out = Vec::new();
        let kinds = |b: &Books| {
            [
                ("input_uncached", b.usage.input_uncached),
                ("cache_read", b.usage.cache_read),
                ("cache_write", b.usage.cache_write()),
                ("output", b.usage.output),
                ("cost_nusd", b.cost_nusd),
                ("cost_uncached_nusd", b.cost_uncached_nusd),
            ]
        };
        for (name, other) in [("metrics", &self.metrics), ("simulator", &self.told)] {
            for ((kind, ledger), (_, theirs)) in kinds(&self.ledger).into_iter().zip(kinds(other)) {
                if ledger != theirs {
                    out.push(format!("{kind}: ledger {ledger}, {name} {theirs}"));
                }
            }
        }
        let split = |u: &Usage| (u.cache_write_5m, u.cache_write_1h);
        if split(&self.ledger.usage) != split(&self.told.usage) {
            out.push(format!(
                "cache writes 5m/1h: ledger {:?}, simulator {:?}",
                split(&self.ledger.usage),
                split(&self.told.usage)
            ));
        }
        for (what, ledger, sim) in [
            ("unpriced", self.unpriced, self.told_unpriced),
            ("cancelled streams", self.cancelled, self.cut_streams),
        ] {
            if ledger != sim {
                out.push(format!("{what}: ledger {ledger}, simulator {sim}"));
            }
        }
        if self.dropped > 0 {
            out.push(format!("{} ledger records dropped", self.dropped));
        }
        out
    }
}

/// The sum of every series of `name` in a Prometheus text exposition whose labels include
/// `label` (when given), in units of 10⁻⁹: counters of tokens come out ×1e9, money in nano-USD.
/// Decimals are read as text, so a cost rendered to the nano-dollar is summed exactly.
pub fn metric_nano(text: &str, name: &str, label: Option<&str>) -> u64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let bare = series.split('{').next()?;
            (bare == name && label.is_none_or(|l| series.contains(l))).then_some(value)
        })
        .filter_map(nano_of)
        .sum()
}

/// A non-negative decimal as an integer count of 10⁻⁹ (exact up to nine decimals).
fn nano_of(value: &str) -> Option<u64> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let whole: u64 = whole.parse().ok()?;
    let digits: String = fraction
        .chars()
        .chain(std::iter::repeat('0'))
        .take(9)
        .collect();
    Some(whole * 1_000_000_000 + digits.parse::<u64>().ok()?)
}

/// The books `/metrics` keeps, from its text (divide token counts back by 1e9).
pub fn metrics_books(text: &str) -> (Books, u64) {
    let tokens = |kind: &str| {
        metric_nano(
            text,
            crate::telemetry::TOKENS_TOTAL,
            Some(&format!("kind=\"{kind}\"")),
        ) / 1_000_000_000
    };
    let books = Books {
        usage: Usage {
            input_uncached: tokens("input_uncached"),
            cache_read: tokens("cache_read"),
            cache_write_5m: tokens("cache_write"),
            cache_write_1h: 0,
            output: tokens("output"),
        },
        cost_nusd: metric_nano(text, crate::telemetry::COST_USD_TOTAL, None),
        cost_uncached_nusd: metric_nano(text, crate::telemetry::COST_UNCACHED_USD_TOTAL, None),
    };
    let dropped = metric_nano(text, crate::ledger::DROPPED_TOTAL, None) / 1_000_000_000;
    (books, dropped)
}

/// `after − before`, kind by kind.
pub fn books_since(after: Books, before: Books) -> Books {
    let u = |a: u64, b: u64| a.saturating_sub(b);
    Books {
        usage: Usage {
            input_uncached: u(after.usage.input_uncached, before.usage.input_uncached),
            cache_read: u(after.usage.cache_read, before.usage.cache_read),
            cache_write_5m: u(after.usage.cache_write_5m, before.usage.cache_write_5m),
            cache_write_1h: u(after.usage.cache_write_1h, before.usage.cache_write_1h),
            output: u(after.usage.output, before.usage.output),
        },
        cost_nusd: u(after.cost_nusd, before.cost_nusd),
        cost_uncached_nusd: u(after.cost_uncached_nusd, before.cost_uncached_nusd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP cachet_tokens_total Tokens\n\
        # TYPE cachet_tokens_total counter\n\
        cachet_tokens_total{upstream=\"a\",model=\"m\",kind=\"cache_read\"} 120\n\
        cachet_tokens_total{upstream=\"b\",model=\"other\",kind=\"cache_read\"} 3\n\
        cachet_tokens_total{upstream=\"a\",model=\"m\",kind=\"output\"} 7\n\
        cachet_cost_usd_total{upstream=\"a\",model=\"m\"} 1.000000001\n\
        cachet_cost_usd_total{upstream=\"b\",model=\"other\"} 0.5\n\
        cachet_cost_uncached_usd_total{upstream=\"a\",model=\"m\"} 2.000000000\n\
        cachet_ledger_dropped_total 0\n";

    #[test]
    fn metrics_are_summed_exactly_by_name_and_label() {
        let (books, dropped) = metrics_books(TEXT);
        assert_eq!(books.usage.cache_read, 123);
        assert_eq!(books.usage.output, 7);
        assert_eq!(books.usage.input_uncached, 0);
        assert_eq!(books.cost_nusd, 1_500_000_001);
        assert_eq!(books.cost_uncached_nusd, 2_000_000_000);
        assert_eq!(dropped, 0);
        assert_eq!(nano_of("0.25"), Some(250_000_000));
        assert_eq!(nano_of("x"), None);
    }

    #[test]
    fn any_difference_is_named() {
        let books = Books {
            usage: Usage {
                input_uncached: 10,
                cache_read: 5,
                cache_write_5m: 3,
                cache_write_1h: 1,
                output: 2,
            },
            cost_nusd: 100,
            cost_uncached_nusd: 200,
        };
        let metrics = Books {
            usage: Usage {
                cache_write_5m: 4,
                cache_write_1h: 0,
                ..books.usage
            },
            ..books
        };
        let agreeing = Audit {
            ledger: books,
            metrics,
            told: books,
            ..Audit::default()
        };
        assert!(
            agreeing.disagreements().is_empty(),
            "{:?}",
            agreeing.disagreements()
        );
        let mut off = agreeing.clone();
        off.told.cost_nusd += 1;
        off.told.usage.cache_write_1h = 0;
        off.told.usage.cache_write_5m = 4;
        off.cancelled = 1;
        off.dropped = 2;
        let found = off.disagreements();
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0].starts_with("cost_nusd: ledger 100, simulator 101"));
        assert!(found[1].starts_with("cache writes 5m/1h"));
        assert!(found[2].starts_with("cancelled streams: ledger 1, simulator 0"));
        assert!(found[3].contains("2 ledger records dropped"));
    }
}
