//! The ledger through the proxy: one record per upstream call, in SQLite and in PostgreSQL,
//! written off the request path, flushed on shutdown, and at least every flush interval (what
//! survives a SIGKILL).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Row;

use crate::common::*;

/// A SQLite file of its own under the temp directory (emptied first), as a ledger URL.
fn sqlite_url(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("cachet-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    format!("sqlite://{}/cachet.db", dir.display())
}

/// A PostgreSQL schema of its own in the machine's `test` database, and the URL that uses it.
async fn postgres_url(name: &str) -> String {
    let base = "postgres://postgres@127.0.0.1:5432/test";
    let admin = sqlx::PgPool::connect(base)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 (database test) must be reachable");
    let schema = format!("cachet_it_{name}_{}", std::process::id());
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    format!("{base}?options=-c%20search_path%3D{schema}")
}

/// Sends an Anthropic request (streamed or not) and returns its request id and usage.
async fn claude(proxy: &TestProxy, mount: &str, team: &str, stream: bool) -> (String, Value) {
    let body = json!({"model": "claude-sonnet-4-6", "max_tokens": 20, "stream": stream,
        "system": "Answer briefly.", "messages": [{"role": "user", "content": "Hello there"}]});
    let r = client()
        .post(proxy.url(&format!("/{mount}/v1/messages")))
        .header("x-api-key", "k-ledger")
        .header("x-cachet-team", team)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-cachet-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = r.text().await.unwrap();
    let usage = if stream {
        // The cumulative usage: message_start's input side, message_delta's output.
        let events: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect();
        let start = events
            .iter()
            .find(|e| e["type"] == "message_start")
            .unwrap();
        let delta = events
            .iter()
            .rfind(|e| e["type"] == "message_delta")
            .unwrap();
        let mut usage = start["message"]["usage"].clone();
        usage["output_tokens"] = delta["usage"]["output_tokens"].clone();
        usage
    } else {
        serde_json::from_str::<Value>(&text).unwrap()["usage"].clone()
    };
    (id, usage)
}

async fn records_match_the_calls(url: &str, mount: &str) {
    let sim = start_simulator().await;
    let mut proxy = TestProxy::spawn(&format!(
        "[ledger]\nurl = \"{url}\"\nqueue = 1000\nflush_interval = \"1h\"\n\
         [[upstreams]]\nname = \"{mount}\"\nprovider = \"anthropic\"\nbase_url = \"http://{sim}/anthropic\"\n"
    ))
    .await;
    let calls = [
        claude(&proxy, mount, "search", false).await,
        claude(&proxy, mount, "search", true).await,
    ];
    // The counter is exported from the start; it counts every ledger of this process (other
    // tests' too), so this proxy's own count is what must be 0.
    let metrics = metrics_of(&proxy).await;
    assert!(metric(&metrics, "cachet_ledger_dropped_total").is_some());
    let ledger = proxy.state.telemetry().ledger().unwrap().clone();
    // Nothing is flushed before an hour or shutdown: the records are written on the way out.
    proxy.stop();
    (&mut proxy.task).await.unwrap().unwrap();
    assert_eq!(ledger.dropped(), 0);
    let rows: Vec<Row9> = if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        fetch_pg(&pool).await
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        fetch_sqlite(&pool).await
    };
    assert_eq!(rows.len(), 2, "{rows:?}");
    for ((id, usage), row) in calls.iter().zip(&rows) {
        let (rid, call, input, output, read, cost, team, outcome, complete) = row;
        assert_eq!(rid, id);
        assert_eq!(call, "client");
        assert_eq!(*input, usage["input_tokens"].as_i64().unwrap());
        assert_eq!(*output, usage["output_tokens"].as_i64().unwrap());
        assert_eq!(
            *read,
            usage["cache_read_input_tokens"].as_i64().unwrap_or(0)
        );
        assert!(cost.unwrap() > 0);
        assert_eq!(team, "search");
        assert_eq!(outcome, "ok");
        assert!(complete);
    }
}

