//! The process's one batcher: chips from every request in flight share batches.
//!
//! Each request joins with a [`Ticket`] and pushes its chips as they are made. A batch goes to
//! inference (on `spawn_blocking`) as soon as it is full, or at once when a session is idle or
//! no request has more chips coming, so downloads and inference overlap with no phase barrier,
//! across requests as within one, and under load batches fill up rather than go half empty. At
//! most one batch per session plus one ready batch are handed over, which bounds tensor memory
//! while keeping every session busy.
//!
//! **Fairness.** A batch is filled round-robin over the requests with chips waiting, one chip
//! each in turn, starting after the request that got the last place of the previous batch;
//! each request's chips go in the order they were made. So a request never waits behind more
//! than the batches already handed over: when it has chips waiting, the next batch gives it at
//! least ⌊batch size / requests waiting⌋ places (or one, in turn, when more requests wait than
//! a batch holds), however many chips other requests queued before it. A small API call
//! arriving behind a 1,000-building request is answered after a batch or two, not after the big
//! one.
//!
//! **Isolation.** Every result goes back on its own request's channel, by chip index, so a
//! prediction cannot land in another request. A batch that fails or panics while holding the
//! chips of several requests is run again once per request, so one request's chip that breaks
//! the model fails that request's chips only; a batch of one request fails its own chips, as
//! it always did. A request that leaves (its deadline, or its task dropped) withdraws the chips
//! it still has waiting; batches already running finish for the others.

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use image::RgbImage;
use tokio::sync::mpsc;

use super::ChipResult;
use crate::error::{BuildingError, ErrorCode};
use crate::model::Model;

/// Runs one batch of chips through the model.
pub trait Infer: Send + Sync + 'static {
    /// One row per chip, in order (or why not), and the time spent in the model. May panic:
    /// the batcher turns a panic into an error for the batch's chips.
    fn infer(&self, chips: &[&RgbImage]) -> BatchOutcome;
}

/// What an inference run gives back: one row per chip (or why not), and the time in the model.
pub type BatchOutcome = (Result<Vec<Vec<f32>>, String>, Duration);

/// One chip's result, and the batch it ran in.
#[derive(Debug)]
pub struct Settled {
    /// The chip's index in its request.
    pub index: usize,
    pub result: ChipResult,
    pub batch: Arc<BatchInfo>,
}

/// A finished batch, as every request with chips in it sees it.
#[derive(Debug)]
pub struct BatchInfo {
    /// Unique in the process.
    pub id: u64,
    /// Time in the model, re-runs included.
    pub ran: Duration,
    /// The tickets whose chips the batch held.
    pub requests: Vec<u64>,
}

/// The one batcher of the process; cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    shared: Arc<Shared>,
}

struct Shared {
    infer: Arc<dyn Infer>,
    batch_size: usize,
    /// Batches that can run at once (the model's sessions).
    sessions: usize,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    /// Requests with a ticket, by ticket (arrival order).
    waiting: BTreeMap<u64, Waiting>,
    /// Chips waiting, over all requests.
    pending: usize,
    /// The request that got the last place of the last batch; the next batch starts after it.
    last_served: u64,
    next_ticket: u64,
    next_batch: u64,
    in_flight: usize,
}

struct Waiting {
    chips: VecDeque<(usize, RgbImage)>,
    /// No more chips will come from this request.
    complete: bool,
    out: mpsc::UnboundedSender<Settled>,
    /// The request's id, for the log lines of the batches it is in.
    label: Option<Arc<str>>,
}

/// A chip on its way through a batch: (ticket, chip index, chip).
type Place = (u64, usize, RgbImage);

