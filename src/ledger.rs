//! The ledger: one record per upstream call (DESIGN.md Definitions), written off the request
//! path to SQLite (default, `data/cachet.db`, WAL) or PostgreSQL (`ledger.url =
//! "postgres://…"`, for a team's replicas).
//!
//! A request hands its record to a bounded queue and goes on: when the queue is full the
//! record is dropped and counted (`cachet_ledger_dropped_total`) rather than slowing requests.
//! One writer, on a thread of its own at the lowest priority, takes what is queued and writes
//! it in batches: at least every `flush_interval`, as soon as a batch is full, on demand and
//! once more on shutdown. Queueing a record wakes nobody (only a full batch or a flush does):
//! a wake-up per request would put a context switch on every request's path. Each record is
//! unique by (request id, call): a batch written twice (a retry after an error) stores it once.

pub mod insights;
mod reader;
mod record;
mod store;
pub mod usage;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

pub use reader::{ReadError, Reader, Reading};
pub use record::LedgerRecord;
pub use store::Store;

/// Records written in one batch at most; a batch this full is written at once.
const BATCH: usize = 500;

pub const DROPPED_TOTAL: &str = "cachet_ledger_dropped_total";

/// What the request side and the writer share.
struct Queue {
    records: Mutex<Vec<LedgerRecord>>,
    capacity: usize,
    /// Flushes waiting for everything queued before them to be written.
    flushes: Mutex<Vec<oneshot::Sender<()>>>,
    wake: Notify,
    /// Records this ledger dropped (the metric counts every ledger of the process).
    dropped: AtomicU64,
}

impl Queue {
    fn drop_records(&self, n: u64, why: &str) {
        if self.dropped.fetch_add(n, Ordering::Relaxed) == 0 {
            tracing::warn!(
                records = n,
                why,
                "ledger records dropped (warned once per ledger)"
            );
        }
        metrics::counter!(DROPPED_TOTAL).increment(n);
    }
}

/// The request side of the ledger: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Ledger {
    queue: Arc<Queue>,
    store: Store,
    reader: Arc<Reader>,
}

impl Ledger {
    /// Starts the writer, for `store`, with a queue of `capacity` records written at least
    /// every `every`. The writer stops once every `Ledger` handle is gone (after writing what
    /// is left).
    pub fn start(store: Store, capacity: usize, every: Duration) -> Ledger {
        // Shown from the start, at 0: a missing series reads as "not measured", not "none".
        metrics::counter!(DROPPED_TOTAL).increment(0);
        let queue = Arc::new(Queue {
            records: Mutex::new(Vec::new()),
            capacity: capacity.max(1),
            flushes: Mutex::new(Vec::new()),
            wake: Notify::new(),
            dropped: AtomicU64::new(0),
        });
        let (shared, writer) = (queue.clone(), store.clone());
        // The writer has a thread of its own, at the lowest priority: encoding and writing a
        // batch takes milliseconds of CPU that must not hold up requests on a busy machine
        // (measured: scripts/bench-ledger). Under sustained overload the queue then fills and
        // records are dropped and counted, as the ledger's contract says, rather than slowing
        // requests.
        background("cachet-ledger", async move {
            let writer = writer.own_pool(1);
            write_loop(writer, shared, every).await;
        });
        let reader = Arc::new(Reader::start(store.clone()));
        Ledger {
            queue,
            store,
            reader,
        }
    }

    /// The store the records go to, for reading them back (tests, tools).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reads the ledger off the request path, for `/api/*` (see `reader`).
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// Queues `record`; drops and counts it when the queue is full.
    pub fn record(&self, record: LedgerRecord) {
        let queued = {
            let mut records = self
                .queue
                .records
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if records.len() >= self.queue.capacity {
                None
            } else {
                records.push(record);
                Some(records.len())
            }
        };
        match queued {
            None => self.queue.drop_records(1, "the queue is full"),
            Some(BATCH) => self.queue.wake.notify_one(),
            Some(_) => {}
        }
    }

    /// Records this ledger has dropped so far.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped.load(Ordering::Relaxed)
    }

    /// Writes every record queued before this call (shutdown, tests). Waits at most `limit`.
    pub async fn flush(&self, limit: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        self.queue
            .flushes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(done);
        self.queue.wake.notify_one();
        matches!(tokio::time::timeout(limit, wait).await, Ok(Ok(())))
    }
}

/// Runs `work` on a thread of its own at the lowest priority (SCHED_BATCH, nice 19), on a
/// runtime of its own: the ledger's background work must never take the CPU from requests.
/// Threads it starts (sqlx's SQLite workers) inherit both. Not SCHED_IDLE: on this project's
/// 2-vCPU machines a SCHED_IDLE busy loop added about 1 ms to a proxied request's p99, more
/// than a nice-19 one (0.2 to 0.6 ms; scripts/bench-dashboard's control measures the latter).
fn background(name: &str, work: impl std::future::Future<Output = ()> + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let lowered = thread_priority::set_thread_priority_and_policy(
                thread_priority::thread_native_id(),
                thread_priority::ThreadPriority::Min,
                thread_priority::ThreadSchedulePolicy::Normal(
                    thread_priority::NormalThreadSchedulePolicy::Batch,
                ),
            );
            if let Err(e) = lowered {
                tracing::debug!(error = ?e, "a ledger thread keeps its priority");
            }
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(work),
                Err(e) => tracing::error!(error = %e, "a ledger thread cannot start"),
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, thread = name, "a ledger thread cannot start");
    }
}

async fn write_loop(store: Store, queue: Arc<Queue>, every: Duration) {
    // The first write is due one interval from now, not at once.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // While the handles live, wake at least every 100 ms to see whether they are all gone.
    let mut alive = tokio::time::interval(Duration::from_millis(100));
    loop {
        let due = tokio::select! {
            _ = tick.tick() => true,
            () = queue.wake.notified() => true,
            _ = alive.tick() => false,
        };
        let last = Arc::strong_count(&queue) == 1;
        if !(due || last) {
            continue;
        }
        // Flushes first, then the records: whatever was queued before a flush was asked for is
        // in this batch.
        let flushes =
            std::mem::take(&mut *queue.flushes.lock().unwrap_or_else(PoisonError::into_inner));
        let mut batch =
            std::mem::take(&mut *queue.records.lock().unwrap_or_else(PoisonError::into_inner));
        write(&store, &queue, &mut batch).await;
        for done in flushes {
            let _ = done.send(());
        }
        if last {
            return;
        }
    }
}

/// Writes `batch` and empties it. A failed write is retried once, then the records are
/// dropped and counted: the writer must not fall ever further behind.
async fn write(store: &Store, queue: &Queue, batch: &mut Vec<LedgerRecord>) {
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
            queue.drop_records(chunk.len() as u64, "the store refused them twice");
        }
    }
    batch.clear();
}

#[cfg(test)]
mod tests;
