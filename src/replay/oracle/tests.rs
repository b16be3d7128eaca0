use proptest::prelude::*;

use super::*;
use crate::sim::prompt::Ttl;
use crate::sim::rules::test_support::{B, prompt, text, words};

/// claude-sonnet-4-6 per token in pico-USD: $3 input, $0.30 read, $3.75 / $6 writes.
const SONNET: Prices = Prices {
    input: 3_000_000,
    read: 300_000,
    write_5m: 3_750_000,
    write_1h: Some(6_000_000),
    storage: 0,
};

/// gemini-2.5-flash: $0.30 input, $0.03 read, creation at input, $1.00 per 1M per hour.
const FLASH: Prices = Prices {
    input: 300_000,
    read: 30_000,
    write_5m: 300_000,
    write_1h: None,
    storage: 1_000_000,
};

fn items(times: &[f64], blocks: impl Fn(usize) -> Vec<B>) -> Vec<Item> {
    times
        .iter()
        .enumerate()
        .map(|(i, &t)| Item {
            t,
            prompt: prompt(&blocks(i)),
        })
        .collect()
}

fn shared_doc(i: usize) -> Vec<B> {
    vec![text(words(1, 2000)), text(words(100 + i, 20))]
}

#[test]
fn anthropic_three_uses_within_five_minutes() {
    let reqs = items(&[0.0, 60.0, 120.0], shared_doc);
    let doc = reqs[0].prompt.blocks[0].end as u128;
    let bill = anthropic(&reqs, &SONNET, 1024);
    // Two reads save $2.70/M each, the write costs $0.75/M extra.
    let expected = doc * (2 * 2_700_000 - 750_000);
    assert_eq!(bill.saved_nusd, pico_to_nano(expected));
    let total: u64 = reqs.iter().map(|r| r.prompt.tokens()).sum();
    assert_eq!(bill.uncached_nusd, total * 3_000);
}

#[test]
fn anthropic_picks_one_hour_when_gaps_exceed_five_minutes() {
    let reqs = items(&[0.0, 1200.0, 2400.0], shared_doc);
    let doc = reqs[0].prompt.blocks[0].end as u128;
    // 5m sessions are impossible (20-minute gaps); 1h: 2 × $2.70 − $3.00 extra for the write.
    let expected = doc * (2 * 2_700_000 - 3_000_000);
    assert_eq!(
        anthropic(&reqs, &SONNET, 1024).saved_nusd,
        pico_to_nano(expected)
    );
}

#[test]
fn anthropic_never_writes_what_is_not_reused() {
    let reqs = items(&[0.0, 7200.0], shared_doc);
    assert_eq!(anthropic(&reqs, &SONNET, 1024).saved_nusd, 0);
    // Below the minimum nothing is cacheable.
    let reqs = items(&[0.0, 10.0, 20.0], shared_doc);
    assert_eq!(anthropic(&reqs, &SONNET, 100_000).saved_nusd, 0);
}

#[test]
fn gemini_holds_a_cache_exactly_as_long_as_needed() {
    // Held one hour, two reads save $0.27/M each while the creator's read costs $0.03/M and
    // storage $1/M for the hour: not worth it, and shorter holds do not reach both reads.
    let reqs = items(&[0.0, 1800.0, 3600.0], shared_doc);
    assert_eq!(gemini(&reqs, &FLASH, 1024).saved_nusd, 0);
    // Ten uses within ten minutes are worth it.
    let times: Vec<f64> = (0..10).map(|i| f64::from(i) * 60.0).collect();
    let reqs = items(&times, shared_doc);
    let doc = reqs[0].prompt.blocks[0].end as f64;
    let expected = doc * (9.0 * 270_000.0 - 30_000.0 - 1_000_000.0 * 540.0 / 3600.0);
    assert_eq!(
        gemini(&reqs, &FLASH, 1024).saved_nusd,
        pico_to_nano(expected.round() as u128)
    );
}

#[test]
fn openai_reads_in_128_steps_on_one_machine() {
    let p = Prices {
        input: 2_000_000,
        read: 500_000,
        write_5m: 2_000_000,
        write_1h: None,
        storage: 0,
    };
    let reqs = items(&[0.0, 30.0], shared_doc);
    let doc = reqs[0].prompt.blocks[0].end as u128;
    let cached = doc / 128 * 128;
    assert_eq!(
        openai(&reqs, &p, 1024).saved_nusd,
        pico_to_nano(cached * 1_500_000)
    );
}

