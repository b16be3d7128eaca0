//! The prefix engine's time per request (issue 4, item 7): for each request of
//! `common::cases()`, criterion measures, in the group named after the case,
//!
//! - `parse`: `serde_json::from_slice` of the body into a `Value` (the tree's drop untimed);
//! - `keys`: canonicalise + key, `prompt::prompt` then `prefix::keys`;
//! - `rewrite`: `rewrite::rewrite` on a fresh clone of the tree (the clone and the drop untimed);
//! - `engine`: both, as the proxy runs them: rewrite, then prompt and keys of the rewritten tree;
//! - `hash`: the two blake3 chains alone, linked as `prefix` links them (one digest of a frame
//!   byte and a 256-byte chunk, then a keyed hash of it per chain), over as many bytes as the
//!   body: what `keys` cannot go below under this key scheme.
//!
//! Run through `scripts/bench-prefix`, which prints the figures against the targets
//! (100k tokens ≤ 1 ms, 1M tokens ≤ 10 ms for the engine on one core). Prints; never asserts
//! a time.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark stops when its own fixtures are broken"
)]

mod common;

use std::hint::black_box;
use std::time::Duration;

use cachet::config::Config;
use cachet::{prefix, prompt, rewrite};
use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use serde_json::Value;

fn engine(c: &mut Criterion) {
    let config = Config::load_from(None, []).expect("defaults").rewrite;
    let tenant = common::tenant();
    for case in common::cases() {
        let endpoint = &case.endpoint;
        let tree: Value = serde_json::from_slice(&case.body).expect("the body is JSON");
        // A shape that gives the rewrite nothing to do would measure the wrong thing.
        assert!(
            !rewrite::rewrite(endpoint, &mut tree.clone(), &config).is_empty(),
            "{}: no rewrite applies",
            case.name
        );
        let mut group = c.benchmark_group(&case.name);
        group.throughput(Throughput::Bytes(case.body.len() as u64));
        if case.body.len() >= 1_000_000 {
            // Milliseconds an iteration: the same count in every sample.
            group.sampling_mode(SamplingMode::Flat);
        }
        group.bench_function("parse", |b| {
            b.iter_with_large_drop(|| {
                serde_json::from_slice::<Value>(black_box(&case.body)).unwrap()
            })
        });
        group.bench_function("keys", |b| {
            b.iter(|| {
                let prompt = prompt::prompt(endpoint, black_box(&tree)).unwrap();
                prefix::keys(&prompt, &tenant)
            })
        });
        group.bench_function("rewrite", |b| {
            b.iter_batched(
                || tree.clone(),
                |mut tree| {
                    let applied = rewrite::rewrite(endpoint, &mut tree, &config);
                    (tree, applied)
                },
                BatchSize::LargeInput,
            )
        });
        group.bench_function("engine", |b| {
            b.iter_batched(
                || tree.clone(),
                |mut tree| {
                    let applied = rewrite::rewrite(endpoint, &mut tree, &config);
                    let boundaries = prompt::prompt(endpoint, &tree)
                        .map(|prompt| prefix::keys(&prompt, &tenant))
                        .unwrap();
                    (tree, applied, boundaries)
                },
                BatchSize::LargeInput,
            )
        });
        group.bench_function("hash", |b| b.iter(|| chains(black_box(&case.body))));
        group.finish();
    }
}

/// `prefix`'s two chains over `bytes` cut every `CHUNK_BYTES`, without the rendering, the
/// cutting at whitespace or the boundaries.
fn chains(bytes: &[u8]) -> [u8; 32] {
    let (mut key, mut model_free) = ([0; 32], [1; 32]);
    for chunk in bytes.chunks(prefix::CHUNK_BYTES) {
        let mut h = blake3::Hasher::new();
        h.update(&[0]);
        h.update(chunk);
        let digest = *h.finalize().as_bytes();
        for link in [&mut key, &mut model_free] {
            *link = *blake3::keyed_hash(link, &digest).as_bytes();
        }
    }
    key
}

criterion_group! {
    name = benches;
    // Short: the whole run stays within about a minute on two cores.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .without_plots();
    targets = engine
}
criterion_main!(benches);
