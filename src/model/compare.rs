//! Two models on the same input tensors: how often they give the same answer, the largest
//! probability difference, and the time each spent in ONNX Runtime. What `bootstrap compare`
//! prints after `make quantize`, and what `make bench` reports for the int8 bench model.

use std::time::Duration;

use super::Model;
use super::input::InputBatch;

/// What a comparison found.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub chips: usize,
    /// Chips where both models gave the same answer (the same label; for multilabel models,
    /// the same set of labels).
    pub same: usize,
    /// The largest difference between the two models' probabilities of one label on one chip.
    pub largest: f32,
    /// Where it was: (chip, label index, reference's probability, other's probability).
    pub largest_at: (usize, usize, f32, f32),
    /// Time inside ONNX Runtime, summed over the batches (after one warm-up batch each).
    pub reference_time: Duration,
    pub other_time: Duration,
    /// Each chip's probabilities from both models (reference, other), for other measures.
    pub rows: Vec<(Vec<f32>, Vec<f32>)>,
}

impl Comparison {
    /// The share of chips with the same answer, in percent.
    pub fn agreement_percent(&self) -> f64 {
        100.0 * self.same as f64 / self.chips.max(1) as f64
    }

    /// For two-label models: the share of chips (percent) on the same side of a threshold
    /// placed at the reference's median probability of `label`, and that threshold. Half the
    /// chips then sit on each side, as close to the boundary as the data allows: the hardest
    /// threshold for a quantized model to agree with, whatever the model's own threshold.
    pub fn agreement_at_median(&self, label: usize) -> (f64, f32) {
        let mut reference: Vec<f32> = self.rows.iter().map(|(a, _)| a[label]).collect();
        reference.sort_by(f32::total_cmp);
        let median = reference.get(reference.len() / 2).copied().unwrap_or(0.5);
        let same = self
            .rows
            .iter()
            .filter(|(a, b)| (a[label] >= median) == (b[label] >= median))
            .count();
        (100.0 * same as f64 / self.rows.len().max(1) as f64, median)
    }

    /// The reference's lowest and highest probability of `label`.
    pub fn spread(&self, label: usize) -> (f32, f32) {
        self.rows
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), (a, _)| {
                (lo.min(a[label]), hi.max(a[label]))
            })
    }
}

/// Runs `chips` (a tensor both models take) through both in batches of `batch_size` (a model
/// with a fixed batch dimension uses its own).
pub fn compare(
    reference: &Model,
    other: &Model,
    chips: &InputBatch,
    batch_size: usize,
) -> Result<Comparison, String> {
    for (name, model) in [("the reference", reference), ("the other model", other)] {
        let takes = model.input.batch(&[]);
        if !takes.same_type(chips) || takes.row_shape() != chips.row_shape() {
            return Err(format!(
                "{name} takes {} {:?} rows; the chips are {} {:?}",
                kind(&takes),
                takes.row_shape(),
                kind(chips),
                chips.row_shape()
            ));
        }
    }
    if reference.labels.len() != other.labels.len() {
        return Err(format!(
            "the models answer different labels: {} vs {}",
            reference.labels.join(","),
            other.labels.join(",")
        ));
    }
    let total = chips.rows();
    let mut found = Comparison {
        chips: total,
        same: 0,
        largest: 0.0,
        largest_at: (0, 0, 0.0, 0.0),
        reference_time: Duration::ZERO,
        other_time: Duration::ZERO,
        rows: Vec::with_capacity(total),
    };
    let run = |model: &Model, from: usize, count: usize| {
        let rows = model.input.fixed_batch.unwrap_or(count);
        model.run(&chips.slice_rows(from, count, rows), count)
    };
    let step = |model: &Model| model.input.fixed_batch.unwrap_or(batch_size).max(1);
    // One warm-up batch each: ONNX Runtime's first run allocates.
    for model in [reference, other] {
        run(model, 0, step(model).min(total))?;
    }
    let mut from = 0;
    while from < total {
        let count = step(reference).min(step(other)).min(total - from);
        let (a, ta) = run(reference, from, count)?;
        let (b, tb) = run(other, from, count)?;
        found.reference_time += ta;
        found.other_time += tb;
        for (i, (pa, pb)) in a.into_iter().zip(b).enumerate() {
            for (label, (x, y)) in pa.iter().zip(&pb).enumerate() {
                if (x - y).abs() > found.largest {
                    found.largest = (x - y).abs();
                    found.largest_at = (from + i, label, *x, *y);
                }
            }
            let da = reference.decision.decide(&reference.labels, pa.clone());
            let db = other.decision.decide(&other.labels, pb.clone());
            found.same += usize::from(da.label == db.label && da.labels == db.labels);
            found.rows.push((pa, pb));
        }
        from += count;
    }
    Ok(found)
}

fn kind(batch: &InputBatch) -> &'static str {
    match batch {
        InputBatch::Float32(_) => "float32",
        InputBatch::Float16(_) => "float16",
        InputBatch::Uint8(_) => "uint8",
    }
}
