//! `cachet demo`: simulator, proxy and a workload in one process, ending with the address of
//! the live dashboard, which shows the demo's own traffic.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::*;

#[tokio::test]
async fn the_demo_ends_with_the_dashboard_which_shows_its_traffic() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The demo's ledger is the default `data/cachet.db`, under its working directory.
    let dir = std::env::temp_dir().join(format!("cachet-it-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cachet"))
        .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(&dir)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.contains("/dashboard");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    })
    .await
    .unwrap();
    let last = lines.last().cloned().unwrap_or_default();
    let url = last
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no dashboard URL in {lines:?}"));
    assert_eq!(url, format!("http://127.0.0.1:{port}/dashboard"));
    let page = client().get(url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(page.text().await.unwrap().contains("cost dashboard"));
    // Its assets come from the binary, not a CDN.
    for (asset, kind) in [("app.js", "text/javascript"), ("app.css", "text/css")] {
        let r = client().get(format!("{url}/{asset}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
        assert!(
            !r.text().await.unwrap().contains("https://"),
            "{asset} loads nothing remote"
        );
    }
    let mut requests = 0;
    for _ in 0..100 {
        let body = client()
            .get(format!(
                "http://127.0.0.1:{port}/api/usage?group_by=upstream"
            ))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let usage: serde_json::Value = serde_json::from_slice(&body).unwrap();
        requests = usage["totals"]["requests"].as_i64().unwrap_or(0);
        if requests >= 8 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        requests >= 8,
        "the demo's traffic is on its dashboard: {requests}"
    );
}