type Row9 = (
    String,
    String,
    i64,
    i64,
    i64,
    Option<i64>,
    String,
    String,
    bool,
);

const SELECT: &str = "SELECT request_id, call, input_uncached, output, cache_read, cost_nusd, \
                      team, outcome, usage_complete FROM ledger ORDER BY id";

/// The columns of `SELECT` as a tuple, from a row of either database.
macro_rules! row9 {
    ($r:expr) => {
        (
            $r.get(0),
            $r.get(1),
            $r.get(2),
            $r.get(3),
            $r.get(4),
            $r.get(5),
            $r.get(6),
            $r.get(7),
            $r.get(8),
        )
    };
}

async fn fetch_sqlite(pool: &sqlx::SqlitePool) -> Vec<Row9> {
    sqlx::query(SELECT)
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| row9!(r))
        .collect()
}

async fn fetch_pg(pool: &sqlx::PgPool) -> Vec<Row9> {
    sqlx::query(SELECT)
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| row9!(r))
        .collect()
}

#[tokio::test]
async fn sqlite_holds_one_record_per_call_flushed_on_shutdown() {
    let url = sqlite_url("ledger");
    records_match_the_calls(&url, "ledger-sqlite").await;
}

#[tokio::test]
async fn postgres_holds_one_record_per_call_flushed_on_shutdown() {
    let url = postgres_url("calls").await;
    records_match_the_calls(&url, "ledger-pg").await;
}

/// A stream the client cancels is recorded as such, with the input side message_start
/// reported exact and `usage_complete = false` (the provider bills output nobody was told of);
/// an error the upstream answered whole bills nothing, and its record says its usage is
/// complete.
#[tokio::test]
async fn a_cancelled_stream_and_an_upstream_error_are_recorded_for_what_they_are() {
    let sim = start_simulator().await;
    let url = sqlite_url("cancel");
    let mut proxy = TestProxy::spawn(&format!(
        "[ledger]\nurl = \"{url}\"\nflush_interval = \"1h\"\n\
         [[upstreams]]\nname = \"ledger-cancel\"\nprovider = \"anthropic\"\n\
         base_url = \"http://{sim}/anthropic\"\n"
    ))
    .await;
    let send = |body: Value, hang: bool| {
        let mut r = client()
            .post(proxy.url("/ledger-cancel/v1/messages"))
            .header("x-api-key", "k-cancel")
            .header("content-type", "application/json");
        if hang {
            r = r.header(cachet::sim::HANG_AFTER_HEADER, "1");
        }
        r.body(body.to_string()).send()
    };
    let mut stream = send(
        json!({"model": "claude-sonnet-4-6", "max_tokens": 64, "stream": true,
            "messages": [{"role": "user", "content": "Tell me a long story"}]}),
        true,
    )
    .await
    .unwrap();
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.unwrap().unwrap();
    let start: Value = std::str::from_utf8(&first)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .unwrap();
    let told = start["message"]["usage"].clone();
    drop(stream);
    let bad = send(
        json!({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}),
        false,
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), 400, "the simulator wants max_tokens");
    bad.bytes().await.unwrap();
    eventually("both recorded", || proxy.recorded() == 2).await;
    proxy.stop();
    (&mut proxy.task).await.unwrap().unwrap();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows = fetch_sqlite(&pool).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (_, call, input, output, read, cost, _, outcome, complete) = &rows[0];
    assert_eq!((call.as_str(), outcome.as_str()), ("client", "cancelled"));
    assert!(!complete, "output was billed that nobody reported");
    assert_eq!(*input, told["input_tokens"].as_i64().unwrap());
    assert_eq!(*read, told["cache_read_input_tokens"].as_i64().unwrap());
    assert_eq!(*output, 1, "message_start's placeholder");
    assert!(cost.unwrap() > 0);
    let (_, _, input, output, _, cost, _, outcome, complete) = &rows[1];
    assert_eq!(outcome, "upstream_error");
    assert!(complete, "an error answered whole bills nothing");
    assert_eq!((*input, *output, *cost), (0, 0, Some(0)));
}

