//! The ledger through the proxy: one record per upstream call, in SQLite and in PostgreSQL,
//! written off the request path and flushed on shutdown.

use serde_json::{Value, json};
use sqlx::Row;

use crate::common::*;

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
async fn claude(proxy: &TestProxy, mount: &str, stream: bool) -> (String, Value) {
    let body = json!({"model": "claude-sonnet-4-6", "max_tokens": 20, "stream": stream,
        "system": "Answer briefly.", "messages": [{"role": "user", "content": "Hello there"}]});
    let r = client()
        .post(proxy.url(&format!("/{mount}/v1/messages")))
        .header("x-api-key", "k-ledger")
        .header("x-cachet-team", "search")
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
        claude(&proxy, mount, false).await,
        claude(&proxy, mount, true).await,
    ];
    let metrics = metrics_of(&proxy).await;
    assert_eq!(metric(&metrics, "cachet_ledger_dropped_total"), Some(0.0));
    // Nothing is flushed before an hour or shutdown: the records are written on the way out.
    proxy.stop();
    (&mut proxy.task).await.unwrap().unwrap();
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
    let dir = std::env::temp_dir().join(format!("cachet-it-ledger-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite://{}/cachet.db", dir.display());
    records_match_the_calls(&url, "ledger-sqlite").await;
}

#[tokio::test]
async fn postgres_holds_one_record_per_call_flushed_on_shutdown() {
    let url = postgres_url("calls").await;
    records_match_the_calls(&url, "ledger-pg").await;
}
