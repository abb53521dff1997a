//! One request's work: fetch → decode → stitch → batch → infer, overlapped.
//!
//! Every unique image is fetched once (neighbouring buildings share tiles) under the download
//! semaphore, decoded on a blocking thread, and the moment a chip has all its images it is
//! stitched and sent to the batcher. The batcher hands a batch to ONNX Runtime (on
//! `spawn_blocking`) as soon as it is full, or at once when the model is idle, so downloads
//! and inference overlap: there is no phase barrier. At most two batches are in flight (one
//! running, one ready), which bounds tensor memory while keeping the model busy.
//!
//! Every building comes back with probabilities or a typed error; nothing here panics on
//! input, and a panic inside a blocking task fails only the buildings it was working on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use image::RgbImage;
use ndarray::{Array4, Axis};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::{BuildingError, ErrorCode};
use crate::geo::LatLon;
use crate::imagery::{Imagery, chip};
use crate::model::Model;
use crate::preprocess::Normalisation;

/// Batches handed to ONNX Runtime and not yet finished: one running, one waiting.
const BATCHES_IN_FLIGHT: usize = 2;

/// Long-lived pieces of the pipeline, built once per sandbox.
pub struct Pipeline {
    pub model: Arc<Model>,
    pub imagery: Arc<Imagery>,
    pub normalisation: Normalisation,
    pub batch_size: usize,
    /// Bounds requests in flight (`MAX_CONCURRENT_DOWNLOADS`).
    pub download_slots: Arc<Semaphore>,
    /// Bounds concurrent decodes to the vCPUs, so decoding never oversubscribes the CPU.
    pub decode_slots: Arc<Semaphore>,
}

/// Probabilities (in label order) or why not, per input position.
pub type ChipResult = Result<Vec<f32>, BuildingError>;

/// What one run measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub download: Duration,
    pub decode: Duration,
    pub inference: Duration,
    pub batches: usize,
    pub images_fetched: usize,
    pub cache_hits: usize,
}

pub struct Output {
    pub results: Vec<ChipResult>,
    pub stats: Stats,
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
struct Assembly {
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
    assembly: Mutex<Assembly>,
    chips_out: mpsc::UnboundedSender<(usize, Result<RgbImage, BuildingError>)>,
    input_size: (u32, u32),
    chip_size: u32,
    cutoff: Instant,
    stop: AtomicBool,
    first_request: OnceLock<Instant>,
    decode_nanos: AtomicU64,
    fetched: AtomicUsize,
    cache_hits: AtomicUsize,
}

impl Pipeline {
    /// Predicts every point; `results[i]` answers `points[i]`. Work not finished by `cutoff`
    /// is answered `deadline_exceeded`. Points with the same chip window (identical
    /// coordinates, or within a pixel's rounding) share one chip and one prediction.
    pub async fn run(&self, points: &[LatLon], cutoff: Instant) -> Output {
        let mut first_of = HashMap::new();
        let mut unique = Vec::new();
        let slots: Vec<usize> = points
            .iter()
            .map(|p| {
                *first_of.entry(self.imagery.window(*p)).or_insert_with(|| {
                    unique.push(*p);
                    unique.len() - 1
                })
            })
            .collect();
        let output = self.run_unique(&unique, cutoff).await;
        Output {
            results: slots.iter().map(|&u| output.results[u].clone()).collect(),
            stats: output.stats,
        }
    }

