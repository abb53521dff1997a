//! What one prediction run produces, in the words every layer above shares: a building's
//! [`Outcome`] (a [`Scored`] prediction or a per-building error), the request's [`Timing`], the
//! answer's [`ModelInfo`] (the model and the settings applied to it) and a building's register
//! [`Listing`].
//!
//! These are plain data at the bottom of the crate: `app` and `pipeline` fill them,
//! `registry` adds listings, `answer`, `events` and `telemetry` read them. Nothing here does
//! any work beyond rounding.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::BuildingError;

/// One building's answer: a prediction, or why it has none.
pub type Outcome = Result<Scored, BuildingError>;

/// A successful prediction for one building.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The answer; for a multilabel model, the most probable label.
    pub label: String,
    /// The probability of `label`.
    pub score: f32,
    /// In label order.
    pub probabilities: Vec<f32>,
    /// Multilabel models only: every label at or above the threshold, most probable first.
    pub labels: Option<Vec<String>>,
    /// The registry's answer for this building; `None` when no registry is configured.
    pub registry: Option<Listing>,
}

/// One building's registry check: `{"listed", "record", "distance_m"}` in the answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listing {
    pub listed: bool,
    /// The matched record's own columns (CSV) or properties (GeoJSON).
    pub record: Option<Value>,
    /// Geodesic metres to the matched point (centimetres), 0 inside a footprint.
    pub distance_m: Option<f64>,
}

impl Scored {
    /// True when the prediction says `label`: it is the answer, or (multilabel) one of them.
    pub fn says(&self, label: &str) -> bool {
        match &self.labels {
            Some(labels) => labels.iter().any(|l| l == label),
            None => self.label == label,
        }
    }
}

/// The `model` block of every answer: which model, and every setting applied to it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelInfo {
    pub uri: String,
    pub version: String,
    pub labels: Vec<String>,
    pub output: OutputInfo,
    pub decision: DecisionInfo,
    pub input: InputInfo,
    /// Where each setting came from (`env`, `metadata`, `graph`, `shape` or `default`), by
    /// its metadata key.
    pub sources: serde_json::Map<String, Value>,
}

impl ModelInfo {
    /// A model block with the settings left at their empty defaults (tests of answer shapes).
    pub fn named(uri: &str, version: &str, labels: &[&str]) -> Self {
        Self {
            uri: uri.into(),
            version: version.into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            ..Self::default()
        }
    }
}

/// The output read: `{"name", "shape", "kind", "operator"}`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutputInfo {
    pub name: String,
    pub shape: String,
    /// `logits`, `probabilities`, `sigmoid` or `multilabel`.
    pub kind: String,
    /// The operator that produced the output (looked through reshapes and casts), when the
    /// graph could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
}

/// How labels are chosen: `{"rule", "positive_threshold"}`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DecisionInfo {
    /// `argmax`, `threshold` or `multilabel`.
    pub rule: String,
    /// Absent for `argmax`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub positive_threshold: Option<f64>,
}

/// What the model is fed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InputInfo {
    pub name: String,
    pub shape: String,
    /// `nchw` or `nhwc`.
    pub layout: String,
    /// `float32`, `float16` or `uint8`.
    pub element_type: String,
    /// `rgb` or `bgr`.
    pub channels: String,
    /// `unit` (0–1) or `byte` (0–255), before `mean` and `std`.
    pub range: String,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    /// The chip side in pixels at `TILE_ZOOM`, before it is resized to the input.
    pub chip_size: u32,
}

/// The `timing` block of every answer (milliseconds unless named otherwise). `Deserialize`
/// is for tools that read answers back (the benchmark).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Timing {
    pub total_ms: f64,
    pub download_ms: f64,
    pub decode_ms: f64,
    pub inference_ms: f64,
    pub model_load_ms: f64,
    pub cold_start: bool,
    pub throughput_per_s: f64,
    pub batches: usize,
    pub batch_size: usize,
    pub images_fetched: usize,
    /// Images found in the warm cache, or already being fetched for another request in flight.
    pub cache_hits: usize,
    /// Only with a GeoTIFF source: ranged reads this request made (file headers not yet read
    /// in this sandbox, and merged runs of internal tiles), and the bytes they brought.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub range_requests: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bytes_fetched: Option<u64>,
    /// Other requests whose chips shared this request's batches (0 on classic Lambda, which
    /// runs one request at a time). `default` so answers from before it still read.
    #[serde(default)]
    pub batched_with: usize,
    /// Only with a registry: its fetch + parse + index time on a cold start (it overlaps
    /// `model_load_ms`), 0 afterwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_load_ms: Option<f64>,
    /// Only with a registry: time spent looking up this request's buildings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_lookup_ms: Option<f64>,
}

/// How many buildings got an error instead of a prediction.
pub fn failed(outcomes: &[Outcome]) -> usize {
    outcomes.iter().filter(|o| o.is_err()).count()
}

/// Milliseconds with two decimals: enough for timing, short in JSON.
pub fn ms(d: Duration) -> f64 {
    round2(d.as_secs_f64() * 1000.0)
}

/// An `f32` setting as the decimal it was written as (`0.3`, not `0.30000001192092896`):
/// JSON numbers are `f64`, and widening an `f32` shows its binary error.
pub fn decimal(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

/// Two decimals, for rates and milliseconds.
pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn milliseconds_keep_two_decimals() {
        assert_eq!(ms(Duration::from_micros(1_234_567)), 1234.57);
        assert_eq!(ms(Duration::ZERO), 0.0);
        assert_eq!(round2(2.005_1), 2.01);
    }

    #[test]
    fn settings_keep_the_decimals_they_were_written_with() {
        assert_eq!(decimal(0.3), 0.3);
        assert_eq!(decimal(103.939), 103.939);
        assert_eq!(serde_json::json!(decimal(0.485)).to_string(), "0.485");
    }

    #[test]
    fn failed_counts_errors_only() {
        let ok = Scored {
            label: "a".into(),
            score: 1.0,
            probabilities: vec![1.0],
            labels: None,
            registry: None,
        };
        let outcomes = vec![
            Ok(ok),
            Err(BuildingError::new(ErrorCode::ImageInvalid, "x")),
        ];
        assert_eq!(failed(&outcomes), 1);
    }
}
