//! `cachet replay` end to end: every built-in workload at CI scale through the simulator on the
//! three routes, checked against the oracle, the simulator's own rendering and the CLI.

use crate::common::replay_json;
use cachet::replay::run::{Progress, Route};
use cachet::replay::workload::{BUILT_IN, Provider, Scale, built_in};
use cachet::replay::{measure, report::WorkloadReport};

fn route(report: &WorkloadReport, route: Route) -> &cachet::replay::run::RouteResult {
    &report.routes.iter().find(|(r, _)| *r == route).unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_replays_and_no_route_beats_the_oracle() {
    let mut progress = Progress::new();
    for name in BUILT_IN {
        for workload in built_in(name, Scale::Ci).unwrap() {
            let label = format!("{name}/{}", workload.provider.upstream());
            let report = measure(&workload, &mut progress).await.unwrap();
            assert_eq!(report.routes.len(), 3, "{label}");
            for (r, result) in &report.routes {
                assert_eq!(result.failed, 0, "{label} {}", r.name());
                assert_eq!(result.requests, workload.requests.len() as u64, "{label}");
                if let Some(eff) = report.efficiency(result) {
                    // The oracle bounds every placement: nothing saves more.
                    assert!(eff <= 1.0 + 1e-9, "{label} {} efficiency {eff}", r.name());
                }
            }
            // The simulator bills exactly the prompts it renders (no cache creation calls on
            // the direct route).
            let direct = route(&report, Route::Direct);
            let rendered: u64 = workload
                .requests
                .iter()
                .map(|r| cachet::sim::render_request(&r.upstream, &r.path, &r.body).tokens())
                .sum();
            assert_eq!(direct.tokens.input_total(), rendered, "{label}");
            let cachet = route(&report, Route::Cachet);
            let strategy = matches!(workload.provider, Provider::Anthropic | Provider::Gemini);
            if workload.context_first.is_none() && workload.provider != Provider::Vllm && !strategy
            {
                // Nothing to move and no placement strategy yet: the same bill as direct.
                assert_eq!(cachet.tokens, direct.tokens, "{label}");
                assert_eq!(cachet.cost_nusd, direct.cost_nusd, "{label}");
            }
            if workload.provider == Provider::Gemini {
                // Explicit caches never cost more than 1% of the no-cache input over direct or
                // the fixed system cache, and where they pay they beat the fixed cache.
                // Against the prompts as the workload sends them, all uncached (a route's own
                // `uncached_nusd` counts its cache creates too).
                let no_cache = direct.uncached_nusd.unwrap() as f64;
                let saved =
                    |r: &cachet::replay::run::RouteResult| no_cache - r.cost_nusd.unwrap() as f64;
                let fixed = route(&report, Route::Fixed);
                let floor = saved(direct).max(saved(fixed));
                let slack = 0.01 * no_cache;
                assert!(
                    saved(cachet) >= floor - slack,
                    "{label}: {} < {floor}",
                    saved(cachet)
                );
                if matches!(name, "chat" | "agent") {
                    assert!(
                        saved(cachet) > saved(fixed),
                        "{label}: {} <= {}",
                        saved(cachet),
                        saved(fixed)
                    );
                }
            } else if strategy {
                // cachet's breakpoints never lose money and beat the gateways' fixed placement
                // everywhere; where the oracle saves much, they reach most of it (measured at
                // this scale against the oracle that counts 1h entries of longer prefixes: chat
                // 94.7%, agent 99.6%, rag 80.7%, volatile 99.6%; docqa's oracle saves 2.7%, from a
                // document whose questions come back twice within the hour, which no write before
                // the second question can foresee).
                let saved = |r| report.efficiency(r).unwrap();
                let fixed = saved(route(&report, Route::Fixed));
                let floor = match name {
                    "agent" | "volatile" => 0.99,
                    "chat" => 0.94,
                    "rag" => 0.80,
                    _ => 0.0,
                };
                assert!(saved(cachet) >= floor, "{label}: {}", saved(cachet));
                assert!(
                    saved(cachet) >= fixed,
                    "{label}: {} < {fixed}",
                    saved(cachet)
                );
            }
            if workload.context_first.is_some()
                && matches!(workload.provider, Provider::OpenAi | Provider::DeepSeek)
            {
                // Question after context alone makes the documents a reusable prefix for the
                // automatic caches: the saving direct misses.
                assert_eq!(direct.tokens.cache_read, 0, "{label}");
                assert!(cachet.tokens.cache_read > 0, "{label}");
                assert!(report.efficiency(cachet).unwrap() > 0.5, "{label}");
            }
            match workload.provider {
                Provider::Vllm => {
                    let pool = report.pool.as_ref().unwrap();
                    for (policy, rate, balance) in &pool.policies {
                        assert!(*rate <= pool.bound_rate, "{policy}: {rate} > bound");
                        assert!(*balance >= 1.0, "{policy}: load balance {balance}");
                    }
                    // Issue 5: cachet's replicas cache at least 0.95 of the bound (one LRU
                    // of all their memory), with the load within 1.25 of even (16.3% against
                    // 16.4%, balance 1.18 at CI scale).
                    let (policy, rate, balance) = pool
                        .policies
                        .iter()
                        .find(|(policy, _, _)| policy.starts_with("cachet"))
                        .unwrap();
                    assert!(
                        *rate >= 0.95 * pool.bound_rate,
                        "{policy}: {rate} < 0.95 × {}",
                        pool.bound_rate
                    );
                    assert!(*balance <= 1.25, "{policy}: load balance {balance}");
                }
                Provider::Anthropic | Provider::Gemini | Provider::OpenAi => {
                    assert!(
                        report.oracle.is_some(),
                        "{label}: priced models have an oracle"
                    );
                }
                Provider::DeepSeek => {}
            }
        }
    }
}

#[tokio::test]
async fn fixed_placement_writes_and_reads_on_anthropic_chat() {
    let workload = built_in("chat", Scale::Ci)
        .unwrap()
        .into_iter()
        .find(|w| w.provider == Provider::Anthropic)
        .unwrap();
    let report = measure(&workload, &mut Progress::new()).await.unwrap();
    let direct = route(&report, Route::Direct);
    let fixed = route(&report, Route::Fixed);
    // The client sends no markers: nothing is cached directly.
    assert_eq!(direct.tokens.cache_read + direct.tokens.cache_write(), 0);
    // The shared 3k-token system prompt and each user's history are written, then read.
    assert!(
        fixed.tokens.cache_write_5m > 0 && fixed.tokens.cache_read > fixed.tokens.cache_write_5m
    );
    assert!(report.efficiency(fixed).unwrap() > 0.5);
}

#[test]
fn the_cli_prints_digests_and_a_json_report() {
    let report = replay_json(&["--workload", "volatile"]);
    let rows = report.as_array().unwrap();
    let expected = built_in("volatile", Scale::Ci).unwrap();
    assert_eq!(rows.len(), expected.len());
    for (row, workload) in rows.iter().zip(&expected) {
        assert_eq!(row["digest"], workload.digest());
        assert_eq!(row["provider"], workload.provider.upstream());
        let routes: Vec<&str> = row["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["route"].as_str().unwrap())
            .collect();
        assert_eq!(routes, ["direct", "fixed", "cachet"]);
        assert!(row["oracle"]["saved_nusd"].as_u64().is_some());
    }

    let text = std::process::Command::new(env!("CARGO_BIN_EXE_cachet"))
        .args(["replay", "--workload", "docqa"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(text.stdout).unwrap();
    for workload in built_in("docqa", Scale::Ci).unwrap() {
        assert!(stdout.contains(&workload.digest()), "digest printed");
    }
    assert!(stdout.contains("oracle $") && stdout.contains("eff"));

    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_cachet"))
        .args(["replay", "--workload", "nonesuch"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no built-in workload or file named"));
}

/// Issue 6's books: after `cachet replay --all --scale ci` (its own process, so `/metrics` holds
/// only the replay's proxies), every cachet route's ledger, `/metrics` totals and what the
/// simulator reported agree exactly in every token kind and in nano-USD, cancelled streams
/// included, with no record dropped; the CLI fails when they do not.
#[test]
fn after_a_replay_the_ledger_metrics_and_simulator_agree_exactly() {
    let report = replay_json(&["--all", "--scale", "ci"]);
    let mut cancelled = 0;
    let mut priced = 0;
    for row in report.as_array().unwrap() {
        let name = format!("{} {}", row["workload"], row["provider"]);
        let cachet = row["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == "cachet")
            .unwrap();
        let audit = &cachet["audit"];
        assert_eq!(audit["disagreements"], serde_json::json!([]), "{name}");
        assert_eq!(audit["dropped"], 0, "{name}");
        assert_eq!(audit["told"], audit["ledger"], "{name}");
        // `/metrics` counts cache writes without their TTL split.
        let (ledger, metrics) = (&audit["ledger"], &audit["metrics"]);
        let writes = |b: &serde_json::Value| {
            b["usage"]["cache_write_5m"].as_u64().unwrap()
                + b["usage"]["cache_write_1h"].as_u64().unwrap()
        };
        assert_eq!(writes(metrics), writes(ledger), "{name}");
        for kind in ["input_uncached", "cache_read", "output"] {
            assert_eq!(
                metrics["usage"][kind], ledger["usage"][kind],
                "{name}: {kind}"
            );
        }
        for money in ["cost_nusd", "cost_uncached_nusd"] {
            assert_eq!(metrics[money], ledger[money], "{name}: {money}");
        }
        let usage = &audit["ledger"]["usage"];
        assert!(
            usage["input_uncached"].as_u64().unwrap() > 0,
            "{name}: traffic recorded"
        );
        assert_eq!(audit["cancelled"], cachet["cancelled_streams"], "{name}");
        assert_eq!(audit["cut_streams"], cachet["cancelled_streams"], "{name}");
        cancelled += audit["cancelled"].as_u64().unwrap();
        priced += audit["ledger"]["cost_nusd"].as_u64().unwrap();
    }
    assert!(
        cancelled >= 50,
        "cancelled streams were replayed: {cancelled}"
    );
    assert!(priced > 0, "some workloads are priced");
}
