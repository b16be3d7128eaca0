//! What the simulator has billed: tokens by kind and nano-USD per API key and model, the Gemini
//! storage booked, and the cache state, as `GET /__sim/stats` reports it. Prices and minimums
//! come from the same `config/prices.toml` the proxy reads, at the simulator clock's date.
//!
//! Besides what it billed, each account keeps what the simulator *told* its clients: the usage in
//! the last usage-bearing event each response handed over (a whole body's usage, a stream's
//! latest running total), priced once per response as a client would price it. For every
//! response handed over whole the two agree; a stream cut short has been billed for output it
//! never reported (and, in dialects that report usage only at the end, for input too). That is
//! the yardstick a proxy's ledger can be held to exactly (`cachet replay`'s audit).
//!
//! API keys are reported by fingerprint (`key_fp`: the first 12 hex digits of their blake3), so
//! the stats never echo a credential.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::clock::utc_date;
use crate::pricing::{PriceTable, Rates};
use crate::usage::Usage;

/// Fingerprint under which stats list an API key.
pub fn key_fingerprint(key: &str) -> String {
    blake3::hash(key.as_bytes()).to_hex()[..12].to_owned()
}

/// Totals of one API key and model.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Account {
    pub requests: u64,
    pub input_uncached: u64,
    pub cache_read: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub output: u64,
    /// Input side (uncached, reads, writes) in nano-USD; `None` once a needed price is missing.
    pub input_nusd: Option<u64>,
    /// The same input tokens all billed as uncached input.
    pub input_uncached_nusd: Option<u64>,
    pub output_nusd: Option<u64>,
    /// Gemini explicit cache storage booked so far (caches that have ended).
    pub storage_nusd: Option<u64>,
    /// What the responses told their clients.
    pub told: Told,
}

/// The usage the simulator's responses reported to their clients, and its price.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Told {
    /// Responses (and cache creates) that reported usage.
    pub responses: u64,
    /// Streams whose client went away before their last event.
    pub cut_streams: u64,
    pub input_uncached: u64,
    pub cache_read: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub output: u64,
    /// The reported usage priced once per response (`ModelPrice::cost`), nano-USD, over the
    /// responses whose price is known.
    pub nusd: u64,
    /// The same tokens with all input billed as uncached input; 0 for a cache create, which
    /// would not happen without caching.
    pub uncached_nusd: u64,
    /// Responses whose cost is unknown (the price table lacks a price they need).
    pub unpriced: u64,
}

/// What one response told its client, booked when the response is dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// The latest usage reported (`None`: none was).
    pub usage: Option<Usage>,
    /// A cache create: nothing to compare it with when nothing is cached.
    pub cache_create: bool,
    /// A stream whose client went away before its last event.
    pub cut: bool,
}

#[derive(Default)]
pub struct Ledger {
    accounts: BTreeMap<(String, String), Account>,
}

impl Ledger {
    fn account(&mut self, key: &str, model: &str) -> &mut Account {
        self.accounts
            .entry((key_fingerprint(key), model.to_owned()))
            .or_insert_with(|| Account {
                input_nusd: Some(0),
                input_uncached_nusd: Some(0),
                output_nusd: Some(0),
                storage_nusd: Some(0),
                ..Account::default()
            })
    }

    /// Bills the input side of one request (its output follows as it is written).
    pub fn input(
        &mut self,
        prices: &PriceTable,
        key: &str,
        model: &str,
        usage: &Usage,
        at: SystemTime,
    ) {
        let rates = rates(prices, model, usage.input_total(), at);
        let account = self.account(key, model);
        account.requests += 1;
        account.input_uncached += usage.input_uncached;
        account.cache_read += usage.cache_read;
        account.cache_write_5m += usage.cache_write_5m;
        account.cache_write_1h += usage.cache_write_1h;
        let actual = nano(&[
            (usage.input_uncached, rates.input),
            (usage.cache_read, rates.cache_read),
            (usage.cache_write_5m, rates.cache_write_5m),
            (usage.cache_write_1h, rates.cache_write_1h),
        ]);
        add(&mut account.input_nusd, actual);
        add(
            &mut account.input_uncached_nusd,
            nano(&[(usage.input_total(), rates.input)]),
        );
    }

    /// Bills output tokens as they are written (a cancelled stream pays for what it received).
    pub fn output(
        &mut self,
        prices: &PriceTable,
        key: &str,
        model: &str,
        tokens: u64,
        at: SystemTime,
    ) {
        if tokens == 0 {
            return;
        }
        let rates = rates(prices, model, 0, at);
        let account = self.account(key, model);
        account.output += tokens;
        add(&mut account.output_nusd, nano(&[(tokens, rates.output)]));
    }

