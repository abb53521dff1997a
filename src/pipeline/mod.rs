//! One request's work: positions → chips → batches → probabilities, overlapped.
//!
//! [`assembly`] turns positions into chips (each unique image fetched once, decoded off the
//! async threads, stitched the moment a chip is whole); [`batch`] turns chips into batches
//! and runs them on ONNX Runtime as soon as a batch is full or the model is idle. This module
//! joins the two and watches the deadline: work not finished by the cutoff is answered
//! `deadline_exceeded`, and everything already predicted is kept.
//!
//! Every position comes back with probabilities or a typed error; nothing here panics on
//! input, and a panic inside a blocking task fails only the buildings it was working on.

pub mod assembly;
mod batch;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{BuildingError, ErrorCode};
use crate::geo::LatLon;
use crate::model::Model;
use assembly::ChipMaker;
use batch::Batcher;

/// Long-lived pieces of the pipeline, built once per sandbox.
pub struct Pipeline {
    pub model: Arc<Model>,
    pub chips: ChipMaker,
    /// `BATCH_SIZE`; a model with a fixed batch dimension overrides it.
    pub batch_size: usize,
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
}

pub struct Output {
    pub results: Vec<ChipResult>,
    pub stats: Stats,
}

impl Pipeline {
    /// The batch size actually used: the model's fixed batch, else `BATCH_SIZE`.
    pub fn effective_batch_size(&self) -> usize {
        self.model.input.fixed_batch.unwrap_or(self.batch_size)
    }

    /// Predicts every point; `results[i]` answers `points[i]`. Work not finished by `cutoff`
    /// is answered `deadline_exceeded`. Points with the same chip window (identical
    /// coordinates, or within a pixel's rounding) share one chip and one prediction.
    pub async fn run(&self, points: &[LatLon], cutoff: Instant) -> Output {
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
        let output = self.run_unique(&unique, cutoff).await;
        Output {
            results: slots.iter().map(|&u| output.results[u].clone()).collect(),
            stats: output.stats,
        }
    }

    /// [`Pipeline::run`] for points whose chips all differ.
    async fn run_unique(&self, points: &[LatLon], cutoff: Instant) -> Output {
        let started = Instant::now();
        let input = &self.model.input;
        let input_size = (input.width as u32, input.height as u32);
        let (mut assembly, mut chips) = self.chips.start(points, input_size, cutoff);
        let mut batcher = Batcher::new(Arc::clone(&self.model), self.effective_batch_size());

        let mut results: Vec<Option<ChipResult>> = vec![None; points.len()];
        let mut stats = Stats::default();
        let mut received = 0;
        let mut last_chip = started;
        let mut deadline_hit = false;
        loop {
            stats.batches += batcher.dispatch(received == points.len());
            if received == points.len() && batcher.is_idle() {
                break;
            }
            tokio::select! {
                biased;
                Some(done) = batcher.next_done(), if batcher.is_running() => {
                    batcher.settle(done, &mut results, &mut stats);
                }
                Some((i, chip)) = chips.recv(), if received < points.len() => {
                    received += 1;
                    match chip {
                        Ok(chip) => {
                            last_chip = Instant::now();
                            batcher.push(i, chip);
                        }
                        Err(error) => results[i] = Some(Err(error)),
                    }
                }
                _ = tokio::time::sleep_until(cutoff), if !deadline_hit => {
                    deadline_hit = true;
                    assembly.stop();
                    let waiting = batcher.drop_pending();
                    let dispatched: Vec<usize> = batcher.dispatched().collect();
                    for (i, slot) in results.iter_mut().enumerate() {
                        if slot.is_none() && (waiting.contains(&i) || !dispatched.contains(&i)) {
                            *slot = Some(Err(BuildingError::deadline_exceeded()));
                        }
                    }
                    received = points.len();
                }
            }
        }
        assembly.stop();

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
        Output { results, stats }
    }
}
