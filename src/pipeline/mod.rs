//! One request's work: positions → chips → batches → probabilities, overlapped.
//!
//! [`assembly`] turns positions into chips (each unique image fetched once, decoded off the
//! async threads, stitched the moment a chip is whole); [`batch`] is the process's one batcher,
//! which runs the chips of every request in flight in shared batches as soon as a batch is full
//! or the model is idle. This module joins the two for one request and watches its deadline:
//! work not finished by the cutoff is answered `deadline_exceeded`, and everything already
//! predicted is kept. Other requests' deadlines, failures and panics do not reach it.
//!
//! Every position comes back with probabilities or a typed error; nothing here panics on
//! input, and a panic inside a blocking task fails only the buildings it was working on.

pub mod assembly;
pub mod batch;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use image::RgbImage;
use tokio::time::Instant;

use crate::error::{BuildingError, ErrorCode};
use crate::geo::LatLon;
use crate::model::Model;
use assembly::ChipMaker;
use batch::{Batcher, OnnxBatches};

/// Long-lived pieces of the pipeline, built once per sandbox and shared by every request.
pub struct Pipeline {
    pub model: Arc<Model>,
    pub chips: ChipMaker,
    /// `BATCH_SIZE`; a model with a fixed batch dimension overrides it.
    pub batch_size: usize,
    batcher: Batcher,
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
    /// GeoTIFF sources: ranged reads and their bytes.
    pub range_requests: usize,
    pub bytes_fetched: u64,
    /// Other requests whose chips shared this request's batches.
    pub batched_with: usize,
}

pub struct Output {
    pub results: Vec<ChipResult>,
    pub stats: Stats,
    /// With [`Pipeline::run_keeping_chips`], the chip each point was predicted on, exactly
    /// as batched (before normalisation); `None` where no chip was made. Empty otherwise.
    pub chips: Vec<Option<Arc<RgbImage>>>,
}

impl Pipeline {
    /// The pipeline with the process's one batcher over `model`'s sessions.
    /// `fault_panic_rgb` is the `FAULT_PANIC_ON_RGB` drill (see `config`); `None` in production.
    pub fn new(
        model: Arc<Model>,
        chips: ChipMaker,
        batch_size: usize,
        fault_panic_rgb: Option<[u8; 3]>,
    ) -> Self {
        let effective = model.input.fixed_batch.unwrap_or(batch_size);
        let batches = OnnxBatches {
            model: Arc::clone(&model),
            fault_panic_rgb,
        };
        let sessions = model.sessions();
        Self {
            model,
            chips,
            batch_size,
            batcher: Batcher::new(Arc::new(batches), effective, sessions),
        }
    }

    /// The batch size actually used: the model's fixed batch, else `BATCH_SIZE`.
    pub fn effective_batch_size(&self) -> usize {
        self.model.input.fixed_batch.unwrap_or(self.batch_size)
    }

    /// Predicts every point; `results[i]` answers `points[i]`. Work not finished by `cutoff`
    /// is answered `deadline_exceeded`. Points with the same chip window (identical
    /// coordinates, or within a pixel's rounding) share one chip and one prediction.
    pub async fn run(&self, points: &[LatLon], cutoff: Instant) -> Output {
        self.run_with(points, cutoff, false).await
    }

    /// [`Pipeline::run`], also keeping every chip in [`Output::chips`] (for people to see
    /// what the model saw). Costs one copy of each chip, held until the run ends.
    pub async fn run_keeping_chips(&self, points: &[LatLon], cutoff: Instant) -> Output {
        self.run_with(points, cutoff, true).await
    }

    async fn run_with(&self, points: &[LatLon], cutoff: Instant, keep_chips: bool) -> Output {
        let mut first_of = HashMap::new();
        let mut unique = Vec::new();
        let slots: Vec<usize> = points
            .iter()
            .map(|p| {
                *first_of
                    .entry(self.chips.imagery.window(*p))
                    .or_insert_with(|| {
                        unique.push(*p);
                        unique.len() - 1
                    })
            })
            .collect();
        let output = self.run_unique(&unique, cutoff, keep_chips).await;
        let chips = if keep_chips {
            slots.iter().map(|&u| output.chips[u].clone()).collect()
        } else {
            Vec::new()
        };
        Output {
            results: slots.iter().map(|&u| output.results[u].clone()).collect(),
            stats: output.stats,
            chips,
        }
    }

    /// [`Pipeline::run`] for points whose chips all differ.
    async fn run_unique(&self, points: &[LatLon], cutoff: Instant, keep_chips: bool) -> Output {
        let started = Instant::now();
        let input = &self.model.input;
        let input_size = (input.width as u32, input.height as u32);
        let (mut assembly, mut chips) = self.chips.start(points, input_size, cutoff);
        let (ticket, mut settled) = self.batcher.join(crate::logging::request_id());

        let n = points.len();
        let mut results: Vec<Option<ChipResult>> = vec![None; n];
        let mut queued = vec![false; n];
        let mut kept = vec![None; if keep_chips { n } else { 0 }];
        let mut stats = Stats::default();
        let (mut batches, mut mates) = (HashSet::new(), HashSet::<u64>::new());
        let (mut received, mut resolved) = (0, 0);
        let mut last_chip = started;
        let mut deadline_hit = false;
        if n == 0 {
            ticket.finish();
        }
        while resolved < n {
            tokio::select! {
                biased;
                Some(done) = settled.recv() => {
                    if batches.insert(done.batch.id) {
                        stats.inference += done.batch.ran;
                        mates.extend(done.batch.requests.iter().filter(|t| **t != ticket.id()));
                    }
                    if results[done.index].replace(done.result).is_none() {
                        resolved += 1;
                    }
                }
                Some((i, chip)) = chips.recv(), if received < n => {
                    received += 1;
                    match chip {
                        Ok(chip) => {
                            last_chip = Instant::now();
                            if keep_chips {
                                kept[i] = Some(Arc::new(chip.clone()));
                            }
                            queued[i] = true;
                            ticket.push(i, chip);
                        }
                        Err(error) => {
                            results[i] = Some(Err(error));
                            resolved += 1;
                        }
                    }
                    if received == n {
                        ticket.finish();
                    }
                }
                _ = tokio::time::sleep_until(cutoff), if !deadline_hit => {
                    deadline_hit = true;
                    assembly.stop();
                    for i in ticket.withdraw() {
                        queued[i] = false;
                    }
                    // Chips not made, or made but withdrawn, are late; chips in a running
                    // batch are still coming.
                    for (slot, queued) in results.iter_mut().zip(&queued) {
                        if slot.is_none() && !queued {
                            *slot = Some(Err(BuildingError::deadline_exceeded()));
                            resolved += 1;
                        }
                    }
                    received = n;
                }
                else => break,
            }
        }
        drop(ticket);
        assembly.stop();

        stats.batches = batches.len();
        stats.batched_with = mates.len();
        let made = assembly.stats();
        stats.download = made.first_request.map_or(Duration::ZERO, |first| {
            last_chip.saturating_duration_since(first)
        });
        stats.decode = made.decode;
        stats.images_fetched = made.images_fetched;
        stats.cache_hits = made.cache_hits;
        stats.range_requests = made.range_requests;
        stats.bytes_fetched = made.bytes_fetched;
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
        Output {
            results,
            stats,
            chips: kept,
        }
    }
}