    /// Books what one response told its client (its usage priced as the client would price
    /// it: once, at the response's date).
    pub fn told(
        &mut self,
        prices: &PriceTable,
        key: &str,
        model: &str,
        report: Report,
        at: SystemTime,
    ) {
        let told = &mut self.account(key, model).told;
        told.cut_streams += u64::from(report.cut);
        let Some(usage) = report.usage else {
            return;
        };
        told.responses += 1;
        told.input_uncached += usage.input_uncached;
        told.cache_read += usage.cache_read;
        told.cache_write_5m += usage.cache_write_5m;
        told.cache_write_1h += usage.cache_write_1h;
        told.output += usage.output;
        let cost = prices
            .price_on(model, &utc_date(at))
            .map(|p| p.cost(&usage))
            .unwrap_or_default();
        let uncached = if report.cache_create {
            Some(0)
        } else {
            cost.uncached
        };
        match (cost.actual, uncached) {
            (Some(actual), Some(uncached)) => {
                told.nusd += actual;
                told.uncached_nusd += uncached;
            }
            _ => told.unpriced += 1,
        }
    }

    /// Books a Gemini cache's storage when it ends (deleted or expired).
    pub fn storage(&mut self, key: &str, model: &str, nusd: Option<u64>) {
        add(&mut self.account(key, model).storage_nusd, nusd);
    }

    pub fn accounts(&self) -> impl Iterator<Item = (&str, &str, &Account)> {
        self.accounts
            .iter()
            .map(|((key, model), account)| (key.as_str(), model.as_str(), account))
    }
}

fn rates(prices: &PriceTable, model: &str, input_tokens: u64, at: SystemTime) -> Rates {
    prices
        .price_on(model, &utc_date(at))
        .map(|p| p.rates_for(input_tokens))
        .unwrap_or_default()
}

/// Σ tokens × pico-USD, rounded half up to nano-USD per call; `None` when a kind with tokens has
/// no price. Rounding per request, as a provider's invoice lines would.
fn nano(terms: &[(u64, Option<u64>)]) -> Option<u64> {
    let mut pico: u128 = 0;
    for &(tokens, price) in terms {
        if tokens > 0 {
            pico += u128::from(tokens) * u128::from(price?);
        }
    }
    u64::try_from((pico + 500) / 1000).ok()
}

fn add(total: &mut Option<u64>, amount: Option<u64>) {
    *total = match (*total, amount) {
        (Some(a), Some(b)) => Some(a + b),
        _ => None,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn day() -> SystemTime {
        // 2026-11-02
        UNIX_EPOCH + Duration::from_secs(1_793_577_600)
    }

    #[test]
    fn input_side_is_priced_per_kind() {
        let prices = PriceTable::built_in().unwrap();
        let mut ledger = Ledger::default();
        // claude-sonnet-4-6: input $3, read $0.30, 5m write $3.75, 1h write $6 per MTok.
        let usage = Usage {
            input_uncached: 1000,
            cache_read: 10_000,
            cache_write_5m: 2000,
            cache_write_1h: 500,
            output: 0,
        };
        ledger.input(&prices, "sk-a", "claude-sonnet-4-6", &usage, day());
        ledger.output(&prices, "sk-a", "claude-sonnet-4-6", 100, day());
        let (_, _, account) = ledger.accounts().next().unwrap();
        // (1000×3 + 10000×0.30 + 2000×3.75 + 500×6) / 1e6 USD = $0.0165 = 16,500,000 nano.
        assert_eq!(account.input_nusd, Some(16_500_000));
        // 13,500 × 3 / 1e6 = $0.0405.
        assert_eq!(account.input_uncached_nusd, Some(40_500_000));
        // 100 × 15 / 1e6 = $0.0015.
        assert_eq!(account.output_nusd, Some(1_500_000));
        assert_eq!(account.requests, 1);
    }

    #[test]
    fn a_missing_price_makes_the_total_null_not_zero() {
        let prices = PriceTable::built_in().unwrap();
        let mut ledger = Ledger::default();
        let usage = Usage {
            input_uncached: 10,
            ..Usage::default()
        };
        ledger.input(&prices, "k", "deepseek-chat", &usage, day());
        let (_, _, account) = ledger.accounts().next().unwrap();
        assert_eq!(account.input_nusd, None);
        assert_eq!(account.input_uncached, 10);
    }

    #[test]
    fn keys_are_fingerprinted() {
        let mut ledger = Ledger::default();
        ledger.storage("sk-secret", "gemini-2.5-flash", Some(5));
        let (key, _, _) = ledger.accounts().next().unwrap();
        assert_eq!(key, key_fingerprint("sk-secret"));
        assert!(!key.contains("secret"));
    }
}
