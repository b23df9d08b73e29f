//! A single flight: concurrent requests for the same key share one run of the work, and the work
//! runs on a task of its own, so a caller that gives up (a reset connection, a deadline) cannot
//! cancel it half-way. For the cold Verify path this means 1000 concurrent first requests make
//! one store lookup and one argon2 run, and an abandoned guess still holds its argon2 permit and
//! its failure-budget token until argon2 really ends.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Flights by key; each ends when its work does.
pub(crate) struct SingleFlight<K, V> {
    flights: Arc<Mutex<HashMap<K, watch::Receiver<Option<V>>>>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            flights: Arc::default(),
        }
    }
}

/// A caller's place in a flight.
pub(crate) struct Waiter<V>(watch::Receiver<Option<V>>);

impl<V: Clone> Waiter<V> {
    /// The flight's result; `None` if its work panicked or was aborted before it finished.
    pub async fn wait(mut self) -> Option<V> {
        match self.0.wait_for(Option::is_some).await {
            Ok(value) => value.clone(),
            Err(_) => None,
        }
    }
}

/// Removes a flight from the map when its task ends, however it ends: a panicking flight must not
/// leave every later caller waiting on a flight that will never answer.
struct Landing<K: Hash + Eq, V> {
    key: Option<K>,
    flights: Arc<Mutex<HashMap<K, watch::Receiver<Option<V>>>>>,
}

impl<K: Hash + Eq, V> Drop for Landing<K, V> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.flights
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Joins the flight for `key`, or — if none is in the air and `admit` agrees — starts one
    /// running `work()` on its own task. `admit` runs under the flight map's lock, so it is asked
    /// exactly once per new flight (the failure budget takes its token there), never for a
    /// caller that joins.
    ///
    /// # Errors
    /// What `admit` refused with.
    pub fn join_or_start<E, F>(
        &self,
        key: K,
        admit: impl FnOnce() -> Result<(), E>,
        work: impl FnOnce() -> F,
    ) -> Result<Waiter<V>, E>
    where
        F: Future<Output = V> + Send + 'static,
    {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = flights.get(&key) {
            return Ok(Waiter(flight.clone()));
        }
        admit()?;
        let (done, flight) = watch::channel(None);
        flights.insert(key.clone(), flight.clone());
        let landing = Landing {
            key: Some(key),
            flights: self.flights.clone(),
        };
        let work = work();
        tokio::spawn(async move {
            let _landing = landing;
            let value = work.await;
            done.send_replace(Some(value));
        });
        Ok(Waiter(flight))
    }

    /// Flights in the air (for tests).
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.flights.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn never_refuse() -> Result<(), ()> {
        Ok(())
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights = SingleFlight::<u32, u32>::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let work = |runs: Arc<AtomicUsize>, released| async move {
            runs.fetch_add(1, Ordering::SeqCst);
            let _ = released.await;
            7
        };
        let first = flights
            .join_or_start(1, never_refuse, || work(runs.clone(), released))
            .unwrap();
        let mut joined = Vec::new();
        for _ in 0..100 {
            let admitted = flights.join_or_start(
                1,
                || -> Result<(), ()> { panic!("a joiner is never admitted") },
                || async { unreachable!("a joiner never starts work") },
            );
            joined.push(admitted.unwrap());
        }
        release.send(()).unwrap();
        assert_eq!(first.wait().await, Some(7));
        for waiter in joined {
            assert_eq!(waiter.wait().await, Some(7));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_cancel_the_work() {
        let flights = SingleFlight::<u32, u32>::default();
        let finished = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let done = finished.clone();
        let waiter = flights
            .join_or_start(1, never_refuse, || async move {
                let _ = released.await;
                done.fetch_add(1, Ordering::SeqCst);
                1
            })
            .unwrap();
        // The caller gives up: its wait is dropped mid-flight.
        let abandoned = tokio::spawn(waiter.wait());
        tokio::task::yield_now().await;
        abandoned.abort();
        assert!(abandoned.await.unwrap_err().is_cancelled());
        release.send(()).unwrap();
        for _ in 0..100 {
            if flights.in_flight() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "the work ran to its end"
        );
        assert_eq!(flights.in_flight(), 0, "and the flight landed");
    }

    #[tokio::test]
    async fn a_refused_admission_starts_nothing() {
        let flights = SingleFlight::<u32, u32>::default();
        let refused = flights.join_or_start(1, || Err("spent"), || async { 1 });
        assert!(matches!(refused, Err("spent")));
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_panicking_flight_answers_none_and_the_next_call_starts_afresh() {
        let flights = SingleFlight::<u32, u32>::default();
        let waiter = flights
            .join_or_start(1, never_refuse, || async { panic!("the work failed") })
            .unwrap();
        assert_eq!(waiter.wait().await, None);
        for _ in 0..100 {
            if flights.in_flight() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let again = flights
            .join_or_start(1, never_refuse, || async { 2 })
            .unwrap();
        assert_eq!(
            again.wait().await,
            Some(2),
            "a new flight, not the dead one"
        );
    }
}
