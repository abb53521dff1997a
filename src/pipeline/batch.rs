//! Batch scheduling and inference: chips wait in a queue; a batch goes to ONNX Runtime (on
//! `spawn_blocking`) as soon as it is full, or at once when the model is idle or nothing more
//! is coming, so downloads and inference overlap with no phase barrier. At most
//! [`BATCHES_IN_FLIGHT`] batches are handed over (one running, one ready), which bounds tensor
//! memory while keeping the model busy. A batch that fails or panics fails exactly its own
//! buildings.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use image::RgbImage;
use tokio::task::{Id, JoinError, JoinSet};

use super::{ChipResult, Stats};
use crate::error::{BuildingError, ErrorCode};
use crate::model::Model;

/// Batches handed to ONNX Runtime and not yet finished: one running, one waiting.
const BATCHES_IN_FLIGHT: usize = 2;

/// One request's chips on their way through the model.
pub struct Batcher {
    model: Arc<Model>,
    batch_size: usize,
    /// Chips ready for a batch, by chip index.
    pending: Vec<(usize, RgbImage)>,
    running: JoinSet<BatchOutcome>,
    /// The chip indices of each running batch.
    in_batch: HashMap<Id, Vec<usize>>,
}

impl Batcher {
    /// `batch_size` is the model's fixed batch when it has one, else `BATCH_SIZE`.
    pub fn new(model: Arc<Model>, batch_size: usize) -> Self {
        Self {
            model,
            batch_size,
            pending: Vec::new(),
            running: JoinSet::new(),
            in_batch: HashMap::new(),
        }
    }

    pub fn push(&mut self, index: usize, chip: RgbImage) {
        self.pending.push((index, chip));
    }

    /// Hands batches to ONNX Runtime: full ones, or whatever is waiting when the model is
    /// idle or `nothing_more` is coming. Returns how many batches went.
    pub fn dispatch(&mut self, nothing_more: bool) -> usize {
        let mut sent = 0;
        while !self.pending.is_empty()
            && self.running.len() < BATCHES_IN_FLIGHT
            && (self.pending.len() >= self.batch_size || self.running.is_empty() || nothing_more)
        {
            let take = self.pending.len().min(self.batch_size);
            let batch: Vec<(usize, RgbImage)> = self.pending.drain(..take).collect();
            let indices: Vec<usize> = batch.iter().map(|(i, _)| *i).collect();
            let model = Arc::clone(&self.model);
            let handle = self.running.spawn_blocking(move || infer(&model, batch));
            self.in_batch.insert(handle.id(), indices);
            sent += 1;
        }
        sent
    }

    /// True when a batch is running (so [`Batcher::next_done`] will answer).
    pub fn is_running(&self) -> bool {
        !self.running.is_empty()
    }

    /// True when no chip is waiting and no batch is running.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.running.is_empty()
    }

    /// The next finished batch, to hand to [`Batcher::settle`].
    pub async fn next_done(&mut self) -> Option<Result<(Id, BatchOutcome), JoinError>> {
        self.running.join_next_with_id().await
    }

    /// Files a finished batch's rows under its chips (see [`settle`]).
    pub fn settle(
        &mut self,
        done: Result<(Id, BatchOutcome), JoinError>,
        results: &mut [Option<ChipResult>],
        stats: &mut Stats,
    ) {
        settle(done, &mut self.in_batch, results, stats);
    }

    /// At the deadline: drops the chips still waiting and returns their indices; batches
    /// already running finish and are settled as usual.
    pub fn drop_pending(&mut self) -> Vec<usize> {
        self.pending.drain(..).map(|(i, _)| i).collect()
    }

    /// The chip indices in running batches.
    pub fn dispatched(&self) -> impl Iterator<Item = usize> + '_ {
        self.in_batch.values().flatten().copied()
    }
}

/// What an inference task gives back: one row per chip (or why not), and the time in ONNX
/// Runtime.
pub type BatchOutcome = (Result<Vec<Vec<f32>>, String>, Duration);

/// Files a finished inference task's rows under its buildings. A task that panicked (a
/// `JoinError`), failed, or answered another number of rows than it was given chips fails
/// exactly its own buildings with `inference_failed`; the rest of the request goes on.
fn settle(
    done: Result<(Id, BatchOutcome), JoinError>,
    in_batch: &mut HashMap<Id, Vec<usize>>,
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

/// Runs one batch: the model writes the chips into its input tensor (its layout, type and
/// normalisation; zero padding up to a fixed batch) and answers probabilities per chip.
fn infer(model: &Model, batch: Vec<(usize, RgbImage)>) -> BatchOutcome {
    let chips: Vec<&RgbImage> = batch.iter().map(|(_, chip)| chip).collect();
    match model.predict(&chips) {
        Ok((rows, ran)) => (Ok(rows), ran),
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