async fn api_usage(proxy: &TestProxy, query: &str) -> (u16, Value) {
    let r = client()
        .get(proxy.url(&format!("/api/usage?{query}")))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

async fn usage_groups_what_the_ledger_holds(url: &str, mount: &str) {
    let sim = start_simulator().await;
    let proxy = TestProxy::spawn(&format!(
        "[ledger]\nurl = \"{url}\"\nqueue = 1000\nflush_interval = \"50ms\"\n\
         [[upstreams]]\nname = \"{mount}\"\nprovider = \"anthropic\"\nbase_url = \"http://{sim}/anthropic\"\n"
    ))
    .await;
    for (team, stream) in [("search", false), ("ads", true), ("search", true)] {
        claude(&proxy, mount, team, stream).await;
    }
    // Written within the flush interval.
    let mut usage = Value::Null;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        usage = api_usage(&proxy, "group_by=team").await.1;
        if usage["totals"]["requests"] == 3 {
            break;
        }
    }
    assert_eq!(usage["group_by"], "team");
    assert_eq!(usage["totals"]["requests"], 3, "{usage}");
    let rows = usage["rows"].as_array().unwrap();
    let by_key = |k: &str| rows.iter().find(|r| r["key"] == k).unwrap().clone();
    assert_eq!(by_key("search")["requests"], 2);
    assert_eq!(by_key("ads")["requests"], 1);
    // The totals are the rows' sums, and they agree with /metrics to the nano-dollar.
    let sum = |field: &str| rows.iter().map(|r| r[field].as_i64().unwrap()).sum::<i64>();
    let totals = &usage["totals"];
    assert_eq!(totals["cost_nusd"].as_i64().unwrap(), sum("cost_nusd"));
    assert_eq!(
        totals["saved_nusd"].as_i64().unwrap(),
        totals["cost_uncached_nusd"].as_i64().unwrap() - totals["cost_nusd"].as_i64().unwrap()
    );
    let metrics = metrics_of(&proxy).await;
    let series =
        format!("cachet_cost_usd_total{{upstream=\"{mount}\",model=\"claude-sonnet-4-6\"}}");
    let metric_nusd = (metric(&metrics, &series).unwrap() * 1e9).round() as i64;
    assert_eq!(metric_nusd, totals["cost_nusd"].as_i64().unwrap());
    let tokens = format!(
        "cachet_tokens_total{{upstream=\"{mount}\",model=\"claude-sonnet-4-6\",kind=\"input_uncached\"}}"
    );
    assert_eq!(
        metric(&metrics, &tokens).unwrap() as i64,
        totals["tokens"]["input_uncached"].as_i64().unwrap()
    );
    // By day: one row, today's; by model: one row.
    let (_, day) = api_usage(&proxy, "group_by=day").await;
    assert_eq!(day["rows"].as_array().unwrap().len(), 1);
    assert_eq!(day["rows"][0]["requests"], 3);
    let (_, hour) = api_usage(&proxy, "group_by=hour").await;
    let hour_key = hour["rows"][0]["key"].as_str().unwrap().to_owned();
    let day_key = day["rows"][0]["key"].as_str().unwrap();
    assert!(
        hour_key.starts_with(&format!("{day_key}T")) && hour_key.ends_with(":00Z"),
        "{hour_key} within {day_key}"
    );
    let (_, model) = api_usage(&proxy, "group_by=model").await;
    assert_eq!(model["rows"][0]["key"], "claude-sonnet-4-6");
    // A range before any record: nothing.
    let (_, empty) = api_usage(&proxy, "from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z").await;
    assert_eq!(empty["rows"].as_array().unwrap().len(), 0);
    assert_eq!(empty["totals"]["requests"], 0);
    // Bad input: a clear 400.
    let (status, bad) = api_usage(&proxy, "group_by=color").await;
    assert_eq!(status, 400);
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("group_by")
    );
    let (status, _) = api_usage(&proxy, "from=yesterday").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn sqlite_usage_api_groups_what_the_ledger_holds() {
    let url = sqlite_url("usage");
    usage_groups_what_the_ledger_holds(&url, "usage-sqlite").await;
}

