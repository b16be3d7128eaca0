//! Anthropic prompt caching (providers.md §1): explicit and automatic breakpoints (§1.1, §1.2),
//! the tools → system → messages prefix (§1.3, the dialect renders blocks in that order), the
//! 20-block lookback (§1.4), minimum lengths (§1.6), TTLs refreshed on hit and clocked from the
//! start of the request, visibility once the response has begun, 1h before 5m and the A/B/C
//! billing rule (§1.7), usage split (§1.9). Caches are isolated per API key and model.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::{Entry, Times};
use crate::sim::prompt::{Kind, SimPrompt, Ttl};

/// "You can define up to 4 cache breakpoints" (§1.2).
pub const MAX_BREAKPOINTS: usize = 4;
/// Lookback window per breakpoint, "counting the breakpoint itself as the first" (§1.4).
pub const LOOKBACK: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Breakpoint {
    pub block: usize,
    pub ttl: Ttl,
}

/// Input tokens of one request by how they are billed (§1.7 "Billing positions", §1.9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Charge {
    pub read: u64,
    pub write_1h: u64,
    pub write_5m: u64,
    pub uncached: u64,
}

/// The request's breakpoints in block order: its explicit markers plus the top-level automatic
/// one (`auto`), which lands on the last block that can carry a marker (§1.2). `Err` is the
/// message of the 400 the API answers.
pub fn breakpoints(prompt: &SimPrompt, auto: Option<Ttl>) -> Result<Vec<Breakpoint>, String> {
    let mut marks: Vec<Breakpoint> = prompt
        .blocks
        .iter()
        .enumerate()
        .filter_map(|(block, b)| b.mark.map(|ttl| Breakpoint { block, ttl }))
        .collect();
    if let Some(ttl) = auto {
        // "silently walks backwards to find the nearest eligible block"; none → no caching.
        if let Some(last) = prompt.blocks.iter().rposition(|b| b.markable) {
            match prompt.blocks[last].mark {
                Some(existing) if existing == ttl => {}
                Some(_) => {
                    return Err("The top-level cache_control ttl conflicts with the \
                                cache_control ttl already set on the last block."
                        .into());
                }
                None if marks.len() >= MAX_BREAKPOINTS => {
                    return Err(too_many(marks.len() + 1));
                }
                None => marks.push(Breakpoint { block: last, ttl }),
            }
        }
    }
    if marks.len() > MAX_BREAKPOINTS {
        return Err(too_many(marks.len()));
    }
    if marks
        .windows(2)
        .any(|w| w[0].ttl == Ttl::FiveMinutes && w[1].ttl == Ttl::OneHour)
    {
        return Err(
            "A cache_control block with ttl='1h' must not come after a block with \
                    ttl='5m'. Place longer TTLs before shorter ones."
                .into(),
        );
    }
    Ok(marks)
}

fn too_many(found: usize) -> String {
    format!(
        "A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {found}."
    )
}

/// Lookback position of every block: consecutive `tool_use` blocks share one position, and so
/// do consecutive `tool_result` blocks (§1.4).
fn positions(prompt: &SimPrompt) -> Vec<usize> {
    let mut out = Vec::with_capacity(prompt.blocks.len());
    let mut pos = 0;
    let mut prev: Option<Kind> = None;
    for block in &prompt.blocks {
        let joins =
            matches!(block.kind, Kind::ToolUse | Kind::ToolResult) && prev == Some(block.kind);
        if prev.is_some() && !joins {
            pos += 1;
        }
        out.push(pos);
        prev = Some(block.kind);
    }
    out
}

/// Every partition's entries, keyed by the partition ([`super::scope`]) and the prefix hash at
/// the block where they were written.
#[derive(Default)]
pub struct Cache {
    entries: HashMap<(u64, u64), Stored>,
    writes_since_sweep: usize,
}

#[derive(Clone, Copy, Debug)]
struct Stored {
    entry: Entry,
    ttl: Ttl,
    tokens: u64,
}

impl Cache {
    fn live(&self, scope: u64, hash: u64, now: SystemTime) -> bool {
        self.entries
            .get(&(scope, hash))
            .is_some_and(|s| s.entry.live_at(now))
    }

    /// Drops every entry of `scopes`; returns how many there were.
    pub fn evict(&mut self, scopes: &std::collections::HashSet<u64>) -> u64 {
        super::drop_scopes(&mut self.entries, scopes)
    }

    /// Entries alive at `now` and the tokens they hold.
    pub fn live_entries(&self, now: SystemTime) -> (u64, u64) {
        self.entries
            .values()
            .filter(|s| now < s.entry.expires)
            .fold((0, 0), |(n, tokens), s| (n + 1, tokens + s.tokens))
    }
}