impl Batcher {
    /// `batch_size` is the model's fixed batch when it has one, else `BATCH_SIZE`; `sessions`
    /// batches run at once.
    pub fn new(infer: Arc<dyn Infer>, batch_size: usize, sessions: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                infer,
                batch_size: batch_size.max(1),
                sessions: sessions.max(1),
                queue: Mutex::new(Queue {
                    next_ticket: 1,
                    ..Queue::default()
                }),
            }),
        }
    }

    /// A new request's place in the queue, and where its chips' results arrive. `label` (the
    /// request id) names the request in the log lines of the batches its chips are in.
    pub fn join(&self, label: Option<Arc<str>>) -> (Ticket, mpsc::UnboundedReceiver<Settled>) {
        let (out, results) = mpsc::unbounded_channel();
        let mut queue = self.shared.lock();
        let id = queue.next_ticket;
        queue.next_ticket += 1;
        queue.waiting.insert(
            id,
            Waiting {
                chips: VecDeque::new(),
                complete: false,
                out,
                label,
            },
        );
        drop(queue);
        let ticket = Ticket {
            shared: Arc::clone(&self.shared),
            id,
        };
        (ticket, results)
    }
}

/// One request's membership of the batcher. Dropping it withdraws the chips still waiting.
pub struct Ticket {
    shared: Arc<Shared>,
    id: u64,
}

impl Ticket {
    /// This request's ticket number (as in [`BatchInfo::requests`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues a chip; it may go to a batch at once.
    pub fn push(&self, index: usize, chip: RgbImage) {
        self.update(|queue, id| {
            if let Some(w) = queue.waiting.get_mut(&id) {
                w.chips.push_back((index, chip));
                queue.pending += 1;
            }
        });
    }

    /// Says no more chips will come, so the last ones need not wait for a full batch.
    pub fn finish(&self) {
        self.update(|queue, id| {
            if let Some(w) = queue.waiting.get_mut(&id) {
                w.complete = true;
            }
        });
    }

    /// At the deadline: takes this request's waiting chips out of the queue and returns their
    /// indices. Chips already in a batch still arrive.
    pub fn withdraw(&self) -> Vec<usize> {
        let mut queue = self.shared.lock();
        let Some(w) = queue.waiting.get_mut(&self.id) else {
            return Vec::new();
        };
        w.complete = true;
        let chips: Vec<usize> = w.chips.drain(..).map(|(i, _)| i).collect();
        queue.pending -= chips.len();
        chips
    }

    fn update(&self, change: impl FnOnce(&mut Queue, u64)) {
        let mut queue = self.shared.lock();
        change(&mut queue, self.id);
        dispatch(&self.shared, &mut queue);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        if let Some(w) = queue.waiting.remove(&self.id) {
            queue.pending -= w.chips.len();
        }
        dispatch(&self.shared, &mut queue);
    }
}

impl Shared {
    /// The queue. Nothing panics while holding it (inference runs outside), but should a panic
    /// ever poison it, the queue is still consistent between operations, so it is used as it
    /// is rather than failing every later request.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Queue {
    /// Whether a batch should go now: when a session is idle, whatever waits goes; otherwise
    /// only a full batch, or the last chips when no request has more coming, take the one
    /// ready place behind the running batches (prepared while they run). A lone request
    /// batches exactly as before: its first chip at once, full batches, then its last chips.
    fn should_send(&self, batch_size: usize, sessions: usize) -> bool {
        if self.pending == 0 || self.in_flight > sessions {
            return false;
        }
        self.in_flight < sessions
            || self.pending >= batch_size
            || self.waiting.values().all(|w| w.complete)
    }

    /// Up to `size` chips, round-robin over the requests with chips waiting (see the module
    /// doc).
    fn take(&mut self, size: usize) -> Vec<Place> {
        let after = self.last_served;
        let order: Vec<u64> = self
            .waiting
            .range(after + 1..)
            .chain(self.waiting.range(..=after))
            .filter(|(_, w)| !w.chips.is_empty())
            .map(|(id, _)| *id)
            .collect();
        let mut batch = Vec::with_capacity(size.min(self.pending));
        while batch.len() < size {
            let before = batch.len();
            for id in &order {
                if batch.len() == size {
                    break;
                }
                let w = self.waiting.get_mut(id).expect("listed above");
                if let Some((index, chip)) = w.chips.pop_front() {
                    batch.push((*id, index, chip));
                    self.last_served = *id;
                }
            }
            if batch.len() == before {
                break;
            }
        }
        self.pending -= batch.len();
        batch
    }
}

