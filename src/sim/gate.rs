//! Replica replies held until the virtual clock reaches the end of their simulated service.
//!
//! On a virtual clock a reply is otherwise immediate, so a router in front of the pool would
//! never see a request in flight. With the gate, a replica's reply waits until its driver
//! (`cachet replay`) moves the clock past the request's end (prefill of its uncached tokens
//! plus decode): requests then overlap on the replayed timeline as they would on real servers,
//! and a router's in-flight counts mean what they mean in production. The driver advances the
//! clock from one event to the next (an arrival or the earliest end) and releases replies in
//! order of their ends, ties in order of arrival, so the replay stays deterministic.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use tokio::sync::{Notify, oneshot};

#[derive(Default)]
pub struct Gate {
    state: Mutex<State>,
    arrived: Notify,
}

#[derive(Default)]
struct State {
    /// (end, arrival number) → the parked reply's wake-up.
    parked: BTreeMap<(SystemTime, u64), oneshot::Sender<()>>,
    arrivals: u64,
}

impl Gate {
    fn state(&self) -> MutexGuard<'_, State> {
        // Each update is one insert or remove: a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds the caller until the gate releases `end`.
    pub async fn park(&self, end: SystemTime) {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.state();
            state.arrivals += 1;
            let n = state.arrivals;
            state.parked.insert((end, n), tx);
        }
        self.arrived.notify_waiters();
        // A dropped gate lets the reply go.
        let _ = rx.await;
    }

    /// Replies parked so far, in all.
    pub fn arrivals(&self) -> u64 {
        self.state().arrivals
    }

    /// Waits until `n` replies have been parked in all.
    pub async fn arrived(&self, n: u64) {
        loop {
            // Registered before the check, so a park in between is not missed.
            let notified = self.arrived.notified();
            if self.arrivals() >= n {
                return;
            }
            notified.await;
        }
    }

    /// The earliest end still held.
    pub fn next_end(&self) -> Option<SystemTime> {
        self.state().parked.keys().next().map(|&(end, _)| end)
    }

    /// Releases every reply that ends at or before `now`; returns how many.
    pub fn release(&self, now: SystemTime) -> usize {
        let mut state = self.state();
        let mut released = 0;
        while let Some(entry) = state.parked.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let _ = entry.remove().send(());
            released += 1;
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn replies_wait_for_their_end_and_leave_in_order() {
        let gate = Arc::new(Gate::default());
        let t = SystemTime::UNIX_EPOCH;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (name, end) in [("late", 5), ("early", 2), ("tie", 5)] {
            let (held, tx) = (gate.clone(), tx.clone());
            tokio::spawn(async move {
                held.park(t + Duration::from_secs(end)).await;
                let _ = tx.send(name);
            });
            gate.arrived(gate.arrivals() + 1).await;
        }
        assert_eq!(gate.next_end(), Some(t + Duration::from_secs(2)));
        assert_eq!(gate.release(t + Duration::from_secs(1)), 0);
        assert_eq!(gate.release(t + Duration::from_secs(2)), 1);
        assert_eq!(rx.recv().await, Some("early"));
        assert_eq!(gate.release(t + Duration::from_secs(9)), 2);
        let rest = [rx.recv().await, rx.recv().await];
        assert!(rest.contains(&Some("late")) && rest.contains(&Some("tie")));
        assert_eq!(gate.next_end(), None);
    }
}
