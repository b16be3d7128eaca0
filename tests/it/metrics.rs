//! `/metrics`: the contract's names, bounded labels, exact cost totals.

use crate::common::*;

#[tokio::test]
async fn requests_tokens_cost_and_overhead_are_exported() {
    let mock = MockUpstream::start(|_| Reply::json(200, fixture!("anthropic_messages.json"))).await;
    let url = mock.url();
    // A unique upstream name: the Prometheus recorder is process-wide.
    let proxy = TestProxy::spawn(&format!(
        "[[upstreams]]\nname = \"metrics-claude\"\nprovider = \"anthropic\"\nbase_url = \"{url}\"\n"
    ))
    .await;
    let http = client();
    for model in [
        "claude-sonnet-4-6",
        "claude-sonnet-4-6-20260101",
        "some-unknown-model",
    ] {
        let r = http
            .post(proxy.url("/metrics-claude/v1/messages"))
            .body(format!(
                "{{\"model\":\"{model}\",\"max_tokens\":5,\"messages\":[]}}"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let r = http
        .post(proxy.url("/metrics-claude/v1/messages"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let mut text = String::new();
    eventually("three requests recorded", || proxy.recorded() == 4).await;
    text.push_str(&metrics_of(&proxy).await);
    let m = |prefix: &str| metric(&text, prefix);
    assert_eq!(
        m(
            "cachet_requests_total{upstream=\"metrics-claude\",model=\"claude-sonnet-4-6\",status=\"200\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        m("cachet_requests_total{upstream=\"metrics-claude\",model=\"other\",status=\"200\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        m("cachet_requests_total{upstream=\"metrics-claude\",model=\"other\",status=\"400\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        m(
            "cachet_tokens_total{upstream=\"metrics-claude\",model=\"claude-sonnet-4-6\",kind=\"cache_read\"}"
        ),
        Some(200_000.0)
    );
    assert_eq!(
        m(
            "cachet_tokens_total{upstream=\"metrics-claude\",model=\"claude-sonnet-4-6\",kind=\"cache_write\"}"
        ),
        Some(496.0)
    );
    assert_eq!(
        m(
            "cachet_tokens_total{upstream=\"metrics-claude\",model=\"claude-sonnet-4-6\",kind=\"input_uncached\"}"
        ),
        Some(100.0)
    );
    assert_eq!(
        m(
            "cachet_tokens_total{upstream=\"metrics-claude\",model=\"claude-sonnet-4-6\",kind=\"output\"}"
        ),
        Some(1006.0)
    );
    // Two requests of 38_850_000 nano-USD each (hand-computed in the pricing tests).
    assert!(text.contains("cachet_cost_usd_total{upstream=\"metrics-claude\",model=\"claude-sonnet-4-6\"} 0.077700000"), "{text}");
    assert!(text.contains("cachet_cost_uncached_usd_total{upstream=\"metrics-claude\",model=\"claude-sonnet-4-6\"} 0.616878000"), "{text}");
    assert!(
        text.contains(
            "cachet_unpriced_requests_total{upstream=\"metrics-claude\",model=\"other\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("cachet_overhead_seconds_bucket"), "{text}");
    assert!(
        text.contains("cachet_upstream_ttfb_seconds_bucket{upstream=\"metrics-claude\""),
        "{text}"
    );
    assert!(!text.contains("sk-"), "no credential in metrics");
}

#[tokio::test]
async fn an_admin_token_guards_metrics_but_not_probes() {
    let mock = MockUpstream::start(|_| Reply::json(200, b"{}")).await;
    let proxy = TestProxy::in_front_of(&mock, "[admin]\ntoken = \"s3cret\"\n").await;
    let http = client();
    let r = http.get(proxy.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-cachet-error"], "unauthorized");
    assert_eq!(
        http.get(proxy.url("/metrics"))
            .bearer_auth("wrong!")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        http.get(proxy.url("/metrics"))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(proxy.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// One `/metrics` sample: its series name, labels and value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    value: f64,
}

/// The samples of a Prometheus text page (comment lines left out).
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let name_end = line.find(['{', ' ']).unwrap();
            let mut labels = std::collections::BTreeMap::new();
            let mut rest = &line[name_end..];
            if let Some(inside) = rest.strip_prefix('{') {
                rest = inside;
                while !rest.starts_with('}') {
                    let (key, after) = rest.split_once("=\"").unwrap();
                    // Label values may hold escaped quotes: read up to the first unescaped one.
                    let mut value = String::new();
                    let mut chars = after.char_indices();
                    let end = loop {
                        match chars.next().unwrap() {
                            (_, '\\') => value.push(chars.next().unwrap().1),
                            (i, '"') => break i,
                            (_, c) => value.push(c),
                        }
                    };
                    labels.insert(key.to_owned(), value);
                    rest = after[end + 1..].trim_start_matches(',');
                }
                rest = &rest[1..];
            }
            Sample {
                name: line[..name_end].to_owned(),
                labels,
                value: rest.trim().parse().unwrap(),
            }
        })
        .collect()
}

/// DESIGN.md's metrics: name, Prometheus type, and the exact label names (sorted, as a
/// sample's are).
const CONTRACT: [(&str, &str, &[&str]); 8] = [
    (
        "cachet_requests_total",
        "counter",
        &["model", "status", "upstream"],
    ),
    (
        "cachet_tokens_total",
        "counter",
        &["kind", "model", "upstream"],
    ),
    ("cachet_cost_usd_total", "counter", &["model", "upstream"]),
    (
        "cachet_cost_uncached_usd_total",
        "counter",
        &["model", "upstream"],
    ),
    ("cachet_overhead_seconds", "histogram", &[]),
    ("cachet_upstream_ttfb_seconds", "histogram", &["upstream"]),
    ("cachet_plan_branch_total", "counter", &["branch"]),
    ("cachet_ledger_dropped_total", "counter", &[]),
];

const MADE_UP_MODEL: &str = "made-up-model-9000";

#[tokio::test]
async fn every_contract_metric_is_exported_with_exactly_its_labels_and_bounded_values() {
    let sim = start_simulator().await;
    // Unique upstream names: the Prometheus recorder is process-wide.
    let proxy = TestProxy::spawn(&format!(
        "[[upstreams]]\nname = \"contract-claude\"\nprovider = \"anthropic\"\n\
         base_url = \"http://{sim}/anthropic\"\n\
         [[upstreams]]\nname = \"contract-openai\"\nprovider = \"openai\"\n\
         base_url = \"http://{sim}/openai\"\n"
    ))
    .await;
    let http = client();
    let send = |path: &str, body: String, rewrite_off: bool| {
        let r = http
            .post(proxy.url(path))
            .header("authorization", "Bearer k-contract")
            .header("x-api-key", "k-contract")
            .header("content-type", "application/json")
            .body(body);
        if rewrite_off {
            r.header("x-cachet-rewrite", "off").send()
        } else {
            r.send()
        }
    };
    let messages = r#"[{"role":"user","content":"What is in the report?"}]"#;
    // (model, stream, extra body fields, x-cachet-rewrite: off): streamed and not, priced and
    // made up, and planner branches beyond the usual `no_candidate`.
    let claude = [
        ("claude-sonnet-4-6", false, "", false),
        ("claude-sonnet-4-6", true, "", true),
        (MADE_UP_MODEL, false, "", false),
        (MADE_UP_MODEL, true, "", false),
    ];
    let openai = [
        ("gpt-4o", false, "", false),
        ("gpt-4o", true, r#","prompt_cache_key":"mine""#, false),
        (MADE_UP_MODEL, true, "", false),
    ];
    for (path, requests) in [
        ("/contract-claude/v1/messages", &claude[..]),
        ("/contract-openai/v1/chat/completions", &openai[..]),
    ] {
        for &(model, stream, extra, rewrite_off) in requests {
            let body = format!(
                r#"{{"model":"{model}","max_tokens":20,"stream":{stream},"messages":{messages}{extra}}}"#
            );
            let r = send(path, body, rewrite_off).await.unwrap();
            assert_eq!(r.status(), 200, "{path} {model} stream={stream}");
            r.bytes().await.unwrap();
        }
    }
    // A request cachet refuses itself: a status other than 200, and no model at all.
    let r = send("/contract-claude/v1/messages", "{".into(), false)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    eventually("eight requests recorded", || proxy.recorded() == 8).await;

    let text = metrics_of(&proxy).await;
    let all = samples(&text);
    let prices = cachet::pricing::PriceTable::built_in().unwrap();
    let help = text
        .lines()
        .find_map(|l| l.strip_prefix("# HELP cachet_plan_branch_total "))
        .unwrap_or_else(|| panic!("no description of the plan branches\n{text}"));
    let branches: Vec<&str> = help
        .split_once("one of: ")
        .unwrap_or_else(|| panic!("the description names the branch values: {help}"))
        .1
        .trim_end_matches('.')
        .split(", ")
        .collect();

    for (family, kind, label_names) in CONTRACT {
        assert!(
            text.lines().any(|l| l == format!("# TYPE {family} {kind}")),
            "{family} is a {kind}\n{text}"
        );
        let series: Vec<&Sample> = all
            .iter()
            .filter(|s| match kind {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|end| s.name == format!("{family}{end}")),
                _ => s.name == family,
            })
            .collect();
        assert!(!series.is_empty(), "{family} is exported\n{text}");
        for s in series {
            let mut names: Vec<&str> = s.labels.keys().map(String::as_str).collect();
            if s.name.ends_with("_bucket") {
                assert!(s.labels.contains_key("le"), "{s:?}");
                names.retain(|n| *n != "le");
            }
            assert_eq!(names, label_names, "{s:?}");
            for (label, value) in &s.labels {
                match label.as_str() {
                    "kind" => assert!(
                        ["input_uncached", "cache_read", "cache_write", "output"]
                            .contains(&value.as_str()),
                        "{s:?}"
                    ),
                    "model" => assert!(
                        value == "other" || prices.canonical(value) == Some(value.as_str()),
                        "model is a price-table model or other: {s:?}"
                    ),
                    "status" => assert!(
                        value.len() == 3
                            && value.parse::<u16>().is_ok_and(|c| (100..600).contains(&c)),
                        "status is an HTTP code: {s:?}"
                    ),
                    "branch" => assert!(branches.contains(&value.as_str()), "{s:?}: {help}"),
                    _ => {}
                }
            }
        }
    }

    // This test's own traffic is among them, under the labels it should have.
    let count = |series: &str| metric(&text, series);
    assert_eq!(
        count(
            "cachet_requests_total{upstream=\"contract-claude\",model=\"claude-sonnet-4-6\",status=\"200\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        count(
            "cachet_requests_total{upstream=\"contract-openai\",model=\"gpt-4o\",status=\"200\"}"
        ),
        Some(2.0),
        "{text}"
    );
    let other_of = |upstream: &str| -> f64 {
        all.iter()
            .filter(|s| s.name == "cachet_requests_total")
            .filter(|s| s.labels["upstream"] == upstream && s.labels["model"] == "other")
            .map(|s| s.value)
            .sum()
    };
    // The made-up model's requests, and the body with no model.
    assert_eq!(other_of("contract-claude"), 3.0, "{text}");
    assert_eq!(other_of("contract-openai"), 1.0, "{text}");
    assert_eq!(
        count("cachet_requests_total{upstream=\"contract-claude\",model=\"other\",status=\"400\"}"),
        Some(1.0),
        "{text}"
    );
    for branch in ["rewrite_off", "client_cache_key", "no_candidate"] {
        let series = format!("cachet_plan_branch_total{{branch=\"{branch}\"}}");
        assert!(count(&series).is_some(), "{series}\n{text}");
    }
    assert!(
        !text.contains(MADE_UP_MODEL),
        "a client's model name is no label"
    );
    for kind in ["input_uncached", "cache_read", "cache_write", "output"] {
        let series = format!(
            "cachet_tokens_total{{upstream=\"contract-claude\",model=\"claude-sonnet-4-6\",kind=\"{kind}\"}}"
        );
        assert!(count(&series).is_some(), "{series}\n{text}");
    }
    for upstream in ["contract-claude", "contract-openai"] {
        for family in ["cachet_cost_usd_total", "cachet_cost_uncached_usd_total"] {
            assert!(
                all.iter()
                    .any(|s| s.name == family && s.labels["upstream"] == upstream),
                "{family} of {upstream}\n{text}"
            );
        }
        assert!(
            all.iter()
                .any(|s| s.name == "cachet_upstream_ttfb_seconds_count"
                    && s.labels["upstream"] == upstream),
            "ttfb of {upstream}\n{text}"
        );
    }
}
