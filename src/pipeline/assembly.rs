//! Chip assembly: from the buildings' positions to finished chips, one message per chip.
//!
//! The imagery plans the request (`Imagery::plan`: for a GeoTIFF mosaic this reads the headers
//! of files not yet opened). Every unique image the request needs is then fetched once
//! (neighbouring buildings share tiles): from the warm cache, else from the source under the
//! download semaphore, in fetch units (one URL, or byte ranges of a GeoTIFF holding several
//! internal tiles), and once for every request in flight that needs the same unit (a request
//! finding another's fetch under way waits for it: `imagery::flight`). It is decoded on a blocking thread (at most one decode per vCPU), and the
//! moment a chip has all its images it is composed (stitched, or warped from a GeoTIFF),
//! fitted to the model's input size and sent. Chips therefore arrive in the order their images
//! complete, roughly request order. An image is dropped as soon as no unfinished chip needs it.
//!
//! This is the only path from positions to chips: the pipeline runs it for Lambda, and tools
//! and tests collect its output with [`ChipMaker::cut`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use image::RgbImage;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::{BuildingError, ErrorCode};
use crate::geo::LatLon;
use crate::imagery::flight::Joined;
use crate::imagery::geotiff::read::Counters;
use crate::imagery::plan::{ChipPlan, RequestPlan, Unit};
use crate::imagery::{Image, Imagery, Loaded, chip};

/// How long a shared fetch may run at most: Lambda's longest timeout (see `fetch_and_decode`).
const SHARED_FETCH_BUDGET: Duration = Duration::from_secs(900);

/// A finished chip (at the model's input size) or why it could not be made, by chip index.
pub type ChipMessage = (usize, Result<RgbImage, BuildingError>);

/// The sandbox's imagery and the limits every request's assembly shares.
pub struct ChipMaker {
    pub imagery: Arc<Imagery>,
    /// Bounds requests in flight (`MAX_CONCURRENT_DOWNLOADS`).
    pub download_slots: Arc<Semaphore>,
    /// Bounds concurrent decodes to the vCPUs, so decoding never oversubscribes the CPU.
    pub decode_slots: Arc<Semaphore>,
}

/// One request's assembly in progress. Dropping it aborts the fetches still running.
pub struct Assembly {
    shared: Arc<Shared>,
    /// The planner, which owns the fetch tasks (aborting it aborts them).
    work: JoinSet<()>,
}

/// What an assembly measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AssemblyStats {
    /// When the first image was asked for (cache or source); `None` if no chip needed one.
    pub first_request: Option<Instant>,
    /// Time spent decoding and composing, summed over the blocking threads.
    pub decode: Duration,
    /// Images (URLs, or a GeoTIFF's internal tiles) requested from the source.
    pub images_fetched: usize,
    pub cache_hits: usize,
    /// GeoTIFF sources: ranged reads (headers and merged tiles) and their bytes.
    pub range_requests: usize,
    pub bytes_fetched: u64,
}

/// Counters and flags the assembly and its tasks share.
struct Shared {
    stop: AtomicBool,
    first_request: OnceLock<Instant>,
    decode_nanos: AtomicU64,
    fetched: AtomicUsize,
    cache_hits: AtomicUsize,
    ranges: Arc<Counters>,
}

/// A chip's images: (image index, x, y) as the plan placed them.
type ChipParts = Vec<(usize, i64, i64)>;

/// Per-request shared state while images arrive.
struct Progress {
    /// For each chip, how many of its images are still missing; `None` once it is resolved.
    missing: Vec<Option<usize>>,
    /// For each chip, its parts.
    parts: Vec<ChipParts>,
    /// Decoded images, dropped as soon as no unresolved chip needs them.
    images: Vec<Option<Arc<Image>>>,
    uses_left: Vec<usize>,
}

/// Read-only context shared by one request's tasks.
struct Run {
    imagery: Arc<Imagery>,
    download_slots: Arc<Semaphore>,
    decode_slots: Arc<Semaphore>,
    plan: RequestPlan,
    /// For each image, the chips that use it.
    users: Vec<Vec<usize>>,
    progress: Mutex<Progress>,
    chips_out: mpsc::UnboundedSender<ChipMessage>,
    input_size: (u32, u32),
    cutoff: Instant,
    shared: Arc<Shared>,
}

