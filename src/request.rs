//! Request bodies → buildings. Each entry becomes a [`BuildingInput`]: its echo fields (id,
//! lat, lon, extra properties) and either a valid position or the per-building error that
//! explains why not. Only request-level problems (no list, empty list, over the limit) refuse
//! the whole request.

use serde_json::{Map, Value};

use crate::error::{BuildingError, ErrorCode, RequestError};
use crate::geo::LatLon;

/// Longest `id` string echoed back; longer ids are refused per building.
pub const MAX_ID_CHARS: usize = 256;

/// One building as the caller sent it, and what we made of it.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildingInput {
    /// The caller's id, or the building's index in the request when it has none.
    pub id: Value,
    /// Echoed as sent (a bad value is echoed too, so the caller sees what was wrong); `None`
    /// when the caller sent none, and then absent from the answer too.
    pub lat: Option<Value>,
    pub lon: Option<Value>,
    /// Fields other than id/lat/lon, echoed back untouched under `properties`.
    pub properties: Map<String, Value>,
    pub position: Result<LatLon, BuildingError>,
}

impl BuildingInput {
    /// A building that cannot be located: its id and why, nothing to echo.
    pub fn failed(id: Value, error: BuildingError) -> Self {
        Self {
            id,
            lat: None,
            lon: None,
            properties: Map::new(),
            position: Err(error),
        }
    }
}

/// Parses a list of `{"id", "lat", "lon", …}` objects (direct invoke, Step Functions items).
pub fn parse_building_list(
    list: &[Value],
    max_buildings: usize,
) -> Result<Vec<BuildingInput>, RequestError> {
    check_count(list.len(), max_buildings)?;
    Ok(list
        .iter()
        .enumerate()
        .map(|(i, v)| parse_building(i, v))
        .collect())
}

/// Refuses empty requests and requests over `MAX_BUILDINGS`.
pub fn check_count(count: usize, max_buildings: usize) -> Result<(), RequestError> {
    if count == 0 {
        return Err(RequestError::Invalid(
            "the request holds no buildings: send at least one".into(),
        ));
    }
    if count > max_buildings {
        return Err(RequestError::TooManyBuildings {
            count,
            limit: max_buildings,
        });
    }
    Ok(())
}

/// One entry of a building list; never fails as a whole.
pub fn parse_building(index: usize, value: &Value) -> BuildingInput {
    let Some(object) = value.as_object() else {
        return BuildingInput::failed(
            Value::from(index),
            BuildingError::new(
                ErrorCode::InvalidBuilding,
                format!(
                    "building {index} is {}, not an object like {{\"id\": \"b1\", \"lat\": 52.2, \"lon\": 21.0}}",
                    kind(value)
                ),
            ),
        );
    };
    let (id, id_error) = parse_id(index, object.get("id"));
    let lat = object.get("lat").cloned();
    let lon = object.get("lon").cloned();
    let properties = object
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "id" | "lat" | "lon"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let position = match id_error {
        Some(error) => Err(error),
        None => position(lat.as_ref(), lon.as_ref()),
    };
    BuildingInput {
        id,
        lat,
        lon,
        properties,
        position,
    }
}

/// A position from JSON numbers; absent values, strings, nulls and out-of-range values are
/// refused.
pub fn position(lat: Option<&Value>, lon: Option<&Value>) -> Result<LatLon, BuildingError> {
    let number = |name: &str, v: Option<&Value>| match v {
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| {
            invalid_coordinates(format!("{name} {n} is not representable as a number"))
        }),
        None | Some(Value::Null) => Err(invalid_coordinates(format!("{name} is missing"))),
        Some(other) => Err(invalid_coordinates(format!(
            "{name} must be a number, not {}",
            kind(other)
        ))),
    };
    let (lat, lon) = (number("lat", lat)?, number("lon", lon)?);
    LatLon::new(lat, lon).map_err(invalid_coordinates)
}

fn invalid_coordinates(message: String) -> BuildingError {
    BuildingError::new(ErrorCode::InvalidCoordinates, message)
}