/// Hands batches over while there is room and a reason to (see [`Queue::should_send`]).
fn dispatch(shared: &Arc<Shared>, queue: &mut Queue) {
    // Outside a runtime (a ticket dropped during shutdown) nothing can run; chips stay queued.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    while queue.should_send(shared.batch_size, shared.sessions) {
        let batch = queue.take(shared.batch_size);
        let mut requests: Vec<u64> = batch.iter().map(|(t, _, _)| *t).collect();
        requests.sort_unstable();
        requests.dedup();
        let outs: Vec<(u64, mpsc::UnboundedSender<Settled>)> = requests
            .iter()
            .filter_map(|t| Some((*t, queue.waiting.get(t)?.out.clone())))
            .collect();
        let labels: Vec<&str> = requests
            .iter()
            .filter_map(|t| queue.waiting.get(t)?.label.as_deref())
            .collect();
        // A panic's log line (see `logging`) names the requests it hit.
        let span = tracing::error_span!("batch", requestIds = %labels.join(","));
        let id = queue.next_batch;
        queue.next_batch += 1;
        queue.in_flight += 1;
        let shared = Arc::clone(shared);
        runtime.spawn(async move {
            let infer = Arc::clone(&shared.infer);
            let places: Vec<(u64, usize)> = batch.iter().map(|(t, i, _)| (*t, *i)).collect();
            let ran =
                tokio::task::spawn_blocking(move || span.in_scope(|| run_batch(&*infer, &batch)))
                    .await;
            {
                let mut queue = shared.lock();
                queue.in_flight -= 1;
                dispatch(&shared, &mut queue);
            }
            let (results, ran) = ran.unwrap_or_else(|e| {
                let error = format!("inference worker failed: {e}");
                (vec![Err(error); places.len()], Duration::ZERO)
            });
            let info = Arc::new(BatchInfo { id, ran, requests });
            for ((ticket, index), result) in places.into_iter().zip(results) {
                let Some((_, out)) = outs.iter().find(|(t, _)| *t == ticket) else {
                    continue;
                };
                let result = result
                    .map_err(|message| BuildingError::new(ErrorCode::InferenceFailed, message));
                // A request that left (its deadline passed) no longer listens: fine.
                let _ = out.send(Settled {
                    index,
                    result,
                    batch: Arc::clone(&info),
                });
            }
        });
    }
}

/// Runs a batch; when it fails while holding several requests' chips, runs each request's
/// chips again on their own, so the failure stays with the request whose chips cause it.
fn run_batch(infer: &dyn Infer, batch: &[Place]) -> (Vec<Result<Vec<f32>, String>>, Duration) {
    let chips: Vec<&RgbImage> = batch.iter().map(|(_, _, c)| c).collect();
    let (outcome, mut ran) = attempt(infer, &chips);
    let message = match outcome {
        Ok(rows) => return (rows.into_iter().map(Ok).collect(), ran),
        Err(message) => message,
    };
    let mut requests: Vec<u64> = Vec::new();
    for (t, _, _) in batch {
        if !requests.contains(t) {
            requests.push(*t);
        }
    }
    if requests.len() < 2 {
        return (vec![Err(message); batch.len()], ran);
    }
    let mut results: Vec<Result<Vec<f32>, String>> = vec![Err(message); batch.len()];
    for request in requests {
        let at: Vec<usize> = (0..batch.len())
            .filter(|&k| batch[k].0 == request)
            .collect();
        let own: Vec<&RgbImage> = at.iter().map(|&k| &batch[k].2).collect();
        let (outcome, took) = attempt(infer, &own);
        ran += took;
        match outcome {
            Ok(rows) => {
                for (k, row) in at.into_iter().zip(rows) {
                    results[k] = Ok(row);
                }
            }
            Err(message) => {
                for k in at {
                    results[k] = Err(message.clone());
                }
            }
        }
    }
    (results, ran)
}