/// Every placement of up to four breakpoints with TTLs in the allowed order on a request of
/// `blocks` blocks.
fn placements(blocks: usize) -> Vec<Vec<(usize, Ttl)>> {
    let mut out = Vec::new();
    for mask in 0u32..(1 << blocks) {
        let chosen: Vec<usize> = (0..blocks).filter(|b| mask & (1 << b) != 0).collect();
        if chosen.len() > 4 {
            continue;
        }
        // 1h marks first: choose how many of the chosen are 1h.
        for one_hour in 0..=chosen.len() {
            out.push(
                chosen
                    .iter()
                    .enumerate()
                    .map(|(i, &b)| {
                        (
                            b,
                            if i < one_hour {
                                Ttl::OneHour
                            } else {
                                Ttl::FiveMinutes
                            },
                        )
                    })
                    .collect(),
            );
        }
    }
    out
}

fn enumerate(reqs: &[Item], min: u64) -> (u128, u128, u128) {
    let options: Vec<Vec<Vec<(usize, Ttl)>>> = reqs
        .iter()
        .map(|r| placements(r.prompt.blocks.len()))
        .collect();
    let mut choice = vec![0usize; reqs.len()];
    let mut best = u128::MAX;
    loop {
        let placement: Vec<Vec<(usize, Ttl)>> = choice
            .iter()
            .zip(&options)
            .map(|(&c, o)| o[c].clone())
            .collect();
        best = best.min(anthropic_cost_of_placement(reqs, &placement, &SONNET, min));
        // Odometer over every request's options.
        let mut i = 0;
        loop {
            if i == choice.len() {
                let direct =
                    anthropic_cost_of_placement(reqs, &vec![Vec::new(); reqs.len()], &SONNET, min);
                let fixed: Vec<Vec<(usize, Ttl)>> = reqs
                    .iter()
                    .map(|r| vec![(r.prompt.blocks.len() - 1, Ttl::FiveMinutes)])
                    .collect();
                let fixed = anthropic_cost_of_placement(reqs, &fixed, &SONNET, min);
                return (best, direct, fixed);
            }
            choice[i] += 1;
            if choice[i] < options[i].len() {
                break;
            }
            choice[i] = 0;
            i += 1;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// oracle ≥ best enumerated placement ≥ direct and fixed placement, in money saved.
    #[test]
    fn oracle_bounds_every_anthropic_placement(
        shape in proptest::collection::vec(
            (proptest::collection::vec(0usize..3, 1..=3), prop_oneof![Just(0.0), Just(30.0), Just(200.0), Just(400.0), Just(2000.0), Just(4000.0)]),
            2..=6,
        )
    ) {
        // Keep the enumeration small enough for a debug build.
        let combos: usize = shape.iter().map(|(blocks, _)| placements(blocks.len()).len()).product();
        prop_assume!(combos <= 30_000);
        let mut t = 0.0;
        let reqs: Vec<Item> = shape
            .iter()
            .map(|(blocks, gap)| {
                t += gap;
                let bs: Vec<B> = blocks.iter().map(|&b| text(words(b, 40 + 30 * b))).collect();
                Item { t, prompt: prompt(&bs) }
            })
            .collect();
        let min = 60;
        let (best, direct, fixed) = enumerate(&reqs, min);
        let oracle = anthropic(&reqs, &SONNET, min);
        let uncached_pico = u128::from(reqs.iter().map(|r| r.prompt.tokens()).sum::<u64>()) * 3_000_000;
        let best_saved = uncached_pico.saturating_sub(best);
        prop_assert!(u128::from(oracle.saved_nusd) * 1000 + 1000 >= best_saved,
            "oracle {} < best enumerated {}", oracle.saved_nusd, best_saved / 1000);
        prop_assert!(best <= direct && best <= fixed);
    }
}

/// Found by `oracle_bounds_every_anthropic_placement`: the first request writes the document at
/// 5m, the second reads it and writes document + its tail at 1h (the 1h premium on the tail
/// only), and the third, more than 5 minutes later, reads all of it from that entry. The bound
/// must cover that schedule.
#[test]
fn anthropic_bridges_a_long_gap_through_a_longer_shared_prefix() {
    let doc = || text(words(1, 70));
    let tail = || text(words(2, 100));
    let reqs: Vec<Item> = [
        (0.0, vec![doc()]),
        (30.0, vec![doc(), tail()]),
        (430.0, vec![doc(), tail()]),
    ]
    .into_iter()
    .map(|(t, blocks)| Item {
        t,
        prompt: prompt(&blocks),
    })
    .collect();
    let best = [
        vec![(0, Ttl::FiveMinutes)],
        vec![(1, Ttl::OneHour)],
        vec![(1, Ttl::OneHour)],
    ];
    let schedule = anthropic_cost_of_placement(&reqs, &best, &SONNET, 60);
    let uncached = u128::from(reqs.iter().map(|r| r.prompt.tokens()).sum::<u64>()) * 3_000_000;
    let saved_by_schedule = uncached - schedule;
    let oracle = anthropic(&reqs, &SONNET, 60);
    assert!(
        u128::from(oracle.saved_nusd) * 1000 + 1000 >= saved_by_schedule,
        "oracle {} < schedule {}",
        oracle.saved_nusd,
        saved_by_schedule / 1000
    );
}
