//! `cachet demo`: the simulator and the proxy in one process, a small workload in every
//! dialect through the proxy, and a table of what it cost.

use std::net::SocketAddr;

use anyhow::Context;
use serde_json::{Value, json};

use crate::config::Config;
use crate::state::AppState;
use crate::{server, sim, telemetry};

const DOCUMENT: &str = "cachet keeps long prompts byte-stable so that providers can serve them from their prompt cache. ";

pub async fn run(listen: SocketAddr, once: bool) -> anyhow::Result<()> {
    let sim_listener = server::bind("127.0.0.1:0".parse()?).await?;
    let sim_addr = sim_listener.local_addr()?;
    let sim_server = axum::serve(server::nodelay(sim_listener), sim::router(2));
    let sim_task = tokio::spawn(async move { sim_server.await });

    let env = [
        ("CACHET_LISTEN", listen.to_string()),
        ("CACHET_LOG__LEVEL", "warn".to_owned()),
        (
            "CACHET_UPSTREAMS__OPENAI__BASE_URL",
            format!("http://{sim_addr}/openai"),
        ),
        (
            "CACHET_UPSTREAMS__ANTHROPIC__BASE_URL",
            format!("http://{sim_addr}/anthropic"),
        ),
        (
            "CACHET_UPSTREAMS__GEMINI__BASE_URL",
            format!("http://{sim_addr}/gemini"),
        ),
        (
            "CACHET_UPSTREAMS__DEEPSEEK__BASE_URL",
            format!("http://{sim_addr}/deepseek"),
        ),
    ];
    let config = Config::load_from(None, env.map(|(k, v)| (k.to_owned(), v)))?;
    telemetry::init_tracing(&config.log);
    let state = AppState::new(config).map_err(anyhow::Error::msg)?;
    let listener = server::bind(listen).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(server::serve(state.clone(), listener, None, async move {
        tokio::select! {
            _ = stop_rx => {}
            () = server::shutdown_signal() => {}
        }
    }));

    let base = format!("http://{listen}");
    let failures = workload(&base).await.context("running the demo workload")?;
    print!("{}", table(&state));
    if failures > 0 {
        anyhow::bail!("{failures} demo requests failed");
    }
    if once {
        let _ = stop_tx.send(());
    } else {
        println!(
            "\ncachet is serving on {base} (simulator upstream at http://{sim_addr}). Point an SDK at it:"
        );
        println!("  OPENAI_BASE_URL={base}/openai/v1 OPENAI_API_KEY=sk-demo");
        println!("  ANTHROPIC_BASE_URL={base}/anthropic ANTHROPIC_API_KEY=sk-demo");
        println!("  GOOGLE_GEMINI_BASE_URL={base}/gemini GOOGLE_API_KEY=demo");
        println!("  metrics: {base}/metrics    Ctrl-C to stop");
        println!("\nThe team's cost dashboard, live: {base}/dashboard");
    }
    proxy.await??;
    sim_task.abort();
    Ok(())
}

/// One JSON and one streamed request per dialect; returns how many did not succeed.
async fn workload(base: &str) -> anyhow::Result<usize> {
    let client = reqwest::Client::new();
    let document = DOCUMENT.repeat(120);
    let question = "What does cachet keep stable?";
    let chat = |stream: bool| {
        json!({"model": "gpt-4.1", "stream": stream,
        "messages": [{"role": "system", "content": "Answer from the document."},
                     {"role": "user", "content": format!("{document}\n\n{question}")}]})
    };
    type Headers = Vec<(&'static str, &'static str)>;
    let calls: Vec<(String, Headers, Value)> = vec![
        (
            format!("{base}/openai/v1/chat/completions"),
            vec![("authorization", "Bearer sk-demo")],
            chat(false),
        ),
        (
            format!("{base}/openai/v1/chat/completions"),
            vec![("authorization", "Bearer sk-demo")],
            chat(true),
        ),
        (
            format!("{base}/openai/v1/responses"),
            vec![("authorization", "Bearer sk-demo")],
            json!({"model": "gpt-4.1", "instructions": "Answer from the document.", "input": format!("{document}\n\n{question}")}),
        ),
        (
            format!("{base}/anthropic/v1/messages"),
            vec![
                ("x-api-key", "sk-demo"),
                ("anthropic-version", "2023-06-01"),
            ],
            json!({"model": "claude-sonnet-4-6", "max_tokens": 256, "system": "Answer from the document.",
                   "messages": [{"role": "user", "content": [{"type": "text", "text": document}, {"type": "text", "text": question}]}]}),
        ),
        (
            format!("{base}/anthropic/v1/messages"),
            vec![
                ("x-api-key", "sk-demo"),
                ("anthropic-version", "2023-06-01"),
            ],
            json!({"model": "claude-sonnet-4-6", "max_tokens": 256, "stream": true, "system": "Answer from the document.",
                   "messages": [{"role": "user", "content": [{"type": "text", "text": document}, {"type": "text", "text": question}]}]}),
        ),
        (
            format!("{base}/gemini/v1beta/models/gemini-2.5-flash:generateContent"),
            vec![("x-goog-api-key", "demo")],
            json!({"systemInstruction": {"parts": [{"text": "Answer from the document."}]},
                   "contents": [{"role": "user", "parts": [{"text": document}, {"text": question}]}]}),
        ),
        (
            format!("{base}/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
            vec![("x-goog-api-key", "demo")],
            json!({"contents": [{"role": "user", "parts": [{"text": document}, {"text": question}]}]}),
        ),
        (
            format!("{base}/deepseek/chat/completions"),
            vec![("authorization", "Bearer sk-demo")],
            json!({"model": "deepseek-chat", "stream": true, "messages": [{"role": "user", "content": format!("{document}\n\n{question}")}]}),
        ),
    ];
    let mut failures = 0;
    for (url, headers, body) in calls {
        let mut request = client
            .post(&url)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body)?);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        let response = request.send().await?;
        let status = response.status();
        // Read streams to the end: that is when the proxy accounts for them.
        let text = response.text().await?;
        if !status.is_success() {
            failures += 1;
            eprintln!("demo request {url} failed: {status} {text}");
        }
    }
    Ok(failures)
}

fn table(state: &AppState) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<10} {:<18} {:>4} {:>9} {:>9} {:>9} {:>7} {:>6} {:>12} {:>12}",
        "upstream",
        "model",
        "reqs",
        "uncached",
        "cache_rd",
        "cache_wr",
        "output",
        "hit%",
        "cost $",
        "no-cache $"
    );
    let usd = |n: u64, unpriced: u64| {
        if unpriced > 0 {
            "n/a".to_owned()
        } else {
            format!("{:.6}", n as f64 / 1e9)
        }
    };
    for ((upstream, model), t) in state.telemetry().totals() {
        let u = t.usage;
        let hit = u
            .hit_rate()
            .map(|h| format!("{:.1}", h * 100.0))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<10} {:<18} {:>4} {:>9} {:>9} {:>9} {:>7} {:>6} {:>12} {:>12}",
            upstream,
            model,
            t.requests,
            u.input_uncached,
            u.cache_read,
            u.cache_write(),
            u.output,
            hit,
            usd(t.cost_nusd, t.unpriced),
            usd(t.cost_uncached_nusd, t.unpriced)
        );
    }
    let _ = writeln!(
        out,
        "(n/a: the price table has no published price for a token kind this model used; see config/prices.toml)"
    );
    out
}
