//! The prefix engine's allocations per request (issue 4, item 7; target: at most 1× the body
//! size plus O(segments)). For each request of `common::cases()`, counts through `stats_alloc`
//! (the global allocator here) the bytes allocated (a `realloc` counts its growth) and the
//! allocation count of
//!
//! - parse: `serde_json::from_slice` into a `Value`, for reference;
//! - keys: canonicalise + key, `prompt::prompt` then `prefix::keys`;
//! - rewrite: `rewrite::rewrite` on a clone of the tree (the clone not counted);
//! - engine: both, as the proxy runs them,
//!
//! and prints them next to the body size, the segment and boundary counts, and the ratio of
//! bytes allocated to body bytes. Each step runs once before it is counted, so that lazily
//! initialised state is not charged to it. Prints; never asserts. `--json PATH` also writes the
//! rows there (for `scripts/bench-prefix`).
#![expect(
    clippy::expect_used,
    reason = "a benchmark stops when its own fixtures are broken"
)]

mod common;

use std::alloc::System;

use cachet::config::{Config, RewriteConfig};
use cachet::dialect::Endpoint;
use cachet::prefix::{self, Boundary};
use cachet::tenant::Tenant;
use cachet::{prompt, rewrite};
use serde_json::{Value, json};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, Stats, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// What one step allocated.
#[derive(Clone, Copy)]
struct Counted {
    bytes: usize,
    allocations: usize,
    reallocations: usize,
}

impl From<Stats> for Counted {
    fn from(stats: Stats) -> Self {
        Self {
            bytes: stats.bytes_allocated,
            allocations: stats.allocations,
            reallocations: stats.reallocations,
        }
    }
}

/// Runs `step` on a fresh input twice and counts the second run; the input's making (a clone,
/// say) is not counted, and neither is the drop of what the step returns.
fn count<I, O>(mut input: impl FnMut() -> I, mut step: impl FnMut(I) -> O) -> (Counted, O) {
    drop(step(input()));
    let fresh = input();
    let region = Region::new(GLOBAL);
    let out = step(fresh);
    (region.change().into(), out)
}

fn keys(endpoint: &Endpoint, tree: &Value, tenant: &Tenant) -> (usize, Vec<Boundary>) {
    let prompt = prompt::prompt(endpoint, tree).expect("a prompt");
    (prompt.segments.len(), prefix::keys(&prompt, tenant))
}

fn engine(
    endpoint: &Endpoint,
    mut tree: Value,
    config: &RewriteConfig,
    tenant: &Tenant,
) -> (Value, Vec<Boundary>) {
    rewrite::rewrite(endpoint, &mut tree, config);
    let (_, boundaries) = keys(endpoint, &tree, tenant);
    (tree, boundaries)
}

fn ratio(bytes: usize, body: usize) -> f64 {
    bytes as f64 / body as f64
}

fn main() {
    let json_path = std::env::args()
        .skip_while(|a| a != "--json")
        .nth(1)
        .map(std::path::PathBuf::from);
    let config = Config::load_from(None, []).expect("defaults").rewrite;
    let tenant = common::tenant();
    println!(
        "{:<20} {:>10} {:>5} {:>6}  {:>11} {:>7} {:>6}  {:>10} {:>6} {:>6}  {:>10} {:>6} {:>6}  {:>10} {:>6}  rewrites",
        "request",
        "body B",
        "segs",
        "bounds",
        "parse B",
        "allocs",
        "×body",
        "keys B",
        "allocs",
        "×body",
        "rewrite B",
        "allocs",
        "×body",
        "engine B",
        "×body",
    );
    let mut rows = Vec::new();
    for case in common::cases() {
        let endpoint = &case.endpoint;
        let body = case.body.len();
        let (parse, tree) = count(
            || (),
            |()| serde_json::from_slice::<Value>(&case.body).expect("the body is JSON"),
        );
        let (keyed, (segments, boundaries)) = count(|| (), |()| keys(endpoint, &tree, &tenant));
        let (rewritten, (_, applied)) = count(
            || tree.clone(),
            |mut tree| {
                let applied = rewrite::rewrite(endpoint, &mut tree, &config);
                (tree, applied)
            },
        );
        let applied: Vec<&str> = applied.iter().map(|r| r.as_str()).collect();
        let (both, _) = count(
            || tree.clone(),
            |tree| engine(endpoint, tree, &config, &tenant),
        );
        let tokens = boundaries.last().map_or(0, |b| b.tokens);
        println!(
            "{:<20} {:>10} {:>5} {:>6}  {:>11} {:>7} {:>6.2}  {:>10} {:>6} {:>6.3}  {:>10} {:>6} {:>6.3}  {:>10} {:>6.3}  {}",
            case.name,
            body,
            segments,
            boundaries.len(),
            parse.bytes,
            parse.allocations,
            ratio(parse.bytes, body),
            keyed.bytes,
            keyed.allocations + keyed.reallocations,
            ratio(keyed.bytes, body),
            rewritten.bytes,
            rewritten.allocations + rewritten.reallocations,
            ratio(rewritten.bytes, body),
            both.bytes,
            ratio(both.bytes, body),
            if applied.is_empty() {
                "NONE".to_owned()
            } else {
                applied.join(",")
            },
        );
        let step = |c: Counted| {
            json!({
                "bytes": c.bytes,
                "allocations": c.allocations,
                "reallocations": c.reallocations,
                "ratio": ratio(c.bytes, body),
            })
        };
        rows.push(json!({
            "name": case.name,
            "size": case.name.rsplit('-').next(),
            "body_bytes": body,
            "estimated_tokens": tokens,
            "segments": segments,
            "boundaries": boundaries.len(),
            "boundary_bytes": boundaries.capacity() * size_of::<Boundary>(),
            "rewrites": applied,
            "parse": step(parse),
            "keys": step(keyed),
            "rewrite": step(rewritten),
            "engine": step(both),
        }));
    }
    println!(
        "(B: bytes allocated, a realloc counting its growth; allocs: allocations + reallocations; \
         ×body: bytes allocated ÷ body bytes; a Boundary is {} bytes, one per ≤{}-byte chunk)",
        size_of::<Boundary>(),
        prefix::CHUNK_BYTES,
    );
    if let Some(path) = json_path {
        let text = serde_json::to_string_pretty(&Value::Array(rows)).expect("JSON");
        std::fs::write(&path, text).expect("writable --json path");
    }
}
