//! Serving on one single-threaded runtime per core, all accepting from the same socket.
//!
//! Why not tokio's work-stealing runtime: a proxied request is a chain of small I/O steps
//! (read the client, write upstream, read upstream, write the client). Spread over worker
//! threads, each step that lands on another thread costs a futex wake-up and a context
//! switch, which bench-overhead measured as the largest part of cachet's per-request CPU.
//! Here a connection lives and dies on the thread that accepted it, together with the upstream
//! connections it uses (the upstream client keeps one pool per thread, see `upstream`), the
//! way nginx's worker processes do. The kernel spreads new connections over the threads
//! blocked in `accept` on the shared socket.

use std::io;
use std::thread;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::server::nodelay;

/// Serving threads, each with its own runtime: one receiver per thread for how it ended.
pub struct Workers {
    done: Vec<oneshot::Receiver<io::Result<()>>>,
}

/// Ends the workers' runtimes, in-flight requests included, when fired or dropped.
pub struct Abort(Vec<oneshot::Sender<()>>);

/// How many threads to serve on: `configured`, or one per core when 0.
pub fn count(configured: usize) -> usize {
    match configured {
        0 => thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

impl Workers {
    /// Starts `n` threads serving `router` on `listener` until `stop` turns true, then
    /// finishing their in-flight requests (graceful), or until `abort`.
    pub fn start(
        name: &str,
        listener: TcpListener,
        router: Router,
        n: usize,
        stop: &watch::Receiver<bool>,
    ) -> io::Result<(Self, Abort)> {
        let listener = listener.into_std()?;
        let mut workers = Self { done: Vec::new() };
        let mut abort = Abort(Vec::new());
        for i in 0..n.max(1) {
            let socket = listener.try_clone()?;
            let (router, mut stop) = (router.clone(), stop.clone());
            let (done_tx, done_rx) = oneshot::channel();
            let (abort_tx, abort_rx) = oneshot::channel::<()>();
            thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    let result = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .and_then(|rt| {
                            rt.block_on(async move {
                                let listener = TcpListener::from_std(socket)?;
                                let graceful = axum::serve(nodelay(listener), router)
                                    .with_graceful_shutdown(async move {
                                        let _ = stop.wait_for(|s| *s).await;
                                    });
                                tokio::select! {
                                    result = graceful.into_future() => result,
                                    // Sender dropped or fired: the grace period is over.
                                    _ = abort_rx => Ok(()),
                                }
                            })
                        });
                    let _ = done_tx.send(result);
                })?;
            workers.done.push(done_rx);
            abort.0.push(abort_tx);
        }
        Ok((workers, abort))
    }

    /// Waits until every worker has stopped; the first error wins.
    pub async fn join(self) -> io::Result<()> {
        let mut result = Ok(());
        for done in self.done {
            let outcome = done
                .await
                .unwrap_or_else(|_| Err(io::Error::other("worker thread died")));
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    }
}

impl Abort {
    /// Ends every worker now, in-flight requests included.
    pub fn now(self) {
        for abort in self.0 {
            let _ = abort.send(());
        }
    }
}
