//! Prices (`config/prices.toml`) and the cost of a request in integer nano-USD.
//!
//! Prices are held as pico-USD per token (= micro-USD per million tokens), so every published
//! price down to $0.000001/MTok is an exact integer. A request's cost is the sum over token
//! kinds of tokens × price, in pico-USD, rounded half up to nano-USD once per request. A price
//! the table leaves out is `None`; a cost that would need it is `None` too, never a guess.

use std::collections::HashMap;
use std::time::SystemTime;

use serde::Deserialize;

use crate::usage::Usage;

pub const BUILT_IN: &str = include_str!("../config/prices.toml");

/// Pico-USD per token (for `storage`: per token-hour).
pub type Pico = u64;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rates {
    pub input: Option<Pico>,
    pub output: Option<Pico>,
    pub cache_read: Option<Pico>,
    pub cache_write_5m: Option<Pico>,
    pub cache_write_1h: Option<Pico>,
    pub storage: Option<Pico>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    pub model: String,
    pub provider: String,
    /// `YYYY-MM-DD`, compared as text.
    pub effective_from: String,
    pub rates: Rates,
    pub min_cacheable_tokens: Option<u64>,
    /// (above_input_tokens, overrides), ascending.
    pub tiers: Vec<(u64, Rates)>,
}

/// Costs of one request in nano-USD; `None` where a needed price is missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub actual: Option<u64>,
    /// The same tokens with every input token billed as uncached input.
    pub uncached: Option<u64>,
}

#[derive(Debug, Default)]
pub struct PriceTable {
    by_model: HashMap<String, Vec<ModelPrice>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    #[serde(default)]
    models: Vec<toml::Table>,
}

const RATE_KEYS: [&str; 6] = [
    "input",
    "output",
    "cache_read",
    "cache_write_5m",
    "cache_write_1h",
    "storage",
];
const MODEL_KEYS: [&str; 5] = [
    "model",
    "provider",
    "effective_from",
    "min_cacheable_tokens",
    "tiers",
];

/// serde cannot deny unknown fields through `flatten`, so typos ("cache_reed", which would
/// silently read as a null price) are caught here.
fn unknown_keys(row: &toml::Table, extra: &[&str], at: &str, errors: &mut Vec<String>) {
    for key in row.keys() {
        if !RATE_KEYS.contains(&key.as_str()) && !extra.contains(&key.as_str()) {
            errors.push(format!("{at}.{key}: unknown key"));
        }
    }
}

#[derive(Deserialize)]
struct RawModel {
    model: String,
    provider: String,
    effective_from: String,
    #[serde(flatten)]
    rates: RawRates,
    min_cacheable_tokens: Option<u64>,
    #[serde(default)]
    tiers: Vec<RawTier>,
}

#[derive(Deserialize)]
struct RawTier {
    above_input_tokens: u64,
    #[serde(flatten)]
    rates: RawRates,
}

#[derive(Deserialize, Default)]
struct RawRates {
    input: Option<f64>,
    output: Option<f64>,
    cache_read: Option<f64>,
    cache_write_5m: Option<f64>,
    cache_write_1h: Option<f64>,
    storage: Option<f64>,
}

impl RawRates {
    fn into_rates(self, at: &str, errors: &mut Vec<String>) -> Rates {
        let mut pico = |name: &str, usd_per_mtok: Option<f64>| {
            let v = usd_per_mtok?;
            if !(v.is_finite() && v >= 0.0) {
                errors.push(format!("{at}.{name}: must be a price ≥ 0"));
                return None;
            }
            Some((v * 1_000_000.0).round() as u64)
        };
        Rates {
            input: pico("input", self.input),
            output: pico("output", self.output),
            cache_read: pico("cache_read", self.cache_read),
            cache_write_5m: pico("cache_write_5m", self.cache_write_5m),
            cache_write_1h: pico("cache_write_1h", self.cache_write_1h),
            storage: pico("storage", self.storage),
        }
    }
}

