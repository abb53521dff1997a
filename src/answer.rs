//! Outcomes → answer JSON, shared by every caller: the direct answer
//! (`{"predictions", "failed", "timing", "model"}`) and the prediction object that GeoJSON
//! answers put under `properties.prediction`. Envelopes (API Gateway, GeoJSON, Step Functions)
//! are `events`' business.

use serde_json::{Map, Value, json};

use crate::outcome::{ModelInfo, Outcome, Scored, Timing, failed};
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

/// `{"label", "score", "probabilities": {label: p, …}}` for one successful building, with
/// `"labels"` (every label at or above the threshold) for a multilabel model, plus
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
    if let Some(labels) = &scored.labels {
        fields.insert("labels".into(), json!(labels));
    }
    fields.insert("probabilities".into(), Value::Object(probabilities));
    crate::registry::answer::add_listing(&mut fields, scored);
    fields
}

/// One entry of `predictions`: the building as sent, then its prediction or its error. Also a
/// line of a local run's JSON Lines output.
pub fn direct_prediction(model: &ModelInfo, building: &BuildingInput, outcome: &Outcome) -> Value {
    let mut entry = Map::new();
    entry.insert("id".into(), building.id.clone());
    for (name, value) in [("lat", &building.lat), ("lon", &building.lon)] {
        if let Some(value) = value {
            entry.insert(name.into(), value.clone());
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::parse_building;

    #[test]
    fn coordinates_are_echoed_as_sent_and_absent_ones_stay_absent() {
        let model = ModelInfo::named("file:///m.onnx", "1", &["a"]);
        let buildings = [
            parse_building(0, &json!({"id": "no-lon", "lat": 52.2})),
            parse_building(1, &json!({"id": "null-lon", "lat": 52.2, "lon": null})),
            parse_building(2, &json!({"id": "text", "lat": "52.2", "lon": 21.0})),
            parse_building(3, &json!([1, 2])),
        ];
        let outcomes: Vec<Outcome> = buildings
            .iter()
            .map(|b| Err(b.position.clone().unwrap_err()))
            .collect();
        let answer = direct(&model, &buildings, &outcomes, &Timing::default());
        let p = &answer["predictions"];
        assert_eq!(p[0]["lat"], json!(52.2));
        assert!(p[0].get("lon").is_none(), "{}", p[0]);
        assert_eq!(p[1]["lon"], Value::Null);
        assert!(p[1].get("lon").is_some(), "{}", p[1]);
        assert_eq!(p[2]["lat"], json!("52.2"));
        assert!(
            p[3].get("lat").is_none() && p[3].get("lon").is_none(),
            "{}",
            p[3]
        );
        assert_eq!(answer["failed"], 4);
    }
}