/// The longest readable prefix (§1.4): for each breakpoint walk back at most [`LOOKBACK`]
/// positions to the nearest block where a previous request wrote a live entry; the largest hit
/// over all breakpoints wins. Returns the hit block.
pub fn lookup(
    cache: &Cache,
    scope: u64,
    prompt: &SimPrompt,
    bps: &[Breakpoint],
    now: SystemTime,
) -> Option<usize> {
    let pos = positions(prompt);
    bps.iter()
        .filter_map(|bp| {
            (0..=bp.block)
                .rev()
                .take_while(|&j| pos[bp.block] - pos[j] < LOOKBACK)
                .find(|&j| cache.live(scope, prompt.prefix_hash(prompt.blocks[j].end), now))
        })
        .max()
}

/// Billing of a request (§1.7): A = tokens at the hit, B = the last 1h breakpoint after A (or
/// A), C = the last breakpoint; reads A, 1h writes B−A, 5m writes C−B, and `input_tokens` the
/// rest. Breakpoints below the model's minimum write nothing (§1.6), so when the last one is
/// below it nothing is cached at all.
pub fn charge(
    prompt: &SimPrompt,
    bps: &[Breakpoint],
    hit: Option<usize>,
    min_tokens: u64,
) -> Charge {
    let end = |block: usize| prompt.blocks[block].end as u64;
    let a = hit.map_or(0, end);
    let writable = |bp: &&Breakpoint| end(bp.block) > a && end(bp.block) >= min_tokens;
    let c = bps
        .iter()
        .filter(writable)
        .map(|bp| end(bp.block))
        .max()
        .unwrap_or(a);
    let b = bps
        .iter()
        .filter(writable)
        .filter(|bp| bp.ttl == Ttl::OneHour)
        .map(|bp| end(bp.block))
        .max()
        .unwrap_or(a);
    Charge {
        read: a,
        write_1h: b - a,
        write_5m: c - b,
        uncached: prompt.tokens() - c,
    }
}

/// Applies a request to the cache: the entry read and the breakpoint entries at or before it
/// are refreshed (hits "refresh at no cost", lifetime from the request's `start`), and an
/// entry is written at every breakpoint beyond the hit that reaches the minimum, readable from
/// `visible` (when the response begins).
pub fn commit(
    cache: &mut Cache,
    scope: u64,
    prompt: &SimPrompt,
    bps: &[Breakpoint],
    hit: Option<usize>,
    min_tokens: u64,
    times: Times,
) {
    let Times { start, visible } = times;
    let a = hit.map_or(0, |j| prompt.blocks[j].end);
    if let Some(j) = hit {
        refresh(
            cache,
            scope,
            prompt.prefix_hash(prompt.blocks[j].end),
            start,
        );
    }
    for bp in bps {
        let end = prompt.blocks[bp.block].end;
        let hash = prompt.prefix_hash(end);
        if end <= a {
            refresh(cache, scope, hash, start);
        } else if end as u64 >= min_tokens {
            let fresh = Entry {
                visible,
                expires: start + Duration::from_secs(bp.ttl.secs()),
            };
            let existing = cache.entries.get(&(scope, hash)).map(|s| s.entry);
            cache.entries.insert(
                (scope, hash),
                Stored {
                    entry: Entry::renew(existing, fresh, start),
                    ttl: bp.ttl,
                    tokens: end as u64,
                },
            );
            cache.writes_since_sweep += 1;
        }
    }
    if cache.writes_since_sweep > cache.entries.len().max(1024) {
        cache.entries.retain(|_, s| start < s.entry.expires);
        cache.writes_since_sweep = 0;
    }
}