    /// [`Pipeline::run`] for points whose chips all differ.
    async fn run_unique(&self, points: &[LatLon], cutoff: Instant) -> Output {
        let started = Instant::now();
        let (jobs, parts) = self.plan(points);
        let uses_left = jobs.iter().map(|j| j.uses.len()).collect();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let shape = &self.model.shape;
        let run = Arc::new(Run {
            imagery: Arc::clone(&self.imagery),
            download_slots: Arc::clone(&self.download_slots),
            decode_slots: Arc::clone(&self.decode_slots),
            assembly: Mutex::new(Assembly {
                missing: parts.iter().map(|p| Some(p.len())).collect(),
                images: vec![None; jobs.len()],
                uses_left,
                parts,
            }),
            jobs,
            chips_out: tx,
            input_size: (shape.width as u32, shape.height as u32),
            chip_size: self.imagery.chip_size(),
            cutoff,
            stop: AtomicBool::new(false),
            first_request: OnceLock::new(),
            decode_nanos: AtomicU64::new(0),
            fetched: AtomicUsize::new(0),
            cache_hits: AtomicUsize::new(0),
        });

        let mut fetches = JoinSet::new();
        for index in 0..run.jobs.len() {
            fetches.spawn(Self::load_image(Arc::clone(&run), index));
        }
        // A chip needing no image at all (outside the world's rows) is ready now.
        for (i, missing) in run
            .assembly
            .lock()
            .expect("fresh lock")
            .missing
            .iter()
            .enumerate()
        {
            if *missing == Some(0) {
                let _ = run.chips_out.send((
                    i,
                    Ok(chip::fit(
                        RgbImage::new(run.chip_size, run.chip_size),
                        run.input_size.0,
                        run.input_size.1,
                    )),
                ));
            }
        }

        let mut results: Vec<Option<ChipResult>> = vec![None; points.len()];
        let mut stats = Stats::default();
        let mut pending: Vec<(usize, RgbImage)> = Vec::new();
        let mut received = 0;
        let mut last_chip = started;
        let mut inference = JoinSet::new();
        let mut in_batch: HashMap<tokio::task::Id, Vec<usize>> = HashMap::new();
        let mut deadline_hit = false;
        let batch_size = self.model.shape.fixed_batch.unwrap_or(self.batch_size);

        loop {
            // Dispatch: full batches, or whatever is ready when the model is idle or nothing
            // more is coming.
            while !pending.is_empty()
                && inference.len() < BATCHES_IN_FLIGHT
                && (pending.len() >= batch_size || inference.is_empty() || received == points.len())
            {
                let take = pending.len().min(batch_size);
                let batch: Vec<(usize, RgbImage)> = pending.drain(..take).collect();
                let indices: Vec<usize> = batch.iter().map(|(i, _)| *i).collect();
                let model = Arc::clone(&self.model);
                let norm = self.normalisation;
                let handle =
                    inference.spawn_blocking(move || infer(&model, norm, batch_size, batch));
                in_batch.insert(handle.id(), indices);
                stats.batches += 1;
            }
            if received == points.len() && pending.is_empty() && inference.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                Some(done) = inference.join_next_with_id(), if !inference.is_empty() => {
                    settle(done, &mut in_batch, &mut results, &mut stats);
                }
                Some((i, chip)) = rx.recv(), if received < points.len() => {
                    received += 1;
                    match chip {
                        Ok(chip) => {
                            last_chip = Instant::now();
                            pending.push((i, chip));
                        }
                        Err(error) => results[i] = Some(Err(error)),
                    }
                }
                _ = tokio::time::sleep_until(cutoff), if !deadline_hit => {
                    deadline_hit = true;
                    run.stop.store(true, Ordering::SeqCst);
                    fetches.abort_all();
                    let waiting: Vec<usize> = pending.drain(..).map(|(i, _)| i).collect();
                    let dispatched: Vec<usize> = in_batch.values().flatten().copied().collect();
                    for (i, slot) in results.iter_mut().enumerate() {
                        if slot.is_none() && (waiting.contains(&i) || !dispatched.contains(&i)) {
                            *slot = Some(Err(BuildingError::new(
                                ErrorCode::DeadlineExceeded,
                                "not predicted before the invocation's deadline (DEADLINE_MARGIN_MS before Lambda's timeout)",
                            )));
                        }
                    }
                    received = points.len();
                }
            }
        }
        fetches.abort_all();