impl ChipMaker {
    /// Starts assembling one chip per point, each fitted to `input_size`. Exactly one message
    /// per point arrives on the receiver unless the assembly is stopped first. No image is
    /// requested after `cutoff`.
    pub fn start(
        &self,
        points: &[LatLon],
        input_size: (u32, u32),
        cutoff: Instant,
    ) -> (Assembly, mpsc::UnboundedReceiver<ChipMessage>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            first_request: OnceLock::new(),
            decode_nanos: AtomicU64::new(0),
            fetched: AtomicUsize::new(0),
            cache_hits: AtomicUsize::new(0),
            ranges: Arc::default(),
        });
        let mut work = JoinSet::new();
        let (imagery, download_slots, decode_slots) = (
            Arc::clone(&self.imagery),
            Arc::clone(&self.download_slots),
            Arc::clone(&self.decode_slots),
        );
        let points = points.to_vec();
        let task_shared = Arc::clone(&shared);
        work.spawn(
            async move {
                let plan = imagery
                    .plan(&points, cutoff, &download_slots, &task_shared.ranges)
                    .await;
                let run = Arc::new(Run::new(
                    imagery,
                    download_slots,
                    decode_slots,
                    plan,
                    tx,
                    input_size,
                    cutoff,
                    task_shared,
                ));
                run.send_ready();
                let mut loads = JoinSet::new();
                for unit in 0..run.plan.units.len() {
                    loads.spawn(load_unit(Arc::clone(&run), unit).in_current_span());
                }
                while loads.join_next().await.is_some() {}
            }
            .in_current_span(),
        );
        (Assembly { shared, work }, rx)
    }

    /// Every chip for `points`, in order: [`ChipMaker::start`] collected. For tools that need
    /// the chips themselves rather than predictions.
    pub async fn cut(
        &self,
        points: &[LatLon],
        input_size: (u32, u32),
        cutoff: Instant,
    ) -> Vec<Result<RgbImage, BuildingError>> {
        let (_assembly, mut rx) = self.start(points, input_size, cutoff);
        let mut chips: Vec<Option<Result<RgbImage, BuildingError>>> = vec![None; points.len()];
        for _ in 0..points.len() {
            let Some((i, chip)) = rx.recv().await else {
                break;
            };
            chips[i] = Some(chip);
        }
        chips
            .into_iter()
            .map(|c| {
                c.unwrap_or_else(|| {
                    Err(BuildingError::new(
                        ErrorCode::ImageUnavailable,
                        "the chip's assembly ended without it (a bug)",
                    ))
                })
            })
            .collect()
    }
}

