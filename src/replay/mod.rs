//! `cachet replay`: frozen workloads sent through the simulator, directly and through the proxy,
//! on a virtual clock, to measure cache efficiency against the oracle (`../shared/DESIGN.md`,
//! "Measuring").
//!
//! - `workload`: the requests (built-in generators and recorded JSONL files), drawn from `rng`;
//! - `run`: the driver, one fresh simulator per workload and route;
//! - `oracle`: the most any cache placement could save, on the context-first layout;
//! - `report`: the table and its JSON.

pub mod audit;
pub mod oracle;
pub mod report;
pub mod rng;
pub mod run;
pub mod workload;

use std::path::Path;

use anyhow::Context;

use oracle::{Item, OracleBill, Prices};
use report::{PoolReport, WorkloadReport};
use run::{POOL_REPLICAS, Progress, Route, RouteResult};
use workload::{BUILT_IN, Provider, Scale, Workload};

use crate::clock::utc_date;
use crate::pricing::PriceTable;
use crate::sim::Faults;
use crate::sim::rules::pool;

/// What `cachet replay` was asked for.
pub struct Options {
    /// A built-in workload's name or a JSONL file.
    pub workload: Option<String>,
    pub all: bool,
    pub scale: Scale,
    pub json: bool,
    /// Faults the simulator injects on every route (`--faults`).
    pub faults: Option<Faults>,
    /// Send the requests to this running cachet instead of measuring (`--send-to`).
    pub send_to: Option<String>,
}

/// `cachet replay`: prints each workload's digest, then the table (or the JSON report). With
/// faults, also each route's outcomes; an error when a request on the cachet route failed
/// without the fault injected on it.
pub async fn run_cli(options: Options) -> anyhow::Result<()> {
    let names: Vec<String> = match (&options.workload, options.all) {
        (_, true) => BUILT_IN.iter().map(|s| (*s).to_owned()).collect(),
        (Some(name), false) => vec![name.clone()],
        (None, false) => anyhow::bail!(
            "name a workload (--workload NAME|FILE; built in: {}) or pass --all",
            BUILT_IN.join(", ")
        ),
    };
    if let Some(base) = &options.send_to {
        let mut workloads = Vec::new();
        for name in &names {
            workloads.extend(load(name, options.scale)?);
        }
        return send_to(base, &workloads).await;
    }
    let mut progress = Progress::new();
    let mut reports = Vec::new();
    for name in names {
        let workloads = load(&name, options.scale)?;
        for workload in &workloads {
            if !options.json {
                println!(
                    "workload {} {} ({} requests) digest {}",
                    workload.name,
                    workload.provider.upstream(),
                    workload.requests.len(),
                    workload.digest()
                );
            }
            let faults = options.faults.as_ref();
            reports.push(measure_with(workload, faults, &mut progress).await?);
        }
    }
    if options.json {
        let all: Vec<serde_json::Value> = reports.iter().map(WorkloadReport::json).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        println!();
        print!("{}", report::table(&reports));
        println!();
        print!("{}", report::audit_table(&reports));
        if options.faults.is_some() {
            println!();
            print!("{}", report::fault_table(&reports));
        }
    }
    // Injected faults (resets, evictions) leave the provider's books and the proxy's views of
    // them apart by design; without faults they must agree exactly.
    if options.faults.is_none() {
        let disagreeing: Vec<String> = reports
            .iter()
            .flat_map(|r| r.routes.iter().map(move |(_, result)| (r, result)))
            .filter_map(|(r, result)| {
                let d = result.audit.as_ref()?.disagreements();
                (!d.is_empty()).then(|| format!("{} {}: {}", r.name, r.provider, d.join("; ")))
            })
            .collect();
        anyhow::ensure!(
            disagreeing.is_empty(),
            "the cachet route's ledger, /metrics and the simulator's bill disagree:\n{}",
            disagreeing.join("\n")
        );
    }
    if options.faults.is_some() {
        let unexplained: u64 = reports
            .iter()
            .flat_map(|r| &r.routes)
            .filter(|(route, _)| *route == Route::Cachet)
            .map(|(_, r)| r.unexplained)
            .sum();
        anyhow::ensure!(
            unexplained == 0,
            "{unexplained} request(s) on the cachet route failed without the fault injected on \
             them: a defect of cachet's"
        );
    }
    Ok(())
}

/// `--send-to`: every request of `workloads`, one after the other, to the cachet at `base`;
/// prints the count of each status, and fails if a request got no answer or a 5xx.
async fn send_to(base: &str, workloads: &[Workload]) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let base = base.trim_end_matches('/');
    let mut statuses: std::collections::BTreeMap<u16, u64> = std::collections::BTreeMap::new();
    for workload in workloads {
        for request in &workload.requests {
            let mut builder = client
                .post(format!("{base}/{}{}", request.upstream, request.path))
                .header("content-type", "application/json");
            for (name, value) in &request.headers {
                builder = builder.header(name, value);
            }
            let res = builder
                .body(serde_json::to_vec(&request.body)?)
                .send()
                .await
                .with_context(|| format!("sending to {base}"))?;
            let status = res.status().as_u16();
            res.bytes()
                .await
                .with_context(|| format!("reading from {base}"))?;
            *statuses.entry(status).or_default() += 1;
        }
        println!(
            "sent {} {} ({} requests)",
            workload.name,
            workload.provider.upstream(),
            workload.requests.len()
        );
    }
    let summary: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
    println!("answers: {}", summary.join(" "));
    let failed: u64 = statuses
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, n)| n)
        .sum();
    anyhow::ensure!(
        failed == 0,
        "{failed} request(s) answered with a server error"
    );
    Ok(())
}