impl PriceTable {
    /// Parses a price table; errors name the row (`models[i].field`).
    pub fn parse(text: &str) -> Result<Self, Vec<String>> {
        let raw: RawTable = toml::from_str(text).map_err(|e| vec![format!("prices: {e}")])?;
        let mut errors = Vec::new();
        let mut table = Self::default();
        for (i, row) in raw.models.into_iter().enumerate() {
            let name = row
                .get("model")
                .and_then(toml::Value::as_str)
                .unwrap_or("?");
            let at = format!("models[{i}] ({name})");
            unknown_keys(&row, &MODEL_KEYS, &at, &mut errors);
            for tier in row
                .get("tiers")
                .and_then(toml::Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(tier) = tier.as_table() {
                    unknown_keys(
                        tier,
                        &["above_input_tokens"],
                        &format!("{at}.tiers"),
                        &mut errors,
                    );
                }
            }
            let m: RawModel = match toml::Value::Table(row).try_into() {
                Ok(m) => m,
                Err(e) => {
                    errors.push(format!("{at}: {}", e.to_string().trim()));
                    continue;
                }
            };
            if !is_date(&m.effective_from) {
                errors.push(format!("{at}.effective_from: expected YYYY-MM-DD"));
            }
            let mut tiers: Vec<(u64, Rates)> = m
                .tiers
                .into_iter()
                .map(|t| (t.above_input_tokens, t.rates.into_rates(&at, &mut errors)))
                .collect();
            tiers.sort_by_key(|(above, _)| *above);
            let price = ModelPrice {
                rates: m.rates.into_rates(&at, &mut errors),
                model: m.model,
                provider: m.provider,
                effective_from: m.effective_from,
                min_cacheable_tokens: m.min_cacheable_tokens,
                tiers,
            };
            let rows = table.by_model.entry(price.model.clone()).or_default();
            rows.push(price);
            rows.sort_by(|a, b| a.effective_from.cmp(&b.effective_from));
        }
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(errors)
        }
    }

    pub fn built_in() -> Result<Self, Vec<String>> {
        Self::parse(BUILT_IN)
    }

    /// The table's own name for `model`: itself, or the priced model it is a dated snapshot of
    /// (`claude-sonnet-4-6-20260101`, `gpt-4o-2024-08-06`). `gpt-4o-mini` is not `gpt-4o`.
    pub fn canonical<'a>(&'a self, model: &str) -> Option<&'a str> {
        let model = model.strip_prefix("models/").unwrap_or(model);
        if let Some((name, _)) = self.by_model.get_key_value(model) {
            return Some(name);
        }
        self.by_model
            .keys()
            .filter(|name| is_snapshot_of(model, name))
            .max_by_key(|name| name.len())
            .map(String::as_str)
    }

    /// The row in force on `date` (`YYYY-MM-DD`).
    pub fn price_on(&self, model: &str, date: &str) -> Option<&ModelPrice> {
        let rows = self.by_model.get(self.canonical(model)?)?;
        rows.iter()
            .rev()
            .find(|p| p.effective_from.as_str() <= date)
    }
}

/// Whether `model` is a dated snapshot of `name` (`claude-sonnet-4-6-20260101` of
/// `claude-sonnet-4-6`; `gpt-4o-mini` is not one of `gpt-4o`).
pub fn is_snapshot_of(model: &str, name: &str) -> bool {
    model.strip_prefix(name).is_some_and(|rest| {
        rest.len() > 1
            && rest.starts_with('-')
            && rest[1..].bytes().all(|b| b.is_ascii_digit() || b == b'-')
    })
}

impl PriceTable {
    /// Every model's minimum cacheable prompt on `date`, where the table gives one.
    pub fn minimums_on(&self, date: &str) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .by_model
            .keys()
            .filter_map(|model| {
                let min = self.price_on(model, date)?.min_cacheable_tokens?;
                Some((model.clone(), min))
            })
            .collect();
        out.sort();
        out
    }
}

impl ModelPrice {
    /// Rates for a prompt of `input_tokens`, tier overrides applied.
    pub fn rates_for(&self, input_tokens: u64) -> Rates {
        let mut rates = self.rates.clone();
        for (above, tier) in &self.tiers {
            if input_tokens > *above {
                let pick = |t: Option<Pico>, base: Option<Pico>| t.or(base);
                rates = Rates {
                    input: pick(tier.input, rates.input),
                    output: pick(tier.output, rates.output),
                    cache_read: pick(tier.cache_read, rates.cache_read),
                    cache_write_5m: pick(tier.cache_write_5m, rates.cache_write_5m),
                    cache_write_1h: pick(tier.cache_write_1h, rates.cache_write_1h),
                    storage: pick(tier.storage, rates.storage),
                };
            }
        }
        rates
    }

    pub fn cost(&self, usage: &Usage) -> Cost {
        let r = self.rates_for(usage.input_total());
        let actual = sum_nano(&[
            (usage.input_uncached, r.input),
            (usage.cache_read, r.cache_read),
            (usage.cache_write_5m, r.cache_write_5m),
            (usage.cache_write_1h, r.cache_write_1h),
            (usage.output, r.output),
        ]);
        let uncached = sum_nano(&[(usage.input_total(), r.input), (usage.output, r.output)]);
        Cost { actual, uncached }
    }
}

/// Σ tokens × pico, rounded half up to nano-USD; `None` if a kind with tokens has no price.
fn sum_nano(terms: &[(u64, Option<Pico>)]) -> Option<u64> {
    let mut pico: u128 = 0;
    for &(tokens, price) in terms {
        if tokens > 0 {
            pico += u128::from(tokens) * u128::from(price?);
        }
    }
    u64::try_from((pico + 500) / 1000).ok()
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// Storage of an explicit cache in nano-USD: `tokens` held from `created` to `ended` at
/// `storage_pico` pico-USD per token-hour, rounded half up.
pub fn storage_nusd(tokens: u64, created: SystemTime, ended: SystemTime, storage_pico: u64) -> u64 {
    let micros = ended
        .duration_since(created)
        .unwrap_or_default()
        .as_micros();
    // tokens × pico/token-hour × hours, with hours = micros / 3.6e9; pico → nano is /1000.
    let pico_micro_hours = u128::from(tokens) * u128::from(storage_pico) * micros;
    let nano = (pico_micro_hours + 1_800_000_000_000) / 3_600_000_000_000;
    u64::try_from(nano).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