impl Assembly {
    /// Stops requesting images and aborts the fetches in flight; chips already sent stay sent.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.work.abort_all();
    }

    pub fn stats(&self) -> AssemblyStats {
        let s = &self.shared;
        AssemblyStats {
            first_request: s.first_request.get().copied(),
            decode: Duration::from_nanos(s.decode_nanos.load(Ordering::Relaxed)),
            images_fetched: s.fetched.load(Ordering::Relaxed),
            cache_hits: s.cache_hits.load(Ordering::Relaxed),
            range_requests: s.ranges.requests.load(Ordering::Relaxed),
            bytes_fetched: s.ranges.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Run {
    #[allow(clippy::too_many_arguments)]
    fn new(
        imagery: Arc<Imagery>,
        download_slots: Arc<Semaphore>,
        decode_slots: Arc<Semaphore>,
        plan: RequestPlan,
        chips_out: mpsc::UnboundedSender<ChipMessage>,
        input_size: (u32, u32),
        cutoff: Instant,
        shared: Arc<Shared>,
    ) -> Self {
        let mut users = vec![Vec::new(); plan.images.len()];
        for (c, chip) in plan.chips.iter().enumerate() {
            for &(i, _, _) in &chip.parts {
                users[i].push(c);
            }
        }
        let progress = Progress {
            missing: plan.chips.iter().map(|c| Some(c.parts.len())).collect(),
            parts: plan.chips.iter().map(|c| c.parts.clone()).collect(),
            images: vec![None; plan.images.len()],
            uses_left: users.iter().map(Vec::len).collect(),
        };
        Self {
            imagery,
            download_slots,
            decode_slots,
            plan,
            users,
            progress: Mutex::new(progress),
            chips_out,
            input_size,
            cutoff,
            shared,
        }
    }

    /// Chips needing no image are ready now: those outside the world's rows (black), and those
    /// the plan already failed (no file covers them, their file cannot be read).
    fn send_ready(&self) {
        let mut progress = self.progress.lock().expect("fresh lock");
        for (c, chip) in self.plan.chips.iter().enumerate() {
            if chip.parts.is_empty() {
                progress.missing[c] = None;
                let _ = self.chips_out.send((c, self.finish(chip, &[])));
            }
        }
    }

    /// Composes a chip from its images and fits it to the model's input.
    fn finish(
        &self,
        chip: &ChipPlan,
        parts: &[(&Image, i64, i64)],
    ) -> Result<RgbImage, BuildingError> {
        let composed = self.imagery.compose(chip, parts)?;
        Ok(chip::fit(composed, self.input_size.0, self.input_size.1))
    }
}

/// Gets one unit's images (warm cache, else the fetch in flight for the same unit, else a
/// fetch of its own) and delivers them to the chips waiting for them. No fetch starts after
/// the cutoff, and the wait for one ends there.
async fn load_unit(run: Arc<Run>, index: usize) {
    let unit = &run.plan.units[index];
    let keys = &run.plan.images;
    run.shared.first_request.get_or_init(Instant::now);
    let late = run.shared.stop.load(Ordering::SeqCst) || Instant::now() >= run.cutoff;
    let joined = if late {
        match run.imagery.cached_unit(unit, keys) {
            Some(images) => Joined::Found(images),
            None => {
                for &i in &unit.images {
                    deliver(&run, i, Err(BuildingError::deadline_exceeded()));
                }
                return;
            }
        }
    } else {
        // Only the request that starts the fetch copies the unit out of its plan.
        run.imagery.cached_or_join(unit, keys, || {
            let (own, own_keys) = unit.detached(keys);
            fetch_and_decode(
                Arc::clone(&run.imagery),
                Arc::clone(&run.download_slots),
                Arc::clone(&run.decode_slots),
                Arc::clone(&run.shared.ranges),
                own,
                own_keys,
            )
        })
    };
    let count = unit.images.len();
    let (images, started) = match joined {
        Joined::Found(images) => {
            run.shared.cache_hits.fetch_add(count, Ordering::Relaxed);
            (images.into_iter().map(Ok).collect(), false)
        }
        Joined::Flying(seat) => {
            // Joining another request's fetch saves this request the fetch: a cache hit.
            let counter = if seat.started {
                &run.shared.fetched
            } else {
                &run.shared.cache_hits
            };
            counter.fetch_add(count, Ordering::Relaxed);
            let images = match tokio::time::timeout_at(run.cutoff, seat.wait()).await {
                Ok(Some(Loaded { images, decode })) => {
                    if seat.started {
                        run.shared
                            .decode_nanos
                            .fetch_add(decode.as_nanos() as u64, Ordering::Relaxed);
                    }
                    images
                }
                Ok(None) => vec![
                    Err(BuildingError::new(
                        ErrorCode::ImageInvalid,
                        "decoding failed: the fetch and decode task panicked",
                    ));
                    count
                ],
                Err(_) => vec![Err(BuildingError::deadline_exceeded()); count],
            };
            (images, seat.started)
        }
    };
    // Composing is CPU work: off the async threads. Timed for the request that fetched the
    // unit, as its decoding is.
    let task_run = Arc::clone(&run);
    let span = tracing::Span::current();
    let worker = tokio::task::spawn_blocking(move || {
        let _in = span.enter();
        let composing = std::time::Instant::now();
        let run = task_run;
        let unit = &run.plan.units[index];
        for (&i, image) in unit.images.iter().zip(images) {
            deliver(&run, i, image);
        }
        if started {
            run.shared
                .decode_nanos
                .fetch_add(composing.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    });
    if let Err(e) = worker.await {
        // A panic while composing: fail the chips still waiting for this unit's images.
        for &i in &run.plan.units[index].images {
            deliver(
                &run,
                i,
                Err(BuildingError::new(
                    ErrorCode::ImageInvalid,
                    format!("decoding failed: {e}"),
                )),
            );
        }
    }
}

/// One unit fetched and decoded for every request waiting for it. Its bound is Lambda's
/// longest timeout, not the cutoff of the request that happened to start it: it stops when
/// the last waiter stops waiting (each at its own cutoff), or at `DOWNLOAD_TIMEOUT_MS` and
/// `DOWNLOAD_RETRIES`. Ranged reads count in the starting request's `counters`.
async fn fetch_and_decode(
    imagery: Arc<Imagery>,
    downloads: Arc<Semaphore>,
    decodes: Arc<Semaphore>,
    counters: Arc<Counters>,
    unit: Unit,
    keys: Vec<String>,
) -> Loaded {
    let count = unit.images.len();
    let failed = |error: BuildingError| Loaded {
        images: vec![Err(error); count],
        decode: Duration::ZERO,
    };
    let unavailable = |what: &str| failed(BuildingError::new(ErrorCode::ImageUnavailable, what));
    let bytes = {
        let Ok(_slot) = downloads.acquire().await else {
            return unavailable("the download limiter is closed");
        };
        imagery
            .fetch(&unit, Instant::now() + SHARED_FETCH_BUDGET, &counters)
            .await
    };
    let Ok(_cpu) = decodes.acquire().await else {
        return unavailable("the decode limiter is closed");
    };
    let span = tracing::Span::current();
    let decoded = tokio::task::spawn_blocking(move || {
        let _in = span.enter();
        let started = std::time::Instant::now();
        let images = match bytes {
            Ok(bytes) => imagery.decode(&unit, &keys, &bytes),
            Err(error) => vec![Err(error); unit.images.len()],
        };
        (images, started.elapsed())
    })
    .await;
    match decoded {
        Ok((images, decode)) => Loaded { images, decode },
        Err(e) => failed(BuildingError::new(
            ErrorCode::ImageInvalid,
            format!("decoding failed: {e}"),
        )),
    }
}

/// Records an arrived (or failed) image and sends every chip it completes. Runs on a
/// blocking thread: composing is CPU work.
fn deliver(run: &Run, index: usize, image: Result<Arc<Image>, BuildingError>) {
    type Ready = (usize, Vec<(Arc<Image>, i64, i64)>);
    let mut ready: Vec<Ready> = Vec::new();
    {
        let Ok(mut progress) = run.progress.lock() else {
            return;
        };
        let p = &mut *progress;
        match &image {
            Ok(image) if p.uses_left[index] > 0 => p.images[index] = Some(Arc::clone(image)),
            _ => {}
        }
        for &c in &run.users[index] {
            let Some(missing) = p.missing[c] else {
                continue;
            };
            match &image {
                Err(error) => {
                    p.missing[c] = None;
                    release(p, c);
                    let _ = run.chips_out.send((c, Err(error.clone())));
                }
                Ok(_) if missing > 1 => p.missing[c] = Some(missing - 1),
                Ok(_) => {
                    p.missing[c] = None;
                    let parts = p.parts[c]
                        .iter()
                        .filter_map(|&(j, dx, dy)| {
                            Some((Arc::clone(p.images[j].as_ref()?), dx, dy))
                        })
                        .collect();
                    release(p, c);
                    ready.push((c, parts));
                }
            }
        }
    }
    for (c, parts) in ready {
        let borrowed: Vec<(&Image, i64, i64)> = parts
            .iter()
            .map(|(img, dx, dy)| (img.as_ref(), *dx, *dy))
            .collect();
        let _ = run
            .chips_out
            .send((c, run.finish(&run.plan.chips[c], &borrowed)));
    }
}

/// A resolved chip no longer needs its images: drop those no other chip waits for.
fn release(p: &mut Progress, chip: usize) {
    for &(j, _, _) in &p.parts[chip] {
        p.uses_left[j] = p.uses_left[j].saturating_sub(1);
        if p.uses_left[j] == 0 {
            p.images[j] = None;
        }
    }
}