fn load(name: &str, scale: Scale) -> anyhow::Result<Vec<Workload>> {
    if BUILT_IN.contains(&name) {
        return workload::built_in(name, scale).map_err(anyhow::Error::msg);
    }
    let path = Path::new(name);
    anyhow::ensure!(
        path.exists(),
        "no built-in workload or file named {name:?} (built in: {})",
        BUILT_IN.join(", ")
    );
    workload::load_file(path).map_err(anyhow::Error::msg)
}

/// Every route of one workload, its oracle and, for a pool, the routing comparison.
pub async fn measure(
    workload: &Workload,
    progress: &mut Progress,
) -> anyhow::Result<WorkloadReport> {
    measure_with(workload, None, progress).await
}

/// [`measure`] with `faults` injected by the simulator of every route.
pub async fn measure_with(
    workload: &Workload,
    faults: Option<&Faults>,
    progress: &mut Progress,
) -> anyhow::Result<WorkloadReport> {
    let mut report = WorkloadReport::new(workload);
    for route in Route::ALL {
        let result = run::replay_with(workload, route, faults, progress)
            .await
            .with_context(|| {
                format!("replaying {} on the {} route", workload.name, route.name())
            })?;
        report.routes.push((route, result));
    }
    if let Some((bill, in_money)) = oracle_for(workload) {
        report.oracle = Some(bill);
        report.oracle_in_money = in_money;
    }
    if workload.provider == Provider::Vllm {
        report.pool = Some(pool_report(workload, &report.routes));
    }
    Ok(report)
}

/// Minimum cacheable prompt when the price table has none for the model.
fn default_min(provider: Provider) -> u64 {
    match provider {
        Provider::Gemini => 2048,
        Provider::Anthropic | Provider::OpenAi | Provider::DeepSeek | Provider::Vllm => 1024,
    }
}

/// The oracle's bill, and whether it is in money (`true`) or only in read tokens (a model
/// without prices whose caching has no write fee).
fn oracle_for(workload: &Workload) -> Option<(OracleBill, bool)> {
    let table = PriceTable::built_in().ok()?;
    let row = table.price_on(&workload.model, &utc_date(run::t0()));
    let priced = row.and_then(|row| Prices::from_rates(&row.rates_for(0)));
    let automatic = matches!(workload.provider, Provider::OpenAi | Provider::DeepSeek);
    let prices = match priced {
        Some(prices) => prices,
        None if automatic => Prices::TOKENS,
        None => return None,
    };
    let min = row
        .and_then(|row| row.min_cacheable_tokens)
        .unwrap_or_else(|| default_min(workload.provider));
    let requests = workload
        .context_first
        .as_ref()
        .unwrap_or(&workload.requests);
    let items: Vec<Item> = requests
        .iter()
        .map(|r| Item {
            t: r.t,
            prompt: crate::sim::render_request(&r.upstream, &r.path, &r.body),
        })
        .collect();
    let bill = match workload.provider {
        Provider::Anthropic => oracle::anthropic(&items, &prices, min),
        Provider::Gemini => oracle::gemini(&items, &prices, min),
        Provider::OpenAi => oracle::openai(&items, &prices, min),
        Provider::DeepSeek => oracle::deepseek(&items, &prices),
        Provider::Vllm => return None,
    };
    Some((bill, priced.is_some()))
}

/// The bound for a pool: one LRU the size of all replicas together, in 16-token blocks, fed
/// the trace in order.
pub const BOUND_TOKENS: u64 = 16_000_000;

fn pool_report(workload: &Workload, routes: &[(Route, RouteResult)]) -> PoolReport {
    let policy = |route: Route| match route {
        Route::Direct => format!("direct: round-robin over {POOL_REPLICAS} replicas"),
        Route::Fixed => "fixed: consistent hash of the first block".to_owned(),
        Route::Cachet => {
            format!("cachet: replica affinity over {POOL_REPLICAS} base_urls")
        }
    };
    let policies = routes
        .iter()
        .map(|(route, r)| {
            let cached: u64 = r.replicas.iter().map(|x| x.cached_tokens).sum();
            let prompt: u64 = r.replicas.iter().map(|x| x.prompt_tokens).sum();
            let busy: Vec<f64> = r.replicas.iter().map(|x| x.busy_seconds).collect();
            let mean = busy.iter().sum::<f64>() / busy.len().max(1) as f64;
            let max = busy.iter().copied().fold(0.0, f64::max);
            let balance = if mean > 0.0 { max / mean } else { 0.0 };
            (policy(*route), ratio(cached, prompt), balance)
        })
        .collect();
    let mut lru = pool::Lru::new(BOUND_TOKENS);
    let (mut cached, mut prompt) = (0u64, 0u64);
    for r in &workload.requests {
        let p = crate::sim::render_request(&r.upstream, &r.path, &r.body);
        cached += lru.cached_tokens(&p);
        prompt += p.tokens();
        lru.admit(&p);
    }
    PoolReport {
        policies,
        bound_rate: ratio(cached, prompt),
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}
