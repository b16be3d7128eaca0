//! Single-flight for cold prefixes: of the concurrent requests that would each write the same
//! new cacheable prefix, the first (the leader) goes on; the others wait until its response
//! has begun — by then the provider holds the prefix and they read it — or until
//! `coalesce.max_wait` has passed, whichever comes first. A wait never fails a request: when
//! it ends, the request goes on as it would have.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::prefix::PrefixKey;
use crate::tenant::Tenant;

type Key = (Tenant, PrefixKey);

/// The writes in flight.
#[derive(Default, Clone)]
pub struct Flights {
    inflight: Arc<Mutex<HashMap<Key, watch::Receiver<()>>>>,
}

/// A request's place in a flight.
pub enum Seat {
    /// The first writer: the flight lasts as long as this is held.
    Leader(Lead),
    /// Another writer came first: wait for it.
    Follower(watch::Receiver<()>),
}

/// Held by the leader until its response has begun (or it failed): dropping it lets the
/// followers go.
pub struct Lead {
    flights: Flights,
    key: Key,
    _done: watch::Sender<()>,
}

impl Flights {
    /// Joins the flight writing `key` for `tenant`, as its leader if there is none.
    pub fn board(&self, tenant: &Tenant, key: &PrefixKey) -> Seat {
        let key = (*tenant, *key);
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = inflight.get(&key) {
            return Seat::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        inflight.insert(key, rx);
        Seat::Leader(Lead {
            flights: self.clone(),
            key,
            _done: tx,
        })
    }

    /// Flights under way (for tests).
    pub fn len(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.flights
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
        // `_done` drops after this: the followers wake once the flight is gone, so one that
        // boards again becomes a leader rather than following a finished flight.
    }
}

/// Waits for the leader, at most `max_wait`. `true` when the leader's response began (or it
/// gave up) in time.
pub async fn follow(mut rx: watch::Receiver<()>, max_wait: Duration) -> bool {
    // The sender never sends: `changed` returns (an error) when the leader drops it.
    tokio::time::timeout(max_wait, rx.changed()).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::Credential;
    use crate::tenant::TenantSecret;

    fn tenant(name: &str) -> Tenant {
        Tenant::of(
            &TenantSecret::from_bytes([3; 32]),
            name,
            &Credential::default(),
        )
    }

    #[tokio::test]
    async fn followers_wait_for_the_leader_and_no_longer() {
        let flights = Flights::default();
        let key = PrefixKey([7; 32]);
        let a = tenant("a");
        let Seat::Leader(lead) = flights.board(&a, &key) else {
            panic!("the first writer leads");
        };
        let Seat::Follower(rx) = flights.board(&a, &key) else {
            panic!("the second follows");
        };
        // Another tenant's identical prefix is its own flight.
        assert!(matches!(flights.board(&tenant("b"), &key), Seat::Leader(_)));
        // A leader that takes too long is not waited for beyond max_wait.
        assert!(!follow(rx.clone(), Duration::from_millis(20)).await);
        let waiting = tokio::spawn(follow(rx, Duration::from_secs(30)));
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(lead);
        assert!(
            waiting.await.unwrap_or(false),
            "released when the leader is done"
        );
        assert!(flights.is_empty());
        assert!(matches!(flights.board(&a, &key), Seat::Leader(_)));
    }
}