/// The id to echo, and an error when it cannot be used. Long ids are echoed cut short.
pub fn parse_id(index: usize, id: Option<&Value>) -> (Value, Option<BuildingError>) {
    match id {
        None | Some(Value::Null) => (Value::from(index), None),
        Some(Value::Number(n)) => (Value::Number(n.clone()), None),
        Some(Value::String(s)) if s.chars().count() <= MAX_ID_CHARS => {
            (Value::String(s.clone()), None)
        }
        Some(Value::String(s)) => {
            let short: String = s.chars().take(MAX_ID_CHARS).chain(['…']).collect();
            let error = BuildingError::new(
                ErrorCode::InvalidBuilding,
                format!(
                    "id is {} characters; the limit is {MAX_ID_CHARS}",
                    s.chars().count()
                ),
            );
            (Value::String(short), Some(error))
        }
        Some(other) => {
            let error = BuildingError::new(
                ErrorCode::InvalidBuilding,
                format!(
                    "id must be a string or a number, not {}; echoed as the building's index",
                    kind(other)
                ),
            );
            (Value::from(index), Some(error))
        }
    }
}

/// A JSON value's kind, for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_good_building_keeps_its_id_and_extra_fields() {
        let b = parse_building(
            0,
            &json!({"id": "b1", "lat": 52.2297, "lon": 21.0122, "roof_m2": 120, "note": "ü"}),
        );
        assert_eq!(b.id, json!("b1"));
        assert_eq!(
            b.position.unwrap(),
            LatLon {
                lat: 52.2297,
                lon: 21.0122
            }
        );
        assert_eq!(
            Value::Object(b.properties),
            json!({"roof_m2": 120, "note": "ü"})
        );
    }

    #[test]
    fn missing_ids_become_the_index_and_numbers_stay_numbers() {
        assert_eq!(
            parse_building(7, &json!({"lat": 1.0, "lon": 2.0})).id,
            json!(7)
        );
        assert_eq!(
            parse_building(7, &json!({"id": 42, "lat": 1.0, "lon": 2.0})).id,
            json!(42)
        );
    }

    #[test]
    fn bad_coordinates_are_per_building_errors() {
        for (value, needle) in [
            (
                json!({"lat": 95.0, "lon": 21.0}),
                "outside -85.0511..85.0511",
            ),
            (json!({"lat": 52.0, "lon": 190.0}), "outside -180..180"),
            (
                json!({"lat": "52.1", "lon": 21.0}),
                "must be a number, not a string",
            ),
            (json!({"lon": 21.0}), "lat is missing"),
            (json!({"lat": 52.0, "lon": null}), "lon is missing"),
        ] {
            let b = parse_building(0, &value);
            let err = b.position.unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidCoordinates);
            assert!(err.message.contains(needle), "{value}: {}", err.message);
        }
    }

    #[test]
    fn non_objects_and_bad_ids_are_invalid_buildings() {
        assert_eq!(
            parse_building(3, &json!([1, 2])).position.unwrap_err().code,
            ErrorCode::InvalidBuilding
        );
        let long = "x".repeat(1000);
        let b = parse_building(0, &json!({"id": long, "lat": 1.0, "lon": 1.0}));
        assert_eq!(b.position.unwrap_err().code, ErrorCode::InvalidBuilding);
        assert_eq!(b.id.as_str().unwrap().chars().count(), MAX_ID_CHARS + 1);
        let b = parse_building(2, &json!({"id": {"a": 1}, "lat": 1.0, "lon": 1.0}));
        assert_eq!(
            (b.id, b.position.unwrap_err().code),
            (json!(2), ErrorCode::InvalidBuilding)
        );
    }

    #[test]
    fn empty_and_oversized_lists_refuse_the_request() {
        assert!(matches!(
            parse_building_list(&[], 10),
            Err(RequestError::Invalid(_))
        ));
        let list = vec![json!({"lat": 1.0, "lon": 1.0}); 11];
        assert_eq!(
            parse_building_list(&list, 10).unwrap_err(),
            RequestError::TooManyBuildings {
                count: 11,
                limit: 10
            }
        );
        assert_eq!(parse_building_list(&list, 11).unwrap().len(), 11);
    }
}