        stats.download = run.first_request.get().map_or(Duration::ZERO, |first| {
            last_chip.saturating_duration_since(*first)
        });
        stats.decode = Duration::from_nanos(run.decode_nanos.load(Ordering::Relaxed));
        stats.images_fetched = run.fetched.load(Ordering::Relaxed);
        stats.cache_hits = run.cache_hits.load(Ordering::Relaxed);
        let results = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(BuildingError::new(
                        ErrorCode::InferenceFailed,
                        "lost by the pipeline (a bug)",
                    ))
                })
            })
            .collect();
        Output { results, stats }
    }

    /// The unique images of the request, ordered by the first chip that needs them (so chips
    /// complete roughly in request order), and each chip's parts.
    fn plan(&self, points: &[LatLon]) -> (Vec<ImageJob>, Vec<ChipParts>) {
        let mut index_of: HashMap<String, usize> = HashMap::new();
        let mut jobs: Vec<ImageJob> = Vec::new();
        let mut parts = Vec::with_capacity(points.len());
        for (chip_index, p) in points.iter().enumerate() {
            let mut chip_parts = Vec::new();
            for part in self.imagery.plan(*p) {
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

    /// Gets one image (warm cache, else the source), decodes it off the async threads, and
    /// delivers it to the chips waiting for it.
    async fn load_image(run: Arc<Run>, index: usize) {
        let url = run.jobs[index].url.clone();
        run.first_request.get_or_init(Instant::now);
        if let Some(image) = run.imagery.cached(&url) {
            run.cache_hits.fetch_add(1, Ordering::Relaxed);
            let run = Arc::clone(&run);
            let _ = tokio::task::spawn_blocking(move || deliver(&run, index, Ok(image))).await;
            return;
        }
        let bytes = {
            let Ok(_slot) = run.download_slots.acquire().await else {
                return;
            };
            if run.stop.load(Ordering::SeqCst) || Instant::now() >= run.cutoff {
                Err(BuildingError::new(
                    ErrorCode::DeadlineExceeded,
                    "not fetched before the invocation's deadline",
                ))
            } else {
                run.fetched.fetch_add(1, Ordering::Relaxed);
                run.imagery.fetch(&url, run.cutoff).await
            }
        };
        let Ok(_cpu) = run.decode_slots.acquire().await else {
            return;
        };
        let imagery = Arc::clone(&run.imagery);
        let task_run = Arc::clone(&run);
        let worker = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let run = task_run;
            let job = &run.jobs[index];
            let image = bytes.and_then(|bytes| imagery.decode(&job.url, &bytes, job.expected));
            deliver(&run, index, image);
            run.decode_nanos
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        });
        if let Err(e) = worker.await {
            // A panic while decoding: fail the chips still waiting for this image.
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
}

/// Records an arrived (or failed) image and sends every chip it completes. Runs on a
/// blocking thread: stitching is CPU work.
fn deliver(run: &Run, index: usize, image: Result<Arc<RgbImage>, BuildingError>) {
    type Ready = (usize, Vec<(Arc<RgbImage>, i64, i64)>);
    let mut ready: Vec<Ready> = Vec::new();
    {
        let Ok(mut a) = run.assembly.lock() else {
            return;
        };
        let a = &mut *a;
        match &image {
            Ok(image) if a.uses_left[index] > 0 => a.images[index] = Some(Arc::clone(image)),
            _ => {}
        }
        for &(c, _, _) in &run.jobs[index].uses {
            let Some(missing) = a.missing[c] else {
                continue;
            };
            match &image {
                Err(error) => {
                    a.missing[c] = None;
                    release(a, c);
                    let _ = run.chips_out.send((c, Err(error.clone())));
                }
                Ok(_) if missing > 1 => a.missing[c] = Some(missing - 1),
                Ok(_) => {
                    a.missing[c] = None;
                    let parts = a.parts[c]
                        .iter()
                        .filter_map(|&(j, dx, dy)| {
                            Some((Arc::clone(a.images[j].as_ref()?), dx, dy))
                        })
                        .collect();
                    release(a, c);
                    ready.push((c, parts));
                }
            }
        }
    }
    for (c, parts) in ready {
        let borrowed: Vec<(&RgbImage, i64, i64)> = parts
            .iter()
            .map(|(img, dx, dy)| (img.as_ref(), *dx, *dy))
            .collect();
        let stitched = chip::stitch(&borrowed, run.chip_size);
        let _ = run.chips_out.send((
            c,
            Ok(chip::fit(stitched, run.input_size.0, run.input_size.1)),
        ));
    }
}

/// A resolved chip no longer needs its images: drop those no other chip waits for.
fn release(a: &mut Assembly, chip: usize) {
    for &(j, _, _) in &a.parts[chip] {
        a.uses_left[j] = a.uses_left[j].saturating_sub(1);
        if a.uses_left[j] == 0 {
            a.images[j] = None;
        }
    }
}

/// What an inference task gives back: one row per chip (or why not), and the time in ONNX
/// Runtime.
type BatchOutcome = (Result<Vec<Vec<f32>>, String>, Duration);

/// Files a finished inference task's rows under its buildings. A task that panicked (a
/// `JoinError`), failed, or answered another number of rows than it was given chips fails
/// exactly its own buildings with `inference_failed`; the rest of the request goes on.
fn settle(
    done: Result<(tokio::task::Id, BatchOutcome), tokio::task::JoinError>,
    in_batch: &mut HashMap<tokio::task::Id, Vec<usize>>,
    results: &mut [Option<ChipResult>],
    stats: &mut Stats,
) {
    let (id, outcome) = match done {
        Ok((id, (outcome, elapsed))) => {
            stats.inference += elapsed;
            (id, outcome)
        }
        Err(e) => (e.id(), Err(format!("inference worker failed: {e}"))),
    };
    let indices = in_batch.remove(&id).unwrap_or_default();
    let outcome = outcome.and_then(|rows| {
        if rows.len() == indices.len() {
            Ok(rows)
        } else {
            Err(format!(
                "the model answered {} rows for a batch of {}",
                rows.len(),
                indices.len()
            ))
        }
    });
    match outcome {
        Ok(rows) => {
            for (i, row) in indices.into_iter().zip(rows) {
                results[i] = Some(Ok(row));
            }
        }
        Err(message) => {
            for i in indices {
                results[i] = Some(Err(BuildingError::new(
                    ErrorCode::InferenceFailed,
                    message.clone(),
                )));
            }
        }
    }
}

/// Normalises chips straight into their slots of one batch tensor and runs the model.
/// A model with a fixed batch dimension gets zero padding past the last chip.
fn infer(
    model: &Model,
    norm: Normalisation,
    batch_size: usize,
    batch: Vec<(usize, RgbImage)>,
) -> BatchOutcome {
    let shape = &model.shape;
    let rows = model.shape.fixed_batch.map_or(batch.len(), |_| batch_size);
    let mut tensor = Array4::<f32>::zeros((rows, 3, shape.height, shape.width));
    for (mut slot, (_, chip)) in tensor.axis_iter_mut(Axis(0)).zip(&batch) {
        norm.write(
            chip,
            slot.as_slice_mut().expect("a fresh array is contiguous"),
        );
    }
    match model.predict_timed(tensor.view()) {
        Ok((mut rows, ran)) => {
            rows.truncate(batch.len());
            (Ok(rows), ran)
        }
        Err(message) => (Err(message), Duration::ZERO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inference task and the chip indices of its batch.
    type Task = (Vec<usize>, Box<dyn FnOnce() -> BatchOutcome + Send>);

    fn run_settle(tasks: Vec<Task>, chips: usize) -> Vec<Option<ChipResult>> {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let mut set = JoinSet::new();
            let mut in_batch = HashMap::new();
            for (indices, task) in tasks {
                in_batch.insert(set.spawn_blocking(task).id(), indices);
            }
            let (mut results, mut stats) = (vec![None; chips], Stats::default());
            while let Some(done) = set.join_next_with_id().await {
                settle(done, &mut in_batch, &mut results, &mut stats);
            }
            assert!(in_batch.is_empty());
            results
        })
    }

    fn code(result: &Option<ChipResult>) -> Option<ErrorCode> {
        result.as_ref().unwrap().as_ref().err().map(|e| e.code)
    }

    #[test]
    fn a_panicking_inference_task_fails_only_its_own_buildings() {
        let results = run_settle(
            vec![
                (
                    vec![0, 2],
                    Box::new(|| panic!("ONNX Runtime wrapper blew up")),
                ),
                (
                    vec![1, 3],
                    Box::new(|| (Ok(vec![vec![1.0], vec![0.5]]), Duration::ZERO)),
                ),
            ],
            4,
        );
        for i in [0, 2] {
            let error = results[i].as_ref().unwrap().as_ref().unwrap_err();
            assert_eq!(error.code, ErrorCode::InferenceFailed);
            assert!(
                error.message.contains("panicked") && error.message.contains("blew up"),
                "{}",
                error.message
            );
        }
        assert_eq!(results[1].as_ref().unwrap().as_ref().unwrap(), &vec![1.0]);
        assert_eq!(results[3].as_ref().unwrap().as_ref().unwrap(), &vec![0.5]);
    }

    #[test]
    fn a_failed_or_short_batch_fails_all_its_buildings() {
        let results = run_settle(
            vec![
                (
                    vec![0],
                    Box::new(|| (Err("Reshape failed".to_string()), Duration::ZERO)),
                ),
                (
                    vec![1, 2],
                    Box::new(|| (Ok(vec![vec![1.0]]), Duration::ZERO)),
                ),
            ],
            3,
        );
        assert!(
            results
                .iter()
                .all(|r| code(r) == Some(ErrorCode::InferenceFailed))
        );
        let short = results[2].as_ref().unwrap().as_ref().unwrap_err();
        assert!(
            short.message.contains("1 rows for a batch of 2"),
            "{}",
            short.message
        );
    }
}
