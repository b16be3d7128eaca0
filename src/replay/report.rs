//! `cachet replay`'s report: per workload × provider and route, the simulator's bill against
//! the oracle; for the replica pool, cached-token rates and load balance.
//!
//! Money is the input side only (uncached, reads, writes, Gemini storage), as DESIGN.md defines
//! savings; output costs the same on every route. `no-cache` is the workload's requests all
//! billed as uncached input (the direct route's tokens), `saved` = no-cache − cost, and
//! `efficiency` = saved ÷ oracle saved.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::oracle::OracleBill;
use super::run::{Route, RouteResult};
use super::workload::Workload;

pub struct WorkloadReport {
    pub name: String,
    pub provider: String,
    pub model: String,
    pub digest: String,
    pub routes: Vec<(Route, RouteResult)>,
    /// `None` when the model has no input or read price and its caching has write fees.
    pub oracle: Option<OracleBill>,
    /// The oracle's money figures are real (else only its read tokens are).
    pub oracle_in_money: bool,
    pub pool: Option<PoolReport>,
}

/// Replica pools: cached-token rate per routing policy, and the bound.
pub struct PoolReport {
    /// (policy, cached-token rate, load balance: max ÷ mean of time-averaged in-flight).
    pub policies: Vec<(String, f64, f64)>,
    /// One LRU of 16M tokens in 16-token blocks, in trace order.
    pub bound_rate: f64,
}

impl WorkloadReport {
    pub fn new(workload: &Workload) -> Self {
        WorkloadReport {
            name: workload.name.clone(),
            provider: workload.provider.upstream().to_owned(),
            model: workload.model.clone(),
            digest: workload.digest(),
            routes: Vec::new(),
            oracle: None,
            oracle_in_money: false,
            pool: None,
        }
    }

    /// The no-cache baseline: the direct route's input tokens at the input price.
    fn baseline(&self) -> Option<u64> {
        self.routes
            .iter()
            .find(|(r, _)| *r == Route::Direct)
            .and_then(|(_, res)| res.uncached_nusd)
    }

    fn saved(&self, result: &RouteResult) -> Option<i64> {
        let baseline = i64::try_from(self.baseline()?).ok()?;
        Some(baseline - i64::try_from(result.cost_nusd?).ok()?)
    }

    /// saved ÷ oracle saved; without prices, for caches with no write fee (savings are then
    /// proportional to tokens read), tokens read ÷ the oracle's tokens read.
    pub fn efficiency(&self, result: &RouteResult) -> Option<f64> {
        let oracle = self.oracle?;
        if self.oracle_in_money {
            let best = oracle.saved_nusd;
            return (best > 0).then(|| self.saved(result).map(|s| s as f64 / best as f64))?;
        }
        let best = oracle.read_tokens.filter(|&r| r > 0)?;
        Some(result.tokens.cache_read as f64 / best as f64)
    }

    fn oracle_saved(&self) -> Option<u64> {
        self.oracle
            .filter(|_| self.oracle_in_money)
            .map(|o| o.saved_nusd)
    }

    pub fn json(&self) -> Value {
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|(route, r)| {
                json!({
                    "route": route.name(),
                    "requests": r.requests,
                    "ok": r.ok(),
                    "failed": r.failed,
                    "failed_injected": r.injected,
                    "failed_unexplained": r.unexplained,
                    "proxy_errors": r.proxy_errors,
                    "faults_injected": r.faults,
                    "tokens": {
                        "input_uncached": r.tokens.input_uncached,
                        "cache_read": r.tokens.cache_read,
                        "cache_write": r.tokens.cache_write(),
                        "cache_write_5m": r.tokens.cache_write_5m,
                        "cache_write_1h": r.tokens.cache_write_1h,
                        "output": r.tokens.output,
                    },
                    "cost_nusd": r.cost_nusd,
                    "uncached_nusd": self.baseline(),
                    "saved_nusd": self.saved(r),
                    "efficiency": self.efficiency(r),
                    "cancelled_streams": r.cancelled,
                    "audit": r.audit.as_ref().map(|a| {
                        let mut audit = json!(a);
                        audit["disagreements"] = json!(a.disagreements());
                        audit
                    }),
                })
            })
            .collect();
        let mut out = json!({
            "workload": self.name,
            "provider": self.provider,
            "model": self.model,
            "digest": self.digest,
            "routes": routes,
            "oracle": self.oracle.map(|o| json!({
                "input_tokens": o.input_tokens,
                "uncached_nusd": self.oracle_in_money.then_some(o.uncached_nusd),
                "saved_nusd": self.oracle_saved(),
                "read_tokens": o.read_tokens,
            })),
        });
        if let Some(pool) = &self.pool {
            out["pool"] = json!({
                "policies": pool.policies.iter().map(|(name, rate, balance)| json!({
                    "policy": name, "cached_token_rate": rate, "load_balance": balance,
                })).collect::<Vec<_>>(),
                "bound_cached_token_rate": pool.bound_rate,
            });
        }
        out
    }
}

