//! Reading the ledger for `/api/*` and the dashboard, off the request path.
//!
//! A reading can scan hundreds of thousands of records and follow them in memory (the prefix
//! table, the advisor): seconds of CPU that must not run on the workers that proxy requests,
//! which would then wait behind it. Readings run instead on a thread of their own at the lowest
//! priority, with a pool of their own, and encode their answers (JSON) there too. The costly ones
//! are kept for a short while: every open dashboard tab asks the same questions every few
//! seconds, and identical questions asked at once are answered by one reading.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OnceCell, mpsc, oneshot};

use super::Store;

/// Readings queued at most; past this a request is told to come back.
const QUEUE: usize = 64;

/// Connections the reader's pool opens at most: readings overlap on its one thread.
const CONNECTIONS: u32 = 2;

/// Answers kept at most (each is one question: what, range and options).
const KEPT: u64 = 256;

type Job = Box<dyn FnOnce(Store) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A question to the ledger, as the cache knows it: `what` names the reading and its options
/// (`usage:day`, `prefixes:20`), over `[from, to)`. Its answer is kept for `fresh_for` (zero:
/// not kept, read anew each time).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reading {
    pub what: String,
    pub from: i64,
    pub to: i64,
    pub fresh_for: Duration,
}

#[derive(Debug)]
pub enum ReadError {
    /// Too many readings are waiting.
    Busy,
    /// The reader has stopped (the process is shutting down).
    Stopped,
    Store(sqlx::Error),
    Encode(serde_json::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Busy => f.write_str("too many readings of the ledger are waiting"),
            ReadError::Stopped => f.write_str("the ledger's reader has stopped"),
            ReadError::Store(e) => write!(f, "reading the ledger failed: {e}"),
            ReadError::Encode(e) => write!(f, "encoding a reading failed: {e}"),
        }
    }
}

/// Each question's answer: filled once by the first asker, shared by everyone who asks while it
/// is kept. A failed reading leaves it empty, so the next asker tries again.
type Answer = Arc<OnceCell<Bytes>>;

struct FreshFor;

impl moka::Expiry<Reading, Answer> for FreshFor {
    fn expire_after_create(&self, key: &Reading, _: &Answer, _: Instant) -> Option<Duration> {
        Some(key.fresh_for)
    }
}

pub struct Reader {
    jobs: mpsc::Sender<Job>,
    kept: moka::sync::Cache<Reading, Answer>,
}

impl Reader {
    /// Starts the reader's thread; it stops once the `Reader` is dropped.
    pub fn start(store: Store) -> Reader {
        let (jobs, mut queue) = mpsc::channel::<Job>(QUEUE);
        super::background("cachet-reader", async move {
            let store = store.own_pool(CONNECTIONS);
            while let Some(job) = queue.recv().await {
                // Spawned on this thread's runtime: readings wait on the store side by side.
                tokio::spawn(job(store.clone()));
            }
        });
        Reader {
            jobs,
            kept: moka::sync::Cache::builder()
                .max_capacity(KEPT)
                .expire_after(FreshFor)
                .build(),
        }
    }

    /// The answer to `reading`, as JSON: kept from an earlier reading, or read now by `read` on
    /// the reader's thread.
    pub async fn read<T, F, Fut>(&self, reading: Reading, read: F) -> Result<Bytes, ReadError>
    where
        T: serde::Serialize,
        F: FnOnce(Store) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, sqlx::Error>> + Send + 'static,
    {
        if reading.fresh_for.is_zero() {
            return self.run(read).await;
        }
        let answer = self
            .kept
            .get_with_by_ref(&reading, || Arc::new(OnceCell::new()));
        answer.get_or_try_init(|| self.run(read)).await.cloned()
    }

    async fn run<T, F, Fut>(&self, read: F) -> Result<Bytes, ReadError>
    where
        T: serde::Serialize,
        F: FnOnce(Store) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, sqlx::Error>> + Send + 'static,
    {
        let (done, answer) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            Box::pin(async move {
                let encoded = match read(store).await {
                    Ok(value) => serde_json::to_vec(&value)
                        .map(Bytes::from)
                        .map_err(ReadError::Encode),
                    Err(e) => Err(ReadError::Store(e)),
                };
                let _ = done.send(encoded);
            })
        });
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ReadError::Busy,
            mpsc::error::TrySendError::Closed(_) => ReadError::Stopped,
        })?;
        answer.await.unwrap_or(Err(ReadError::Stopped))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn reading(to: i64, fresh_for: Duration) -> Reading {
        Reading {
            what: "test".into(),
            from: 0,
            to,
            fresh_for,
        }
    }

    /// Asks `reading` of `reader`, counting the readings made: each answers the name of the
    /// thread it ran on, or fails when `fail` is set.
    async fn ask(
        reader: &Reader,
        reading: Reading,
        runs: &Arc<AtomicUsize>,
        fail: bool,
    ) -> Result<Bytes, ReadError> {
        let runs = runs.clone();
        reader
            .read(reading, move |_store| async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                if fail {
                    return Err(sqlx::Error::PoolTimedOut);
                }
                Ok(std::thread::current().name().map(str::to_owned))
            })
            .await
    }

    #[tokio::test]
    async fn readings_run_on_the_readers_thread_and_identical_ones_share_an_answer() {
        let reader = Reader::start(Store::open("sqlite::memory:").await.expect("open"));
        let runs = Arc::new(AtomicUsize::new(0));
        let kept = reading(1, Duration::from_secs(60));
        let (a, b) = tokio::join!(
            ask(&reader, kept.clone(), &runs, false),
            ask(&reader, kept.clone(), &runs, false)
        );
        let (a, b) = (a.expect("a"), b.expect("b"));
        assert_eq!(&a[..], br#""cachet-reader""#, "off the request path");
        assert_eq!(a, b);
        assert_eq!(runs.load(Ordering::SeqCst), 1, "asked at once, read once");
        ask(&reader, kept, &runs, false).await.expect("kept");
        assert_eq!(runs.load(Ordering::SeqCst), 1, "kept");

        ask(&reader, reading(2, Duration::from_secs(60)), &runs, false)
            .await
            .expect("another range");
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "another range is another reading"
        );

        let fresh = reading(3, Duration::ZERO);
        ask(&reader, fresh.clone(), &runs, false).await.expect("1");
        ask(&reader, fresh, &runs, false).await.expect("2");
        assert_eq!(runs.load(Ordering::SeqCst), 4, "not kept: read each time");
    }

    #[tokio::test]
    async fn a_failed_reading_is_not_kept() {
        let reader = Reader::start(Store::open("sqlite::memory:").await.expect("open"));
        let runs = Arc::new(AtomicUsize::new(0));
        let kept = reading(1, Duration::from_secs(60));
        assert!(matches!(
            ask(&reader, kept.clone(), &runs, true).await,
            Err(ReadError::Store(_))
        ));
        ask(&reader, kept, &runs, false).await.expect("read again");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
