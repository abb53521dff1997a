//! Single flight: concurrent requests for the same key share one piece of work.
//!
//! The first caller for a key starts the work on a task of its own; callers arriving while it
//! runs wait for the same result instead of starting it again. The work belongs to no caller:
//! one that stops waiting (its deadline, its request dropped) leaves it running for the others,
//! and it is aborted only when nobody waits any more. Once it finishes the key is free again,
//! so a later caller starts afresh (or, for images, finds the cache).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::watch;
use tokio::task::AbortHandle;
use tracing::Instrument;

/// The flights in progress, by key.
pub struct Flights<V> {
    running: Running<V>,
}

struct Entry<V> {
    /// Tells this flight from a later one under the same key.
    serial: u64,
    flight: Weak<Flight<V>>,
}

/// The flights by key, shared with each flight's task and `Drop`.
type Running<V> = Arc<Mutex<HashMap<String, Entry<V>>>>;

struct Flight<V> {
    result: watch::Receiver<Option<V>>,
    task: AbortHandle,
    key: String,
    serial: u64,
    running: Weak<Mutex<HashMap<String, Entry<V>>>>,
}

/// Aborts the work when its last waiter is gone, and frees its key (the task, aborted, cannot).
impl<V> Drop for Flight<V> {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(running) = self.running.upgrade() {
            forget(&running, &self.key, self.serial);
        }
    }
}

/// Removes `key`'s entry if it is still flight `serial`'s (a later flight may have taken it).
fn forget<V>(running: &Mutex<HashMap<String, Entry<V>>>, key: &str, serial: u64) {
    let mut running = running.lock().unwrap_or_else(PoisonError::into_inner);
    if running.get(key).is_some_and(|e| e.serial == serial) {
        running.remove(key);
    }
}

/// What [`Flights::join_unless`] found.
pub enum Joined<H, V> {
    /// The caller's own lookup answered; no flight was joined.
    Found(H),
    Flying(Seat<V>),
}

/// A caller's place on a flight.
pub struct Seat<V> {
    flight: Arc<Flight<V>>,
    /// True for the caller whose call started the work.
    pub started: bool,
}

impl<V: Clone + Send + Sync + 'static> Flights<V> {
    pub fn new() -> Self {
        Self {
            running: Arc::default(),
        }
    }

    /// A seat on the flight for `key`, starting it with `work()` when none is running. The
    /// work runs in the caller's tracing span (its log lines name the request that started
    /// it). Must be called inside a tokio runtime.
    pub fn join<F, W>(&self, key: &str, work: W) -> Seat<V>
    where
        W: FnOnce() -> F,
        F: Future<Output = V> + Send + 'static,
    {
        match self.join_unless(key, || None::<()>, work) {
            Joined::Flying(seat) => seat,
            Joined::Found(()) => unreachable!("the lookup finds nothing"),
        }
    }

    /// [`Flights::join`], unless `lookup` (run while no flight can finish, e.g. a cache read)
    /// answers first. A flight's work that stores its result where `lookup` looks before it
    /// ends is then never started twice: a caller either finds the result or joins the flight.
    pub fn join_unless<H, F, W>(
        &self,
        key: &str,
        lookup: impl FnOnce() -> Option<H>,
        work: W,
    ) -> Joined<H, V>
    where
        W: FnOnce() -> F,
        F: Future<Output = V> + Send + 'static,
    {
        let mut running = self.lock();
        if let Some(found) = lookup() {
            return Joined::Found(found);
        }
        if let Some(flight) = running.get(key).and_then(|e| e.flight.upgrade()) {
            return Joined::Flying(Seat {
                flight,
                started: false,
            });
        }
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        let done = Arc::clone(&self.running);
        let owned_key = key.to_string();
        let work = work();
        let task = tokio::spawn(
            async move {
                let value = work.await;
                // Free the key first, then publish: a caller that misses the flight finds
                // whatever the work left behind (the cache) rather than a finished flight.
                forget(&done, &owned_key, serial);
                let _ = tx.send(Some(value));
            }
            .in_current_span(),
        );
        let flight = Arc::new(Flight {
            result: rx,
            task: task.abort_handle(),
            key: key.to_string(),
            serial,
            running: Arc::downgrade(&self.running),
        });
        running.insert(
            key.to_string(),
            Entry {
                serial,
                flight: Arc::downgrade(&flight),
            },
        );
        Joined::Flying(Seat {
            flight,
            started: true,
        })
    }

    /// How many keys have a flight in progress (for tests and checks).
    pub fn in_progress(&self) -> usize {
        self.lock().len()
    }

    /// The map. No code panics while holding it; were it poisoned, it is still whole.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry<V>>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<V: Clone + Send + Sync + 'static> Default for Flights<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Clone> Seat<V> {
    /// The work's result; `None` if it ended without one (it panicked).
    pub async fn wait(&self) -> Option<V> {
        let mut result = self.flight.result.clone();
        let value = result.wait_for(Option::is_some).await.ok()?;
        value.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::sync::Notify;

    /// Work that counts its starts and waits for `go` before answering `value`.
    fn work(
        starts: &Arc<AtomicUsize>,
        go: &Arc<Notify>,
        value: u32,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = u32> + Send>> {
        let (starts, go) = (Arc::clone(starts), Arc::clone(go));
        move || {
            starts.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                go.notified().await;
                value
            })
        }
    }

    #[tokio::test]
    async fn callers_arriving_during_a_flight_share_it_and_the_key_is_free_after() {
        let flights: Flights<u32> = Flights::new();
        let (starts, go) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let first = flights.join("tile", work(&starts, &go, 7));
        let second = flights.join("tile", work(&starts, &go, 8));
        let other = flights.join("other", work(&starts, &go, 9));
        assert!(first.started && !second.started && other.started);
        assert_eq!(starts.load(Ordering::SeqCst), 2, "one start per key");
        go.notify_waiters();
        tokio::task::yield_now().await;
        go.notify_waiters();
        assert_eq!(first.wait().await, Some(7));
        assert_eq!(second.wait().await, Some(7), "the first caller's result");
        assert_eq!(other.wait().await, Some(9));
        let again = flights.join("tile", work(&starts, &go, 10));
        assert!(again.started, "a finished flight frees its key");
    }

    #[tokio::test]
    async fn the_work_outlives_the_caller_that_started_it_but_not_the_last_waiter() {
        let flights: Flights<u32> = Flights::new();
        let (starts, go) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let leader = flights.join("tile", work(&starts, &go, 7));
        let follower = flights.join("tile", work(&starts, &go, 8));
        drop(leader); // its request's deadline passed
        go.notify_one();
        assert_eq!(
            follower.wait().await,
            Some(7),
            "still fetched for the follower"
        );

        let alone = flights.join("slow", work(&starts, &go, 1));
        assert_eq!(flights.in_progress(), 1);
        drop(alone);
        assert_eq!(flights.in_progress(), 0, "aborted: nobody waits");
        let fresh = flights.join("slow", work(&starts, &go, 2));
        assert!(fresh.started);
        go.notify_one();
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(10), fresh.wait()).await,
            Ok(Some(2))
        );
    }

    #[tokio::test]
    async fn work_that_panics_answers_none() {
        let flights: Flights<u32> = Flights::new();
        let seat = flights.join("bad", || async { panic!("decoder blew up") });
        assert_eq!(seat.wait().await, None);
    }
}