#[tokio::test]
async fn postgres_usage_api_groups_what_the_ledger_holds() {
    let url = postgres_url("usage").await;
    usage_groups_what_the_ledger_holds(&url, "usage-pg").await;
}

/// The ledger's flush interval in the SIGKILL test.
const FLUSH: Duration = Duration::from_millis(500);

/// How much later than one flush interval after its request completed a record may reach the
/// store. A record is queued as its response ends and written by the next tick, at most
/// `FLUSH` later; on top come the control-plane thread's scheduling delay (the writer runs
/// there, beside the test's clients and simulator on a 2-core machine: tens of milliseconds at
/// worst) and the batch's INSERT with its WAL sync (milliseconds for a few hundred rows). Two
/// intervals of slack is several times that noise, while a writer that flushes only on
/// shutdown, or only full batches, leaves every record of the run missing: the run sends
/// fewer than a batch's 500 records, and the requests older than the cut-off span seconds.
const SLACK: Duration = Duration::from_secs(1);

/// Load before the kill: long enough that seconds of completed requests lie beyond
/// `FLUSH + SLACK`. Not a whole number of intervals: the writer's ticks start with the proxy,
/// so that would kill just after a flush, when almost nothing is unwritten; this kills late in
/// an interval (measured: the oldest unwritten record ~0.3 s old, also with both cores busy).
const LOAD: Duration = Duration::from_millis(4300);

const CLIENTS: usize = 6;

/// Each client's pause between requests: bounds the run to CLIENTS × LOAD / PACE = 430
/// requests, under the writer's batch of 500, so only the interval can have written them.
const PACE: Duration = Duration::from_millis(60);

