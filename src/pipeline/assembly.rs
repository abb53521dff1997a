//! Chip assembly: from the buildings' positions to finished chips, one message per chip.
//!
//! Every unique image the request needs is fetched once (neighbouring buildings share tiles):
//! from the warm cache, else from the source under the download semaphore, and once for every
//! request in flight that needs it (a request finding another's fetch under way waits for it:
//! `imagery::flight`). It is decoded on a blocking thread (at most one decode per vCPU), and
//! the moment a chip has all its images it is stitched, fitted to the model's input size and
//! sent. Chips therefore arrive in the order
//! their images complete, roughly request order. An image is dropped as soon as no unfinished
//! chip needs it.
//!
//! This is the only path from positions to chips: the pipeline runs it for Lambda, and tools
//! and tests collect its output with [`ChipMaker::cut`].

use std::collections::HashMap;
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
use crate::imagery::{Imagery, Loaded, chip};

/// How long a shared fetch may run at most: Lambda's longest timeout. A fetch is bounded by
/// the requests waiting for it (it stops when the last one stops waiting, at its own cutoff)
/// and by `DOWNLOAD_TIMEOUT_MS` and `DOWNLOAD_RETRIES`, never by the cutoff of the request
/// that happened to start it.
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
    run: Arc<Run>,
    fetches: JoinSet<()>,
}

/// What an assembly measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AssemblyStats {
    /// When the first image was asked for (cache or source); `None` if no chip needed one.
    pub first_request: Option<Instant>,
    /// Time spent decoding and stitching, summed over the blocking threads.
    pub decode: Duration,
    pub images_fetched: usize,
    pub cache_hits: usize,
}

/// A chip's images: (image index, dx, dy) — where each image's top-left lands in the chip.
type ChipParts = Vec<(usize, i64, i64)>;

/// One unique image of the request and the chips that need it.
struct ImageJob {
    url: String,
    expected: (u32, u32),
    /// Chip index and where this image's top-left lands in that chip.
    uses: Vec<(usize, i64, i64)>,
}

/// Per-request shared state while images arrive.
struct Progress {
    /// For each chip, how many of its images are still missing; `None` once it is resolved.
    missing: Vec<Option<usize>>,
    /// For each chip, its parts: (image index, dx, dy).
    parts: Vec<ChipParts>,
    /// Decoded images, dropped as soon as no unresolved chip needs them.
    images: Vec<Option<Arc<RgbImage>>>,
    uses_left: Vec<usize>,
}

/// Read-only context shared by one request's tasks.
struct Run {
    imagery: Arc<Imagery>,
    download_slots: Arc<Semaphore>,
    decode_slots: Arc<Semaphore>,
    jobs: Vec<ImageJob>,
    progress: Mutex<Progress>,
    chips_out: mpsc::UnboundedSender<ChipMessage>,
    input_size: (u32, u32),
    cutoff: Instant,
    stop: AtomicBool,
    first_request: OnceLock<Instant>,
    decode_nanos: AtomicU64,
    fetched: AtomicUsize,
    cache_hits: AtomicUsize,
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
        let (jobs, parts) = plan(&self.imagery, points);
        let (tx, rx) = mpsc::unbounded_channel();
        let run = Arc::new(Run {
            imagery: Arc::clone(&self.imagery),
            download_slots: Arc::clone(&self.download_slots),
            decode_slots: Arc::clone(&self.decode_slots),
            progress: Mutex::new(Progress {
                missing: parts.iter().map(|p| Some(p.len())).collect(),
                images: vec![None; jobs.len()],
                uses_left: jobs.iter().map(|j| j.uses.len()).collect(),
                parts,
            }),
            jobs,
            chips_out: tx,
            input_size,
            cutoff,
            stop: AtomicBool::new(false),
            first_request: OnceLock::new(),
            decode_nanos: AtomicU64::new(0),
            fetched: AtomicUsize::new(0),
            cache_hits: AtomicUsize::new(0),
        });
        let mut fetches = JoinSet::new();
        for index in 0..run.jobs.len() {
            fetches.spawn(load_image(Arc::clone(&run), index).in_current_span());
        }
        // A chip needing no image at all (outside the world's rows) is ready now.
        let empty: Vec<usize> = run
            .progress
            .lock()
            .expect("fresh lock")
            .missing
            .iter()
            .enumerate()
            .filter_map(|(i, missing)| (*missing == Some(0)).then_some(i))
            .collect();
        for i in empty {
            let size = run.imagery.chip_size();
            let _ = run.chips_out.send((
                i,
                Ok(chip::fit(
                    RgbImage::new(size, size),
                    input_size.0,
                    input_size.1,
                )),
            ));
        }
        (Assembly { run, fetches }, rx)
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
        self.run.stop.store(true, Ordering::SeqCst);
        self.fetches.abort_all();
    }

    pub fn stats(&self) -> AssemblyStats {
        AssemblyStats {
            first_request: self.run.first_request.get().copied(),
            decode: Duration::from_nanos(self.run.decode_nanos.load(Ordering::Relaxed)),
            images_fetched: self.run.fetched.load(Ordering::Relaxed),
            cache_hits: self.run.cache_hits.load(Ordering::Relaxed),
        }
    }
}

