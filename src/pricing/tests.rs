use super::*;

fn usage(input_uncached: u64, cache_read: u64, w5: u64, w1h: u64, output: u64) -> Usage {
    Usage {
        input_uncached,
        cache_read,
        cache_write_5m: w5,
        cache_write_1h: w1h,
        output,
    }
}

fn table() -> PriceTable {
    PriceTable::built_in().unwrap()
}

#[test]
fn anthropic_input_excludes_cache_so_each_kind_is_priced_once() {
    // claude-sonnet-4-6: $3 in, $3.75 5m write, $6 1h write, $0.30 read, $15 out (per MTok).
    // In pico-USD per token: 3_000_000 in, 300_000 read, 3_750_000 5m, 6_000_000 1h, 15_000_000 out.
    // 50 × 3e6 + 100000 × 3e5 + 148 × 3.75e6 + 100 × 6e6 + 503 × 1.5e7 pico
    // = 1.5e8 + 3e10 + 5.55e8 + 6e8 + 7.545e9 = 38_850_000_000 pico = 38_850_000 nano ($0.03885).
    let p = table()
        .price_on("claude-sonnet-4-6", "2026-11-29")
        .unwrap()
        .clone();
    let c = p.cost(&usage(50, 100_000, 148, 100, 503));
    assert_eq!(c.actual, Some(38_850_000));
    // Uncached: (50 + 100000 + 248) × 3e6 + 503 × 1.5e7 = 300_894e6 + 7_545e6 pico = 308_439_000 nano.
    assert_eq!(c.uncached, Some(308_439_000));
}

#[test]
fn openai_cached_tokens_are_inside_prompt_tokens() {
    // gpt-4.1 chat usage prompt_tokens 2006 with cached 1920 → 86 uncached (the dialect's job).
    // 86 × 2_000_000 + 1920 × 500_000 pico = 172e6 + 960e6 = 1_132_000 nano; output unpriced.
    let p = table().price_on("gpt-4.1", "2026-11-29").unwrap().clone();
    assert_eq!(p.cost(&usage(86, 1920, 0, 0, 0)).actual, Some(1_132_000));
    // Uncached: 2006 × 2_000_000 pico = 4_012_000 nano.
    assert_eq!(p.cost(&usage(86, 1920, 0, 0, 0)).uncached, Some(4_012_000));
    // Output tokens with no published output price: the cost is null, never a guess.
    assert_eq!(
        p.cost(&usage(86, 1920, 0, 0, 7)),
        Cost {
            actual: None,
            uncached: None
        }
    );
}

#[test]
fn gemini_tiers_switch_above_200k_prompt_tokens() {
    let p = table()
        .price_on("gemini-2.5-pro", "2026-11-29")
        .unwrap()
        .clone();
    // ≤ 200k: 2000 × 1_250_000 + 8000 × 125_000 pico = 2.5e9 + 1e9 = 3_500_000 nano.
    assert_eq!(p.cost(&usage(2000, 8000, 0, 0, 0)).actual, Some(3_500_000));
    // > 200k: 1000 × 2_500_000 + 200000 × 250_000 = 2.5e9 + 5e10 pico = 52_500_000 nano.
    assert_eq!(
        p.cost(&usage(1000, 200_000, 0, 0, 0)).actual,
        Some(52_500_000)
    );
    assert_eq!(p.rates.storage, Some(4_500_000));
}

#[test]
fn deepseek_rows_are_dated_and_sub_cent_prices_stay_exact() {
    let t = table();
    // $0.003625/MTok = 3625 pico per token; 1000 × 3625 + 10 × 435_000 = 7_975_000 pico = 7975 nano.
    let before = t.price_on("deepseek-v4-pro", "2026-08-01").unwrap();
    assert_eq!(before.cost(&usage(10, 1000, 0, 0, 0)).actual, Some(7975));
    let after = t.price_on("deepseek-v4-pro", "2026-11-29").unwrap();
    assert_eq!(after.rates.cache_read, Some(44_000));
    // deepseek-chat is not priced in providers.md: present, but null.
    let chat = t.price_on("deepseek-chat", "2026-11-29").unwrap();
    assert_eq!(chat.cost(&usage(1, 0, 0, 0, 0)).actual, None);
    assert_eq!(chat.cost(&usage(0, 0, 0, 0, 0)).actual, Some(0));
}

#[test]
fn rounding_is_half_up_once_per_request() {
    // gemini-2.5-flash: 300_000 pico uncached + 30_000 pico read = 330 nano.
    let p = table()
        .price_on("gemini-2.5-flash", "2026-11-29")
        .unwrap()
        .clone();
    assert_eq!(p.cost(&usage(1, 1, 0, 0, 0)).actual, Some(330));
    // deepseek-v4-flash read: 2800 pico; one token → 2.8 nano → 3.
    let d = table()
        .price_on("deepseek-v4-flash", "2026-01-01")
        .unwrap()
        .clone();
    assert_eq!(d.cost(&usage(0, 1, 0, 0, 0)).actual, Some(3));
    assert_eq!(d.cost(&usage(0, 5, 0, 0, 0)).actual, Some(14));
}

#[test]
fn snapshots_resolve_to_their_model_but_variants_do_not() {
    let t = table();
    assert_eq!(t.canonical("gpt-4o-2024-08-06"), Some("gpt-4o"));
    assert_eq!(
        t.canonical("claude-sonnet-4-6-20260101"),
        Some("claude-sonnet-4-6")
    );
    assert_eq!(
        t.canonical("models/gemini-2.5-flash"),
        Some("gemini-2.5-flash")
    );
    assert_eq!(t.canonical("gpt-4o-mini"), None);
    assert_eq!(t.canonical("gpt-4.1-nano"), None);
    assert_eq!(t.canonical("claude-sonnet-4-6-"), None);
}

#[test]
fn every_model_the_issue_names_has_a_row() {
    let t = table();
    for m in [
        "claude-sonnet-4-6",
        "claude-haiku-4-5",
        "claude-opus-4-6",
        "gpt-4.1",
        "gpt-4o",
        "gemini-2.5-flash",
        "gemini-2.5-pro",
        "deepseek-chat",
    ] {
        assert!(t.price_on(m, "2026-11-29").is_some(), "{m}");
    }
}

#[test]
fn typos_and_bad_values_are_reported_per_row() {
    let bad = r#"
[[models]]
model = "x"
provider = "openai"
effective_from = "2026-1-1"
cache_reed = 0.1
input = -1.0
"#;
    let errors = PriceTable::parse(bad).unwrap_err().join("\n");
    assert!(
        errors.contains("models[0] (x).cache_reed: unknown key"),
        "{errors}"
    );
    assert!(errors.contains("effective_from"), "{errors}");
    assert!(errors.contains("input: must be a price"), "{errors}");
}

#[test]
fn civil_dates() {
    use std::time::{Duration, UNIX_EPOCH};
    let day =
        |d: u64| crate::clock::utc_date(UNIX_EPOCH + Duration::from_secs(d * 86_400 + 86_399));
    assert_eq!(day(0), "1970-01-01");
    assert_eq!(day(20_786), "2026-11-29");
    assert_eq!(day(11_016), "2000-02-29");
}
