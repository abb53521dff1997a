//! A fixed pool of items lent out one caller at a time: the model's ONNX Runtime sessions.
//!
//! `Session::run` takes `&mut self`, so a session serves one batch at a time. With several
//! sessions, as many batches run at once; a caller takes whichever session is free, or waits
//! for one on its (blocking) thread. A panic while a session is lent still brings it back: the
//! pool never shrinks, so one failed batch cannot starve every later request.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

pub struct Pool<T> {
    free: Mutex<Vec<T>>,
    returned: Condvar,
    size: usize,
}

impl<T> Pool<T> {
    /// A pool lending `items`; it must not be empty (a caller would wait forever).
    pub fn new(items: Vec<T>) -> Self {
        assert!(!items.is_empty(), "a pool needs at least one item");
        Self {
            size: items.len(),
            free: Mutex::new(items),
            returned: Condvar::new(),
        }
    }

    /// How many items the pool lends.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Runs `f` with a free item, waiting (blocking this thread) until one is free.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut free = self.lock();
        let item = loop {
            if let Some(item) = free.pop() {
                break item;
            }
            free = self
                .returned
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        };
        drop(free);
        let mut lent = Lent {
            pool: self,
            item: Some(item),
        };
        f(lent.item.as_mut().expect("lent until dropped"))
    }

    /// The free list. No code panics while holding it, but a poisoned lock would only mean a
    /// panic elsewhere: the list itself is always whole, so it is used as it is.
    fn lock(&self) -> MutexGuard<'_, Vec<T>> {
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An item out on loan; dropping it (normally or while unwinding) returns it to the pool.
struct Lent<'a, T> {
    pool: &'a Pool<T>,
    item: Option<T>,
}

impl<T> Drop for Lent<'_, T> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            self.pool.lock().push(item);
            self.pool.returned.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    #[test]
    fn each_item_serves_one_caller_at_a_time_and_callers_wait_for_a_free_one() {
        let pool = Arc::new(Pool::new(vec![0usize, 0]));
        let busy = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (pool, busy, most) = (pool.clone(), busy.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        pool.with(|uses| {
                            let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            *uses += 1;
                            std::thread::yield_now();
                            busy.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 2, "never more than the pool");
        let total: usize = pool.lock().iter().sum();
        assert_eq!((pool.lock().len(), total), (2, 400), "every item came back");
    }

    #[test]
    fn a_panic_while_an_item_is_lent_returns_it() {
        let pool = Arc::new(Pool::new(vec!["session"]));
        let lent = pool.clone();
        let panicked = std::thread::spawn(move || lent.with(|_| panic!("a batch blew up")));
        assert!(panicked.join().is_err());
        // The one item is back: this would wait forever otherwise.
        let (tx, rx) = mpsc::channel();
        let pool2 = pool.clone();
        std::thread::spawn(move || tx.send(pool2.with(|s| s.len())).unwrap());
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)), Ok(7));
        assert_eq!(pool.size(), 1);
    }
}
