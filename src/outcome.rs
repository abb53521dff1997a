//! What one prediction run produces, in the words every layer above shares: a building's
//! [`Outcome`] (a [`Scored`] prediction or a per-building error), the request's [`Timing`], the
//! answer's [`ModelInfo`] and a building's register [`Listing`].
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
    pub label: String,
    pub score: f32,
    /// In label order.
    pub probabilities: Vec<f32>,
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

/// The `model` block of every answer.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub uri: String,
    pub version: String,
    pub labels: Vec<String>,
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
    fn failed_counts_errors_only() {
        let ok = Scored {
            label: "a".into(),
            score: 1.0,
            probabilities: vec![1.0],
            registry: None,
        };
        let outcomes = vec![
            Ok(ok),
            Err(BuildingError::new(ErrorCode::ImageInvalid, "x")),
        ];
        assert_eq!(failed(&outcomes), 1);
    }
}