/// With faults: per workload and route, how requests ended and what the simulator injected
/// (its count includes the calls cachet and the fixed baseline make on their own).
pub fn fault_table(reports: &[WorkloadReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<9} {:<9} {:<6} {:>5} {:>5} {:>6} {:>8} {:>11} {:>9}  injected",
        "workload",
        "provider",
        "route",
        "reqs",
        "ok",
        "failed",
        "injected",
        "unexplained",
        "proxy-err"
    );
    for report in reports {
        for (route, r) in &report.routes {
            let _ = writeln!(
                out,
                "{:<9} {:<9} {:<6} {:>5} {:>5} {:>6} {:>8} {:>11} {:>9}  {}",
                report.name,
                report.provider,
                route.name(),
                r.requests,
                r.ok(),
                r.failed,
                r.injected,
                r.unexplained,
                r.proxy_errors,
                tally(&r.faults),
            );
        }
    }
    out
}

/// `429×12 404×3 reset×5 evict×7 (2 cachedContents)`.
fn tally(t: &crate::sim::Tally) -> String {
    let mut parts: Vec<String> = t
        .errors
        .iter()
        .map(|(status, n)| format!("{status}×{n}"))
        .collect();
    for (name, n) in [
        ("reset", t.resets),
        ("latency", t.latency),
        ("slow", t.slow_streams),
        ("evict", t.evictions),
    ] {
        if n > 0 {
            parts.push(format!("{name}×{n}"));
        }
    }
    if t.evicted_cached_contents > 0 {
        parts.push(format!("({} cachedContents)", t.evicted_cached_contents));
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(" ")
    }
}

/// The books of each cachet route: its ledger, `/metrics` and what the simulator reported,
/// and whether they agree.
pub fn audit_table(reports: &[WorkloadReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "books of the cachet route: ledger = /metrics = what the simulator reported"
    );
    for report in reports {
        for (_, r) in report
            .routes
            .iter()
            .filter(|(route, _)| *route == Route::Cachet)
        {
            let Some(a) = &r.audit else {
                continue;
            };
            let u = &a.ledger.usage;
            let verdict = match a.disagreements() {
                d if d.is_empty() => "agree".to_owned(),
                d => format!("DISAGREE: {}", d.join("; ")),
            };
            let _ = writeln!(
                out,
                "{:<9} {:<9} {:>5} records {:>10} in {:>10} read {:>9} write {:>7} out  ${:.6}                   cancelled {} (incomplete {})  unpriced {}  dropped {}  {}",
                report.name,
                report.provider,
                a.records,
                u.input_uncached,
                u.cache_read,
                u.cache_write(),
                u.output,
                a.ledger.cost_nusd as f64 / 1e9,
                a.cancelled,
                a.incomplete,
                a.unpriced,
                a.dropped,
                verdict,
            );
            let gap = a.untold;
            if gap != crate::usage::Usage::default() {
                let _ = writeln!(
                    out,
                    "{:<19} billed but never reported (cut streams): {} in, {} read, {} out",
                    "", gap.input_uncached, gap.cache_read, gap.output
                );
            }
        }
    }
    out
}

fn usd(nusd: Option<i64>) -> String {
    match nusd {
        Some(n) => format!("{:.4}", n as f64 / 1e9),
        None => "n/a".into(),
    }
}

fn unsigned(n: Option<u64>) -> Option<i64> {
    n.and_then(|n| i64::try_from(n).ok())
}

/// The text table.
pub fn table(reports: &[WorkloadReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<9} {:<9} {:<6} {:>5} {:>10} {:>10} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "workload",
        "provider",
        "route",
        "reqs",
        "uncached",
        "read",
        "write",
        "output",
        "cost $",
        "no-cache $",
        "saved $",
        "oracle $",
        "eff"
    );
    for report in reports {
        let oracle = report.oracle_saved();
        for (route, r) in &report.routes {
            let eff = report
                .efficiency(r)
                .map_or("n/a".to_owned(), |e| format!("{:.0}%", e * 100.0));
            let _ = writeln!(
                out,
                "{:<9} {:<9} {:<6} {:>5} {:>10} {:>10} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>6}",
                report.name,
                report.provider,
                route.name(),
                r.requests,
                r.tokens.input_uncached,
                r.tokens.cache_read,
                r.tokens.cache_write(),
                r.tokens.output,
                usd(unsigned(r.cost_nusd)),
                usd(unsigned(report.baseline())),
                usd(report.saved(r)),
                usd(unsigned(oracle)),
                eff,
            );
            if r.failed > 0 {
                let _ = writeln!(
                    out,
                    "  ({} of {} requests failed: {} with their injected fault, {} unexplained)",
                    r.failed, r.requests, r.injected, r.unexplained
                );
            }
        }
        if let Some(pool) = &report.pool {
            for (name, rate, balance) in &pool.policies {
                let _ = writeln!(
                    out,
                    "  {:<40} cached-token rate {:>5.1}%  load balance {:.2}",
                    name,
                    rate * 100.0,
                    balance
                );
            }
            let _ = writeln!(
                out,
                "  {:<40} cached-token rate {:>5.1}%",
                "bound (one 16M-token LRU)",
                pool.bound_rate * 100.0
            );
        }
    }
    let mut unpriced: Vec<&str> = reports
        .iter()
        .filter(|r| r.oracle.is_some() && !r.oracle_in_money)
        .map(|r| r.model.as_str())
        .collect();
    unpriced.sort_unstable();
    unpriced.dedup();
    if !unpriced.is_empty() {
        let _ = writeln!(
            out,
            "\nNo prices for {}: eff there is tokens read ÷ the oracle's tokens read (no write \
             fee, so savings are proportional to it).",
            unpriced.join(", ")
        );
    }
    out
}
