//! Step Functions Distributed Map batches: with an ItemBatcher, each child execution invokes
//! the function with `{"Items": [...], "BatchInput": {...}}`. Items are buildings like a direct
//! invoke's. Items read from a CSV file (ItemReader `InputType: CSV`) carry every value as a
//! string, so for this shape `lat`/`lon` strings holding a number are read as that number.
//!
//! The answer is the direct answer plus `batch_input`: the `BatchInput` as sent, so results
//! written by the Map's ResultWriter can be traced to the run that produced them. Request-level
//! errors stay Lambda errors with a readable `errorType` (`TooManyBuildings`, …), which a state
//! machine can `Retry`/`Catch` by name.

use serde_json::{Map, Number, Value};

use crate::error::RequestError;
use crate::outcome::{ModelInfo, Outcome, Timing};
use crate::request::{BuildingInput, kind, parse_building_list};

/// One ItemBatcher batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub buildings: Vec<BuildingInput>,
    /// `BatchInput` as sent, echoed as `batch_input`; absent when the batcher sets none.
    pub batch_input: Option<Value>,
}

/// Parses `{"Items": [...], "BatchInput": {...}}`.
pub fn parse(mut event: Map<String, Value>, max_buildings: usize) -> Result<Batch, RequestError> {
    let items = match event.get("Items") {
        Some(Value::Array(items)) => items.iter().map(numbers_from_csv).collect::<Vec<_>>(),
        Some(other) => {
            return Err(RequestError::Invalid(format!(
                "\"Items\" must be an array, not {}",
                kind(other)
            )));
        }
        None => return Err(RequestError::Invalid("no \"Items\" member".into())),
    };
    Ok(Batch {
        buildings: parse_building_list(&items, max_buildings)?,
        batch_input: event.remove("BatchInput"),
    })
}

impl Batch {
    /// The direct answer, plus `batch_input` when the batch had one.
    pub fn answer(self, model: &ModelInfo, outcomes: &[Outcome], timing: &Timing) -> Value {
        let mut answer = crate::answer::direct(model, &self.buildings, outcomes, timing);
        if let (Some(batch_input), Value::Object(members)) = (self.batch_input, &mut answer) {
            members.insert("batch_input".into(), batch_input);
        }
        answer
    }
}

/// An item with numeric `lat`/`lon` strings (as a CSV ItemReader gives them) made numbers.
/// Anything else is left alone for the usual per-building validation to judge.
fn numbers_from_csv(item: &Value) -> Value {
    let mut item = item.clone();
    if let Value::Object(fields) = &mut item {
        for key in ["lat", "lon"] {
            let number = fields
                .get(key)
                .and_then(Value::as_str)
                .and_then(|s| s.trim().parse::<f64>().ok())
                .and_then(Number::from_f64);
            if let Some(number) = number {
                fields.insert(key.into(), Value::Number(number));
            }
        }
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::geo::LatLon;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn items_from_csv_or_json_become_buildings() {
        let batch = parse(
            object(json!({
                "Items": [
                    {"id": "csv", "lat": "52.2297", "lon": " 21.0122 ", "address": "Marszałkowska 1"},
                    {"id": "json", "lat": 52.2297, "lon": 21.0122},
                    {"id": "text", "lat": "north", "lon": "21.0"},
                    {"id": "nan", "lat": "NaN", "lon": "21.0"}
                ],
                "BatchInput": {"run": "2024-05-01"}
            })),
            10,
        )
        .unwrap();
        let want = LatLon::new(52.2297, 21.0122).unwrap();
        assert_eq!(batch.buildings[0].position, Ok(want));
        assert_eq!(batch.buildings[0].lat, Some(json!(52.2297)));
        assert_eq!(batch.buildings[0].properties["address"], "Marszałkowska 1");
        assert_eq!(batch.buildings[1].position, Ok(want));
        for b in &batch.buildings[2..] {
            let err = b.position.as_ref().unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidCoordinates, "{b:?}");
            assert!(
                err.message.contains("must be a number, not a string"),
                "{b:?}"
            );
        }
        assert_eq!(batch.batch_input, Some(json!({"run": "2024-05-01"})));
    }

    #[test]
    fn the_answer_echoes_batch_input_only_when_sent() {
        let model = ModelInfo::named("file:///m.onnx", "1", &["a"]);
        let items = json!([{"lat": 1.0, "lon": 2.0}]);
        for (event, echoed) in [
            (
                json!({"Items": items, "BatchInput": {"job": 7}}),
                Some(json!({"job": 7})),
            ),
            (json!({"Items": items}), None),
        ] {
            let batch = parse(object(event), 5).unwrap();
            let outcomes: Vec<Outcome> = vec![Err(crate::error::BuildingError::new(
                ErrorCode::ImageUnavailable,
                "404",
            ))];
            let answer = batch.answer(&model, &outcomes, &Timing::default());
            assert_eq!(answer.get("batch_input").cloned(), echoed);
            assert_eq!(answer["failed"], 1);
            assert_eq!(
                answer["predictions"][0]["error"]["code"],
                "image_unavailable"
            );
        }
    }

    #[test]
    fn batches_without_usable_items_are_refused_whole() {
        let err = parse(object(json!({"Items": "b1,52.2,21.0"})), 5).unwrap_err();
        assert_eq!(err.to_string(), "\"Items\" must be an array, not a string");
        assert_eq!(
            parse(object(json!({"Items": []})), 5)
                .unwrap_err()
                .error_type(),
            "InvalidRequest"
        );
        let six = json!({"Items": vec![json!({"lat": 1.0, "lon": 1.0}); 6]});
        assert_eq!(
            parse(object(six), 5).unwrap_err().error_type(),
            "TooManyBuildings"
        );
    }
}
