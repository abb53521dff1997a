//! Outcomes → answer JSON, shared by every caller: the direct answer
//! (`{"predictions", "failed", "timing", "model"}`) and the prediction object that GeoJSON
//! answers put under `properties.prediction`. Envelopes (API Gateway, GeoJSON, Step Functions)
//! are `events`' business.

use serde_json::{Map, Value, json};

use crate::app::{ModelInfo, Outcome, Scored, Timing};
use crate::request::BuildingInput;

/// `{"predictions": [...], "failed": n, "timing": {...}, "model": {...}}`.
pub fn direct(
    model: &ModelInfo,
    buildings: &[BuildingInput],
    outcomes: &[Outcome],
    timing: &Timing,
) -> Value {
    let predictions: Vec<Value> = buildings
        .iter()
        .zip(outcomes)
        .map(|(b, o)| direct_prediction(model, b, o))
        .collect();
    json!({
        "predictions": predictions,
        "failed": failed(outcomes),
        "timing": timing,
        "model": model,
    })
}

/// How many buildings got an error instead of a prediction.
pub fn failed(outcomes: &[Outcome]) -> usize {
    outcomes.iter().filter(|o| o.is_err()).count()
}

/// `{"label", "score", "probabilities": {label: p, …}}` for one successful building, plus
/// `"registry"` when a register is configured.
pub fn scored(model: &ModelInfo, scored: &Scored) -> Map<String, Value> {
    let probabilities: Map<String, Value> = model
        .labels
        .iter()
        .zip(&scored.probabilities)
        .map(|(label, p)| (label.clone(), json!(round6(*p))))
        .collect();
    let mut fields = Map::new();
    fields.insert("label".into(), json!(scored.label));
    fields.insert("score".into(), json!(round6(scored.score)));
    fields.insert("probabilities".into(), Value::Object(probabilities));
    crate::registry::answer::add_listing(&mut fields, scored);
    fields
}

/// One entry of `predictions`: the building as sent, then its prediction or its error.
fn direct_prediction(model: &ModelInfo, building: &BuildingInput, outcome: &Outcome) -> Value {
    let mut entry = Map::new();
    entry.insert("id".into(), building.id.clone());
    entry.insert("lat".into(), building.lat.clone());
    entry.insert("lon".into(), building.lon.clone());
    if !building.properties.is_empty() {
        entry.insert(
            "properties".into(),
            Value::Object(building.properties.clone()),
        );
    }
    match outcome {
        Ok(s) => entry.extend(scored(model, s)),
        Err(error) => {
            entry.insert("error".into(), json!(error));
        }
    }
    Value::Object(entry)
}

/// Six decimals: probabilities are f32, so more digits would only be noise.
fn round6(p: f32) -> f64 {
    (f64::from(p) * 1e6).round() / 1e6
}