/// The unique images of the request, ordered by the first chip that needs them (so chips
/// complete roughly in request order), and each chip's parts.
fn plan(imagery: &Imagery, points: &[LatLon]) -> (Vec<ImageJob>, Vec<ChipParts>) {
    let mut index_of: HashMap<String, usize> = HashMap::new();
    let mut jobs: Vec<ImageJob> = Vec::new();
    let mut parts = Vec::with_capacity(points.len());
    for (chip_index, p) in points.iter().enumerate() {
        let mut chip_parts = Vec::new();
        for part in imagery.plan(*p) {
            let expected = (part.width, part.height);
            let j = *index_of.entry(part.url.clone()).or_insert_with(|| {
                jobs.push(ImageJob {
                    url: part.url,
                    expected,
                    uses: Vec::new(),
                });
                jobs.len() - 1
            });
            jobs[j].uses.push((chip_index, part.dx, part.dy));
            chip_parts.push((j, part.dx, part.dy));
        }
        parts.push(chip_parts);
    }
    (jobs, parts)
}

/// Gets one image (warm cache, else the fetch in flight for it, else a fetch of its own) and
/// delivers it to the chips waiting for it. No fetch starts after the cutoff, and the wait for
/// one ends there.
async fn load_image(run: Arc<Run>, index: usize) {
    let job = &run.jobs[index];
    run.first_request.get_or_init(Instant::now);
    let late = run.stop.load(Ordering::SeqCst) || Instant::now() >= run.cutoff;
    let joined = if late {
        match run.imagery.cached(&job.url) {
            Some(image) => Joined::Found(image),
            None => {
                deliver(&run, index, Err(BuildingError::deadline_exceeded()));
                return;
            }
        }
    } else {
        let (imagery, downloads, decodes) = (
            Arc::clone(&run.imagery),
            Arc::clone(&run.download_slots),
            Arc::clone(&run.decode_slots),
        );
        let (url, expected) = (job.url.clone(), job.expected);
        run.imagery.cached_or_join(&job.url, move || {
            fetch_and_decode(imagery, downloads, decodes, url, expected)
        })
    };
    let (image, started) = match joined {
        Joined::Found(image) => {
            run.cache_hits.fetch_add(1, Ordering::Relaxed);
            (Ok(image), false)
        }
        Joined::Flying(seat) => {
            let counter = if seat.started {
                &run.fetched
            } else {
                &run.cache_hits
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let image = match tokio::time::timeout_at(run.cutoff, seat.wait()).await {
                Ok(Some(Loaded { image, decode })) => {
                    if seat.started {
                        run.decode_nanos
                            .fetch_add(decode.as_nanos() as u64, Ordering::Relaxed);
                    }
                    image
                }
                Ok(None) => Err(BuildingError::new(
                    ErrorCode::ImageInvalid,
                    "decoding failed: the fetch and decode task panicked",
                )),
                Err(_) => Err(BuildingError::deadline_exceeded()),
            };
            (image, seat.started)
        }
    };
    // Stitching is CPU work: off the async threads. Timed for the request that fetched the
    // image, as its decoding is.
    let task_run = Arc::clone(&run);
    let span = tracing::Span::current();
    let worker = tokio::task::spawn_blocking(move || {
        let _in = span.enter();
        let stitching = std::time::Instant::now();
        deliver(&task_run, index, image);
        if started {
            task_run
                .decode_nanos
                .fetch_add(stitching.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    });
    if let Err(e) = worker.await {
        // A panic while stitching: fail the chips still waiting for this image.
        deliver(
            &run,
            index,
            Err(BuildingError::new(
                ErrorCode::ImageInvalid,
                format!("decoding failed: {e}"),
            )),
        );
    }
}

/// The work of one fetch, shared by every request waiting for the image: the bytes from the
/// source under the download semaphore, then decoded on a blocking thread under the decode
/// semaphore, and kept in the warm cache.
async fn fetch_and_decode(
    imagery: Arc<Imagery>,
    downloads: Arc<Semaphore>,
    decodes: Arc<Semaphore>,
    url: String,
    expected: (u32, u32),
) -> Loaded {
    let unavailable = |what: &str| Loaded {
        image: Err(BuildingError::new(ErrorCode::ImageUnavailable, what)),
        decode: Duration::ZERO,
    };
    let bytes = {
        let Ok(_slot) = downloads.acquire().await else {
            return unavailable("the download limiter is closed");
        };
        imagery
            .fetch(&url, Instant::now() + SHARED_FETCH_BUDGET)
            .await
    };
    let Ok(_cpu) = decodes.acquire().await else {
        return unavailable("the decode limiter is closed");
    };
    let span = tracing::Span::current();
    let decoded = tokio::task::spawn_blocking(move || {
        let _in = span.enter();
        let started = std::time::Instant::now();
        let image = bytes.and_then(|bytes| imagery.decode(&url, &bytes, expected));
        (image, started.elapsed())
    })
    .await;
    match decoded {
        Ok((image, decode)) => Loaded { image, decode },
        Err(e) => Loaded {
            image: Err(BuildingError::new(
                ErrorCode::ImageInvalid,
                format!("decoding failed: {e}"),
            )),
            decode: Duration::ZERO,
        },
    }
}

/// Records an arrived (or failed) image and sends every chip it completes. Runs on a
/// blocking thread: stitching is CPU work.
fn deliver(run: &Run, index: usize, image: Result<Arc<RgbImage>, BuildingError>) {
    type Ready = (usize, Vec<(Arc<RgbImage>, i64, i64)>);
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
        for &(c, _, _) in &run.jobs[index].uses {
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
    let size = run.imagery.chip_size();
    for (c, parts) in ready {
        let borrowed: Vec<(&RgbImage, i64, i64)> = parts
            .iter()
            .map(|(img, dx, dy)| (img.as_ref(), *dx, *dy))
            .collect();
        let stitched = chip::stitch(&borrowed, size);
        let _ = run.chips_out.send((
            c,
            Ok(chip::fit(stitched, run.input_size.0, run.input_size.1)),
        ));
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
