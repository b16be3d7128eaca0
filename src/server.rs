//! Process lifecycle: bind, serve, drain on SIGTERM/SIGINT.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::ledger::{Ledger, Store};
use crate::state::AppState;
use crate::workers::{self, Workers};
use crate::{http, sim, telemetry};

/// `cachet serve`.
pub async fn run_serve(config: Option<PathBuf>, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let config = Config::load(config.as_deref(), listen)?;
    telemetry::init_tracing(&config.log);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let state = AppState::new(config).map_err(anyhow::Error::msg)?;
    let listener = bind(state.config().listen).await?;
    let admin = match state.config().admin.listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    tracing::info!(listen = %state.config().listen, admin = ?state.config().admin.listen, upstreams = state.config().upstreams.len(), "cachet serving");
    serve(state, listener, admin, shutdown_signal()).await?;
    tracing::info!("cachet stopped");
    Ok(())
}

/// `cachet sim`, injecting `faults` until `/__sim/faults` changes them.
pub async fn run_sim(
    listen: SocketAddr,
    replicas: usize,
    settings: sim::Settings,
    faults: sim::Faults,
) -> anyhow::Result<()> {
    telemetry::init_tracing(&crate::config::LogConfig {
        format: crate::config::LogFormat::Text,
        level: "info".into(),
        excerpts: false,
    });
    let listener = bind(listen).await?;
    tracing::info!(%listen, replicas, "cachet sim serving");
    if faults != sim::Faults::default() {
        let spec = serde_json::to_string(&faults).unwrap_or_default();
        tracing::warn!(faults = %spec, "cachet sim injecting faults");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let (workers, _abort) = Workers::start(
        "cachet-sim",
        listener,
        sim::router_with(replicas, settings, faults),
        workers::count(0),
        &stop_rx,
    )?;
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    workers.join().await?;
    Ok(())
}

/// Accepted connections with Nagle's algorithm off. SSE events are small writes spaced out in
/// time: with Nagle on, each waits for the client's delayed ACK (40 ms on Linux).
pub fn nodelay(listener: TcpListener) -> impl axum::serve::Listener<Addr = SocketAddr> {
    listener.tap_io(|tcp| {
        // Failing only costs latency; the connection still works.
        let _ = tcp.set_nodelay(true);
    })
}

pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Serves until `shutdown` resolves, then drains: `/readyz` turns 503 at once, the listeners
/// close after `shutdown.drain_delay`, and in-flight requests and streams get `shutdown.grace`
/// to finish before they are cut. Requests are served on `workers` threads (see `workers`);
/// the caller's runtime keeps the housekeeping.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let _upkeep = UpkeepTask(tokio::spawn(metrics_upkeep(state.clone())));
    open_ledger(&state).await;
    let _storage = UpkeepTask(tokio::spawn(book_cache_storage(state.clone())));
    let result = run(state.clone(), listener, admin, shutdown).await;
    // What the Gemini caches still alive will cost until they expire is due now.
    http::cached_content::book_ended(&state, None);
    if let Some(ledger) = state.telemetry().ledger()
        && !ledger.flush(LEDGER_FLUSH_LIMIT).await
    {
        tracing::error!("the ledger could not write its last records before exit");
    }
    result
}

/// Books the storage of Gemini caches as they expire (on the proxy's clock: the replay's
/// virtual one too).
async fn book_cache_storage(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        http::cached_content::book_ended(&state, Some(state.clock().now()));
    }
}

/// The longest wait for the ledger's last write on shutdown.
const LEDGER_FLUSH_LIMIT: Duration = Duration::from_secs(10);

/// Opens the ledger's store and starts its writer. A store that cannot be opened leaves the
/// proxy serving without a ledger (a read-only sidecar must still proxy), loudly.
async fn open_ledger(state: &AppState) {
    let config = &state.config().ledger;
    if config.url.is_empty() {
        return;
    }
    match Store::open(&config.url).await {
        Ok(store) => state.telemetry().attach_ledger(Ledger::start(
            store,
            config.queue,
            config.flush_interval,
        )),
        Err(e) => tracing::error!(error = %e, "cannot open the ledger; serving without one"),
    }
}

async fn run(
    state: AppState,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let n = workers::count(state.config().workers);
    let (main, abort_main) =
        Workers::start("cachet", listener, http::app(state.clone()), n, &stop_rx)?;
    let admin = match admin {
        Some(l) => Some(Workers::start(
            "cachet-admin",
            l,
            http::admin_app(state.clone()),
            1,
            &stop_rx,
        )?),
        None => None,
    };
    let (admin, abort_admin) = match admin {
        Some((w, a)) => (Some(w), Some(a)),
        None => (None, None),
    };
    let servers = async move {
        let a = main.join().await;
        let b = match admin {
            Some(w) => w.join().await,
            None => Ok(()),
        };
        a.and(b)
    };
    tokio::pin!(servers);
    tokio::pin!(shutdown);
    tokio::select! {
        result = &mut servers => return result,
        () = &mut shutdown => {}
    }
    let shutdown_cfg = state.config().shutdown.clone();
    state.start_draining();
    tracing::info!(drain_delay = ?shutdown_cfg.drain_delay, grace = ?shutdown_cfg.grace, "draining");
    tokio::select! {
        result = &mut servers => return result,
        () = tokio::time::sleep(shutdown_cfg.drain_delay) => {}
    }
    let _ = stop_tx.send(true);
    tokio::select! {
        result = &mut servers => result,
        () = tokio::time::sleep(shutdown_cfg.grace) => {
            tracing::warn!("shutdown grace expired with requests still in flight; closing them");
            abort_main.now();
            if let Some(a) = abort_admin {
                a.now();
            }
            // The cut requests are recorded as their workers wind down: wait for that (briefly)
            // so that the ledger's last flush has them.
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut servers).await;
            Ok(())
        }
    }
}

/// The Prometheus recorder keeps histogram samples until upkeep folds them in; without a
/// scraper calling `/metrics`, memory would grow with every request.
async fn metrics_upkeep(state: AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        state.metrics().run_upkeep();
    }
}

/// Stops the upkeep task when `serve` returns, however it returns.
struct UpkeepTask(tokio::task::JoinHandle<()>);

impl Drop for UpkeepTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
