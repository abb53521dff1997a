//! Lambda events in, answers out: recognises the event's shape, parses the buildings, runs
//! [`App::predict`], and shapes the answer for that caller.
//!
//! Shapes: direct invoke `{"buildings": [...]}`. Detection is explicit; anything else is a
//! clear `InvalidRequest` listing the shapes we accept.

use std::time::{Instant, SystemTime};

use serde_json::{Map, Value, json};

use crate::app::{App, Outcome, Timing};
use crate::error::RequestError;
use crate::registry;
use crate::request::{BuildingInput, kind, parse_building_list};

/// The shapes a caller may send, for error messages.
pub const ACCEPTED_SHAPES: &str =
    "a direct invoke {\"buildings\": [{\"id\", \"lat\", \"lon\"}, ...]}";

/// Handles one invocation. `deadline` is Lambda's (None when run locally).
pub async fn handle(
    app: &App,
    event: Value,
    deadline: Option<SystemTime>,
) -> Result<Value, RequestError> {
    let started = Instant::now();
    let cutoff = cutoff(deadline, app.config.deadline_margin);
    let Some(object) = event.as_object() else {
        return Err(RequestError::Invalid(format!(
            "the event is {}; expected {ACCEPTED_SHAPES}",
            kind(&event)
        )));
    };
    match object.get("buildings") {
        Some(Value::Array(list)) => {
            let buildings = parse_building_list(list, app.config.max_buildings)?;
            let (outcomes, timing) = app.predict(&buildings, cutoff, started).await;
            log_invocation(&timing, &outcomes);
            Ok(direct_answer(app, &buildings, &outcomes, &timing))
        }
        Some(other) => Err(RequestError::Invalid(format!(
            "\"buildings\" must be an array, not {}",
            kind(other)
        ))),
        None => Err(RequestError::Invalid(format!(
            "unrecognised event; expected {ACCEPTED_SHAPES}"
        ))),
    }
}

/// When work must stop: the deadline less the margin (15 minutes away when run locally).
pub fn cutoff(deadline: Option<SystemTime>, margin: std::time::Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    match deadline {
        Some(deadline) => {
            let left = deadline
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            now + left.saturating_sub(margin)
        }
        None => now + std::time::Duration::from_secs(900),
    }
}

/// `{"predictions": [...], "failed": n, "timing": {...}, "model": {...}}`, plus the
/// `"registry"` summary when a registry is configured.
pub fn direct_answer(
    app: &App,
    buildings: &[BuildingInput],
    outcomes: &[Outcome],
    timing: &Timing,
) -> Value {
    let predictions: Vec<Value> = buildings
        .iter()
        .zip(outcomes)
        .map(|(b, o)| prediction(app, b, o))
        .collect();
    let mut answer = json!({
        "predictions": predictions,
        "failed": outcomes.iter().filter(|o| o.is_err()).count(),
        "timing": timing,
        "model": app.model_info,
    });
    if let Some(summary) = registry::answer::summary(app, outcomes) {
        answer["registry"] = summary;
    }
    answer
}

fn prediction(app: &App, building: &BuildingInput, outcome: &Outcome) -> Value {
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
        Ok(scored) => {
            entry.insert("label".into(), json!(scored.label));
            entry.insert("score".into(), json!(round6(scored.score)));
            let probabilities: Map<String, Value> = app
                .model_info
                .labels
                .iter()
                .zip(&scored.probabilities)
                .map(|(label, p)| (label.clone(), json!(round6(*p))))
                .collect();
            entry.insert("probabilities".into(), Value::Object(probabilities));
            registry::answer::add_listing(&mut entry, scored);
        }
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

fn log_invocation(timing: &Timing, outcomes: &[Outcome]) {
    let failed = outcomes.iter().filter(|o| o.is_err()).count();
    tracing::info!(
        buildings = outcomes.len(),
        failed,
        cold_start = timing.cold_start,
        total_ms = timing.total_ms,
        download_ms = timing.download_ms,
        inference_ms = timing.inference_ms,
        images_fetched = timing.images_fetched,
        cache_hits = timing.cache_hits,
        batches = timing.batches,
        "invocation done"
    );
}