/// Kills the proxy process if the test fails before it does.
struct ProxyProcess(std::process::Child);

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request through the proxy at `base`, the `i`-th of its client: Anthropic and OpenAI,
/// streamed and not, in turn. Returns its request id once the whole response has been read,
/// or `None` when the proxy is gone.
async fn one_request(http: &reqwest::Client, base: &str, i: usize) -> Option<String> {
    let stream = i % 2 == 0;
    let question = format!("[{{\"role\":\"user\",\"content\":\"Question {i}?\"}}]");
    let (path, body) = if i % 4 < 2 {
        (
            "/anthropic/v1/messages",
            format!(
                "{{\"model\":\"claude-sonnet-4-6\",\"max_tokens\":20,\"stream\":{stream},\"messages\":{question}}}"
            ),
        )
    } else {
        (
            "/openai/v1/chat/completions",
            format!("{{\"model\":\"gpt-4o\",\"stream\":{stream},\"messages\":{question}}}"),
        )
    };
    let r = http
        .post(format!("{base}{path}"))
        .header("x-api-key", "k-kill")
        .header("authorization", "Bearer k-kill")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .ok()?;
    assert_eq!(r.status(), 200, "{path}");
    let id = r.headers()["x-cachet-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    r.bytes().await.ok()?;
    Some(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_keeps_every_record_older_than_the_flush_interval() {
    let sim = start_simulator().await;
    let dir = std::env::temp_dir().join(format!("cachet-it-sigkill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("cachet.db");
    let config = dir.join("cachet.toml");
    std::fs::write(
        &config,
        format!(
            "[ledger]\nurl = \"sqlite://{db}\"\nflush_interval = \"{flush}ms\"\n\
             [registry]\ndata_dir = \"{data}\"\n\
             [[upstreams]]\nname = \"anthropic\"\nbase_url = \"http://{sim}/anthropic\"\n\
             [[upstreams]]\nname = \"openai\"\nbase_url = \"http://{sim}/openai\"\n",
            db = db.display(),
            flush = FLUSH.as_millis(),
            data = dir.join("data").display(),
        ),
    )
    .unwrap();
    // A free port for the proxy (it logs its configured address, not the one it bound).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let log = std::fs::File::create(dir.join("cachet.log")).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cachet"));
    command
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", &addr.to_string()])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(log);
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("CACHET_")) {
        command.env_remove(name);
    }
    let mut proxy = ProxyProcess(command.spawn().unwrap());
    let base = format!("http://{addr}");
    let http = client();
    let started = Instant::now();
    while !matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status() == 200) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the proxy is not ready after 30 s; log in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let completed: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (http, base, completed) = (http.clone(), base.clone(), completed.clone());
            tokio::spawn(async move {
                for i in c.. {
                    let Some(id) = one_request(&http, &base, i).await else {
                        return;
                    };
                    completed.lock().unwrap().push((id, Instant::now()));
                    tokio::time::sleep(PACE).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(LOAD).await;
    let killed_at = Instant::now();
    // SIGKILL: no drain, no last flush.
    proxy.0.kill().unwrap();
    proxy.0.wait().unwrap();
    for client in clients {
        client.await.unwrap();
    }

    let completed = completed.lock().unwrap().clone();
    let cutoff = killed_at - FLUSH - SLACK;
    let (old, recent): (Vec<_>, Vec<_>) = completed.iter().partition(|(_, at)| *at <= cutoff);
    // Enough of the run lies beyond the cut-off for the check below to mean something.
    assert!(
        old.len() >= 50,
        "{} requests completed before the cut-off",
        old.len()
    );
    let last_interval = completed
        .iter()
        .filter(|(_, at)| *at > killed_at - FLUSH)
        .count();
    assert!(last_interval > 0, "requests were completing at the kill");

    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let stored: HashMap<String, i64> = sqlx::query_as(
        "SELECT request_id, COUNT(*) FROM ledger WHERE call = 'client' GROUP BY request_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let missing: Vec<String> = old
        .iter()
        .filter(|(id, _)| stored.get(id) != Some(&1))
        .map(|(id, at)| format!("{id} ({:?} before the kill)", killed_at - *at))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} requests older than {:?} have no single record, the oldest: {:?}\n\
         ({} newer ones, {} records stored; proxy log in {})",
        missing.len(),
        old.len(),
        FLUSH + SLACK,
        &missing[..missing.len().min(5)],
        recent.len(),
        stored.len(),
        dir.display()
    );
    pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The dashboard's readings over HTTP: misses with their fix, the costliest prefixes, advice
/// and instances, behind `[admin] token`.
#[tokio::test]
async fn the_dashboard_readings_are_served_behind_the_admin_token() {
    let sim = start_simulator().await;
    let proxy = TestProxy::spawn(&format!(
        "[admin]\ntoken = \"dash-secret\"\n\
         [[upstreams]]\nname = \"ledger-insights\"\nprovider = \"anthropic\"\n\
         base_url = \"http://{sim}/anthropic\"\n"
    ))
    .await;
    let manual = "Answer from the handbook below. ".repeat(400);
    for hour in ["09:00", "10:00", "11:00"] {
        let body = json!({"model": "claude-sonnet-4-6", "max_tokens": 16,
            "system": format!("Current time: 2026-11-30 {hour} UTC. {manual}"),
            "messages": [{"role": "user", "content": "What is the refund policy?"}]});
        let r = client()
            .post(proxy.url("/ledger-insights/v1/messages"))
            .header("x-api-key", "k-insights")
            .header("x-cachet-team", "support")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    eventually("recorded", || proxy.recorded() == 3).await;
    let ledger = proxy.state.telemetry().ledger().unwrap().clone();
    assert!(ledger.flush(std::time::Duration::from_secs(10)).await);
    let get = |path: &str, token: Option<&str>| {
        let mut r = client().get(proxy.url(path));
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            (status, body)
        }
    };
    let token = Some("dash-secret");
    for path in [
        "/api/misses",
        "/api/prefixes",
        "/api/advice",
        "/api/instances",
    ] {
        assert_eq!(get(path, None).await.0, 401, "{path} without the token");
        assert_eq!(
            get(path, Some("wrong")).await.0,
            401,
            "{path} with a wrong token"
        );
    }
    let (status, misses) = get("/api/misses", token).await;
    assert_eq!(status, 200, "{misses}");
    let timestamp = misses
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["reason"] == "timestamp_in_prefix")
        .unwrap_or_else(|| panic!("{misses}"));
    assert_eq!(timestamp["count"], 2);
    assert!(timestamp["tokens"].as_i64().unwrap() > 1000);
    assert!(timestamp["cost_nusd"].as_i64().unwrap() > 0);
    assert!(
        timestamp["example_segment"]
            .as_str()
            .unwrap()
            .starts_with("system")
    );
    assert!(
        timestamp["fix"]
            .as_str()
            .unwrap()
            .contains("timestamp out of the system prompt")
    );
    let (status, prefixes) = get("/api/prefixes?limit=5", token).await;
    assert_eq!(status, 200);
    let rows = prefixes["rows"].as_array().unwrap();
    assert!(!rows.is_empty() && rows.len() <= 5, "{prefixes}");
    assert_eq!(rows[0]["team"], "support");
    assert_eq!(get("/api/prefixes?limit=0", token).await.0, 400);
    let (status, advice) = get("/api/advice", token).await;
    assert_eq!(status, 200);
    for list in [
        "one_hour_ttl",
        "under_minimum",
        "no_markers",
        "silent_upstreams",
    ] {
        assert!(advice[list].is_array(), "{list}: {advice}");
    }
    let (status, instances) = get("/api/instances", token).await;
    assert_eq!(status, 200);
    assert_eq!(instances.as_array().unwrap().len(), 1);
    assert_eq!(instances[0]["requests"], 3);
    assert_eq!(get("/api/misses?from=yesterday", token).await.0, 400);
}

/// Two `cachet serve` processes writing one PostgreSQL ledger show as one team: either one's
/// `/api/usage` counts both's traffic, and `/api/instances` names each.
#[tokio::test]
async fn two_proxies_writing_one_postgres_ledger_show_as_one_team() {
    let sim = start_simulator().await;
    let url = postgres_url("team").await;
    let config = format!(
        "[ledger]\nurl = \"{url}\"\nflush_interval = \"1h\"\n\
         [[upstreams]]\nname = \"ledger-team\"\nprovider = \"anthropic\"\n\
         base_url = \"http://{sim}/anthropic\"\n"
    );
    let proxies = [
        TestProxy::spawn(&config).await,
        TestProxy::spawn(&config).await,
    ];
    for (proxy, team) in proxies.iter().zip(["search", "support"]) {
        for _ in 0..2 {
            claude(proxy, "ledger-team", team, false).await;
        }
        let ledger = proxy.state.telemetry().ledger().unwrap().clone();
        assert!(ledger.flush(std::time::Duration::from_secs(10)).await);
    }
    for proxy in &proxies {
        let (status, usage) = api_usage(proxy, "group_by=team").await;
        assert_eq!(status, 200);
        assert_eq!(usage["totals"]["requests"], 4, "{usage}");
        let mut teams: Vec<&str> = usage["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap())
            .collect();
        teams.sort_unstable();
        assert_eq!(teams, ["search", "support"]);
        let instances: Value = serde_json::from_slice(
            &client()
                .get(proxy.url("/api/instances"))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .unwrap();
        let ids: Vec<&str> = instances
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["instance_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 2, "{instances}");
        assert_ne!(ids[0], ids[1]);
        assert!(
            instances
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["requests"] == 2)
        );
    }
}
