//! `"include_chips": true`: a direct or GeoJSON request (also as an API Gateway body) may ask
//! for each building's chip, as base64 JPEG, beside its prediction. This reads the flag and
//! puts the chips in their place in the answer: a direct answer's prediction entry (`chip`),
//! a GeoJSON feature's `properties.chip`. Step Functions batches do not take it: their results
//! travel through a state machine's 256 KiB state.

use serde_json::Value;

use crate::error::RequestError;
use crate::request::kind;

/// What a request asks for besides its buildings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    pub include_chips: bool,
}

/// The request's options: `include_chips` absent or null is false; anything but a boolean is
/// refused rather than guessed.
pub fn options(request: &Value) -> Result<Options, RequestError> {
    let include_chips = match request.get("include_chips") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(RequestError::Invalid(format!(
                "\"include_chips\" must be true or false, not {}",
                kind(other)
            )));
        }
    };
    Ok(Options { include_chips })
}

/// Puts `chips[i]` (base64 JPEG) on the answer's i-th building; `None` (no chip was made)
/// adds nothing.
pub fn add(answer: &mut Value, chips: Vec<Option<String>>) {
    if let Some(entries) = answer.get_mut("predictions").and_then(Value::as_array_mut) {
        for (entry, chip) in entries.iter_mut().zip(chips) {
            if let (Some(chip), Value::Object(entry)) = (chip, entry) {
                entry.insert("chip".into(), Value::String(chip));
            }
        }
    } else if let Some(features) = answer.get_mut("features").and_then(Value::as_array_mut) {
        for (feature, chip) in features.iter_mut().zip(chips) {
            if let (Some(chip), Some(Value::Object(properties))) =
                (chip, feature.get_mut("properties"))
            {
                properties.insert("chip".into(), Value::String(chip));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_flag_is_a_boolean_or_absent() {
        assert!(!options(&json!({"buildings": []})).unwrap().include_chips);
        assert!(
            !options(&json!({"include_chips": null}))
                .unwrap()
                .include_chips
        );
        assert!(
            options(&json!({"include_chips": true}))
                .unwrap()
                .include_chips
        );
        let err = options(&json!({"include_chips": "yes"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"include_chips\" must be true or false, not a string"
        );
    }

    #[test]
    fn chips_go_beside_each_buildings_answer() {
        let mut direct = json!({"predictions": [{"id": 1}, {"id": 2}]});
        add(&mut direct, vec![Some("AAA".into()), None]);
        assert_eq!(direct["predictions"][0]["chip"], "AAA");
        assert!(direct["predictions"][1].get("chip").is_none());
        let mut geo = json!({"type": "FeatureCollection", "features": [{"properties": {"a": 1}}]});
        add(&mut geo, vec![Some("BBB".into())]);
        assert_eq!(
            geo["features"][0]["properties"],
            json!({"a": 1, "chip": "BBB"})
        );
    }
}
