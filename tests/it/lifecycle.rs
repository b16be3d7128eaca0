//! Health, readiness and draining on shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::Notify;

use crate::common::*;

#[tokio::test]
async fn health_and_readiness_answer() {
    let mock = MockUpstream::start(|_| Reply::json(200, b"{}")).await;
    let proxy = TestProxy::in_front_of(&mock, "").await;
    let r = client().get(proxy.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-cachet-request-id"));
    assert_eq!(
        client()
            .get(proxy.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn shutdown_turns_readiness_off_then_lets_in_flight_streams_finish() {
    let release = Arc::new(Notify::new());
    let hold = release.clone();
    let mock = MockUpstream::start(move |_| Reply {
        hold_last: Some(hold.clone()),
        ..Reply::sse(fixture!("anthropic_messages.sse"), 300)
    })
    .await;
    let mut proxy = TestProxy::in_front_of(
        &mock,
        "[shutdown]\ndrain_delay = \"700ms\"\ngrace = \"10s\"\n",
    )
    .await;
    let r = anthropic_stream(&proxy).await;
    let mut stream = r.bytes_stream();
    let mut received = stream.next().await.unwrap().unwrap().to_vec();

    proxy.stop();
    // During the drain delay the listener still accepts, and says it is not ready.
    let started = Instant::now();
    let ready = loop {
        let status = client()
            .get(proxy.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status();
        if status != 200 || started.elapsed() > Duration::from_secs(2) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ready, 503);
    assert_eq!(
        client()
            .get(proxy.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "alive while draining"
    );

    // After the delay new connections are refused, but the stream in flight goes on.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        client().get(proxy.url("/healthz")).send().await.is_err(),
        "listener closed"
    );
    assert!(
        !proxy.task.is_finished(),
        "waiting for the stream in flight"
    );
    release.notify_one();
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        received,
        fixture!("anthropic_messages.sse"),
        "the stream completed intact"
    );
    let result = tokio::time::timeout(Duration::from_secs(5), &mut proxy.task)
        .await
        .expect("server stops once drained");
    assert!(result.unwrap().is_ok());
}

#[tokio::test]
async fn the_grace_period_bounds_how_long_shutdown_waits() {
    let mock = MockUpstream::start(|_| Reply {
        hang: true,
        ..Reply::sse(b"data: {}\n\n", 100)
    })
    .await;
    let mut proxy = TestProxy::in_front_of(&mock, "[shutdown]\ngrace = \"300ms\"\n").await;
    let r = client()
        .post(proxy.url("/openai/v1/chat/completions"))
        .body("{\"model\":\"m\",\"stream\":true}")
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream();
    stream.next().await.unwrap().unwrap();
    let started = Instant::now();
    proxy.stop();
    let result = tokio::time::timeout(Duration::from_secs(5), &mut proxy.task)
        .await
        .expect("stops after the grace period");
    assert!(result.unwrap().is_ok());
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn an_unwritable_data_dir_does_not_stop_the_proxy() {
    // A file where the data directory should be: nothing can be created under it.
    let blocker = std::env::temp_dir().join(format!("cachet-blocker-{}", std::process::id()));
    std::fs::write(&blocker, b"not a directory").unwrap();
    let config = cachet::config::Config::load_from(
        Some(&format!(
            "[registry]\ndata_dir = \"{}/data\"\n",
            blocker.display()
        )),
        Vec::new(),
    )
    .unwrap();
    let state = cachet::state::AppState::new(config);
    std::fs::remove_file(&blocker).unwrap();
    assert!(state.is_ok(), "{:?}", state.err());
    // A malformed secret file is a configuration error, though.
    let dir = std::env::temp_dir().join(format!("cachet-bad-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tenant_secret"), b"not hex").unwrap();
    let config = cachet::config::Config::load_from(
        Some(&format!("[registry]\ndata_dir = \"{}\"\n", dir.display())),
        Vec::new(),
    )
    .unwrap();
    let err = cachet::state::AppState::new(config).err().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(err.starts_with("registry.tenant_secret"), "{err}");
}
