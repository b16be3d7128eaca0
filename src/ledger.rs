//! The ledger: one record per upstream call (DESIGN.md Definitions), written off the request
//! path to SQLite (default, `data/cachet.db`, WAL) or PostgreSQL (`ledger.url =
//! "postgres://…"`, for a team's replicas).
//!
//! A request hands its record to a bounded queue and goes on: when the queue is full the
//! record is dropped and counted (`cachet_ledger_dropped_total`) rather than slowing requests.
//! One writer task drains the queue in batches, at least every `flush_interval`, and once more
//! on shutdown. Each record is unique by (request id, call): a batch written twice (a retry
//! after an error) stores it once.

mod record;
mod store;
pub mod usage;

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use record::LedgerRecord;
pub use store::Store;

/// Records written in one statement at most.
const BATCH: usize = 500;

pub const DROPPED_TOTAL: &str = "cachet_ledger_dropped_total";

enum Command {
    Record(Box<LedgerRecord>),
    /// Write everything queued so far, then answer.
    Flush(oneshot::Sender<()>),
}

/// The request side of the ledger: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Command>,
    store: Store,
}

impl Ledger {
    /// Starts the writer on the current runtime, for `store`, with a queue of `capacity`
    /// records flushed at least every `every`.
    pub fn start(store: Store, capacity: usize, every: Duration) -> Ledger {
        // Shown from the start, at 0: a missing series reads as "not measured", not "none".
        metrics::counter!(DROPPED_TOTAL).increment(0);
        let (tx, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(write_loop(store.clone(), rx, every));
        Ledger { tx, store }
    }

    /// The store the records go to, for reading them back (`/api/usage`).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Queues `record`; drops and counts it when the queue is full.
    pub fn record(&self, record: LedgerRecord) {
        if self.tx.try_send(Command::Record(Box::new(record))).is_err() {
            metrics::counter!(DROPPED_TOTAL).increment(1);
        }
    }

    /// Writes every record queued before this call (shutdown, tests). Waits at most `limit`.
    pub async fn flush(&self, limit: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        let sent = tokio::time::timeout(limit, self.tx.send(Command::Flush(done))).await;
        if !matches!(sent, Ok(Ok(()))) {
            return false;
        }
        matches!(tokio::time::timeout(limit, wait).await, Ok(Ok(())))
    }
}

async fn write_loop(store: Store, mut rx: mpsc::Receiver<Command>, every: Duration) {
    let mut batch: Vec<LedgerRecord> = Vec::with_capacity(BATCH);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = rx.recv() => match command {
                Some(Command::Record(record)) => {
                    batch.push(*record);
                    if batch.len() >= BATCH {
                        write(&store, &mut batch).await;
                    }
                }
                Some(Command::Flush(done)) => {
                    write(&store, &mut batch).await;
                    let _ = done.send(());
                }
                None => {
                    write(&store, &mut batch).await;
                    return;
                }
            },
            _ = tick.tick() => write(&store, &mut batch).await,
        }
    }
}

/// Writes `batch` and empties it. A failed write is retried once, then the records are
/// dropped and counted: the writer must not fall ever further behind.
async fn write(store: &Store, batch: &mut Vec<LedgerRecord>) {
    if batch.is_empty() {
        return;
    }
    for chunk in batch.chunks(BATCH) {
        let mut result = store.insert(chunk).await;
        if result.is_err() {
            result = store.insert(chunk).await;
        }
        if let Err(e) = result {
            tracing::error!(error = %e, records = chunk.len(), "ledger write failed; records dropped");
            metrics::counter!(DROPPED_TOTAL).increment(chunk.len() as u64);
        }
    }
    batch.clear();
}

#[cfg(test)]
mod tests;
