//! `TestProxy` (the real server on 127.0.0.1:0) and `MockUpstream` (an axum server on
//! 127.0.0.1:0 that records every request and replays scripted replies).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use cachet::AppState;
use cachet::config::Config;
use http::HeaderMap;
use http_body_util::BodyExt;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/",
            $name
        ))
        .as_slice()
    };
}
pub(crate) use fixture;

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A scripted reply: status, headers, and a body sent as these chunks.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub chunks: Vec<Bytes>,
    /// Sent with `content-length` in one piece instead of chunked.
    pub sized: bool,
    pub head_delay: Duration,
    /// The stream waits on this before sending its last chunk (tests release it).
    pub hold_last: Option<Arc<Notify>>,
    /// Never end the stream after the chunks (until the client goes away).
    pub hang: bool,
}

impl Reply {
    pub fn json(status: u16, body: &[u8]) -> Self {
        Self {
            status,
            headers: vec![
                ("content-type", "application/json".into()),
                ("x-request-id", "req_upstream_1".into()),
            ],
            chunks: vec![Bytes::copy_from_slice(body)],
            sized: true,
            head_delay: Duration::ZERO,
            hold_last: None,
            hang: false,
        }
    }

    /// An SSE body cut into chunks of `chunk` bytes.
    pub fn sse(body: &[u8], chunk: usize) -> Self {
        Self {
            status: 200,
            headers: vec![
                ("content-type", "text/event-stream".into()),
                ("cache-control", "no-cache".into()),
            ],
            chunks: body
                .chunks(chunk.max(1))
                .map(Bytes::copy_from_slice)
                .collect(),
            sized: false,
            head_delay: Duration::ZERO,
            hold_last: None,
            hang: false,
        }
    }
}

type Responder = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

pub struct MockUpstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// Reply bodies dropped before their end (the proxy hung up).
    pub cancelled: Arc<AtomicUsize>,
}

impl MockUpstream {
    pub async fn start(responder: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let cancelled = Arc::new(AtomicUsize::new(0));
        let responder: Responder = Arc::new(responder);
        let (reqs, canc) = (requests.clone(), cancelled.clone());
        let app = Router::new().fallback(move |req: Request| {
            let (reqs, canc, responder) = (reqs.clone(), canc.clone(), responder.clone());
            async move { serve_mock(req, reqs, canc, responder).await }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            requests,
            cancelled,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("the upstream received a request")
    }
}

async fn serve_mock(
    req: Request,
    reqs: Arc<Mutex<Vec<Recorded>>>,
    canc: Arc<AtomicUsize>,
    responder: Responder,
) -> Response {
    let (parts, body) = req.into_parts();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    };
    let reply = responder(&recorded);
    reqs.lock().unwrap().push(recorded);
    tokio::time::sleep(reply.head_delay).await;
    let mut builder = Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        builder = builder.header(*k, v);
    }
    let body = if reply.sized {
        Body::from(reply.chunks.concat())
    } else {
        let guard = CancelGuard {
            counter: canc,
            done: false,
        };
        Body::from_stream(async_stream(reply, guard))
    };
    builder.body(body).unwrap()
}

struct CancelGuard {
    counter: Arc<AtomicUsize>,
    done: bool,
}

impl CancelGuard {
    fn finish(&mut self) {
        self.done = true;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.done {
            self.counter.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn async_stream(
    reply: Reply,
    guard: CancelGuard,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let n = reply.chunks.len();
    futures_util::stream::unfold(
        (reply, guard, 0usize),
        move |(reply, mut guard, i)| async move {
            if i == n {
                if reply.hang {
                    std::future::pending::<()>().await;
                }
                guard.finish();
                return None;
            }
            if i + 1 == n
                && let Some(hold) = &reply.hold_last
            {
                hold.notified().await;
            }
            let chunk = reply.chunks[i].clone();
            Some((Ok(chunk), (reply, guard, i + 1)))
        },
    )
}

/// The proxy, serving on 127.0.0.1:0 until `stop` (or drop).
pub struct TestProxy {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl TestProxy {
    /// `config` is a TOML file's text; upstream URLs are usually the mock's.
    pub async fn spawn(config: &str) -> Self {
        Self::spawn_with_env(config, &[]).await
    }

    /// `spawn` with these variables as the process environment.
    pub async fn spawn_with_env(config: &str, vars: &[(&str, &str)]) -> Self {
        let mut env: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        // Each test proxy keeps its ledger in memory unless the test names a store.
        if !config.contains("[ledger]") {
            env.push((
                "CACHET_LEDGER__URL".to_owned(),
                "sqlite::memory:".to_owned(),
            ));
        }
        let config = Config::load_from(Some(config), env).unwrap();
        let state = AppState::new(config).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(cachet::server::serve(
            state.clone(),
            listener,
            None,
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            addr,
            state,
            stop: Some(tx),
            task,
        }
    }

    /// A proxy whose openai, anthropic, gemini and deepseek upstreams all point at `mock`,
    /// with extra TOML appended.
    pub async fn in_front_of(mock: &MockUpstream, extra: &str) -> Self {
        let url = mock.url();
        Self::spawn(&format!(
            r#"
{extra}
[[upstreams]]
name = "openai"
base_url = "{url}/openai"
[[upstreams]]
name = "anthropic"
base_url = "{url}/anthropic"
[[upstreams]]
name = "gemini"
base_url = "{url}/gemini"
[[upstreams]]
name = "deepseek"
base_url = "{url}/deepseek"
"#
        ))
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests recorded so far, over every upstream and model.
    pub fn recorded(&self) -> u64 {
        self.state
            .telemetry()
            .totals()
            .values()
            .map(|t| t.requests)
            .sum()
    }

    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A streamed Anthropic request through the proxy (the mock decides what comes back).
pub async fn anthropic_stream(proxy: &TestProxy) -> reqwest::Response {
    client()
        .post(proxy.url("/anthropic/v1/messages"))
        .body("{\"model\":\"claude-sonnet-4-6\",\"max_tokens\":9,\"stream\":true,\"messages\":[]}")
        .send()
        .await
        .unwrap()
}

/// `cachet replay ARGS --json` in its own process: the report, once it has exited 0.
pub fn replay_json(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cachet"))
        .arg("replay")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The simulator (no replicas, no faults) on 127.0.0.1:0, serving until the test ends.
pub async fn start_simulator() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(cachet::server::nodelay(listener), cachet::sim::router(0)).await
    });
    sim
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Polls `check` until it holds (the proxy records a request when its body ends, which can be
/// a moment after the client has read it).
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The value of the first `/metrics` sample whose line starts with `series`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The proxy's `/metrics` page.
pub async fn metrics_of(proxy: &TestProxy) -> String {
    client()
        .get(proxy.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