/// One inference run, its panic caught, its row count checked.
fn attempt(infer: &dyn Infer, chips: &[&RgbImage]) -> (Result<Vec<Vec<f32>>, String>, Duration) {
    match std::panic::catch_unwind(AssertUnwindSafe(|| infer.infer(chips))) {
        Ok((Ok(rows), ran)) if rows.len() == chips.len() => (Ok(rows), ran),
        Ok((Ok(rows), ran)) => (
            Err(format!(
                "the model answered {} rows for a batch of {}",
                rows.len(),
                chips.len()
            )),
            ran,
        ),
        Ok((Err(message), ran)) => (Err(message), ran),
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("no message");
            (
                Err(format!(
                    "inference worker failed: it panicked with message {text:?}"
                )),
                Duration::ZERO,
            )
        }
    }
}

/// The model behind the batcher: the model writes the chips into its input tensor (its layout,
/// type and normalisation; zero padding up to a fixed batch) and answers probabilities per chip.
pub struct OnnxBatches {
    pub model: Arc<Model>,
    /// `FAULT_PANIC_ON_RGB` (see `config`): panic on a batch holding a chip of this colour.
    pub fault_panic_rgb: Option<[u8; 3]>,
}

impl Infer for OnnxBatches {
    fn infer(&self, chips: &[&RgbImage]) -> BatchOutcome {
        if let Some(rgb) = self.fault_panic_rgb
            && chips.iter().any(|c| c.pixels().all(|p| p.0 == rgb))
        {
            panic!("FAULT_PANIC_ON_RGB drill: a chip of colour {rgb:?} is in this batch");
        }
        match self.model.predict(chips) {
            Ok((rows, ran)) => (Ok(rows), ran),
            Err(message) => (Err(message), Duration::ZERO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc as std_mpsc;

    /// A model stand-in: a chip is a 1×1 image whose red is its request's tag and green its
    /// index; the row answered is `[red, green]`. Each run waits for a permit, so a test decides
    /// when batches finish, and records the chips it was given. A chip with blue 1 panics.
    struct Gated {
        permits: Mutex<std_mpsc::Receiver<()>>,
        seen: Mutex<Vec<Vec<(u8, u8)>>>,
    }

    impl Infer for Gated {
        fn infer(&self, chips: &[&RgbImage]) -> BatchOutcome {
            let tags: Vec<(u8, u8)> = chips
                .iter()
                .map(|c| (c.get_pixel(0, 0)[0], c.get_pixel(0, 0)[1]))
                .collect();
            self.seen.lock().unwrap().push(tags.clone());
            self.permits.lock().unwrap().recv().expect("a permit");
            if chips.iter().any(|c| c.get_pixel(0, 0)[2] == 1) {
                panic!("a poisoned chip");
            }
            let rows = tags
                .iter()
                .map(|(r, g)| vec![f32::from(*r), f32::from(*g)])
                .collect();
            (Ok(rows), Duration::from_millis(1))
        }
    }

    fn chip(tag: u8, index: usize, poisoned: bool) -> RgbImage {
        RgbImage::from_pixel(1, 1, image::Rgb([tag, index as u8, u8::from(poisoned)]))
    }

    struct Rig {
        batcher: Batcher,
        model: Arc<Gated>,
        permits: std_mpsc::Sender<()>,
    }

    fn rig(batch_size: usize, sessions: usize) -> Rig {
        let (permits, rx) = std_mpsc::channel();
        let model = Arc::new(Gated {
            permits: Mutex::new(rx),
            seen: Mutex::default(),
        });
        let infer: Arc<dyn Infer> = model.clone();
        Rig {
            batcher: Batcher::new(infer, batch_size, sessions),
            model,
            permits,
        }
    }

    impl Rig {
        /// Lets one run finish.
        fn release(&self) {
            self.permits.send(()).unwrap();
        }
        fn batches(&self) -> Vec<Vec<(u8, u8)>> {
            self.model.seen.lock().unwrap().clone()
        }
        /// Waits until `n` runs have started (they record their chips first).
        async fn started(&self, n: usize) {
            while self.batches().len() < n {
                tokio::task::yield_now().await;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Settled>) -> Settled {
        rx.recv().await.expect("the batcher keeps the channel open")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_request_batches_as_before_first_chip_at_once_then_full_then_the_rest() {
        let rig = rig(4, 1);
        let (ticket, mut rx) = rig.batcher.join(None);
        ticket.push(0, chip(1, 0, false)); // the model is idle: goes alone
        rig.started(1).await;
        for i in 1..=6 {
            ticket.push(i, chip(1, i, false)); // 1..=4 fill a batch; 5, 6 wait
        }
        rig.started(2).await;
        rig.release();
        rig.release();
        ticket.finish(); // nothing more: 5, 6 go without a full batch
        rig.started(3).await;
        rig.release();
        let mut rows = Vec::new();
        for _ in 0..7 {
            let s = next(&mut rx).await;
            assert_eq!(s.batch.requests, [ticket.id()]);
            rows.push((s.index, s.result.unwrap()));
        }
        rows.sort_by_key(|(i, _)| *i);
        for (i, row) in rows {
            assert_eq!(row, vec![1.0, i as f32], "chip {i} got its own row");
        }
        assert_eq!(
            rig.batches(),
            [
                vec![(1, 0)],
                vec![(1, 1), (1, 2), (1, 3), (1, 4)],
                vec![(1, 5), (1, 6)]
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_later_request_gets_places_in_the_next_batch_round_robin() {
        let rig = rig(4, 1);
        let (big, mut big_rx) = rig.batcher.join(None);
        big.push(0, chip(1, 0, false));
        rig.started(1).await;
        for i in 1..10 {
            big.push(i, chip(1, i, false)); // a full batch goes ready; 5 chips wait
        }
        rig.started(2).await;
        let (small, mut small_rx) = rig.batcher.join(None);
        for i in 0..3 {
            small.push(i, chip(2, i, false));
        }
        small.finish();
        for _ in 0..4 {
            rig.release();
        }
        for _ in 0..3 {
            let s = next(&mut small_rx).await;
            assert_eq!(s.result.unwrap(), vec![2.0, s.index as f32]);
            assert!(s.batch.requests.contains(&big.id()));
        }
        // The small request's chips take every other place of the batches formed after it
        // arrived, ahead of the big one's five earlier chips. (Two batches may start in either
        // order on the blocking threads, so they are compared as a set.)
        let mut later = rig.batches()[2..].to_vec();
        later.sort();
        assert_eq!(
            later,
            [
                vec![(2, 0), (1, 5), (2, 1), (1, 6)],
                vec![(2, 2), (1, 7), (1, 8), (1, 9)]
            ]
        );
        for _ in 0..10 {
            let s = next(&mut big_rx).await;
            assert_eq!(s.result.unwrap(), vec![1.0, s.index as f32]);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_load_batches_fill_and_every_idle_session_takes_what_waits() {
        // One session: a request that has finished waits for the idle model rather than send a
        // small batch ahead while another request is still making chips.
        let one = rig(8, 1);
        let (a, mut a_rx) = one.batcher.join(None);
        a.push(0, chip(1, 0, false));
        one.started(1).await;
        let (b, _b_rx) = one.batcher.join(None);
        a.push(1, chip(1, 1, false));
        a.push(2, chip(1, 2, false));
        a.finish();
        b.push(0, chip(2, 0, false));
        assert_eq!(
            one.batches().len(),
            1,
            "nothing sent while the session is busy"
        );
        one.release();
        one.started(2).await;
        assert_eq!(one.batches()[1], [(2, 0), (1, 1), (1, 2)]);
        one.release();
        for _ in 0..3 {
            assert!(next(&mut a_rx).await.result.is_ok());
        }

        // Two sessions: two batches run side by side, each taking what waited.
        let two = rig(8, 2);
        let (c, mut c_rx) = two.batcher.join(None);
        c.push(0, chip(3, 0, false));
        c.push(1, chip(3, 1, false));
        two.started(2).await;
        let mut both = two.batches();
        both.sort(); // the two start in either order on the blocking threads
        assert_eq!(both, [vec![(3, 0)], vec![(3, 1)]]);
        two.release();
        two.release();
        for _ in 0..2 {
            assert!(next(&mut c_rx).await.result.is_ok());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_in_a_shared_batch_fails_only_the_request_whose_chip_caused_it() {
        let rig = rig(8, 1);
        let (a, mut a_rx) = rig.batcher.join(None);
        a.push(0, chip(1, 0, false));
        rig.started(1).await;
        let (b, mut b_rx) = rig.batcher.join(None);
        a.push(1, chip(1, 1, true)); // poisoned
        a.push(2, chip(1, 2, false));
        b.push(0, chip(2, 0, false));
        b.push(1, chip(2, 1, false));
        a.finish();
        b.finish();
        // The first batch, the shared one, and its two re-runs (one per request).
        for _ in 0..4 {
            rig.release();
        }
        let mut b_rows = Vec::new();
        for _ in 0..2 {
            let s = next(&mut b_rx).await;
            assert!(s.batch.requests.contains(&a.id()), "shared with a");
            b_rows.push(s.result.expect("b is not hurt by a's panic"));
        }
        b_rows.sort_by(|x, y| x[1].total_cmp(&y[1]));
        assert_eq!(b_rows, [vec![2.0, 0.0], vec![2.0, 1.0]]);
        let mut a_codes = Vec::new();
        for _ in 0..3 {
            let s = next(&mut a_rx).await;
            a_codes.push((s.index, s.result.map_err(|e| (e.code, e.message))));
        }
        a_codes.sort_by_key(|(i, _)| *i);
        assert_eq!(a_codes[0].1, Ok(vec![1.0, 0.0]), "a's earlier batch");
        for (_, result) in &a_codes[1..] {
            let (code, message) = result.as_ref().unwrap_err();
            assert_eq!(*code, ErrorCode::InferenceFailed);
            assert!(message.contains("a poisoned chip"), "{message}");
        }
        assert_eq!(
            rig.batches().len(),
            4,
            "one shared run, then one per request"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn withdrawing_at_the_deadline_keeps_running_chips_and_spares_the_others() {
        let rig = rig(2, 1);
        let (a, mut a_rx) = rig.batcher.join(None);
        let (b, mut b_rx) = rig.batcher.join(None);
        a.push(0, chip(1, 0, false)); // runs
        rig.started(1).await;
        a.push(1, chip(1, 1, false));
        b.push(0, chip(2, 0, false)); // these two fill the ready batch, b's first (its turn)
        a.push(2, chip(1, 2, false));
        a.push(3, chip(1, 3, false)); // waiting
        b.push(1, chip(2, 1, false)); // waiting
        rig.started(2).await;
        assert_eq!(a.withdraw(), [2, 3], "a's waiting chips leave the queue");
        b.finish();
        for _ in 0..3 {
            rig.release();
        }
        let mut a_got: Vec<usize> = Vec::new();
        for _ in 0..2 {
            let s = next(&mut a_rx).await;
            assert!(s.result.is_ok());
            a_got.push(s.index);
        }
        a_got.sort_unstable();
        assert_eq!(a_got, [0, 1], "the chips already handed over still arrive");
        for _ in 0..2 {
            assert!(next(&mut b_rx).await.result.is_ok());
        }
        assert_eq!(
            rig.batches(),
            [vec![(1, 0)], vec![(2, 0), (1, 1)], vec![(2, 1)]]
        );
        drop(a);
        assert!(a_rx.recv().await.is_none(), "nothing more for a");
    }

    #[test]
    fn a_failed_or_short_batch_of_one_request_fails_all_its_chips() {
        struct Failing;
        impl Infer for Failing {
            fn infer(&self, chips: &[&RgbImage]) -> BatchOutcome {
                if chips.len() == 1 {
                    return (Err("Reshape failed".into()), Duration::ZERO);
                }
                (Ok(vec![vec![1.0]]), Duration::ZERO)
            }
        }
        let one = |t| (t, 0, RgbImage::new(1, 1));
        let (results, _) = run_batch(&Failing, &[one(1)]);
        assert_eq!(results, [Err("Reshape failed".to_string())]);
        let (results, _) = run_batch(&Failing, &[one(1), one(1)]);
        assert_eq!(results.len(), 2);
        for r in results {
            assert!(r.unwrap_err().contains("1 rows for a batch of 2"));
        }
    }
}
