//! Issue 5's fault-tolerance acceptance: every built-in workload at CI scale replayed through
//! cachet with the simulator's faults on (caches deleted early, 404s, 429s, resets). Every
//! request either succeeds or fails with exactly the fault injected on it; none fails because
//! of something cachet did (a stale `cachedContents`, a fifth breakpoint, a rejected
//! `prompt_cache_key`, a single-flight wait), and the proxy never answers with an error of its
//! own.

use crate::common::replay_json;
use cachet::replay::run::{Progress, Route, RouteResult, replay_with};
use cachet::replay::workload::{BUILT_IN, Scale, built_in};
use cachet::sim::{Faults, Tally};
use serde_json::json;

fn faults() -> Faults {
    let spec = json!({
        "seed": 5,
        "errors": [
            {"status": 429, "probability": 0.05, "retry_after_s": 1},
            {"status": 404, "probability": 0.03},
        ],
        "reset_after_events": 0,
        "reset_probability": 0.04,
        "evict_probability": 0.08,
    });
    Faults::from_json(&spec.to_string()).unwrap()
}

fn add(total: &mut Tally, t: &Tally) {
    for (status, n) in &t.errors {
        *total.errors.entry(*status).or_insert(0) += n;
    }
    total.resets += t.resets;
    total.evictions += t.evictions;
    total.evicted_entries += t.evicted_entries;
    total.evicted_cached_contents += t.evicted_cached_contents;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_cachet_every_request_succeeds_or_fails_with_its_injected_fault() {
    let faults = faults();
    let mut progress = Progress::new();
    let mut injected = Tally::default();
    let (mut requests, mut failed) = (0, 0);
    for name in BUILT_IN {
        for workload in built_in(name, Scale::Ci).unwrap() {
            let r: RouteResult =
                replay_with(&workload, Route::Cachet, Some(&faults), &mut progress)
                    .await
                    .unwrap();
            let what = format!("{} {}: {r:?}", workload.name, workload.provider.upstream());
            assert_eq!(r.requests as usize, workload.requests.len(), "{what}");
            assert_eq!(r.unexplained, 0, "failures without their fault: {what}");
            assert_eq!(r.proxy_errors, 0, "the proxy's own errors: {what}");
            assert_eq!(r.failed, r.injected, "{what}");
            // A failure is an injected error or reset, and every one the client saw counts.
            let errors: u64 = r.faults.errors.values().sum();
            assert!(r.injected <= errors + r.faults.resets, "{what}");
            requests += r.requests;
            failed += r.failed;
            add(&mut injected, &r.faults);
        }
    }
    eprintln!("{requests} requests, {failed} failed with their fault; injected {injected:?}");
    // Enough of each fault that the test cannot pass vacuously (about 2,200 requests).
    assert!(
        injected.errors.get(&429).copied().unwrap_or(0) >= 40,
        "{injected:?}"
    );
    assert!(
        injected.errors.get(&404).copied().unwrap_or(0) >= 20,
        "{injected:?}"
    );
    assert!(injected.resets >= 20, "{injected:?}");
    assert!(injected.evictions >= 60, "{injected:?}");
    // Caches cachet created were deleted under it, so its resend path was taken.
    assert!(injected.evicted_cached_contents >= 10, "{injected:?}");
    assert!(
        failed >= 100 && failed < requests / 5,
        "{failed} of {requests}"
    );
}

#[test]
fn the_cli_classes_failures_by_route_and_fails_on_unexplained_ones() {
    let spec = faults();
    let spec = serde_json::to_string(&spec).unwrap();
    let report = replay_json(&["--workload", "docqa", "--faults", &spec]);
    let mut seen = 0;
    for row in report.as_array().unwrap() {
        for r in row["routes"].as_array().unwrap() {
            let n = |k: &str| r[k].as_u64().unwrap();
            assert_eq!(n("ok") + n("failed"), n("requests"), "{r}");
            assert_eq!(n("failed_injected") + n("failed_unexplained"), n("failed"));
            if r["route"] == "cachet" {
                assert_eq!(n("failed_unexplained"), 0, "{r}");
            }
            seen += n("failed_injected");
            assert!(r["faults_injected"]["errors"].is_object(), "{r}");
        }
    }
    assert!(seen > 0, "faults were injected and classed");

    // A request the simulator refuses on every route is no injected fault: cachet's route
    // counts it as unexplained, and the exit status says so.
    let dir = std::env::temp_dir().join(format!("cachet-fault-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.jsonl");
    let line = json!({"t": 0, "upstream": "anthropic", "path": "/v1/messages",
        "headers": {"x-api-key": "k"}, "body": {"model": "claude-sonnet-4-6", "max_tokens": 5}});
    std::fs::write(&file, format!("{line}\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cachet"))
        .args(["replay", "--workload"])
        .arg(&file)
        .args(["--faults", "{}"])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains("1 request(s) on the cachet route failed"),
        "{stderr}"
    );
    assert!(stdout.contains("unexplained"), "{stdout}");
}