fn refresh(cache: &mut Cache, scope: u64, hash: u64, start: SystemTime) {
    if let Some(stored) = cache.entries.get_mut(&(scope, hash)) {
        if start < stored.entry.expires {
            let renewed = start + Duration::from_secs(stored.ttl.secs());
            stored.entry.expires = stored.entry.expires.max(renewed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::rules::test_support::{B, marked, prompt, t, text, words};

    const MIN: u64 = 1024;

    fn run(
        cache: &mut Cache,
        blocks: &[B],
        auto: Option<Ttl>,
        at: SystemTime,
    ) -> (Charge, SimPrompt) {
        let p = prompt(blocks);
        let bps = breakpoints(&p, auto).unwrap();
        let hit = lookup(cache, 1, &p, &bps, at);
        let charge = charge(&p, &bps, hit, MIN);
        commit(
            cache,
            1,
            &p,
            &bps,
            hit,
            MIN,
            Times {
                start: at,
                visible: at + Duration::from_millis(100),
            },
        );
        (charge, p)
    }

    fn ends(p: &SimPrompt) -> Vec<u64> {
        p.blocks.iter().map(|b| b.end as u64).collect()
    }

    #[test]
    fn s1_2_more_than_four_breakpoints_is_an_error() {
        let blocks: Vec<B> = (0..5)
            .map(|i| marked(words(i, 10), Ttl::FiveMinutes))
            .collect();
        let err = breakpoints(&prompt(&blocks), None).unwrap_err();
        assert_eq!(
            err,
            "A maximum of 4 blocks with cache_control may be provided. Found 5."
        );
        let four: Vec<B> = (0..4)
            .map(|i| marked(words(i, 10), Ttl::FiveMinutes))
            .chain([text(words(9, 5))])
            .collect();
        assert!(breakpoints(&prompt(&four), None).is_ok());
        // Four explicit plus the automatic one is also five.
        assert!(breakpoints(&prompt(&four), Some(Ttl::FiveMinutes)).is_err());
    }

    #[test]
    fn s1_2_automatic_marker_goes_on_the_last_block() {
        let p = prompt(&[text(words(0, 10)), text(words(1, 10))]);
        let bps = breakpoints(&p, Some(Ttl::FiveMinutes)).unwrap();
        assert_eq!(
            bps,
            vec![Breakpoint {
                block: 1,
                ttl: Ttl::FiveMinutes
            }]
        );
        // Same TTL already on the last block: a no-op; a different TTL: 400.
        let p = prompt(&[text(words(0, 10)), marked(words(1, 10), Ttl::FiveMinutes)]);
        assert_eq!(breakpoints(&p, Some(Ttl::FiveMinutes)).unwrap().len(), 1);
        assert!(breakpoints(&p, Some(Ttl::OneHour)).is_err());
        // Empty text cannot carry it: it walks back.
        let p = prompt(&[text(words(0, 10)), text(String::new())]);
        assert_eq!(breakpoints(&p, Some(Ttl::FiveMinutes)).unwrap()[0].block, 0);
    }

    #[test]
    fn s1_7_one_hour_after_five_minutes_is_an_error() {
        let p = prompt(&[
            marked(words(0, 10), Ttl::FiveMinutes),
            marked(words(1, 10), Ttl::OneHour),
        ]);
        assert!(breakpoints(&p, None).is_err());
        let p = prompt(&[
            marked(words(0, 10), Ttl::OneHour),
            marked(words(1, 10), Ttl::FiveMinutes),
        ]);
        assert!(breakpoints(&p, None).is_ok());
    }

    #[test]
    fn s1_6_below_the_minimum_nothing_is_written() {
        let mut cache = Cache::default();
        let blocks = [marked(words(0, 500), Ttl::FiveMinutes), text(words(1, 20))];
        let (c1, p) = run(&mut cache, &blocks, None, t(0));
        assert_eq!(
            c1,
            Charge {
                uncached: p.tokens(),
                ..Charge::default()
            }
        );
        let (c2, _) = run(&mut cache, &blocks, None, t(10));
        assert_eq!(c2.read, 0);
    }

    #[test]
    fn s1_7_write_then_read_then_expire() {
        let mut cache = Cache::default();
        let blocks = [marked(words(0, 1500), Ttl::FiveMinutes), text(words(1, 20))];
        let (c1, p) = run(&mut cache, &blocks, None, t(0));
        let bp_end = ends(&p)[0];
        assert_eq!(
            c1,
            Charge {
                write_5m: bp_end,
                uncached: p.tokens() - bp_end,
                ..Charge::default()
            }
        );
        // Read 4 minutes later refreshes the entry for 5 more minutes from that request's start.
        let (c2, _) = run(&mut cache, &blocks, None, t(240));
        assert_eq!(
            c2,
            Charge {
                read: bp_end,
                uncached: p.tokens() - bp_end,
                ..Charge::default()
            }
        );
        let (c3, _) = run(&mut cache, &blocks, None, t(240 + 299));
        assert_eq!(c3.read, bp_end);
        // 5 minutes after the last hit's start it is gone and is written again.
        let (c4, _) = run(&mut cache, &blocks, None, t(240 + 299 + 300));
        assert_eq!(c4.read, 0);
        assert_eq!(c4.write_5m, bp_end);
    }

    #[test]
    fn s1_7_entry_visible_only_once_the_response_began() {
        let mut cache = Cache::default();
        let p = prompt(&[marked(words(0, 1500), Ttl::FiveMinutes)]);
        let bps = breakpoints(&p, None).unwrap();
        commit(
            &mut cache,
            1,
            &p,
            &bps,
            None,
            MIN,
            Times {
                start: t(0),
                visible: t(2),
            },
        );
        assert_eq!(lookup(&cache, 1, &p, &bps, t(1)), None);
        assert_eq!(lookup(&cache, 1, &p, &bps, t(2)), Some(0));
    }

    #[test]
    fn s1_7_caches_are_isolated_per_scope() {
        let mut cache = Cache::default();
        let p = prompt(&[marked(words(0, 1500), Ttl::FiveMinutes)]);
        let bps = breakpoints(&p, None).unwrap();
        commit(
            &mut cache,
            1,
            &p,
            &bps,
            None,
            MIN,
            Times {
                start: t(0),
                visible: t(0),
            },
        );
        assert_eq!(lookup(&cache, 2, &p, &bps, t(1)), None);
    }

    #[test]
    fn s1_7_mixed_ttls_bill_by_positions_a_b_c() {
        // Blocks: tools (1h), doc (1h), history (5m), question. First request: nothing cached,
        // B = end of doc, C = end of history.
        let mut cache = Cache::default();
        let blocks = [
            marked(words(0, 1100), Ttl::OneHour),
            marked(words(1, 900), Ttl::OneHour),
            marked(words(2, 300), Ttl::FiveMinutes),
            text(words(3, 40)),
        ];
        let (c1, p) = run(&mut cache, &blocks, None, t(0));
        let e = ends(&p);
        assert_eq!(
            c1,
            Charge {
                read: 0,
                write_1h: e[1],
                write_5m: e[2] - e[1],
                uncached: e[3] - e[2]
            }
        );
        // After 10 minutes the 5m entry is gone, the 1h ones live: read A = end of doc.
        let (c2, _) = run(&mut cache, &blocks, None, t(600));
        assert_eq!(
            c2,
            Charge {
                read: e[1],
                write_1h: 0,
                write_5m: e[2] - e[1],
                uncached: e[3] - e[2]
            }
        );
    }

    #[test]
    fn s1_7_write_bills_only_beyond_the_longest_live_prefix() {
        let mut cache = Cache::default();
        let sys = words(0, 1200);
        run(
            &mut cache,
            &[marked(sys.clone(), Ttl::FiveMinutes)],
            None,
            t(0),
        );
        let (c, p) = run(
            &mut cache,
            &[text(sys), marked(words(5, 400), Ttl::FiveMinutes)],
            None,
            t(5),
        );
        let e = ends(&p);
        assert_eq!(
            c,
            Charge {
                read: e[0],
                write_5m: e[1] - e[0],
                write_1h: 0,
                uncached: 0
            }
        );
    }

    #[test]
    fn s1_4_lookback_stops_after_twenty_blocks() {
        // Turn 1 writes at block 10. A request whose only breakpoint is 20 blocks later still
        // finds it (the breakpoint counts as the first of the 20); one block more misses.
        let mut cache = Cache::default();
        let mut blocks: Vec<B> = (0..10).map(|i| text(words(i, 120))).collect();
        blocks[9].mark = Some(Ttl::FiveMinutes);
        run(&mut cache, &blocks, None, t(0));
        blocks[9].mark = None;
        let mut longer = blocks;
        longer.extend((10..29).map(|i| text(words(i, 5))));
        longer[28].mark = Some(Ttl::FiveMinutes);
        let p = prompt(&longer);
        let bps = breakpoints(&p, None).unwrap();
        assert_eq!(
            lookup(&cache, 1, &p, &bps, t(1)),
            Some(9),
            "block 28 → 9 is 20 positions"
        );
        longer[28].mark = None;
        longer.push(marked(words(40, 5), Ttl::FiveMinutes));
        let p = prompt(&longer);
        let bps = breakpoints(&p, None).unwrap();
        assert_eq!(
            lookup(&cache, 1, &p, &bps, t(1)),
            None,
            "block 29 → 9 is 21 positions"
        );
        // A second breakpoint near the old one restores the hit ("resumes from the next
        // explicit breakpoint").
        longer[12].mark = Some(Ttl::FiveMinutes);
        let p = prompt(&longer);
        let bps = breakpoints(&p, None).unwrap();
        assert_eq!(lookup(&cache, 1, &p, &bps, t(1)), Some(9));
    }

    #[test]
    fn s1_4_tool_runs_count_as_one_position() {
        let mut cache = Cache::default();
        let mut blocks: Vec<B> = vec![marked(words(0, 1200), Ttl::FiveMinutes)];
        run(&mut cache, &blocks, None, t(0));
        blocks[0].mark = None;
        // 30 tool_use blocks then 30 tool_result blocks: two positions, then a text breakpoint.
        for i in 0..30 {
            blocks.push(B {
                kind: Kind::ToolUse,
                ..text(words(100 + i, 3))
            });
        }
        for i in 0..30 {
            blocks.push(B {
                kind: Kind::ToolResult,
                ..text(words(200 + i, 3))
            });
        }
        blocks.push(marked(words(7, 3), Ttl::FiveMinutes));
        let p = prompt(&blocks);
        let bps = breakpoints(&p, None).unwrap();
        assert_eq!(lookup(&cache, 1, &p, &bps, t(1)), Some(0));
    }
}
