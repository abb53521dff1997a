//! GeoJSON (RFC 7946) FeatureCollections in and out. Each feature becomes one building at its
//! geometry's point: a Point as is, a Polygon or MultiPolygon at its area-weighted centroid
//! ([`crate::centroid`]). Ids come from `feature.id`, else `properties.id`, else the index.
//!
//! The answer is the collection as sent, every feature annotated with
//! `properties.prediction` (`{"label", "score", "probabilities"}`) or `properties.error`, plus
//! top-level `failed`, `timing` and `model` (foreign members, which RFC 7946 allows).
//! A feature that cannot be located gets its error; the rest of the collection goes on.
//!
//! Read from the request's `Value` by hand, not through the `geojson` crate: the echo must stay the
//! caller's own JSON, the crate's errors do not say which position is wrong, and building its typed
//! geometry is slower than reading the `Value` already parsed (docs/PERFORMANCE.md, "Hand-written
//! geometry vs crates").

use serde_json::{Map, Value, json};

use crate::centroid::{self, Polygon, Ring};
use crate::error::{BuildingError, ErrorCode, RequestError};
use crate::geo::LatLon;
use crate::outcome::{ModelInfo, Outcome, Timing};
use crate::request::{BuildingInput, check_count, kind, parse_id};

/// A parsed FeatureCollection: the input (its `features` kept apart, to be annotated) and
/// one building per feature.
#[derive(Debug, Clone, PartialEq)]
pub struct Collection {
    /// The collection's members as sent; `features` is put back, annotated, by [`Self::answer`].
    members: Map<String, Value>,
    features: Vec<Value>,
    pub buildings: Vec<BuildingInput>,
}

/// Parses a FeatureCollection; only a missing/empty/oversized `features` list refuses it whole.
pub fn parse(
    mut members: Map<String, Value>,
    max_buildings: usize,
) -> Result<Collection, RequestError> {
    let features = match members.get_mut("features") {
        Some(Value::Array(features)) => std::mem::take(features),
        Some(other) => {
            return Err(RequestError::Invalid(format!(
                "\"features\" must be an array, not {}",
                kind(other)
            )));
        }
        None => {
            return Err(RequestError::Invalid(
                "the FeatureCollection has no \"features\" array".into(),
            ));
        }
    };
    check_count(features.len(), max_buildings)?;
    let buildings = features
        .iter()
        .enumerate()
        .map(|(i, f)| building(i, f))
        .collect();
    Ok(Collection {
        members,
        features,
        buildings,
    })
}

impl Collection {
    /// The collection with each feature annotated, plus `failed`, `timing` and `model`.
    pub fn answer(self, model: &ModelInfo, outcomes: &[Outcome], timing: &Timing) -> Value {
        let features: Vec<Value> = self
            .features
            .into_iter()
            .zip(outcomes)
            .map(|(feature, outcome)| annotate(feature, model, outcome))
            .collect();
        let mut members = self.members;
        // `features` is still in its place (emptied by `parse`), so member order is kept.
        members.insert("features".into(), Value::Array(features));
        members.insert("failed".into(), json!(crate::outcome::failed(outcomes)));
        members.insert("timing".into(), json!(timing));
        members.insert("model".into(), json!(model));
        Value::Object(members)
    }
}

/// One feature as a building: its id and the point its chip is centred on. Also how a local
/// run reads a feature (`files`), so both name a feature's id alike.
pub fn building(index: usize, feature: &Value) -> BuildingInput {
    let Some(object) = feature.as_object() else {
        let error = BuildingError::new(
            ErrorCode::InvalidBuilding,
            format!(
                "feature {index} is {}, not a GeoJSON Feature object",
                kind(feature)
            ),
        );
        return unlocated(Value::from(index), error);
    };
    let properties = object.get("properties");
    let id_value = match object.get("id") {
        Some(id) if !id.is_null() => Some(id),
        _ => properties.and_then(|p| p.get("id")),
    };
    let (id, id_error) = parse_id(index, id_value);
    if let Some(error) = id_error {
        return unlocated(id, error);
    }
    if let Some(p) = properties.filter(|p| !p.is_object() && !p.is_null()) {
        let error = BuildingError::new(
            ErrorCode::InvalidBuilding,
            format!("properties must be an object or null, not {}", kind(p)),
        );
        return unlocated(id, error);
    }
    match locate(object.get("geometry")) {
        Ok(point) => BuildingInput {
            id,
            lat: Some(json!(point.lat)),
            lon: Some(json!(point.lon)),
            properties: Map::new(),
            position: Ok(point),
        },
        Err(error) => unlocated(id, error),
    }
}

fn unlocated(id: Value, error: BuildingError) -> BuildingInput {
    BuildingInput {
        id,
        lat: None,
        lon: None,
        properties: Map::new(),
        position: Err(error),
    }
}

/// The point a geometry is classified at.
pub fn locate(geometry: Option<&Value>) -> Result<LatLon, BuildingError> {
    let Some(Value::Object(geometry)) = geometry else {
        return Err(invalid_geometry(
            "the feature has no geometry: send a Point, Polygon or MultiPolygon".into(),
        ));
    };
    let coordinates = geometry.get("coordinates").unwrap_or(&Value::Null);
    match geometry.get("type").and_then(Value::as_str) {
        Some("Point") => position(coordinates),
        Some("Polygon") => centroid::polygon(&polygon(coordinates)?).map_err(invalid_geometry),
        Some("MultiPolygon") => {
            let polygons = array(coordinates, "MultiPolygon coordinates")?
                .iter()
                .map(polygon)
                .collect::<Result<Vec<Polygon>, _>>()?;
            centroid::multipolygon(&polygons).map_err(invalid_geometry)
        }
        Some(other) => Err(invalid_geometry(format!(
            "{other} geometries are not supported: send a Point, Polygon or MultiPolygon"
        ))),
        None => Err(invalid_geometry(
            "the geometry has no \"type\" string".into(),
        )),
    }
}

/// `[[ring], [hole], …]`, each ring `[[lon, lat], …]`.
fn polygon(value: &Value) -> Result<Polygon, BuildingError> {
    array(value, "Polygon coordinates")?
        .iter()
        .map(|ring| {
            array(ring, "a linear ring")?
                .iter()
                .map(position)
                .collect::<Result<Ring, _>>()
        })
        .collect()
}

/// `[lon, lat]` or `[lon, lat, altitude]`: numbers, in web mercator's range.
fn position(value: &Value) -> Result<LatLon, BuildingError> {
    let numbers: Option<Vec<f64>> = value
        .as_array()
        .and_then(|items| items.iter().map(Value::as_f64).collect());
    match numbers.as_deref() {
        Some([lon, lat] | [lon, lat, _]) => LatLon::new(*lat, *lon)
            .map_err(|e| BuildingError::new(ErrorCode::InvalidCoordinates, e)),
        _ => Err(invalid_geometry(format!(
            "a position must be [lon, lat] numbers (optionally with an altitude), not {}",
            short(value)
        ))),
    }
}

fn array<'a>(value: &'a Value, what: &str) -> Result<&'a Vec<Value>, BuildingError> {
    value
        .as_array()
        .ok_or_else(|| invalid_geometry(format!("{what} must be an array, not {}", kind(value))))
}

/// A value for a message, cut short (a bad position may be a whole nested array).
fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn invalid_geometry(message: String) -> BuildingError {
    BuildingError::new(ErrorCode::InvalidGeometry, message)
}

/// Puts a feature's prediction or error into its `properties`.
pub fn annotate(feature: Value, model: &ModelInfo, outcome: &Outcome) -> Value {
    let (key, value) = match outcome {
        Ok(scored) => (
            "prediction",
            Value::Object(crate::answer::scored(model, scored)),
        ),
        Err(error) => ("error", json!(error)),
    };
    let mut feature = match feature {
        Value::Object(object) => object,
        // Not a Feature at all: answer with one that carries the error, in the same place.
        _ => Map::from_iter([
            ("type".to_string(), json!("Feature")),
            ("geometry".to_string(), Value::Null),
        ]),
    };
    let properties = feature
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if !properties.is_object() {
        *properties = Value::Object(Map::new());
    }
    if let Value::Object(properties) = properties {
        properties.insert(key.into(), value);
    }
    Value::Object(feature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Scored;

    fn collection(features: Value) -> Map<String, Value> {
        json!({"type": "FeatureCollection", "name": "roofs", "features": features})
            .as_object()
            .unwrap()
            .clone()
    }

    fn point(lon: f64, lat: f64) -> Value {
        json!({"type": "Point", "coordinates": [lon, lat]})
    }

    fn square(lon: f64, lat: f64, d: f64) -> Value {
        json!([[
            [lon - d, lat - d],
            [lon + d, lat - d],
            [lon + d, lat + d],
            [lon - d, lat + d],
            [lon - d, lat - d]
        ]])
    }

    fn error_code(b: &BuildingInput) -> ErrorCode {
        b.position.as_ref().unwrap_err().code
    }

    #[test]
    fn points_polygons_and_multipolygons_are_located() {
        let p = locate(Some(&point(21.0122, 52.2297))).unwrap();
        assert_eq!((p.lat, p.lon), (52.2297, 21.0122));
        // With an altitude, as RFC 7946 allows.
        let p = locate(Some(
            &json!({"type": "Point", "coordinates": [21.0, 52.0, 110.5]}),
        ));
        assert_eq!(p.unwrap().lon, 21.0);

        let poly = json!({"type": "Polygon", "coordinates": square(21.0122, 52.2297, 0.0001)});
        let c = locate(Some(&poly)).unwrap();
        assert!(
            (c.lon - 21.0122).abs() < 1e-9 && (c.lat - 52.2297).abs() < 1e-7,
            "{c:?}"
        );

        // Two equal squares: the centroid is midway between them.
        let a = square(21.0, 52.0, 0.0001);
        let b = square(21.001, 52.0, 0.0001);
        let multi = json!({"type": "MultiPolygon", "coordinates": [a, b]});
        let c = locate(Some(&multi)).unwrap();
        assert!((c.lon - 21.0005).abs() < 1e-9, "{c:?}");
    }

    #[test]
    fn bad_geometries_are_per_feature_errors_with_a_reason() {
        let cases = [
            (Value::Null, ErrorCode::InvalidGeometry, "no geometry"),
            (
                json!({"type": "LineString", "coordinates": [[21.0, 52.0], [21.1, 52.1]]}),
                ErrorCode::InvalidGeometry,
                "LineString geometries are not supported",
            ),
            (
                json!({"coordinates": [1, 2]}),
                ErrorCode::InvalidGeometry,
                "no \"type\"",
            ),
            (
                json!({"type": "Point", "coordinates": ["21.0", 52.0]}),
                ErrorCode::InvalidGeometry,
                "[lon, lat] numbers",
            ),
            (
                json!({"type": "Point", "coordinates": [21.0]}),
                ErrorCode::InvalidGeometry,
                "[lon, lat] numbers",
            ),
            (
                json!({"type": "Point", "coordinates": [21.0, 95.0]}),
                ErrorCode::InvalidCoordinates,
                "lat 95",
            ),
            (
                json!({"type": "Polygon", "coordinates": [[[21.0, 52.0], [21.0, 52.0001], [21.0, 52.0]]]}),
                ErrorCode::InvalidGeometry,
                "at least 3",
            ),
            (
                json!({"type": "Polygon", "coordinates": [[[21.0, 52.0], [21.0001, 52.0001], [21.0002, 52.0002], [21.0, 52.0]]]}),
                ErrorCode::InvalidGeometry,
                "no area",
            ),
            (
                json!({"type": "Polygon", "coordinates": [21.0, 52.0]}),
                ErrorCode::InvalidGeometry,
                "a linear ring must be an array",
            ),
            (
                json!({"type": "Polygon", "coordinates": [[[21.0, 52.0], [21.1, 52.0], [21.0, 52.1]], [[21.0]]]}),
                ErrorCode::InvalidGeometry,
                "a position must be [lon, lat]",
            ),
            (
                json!({"type": "MultiPolygon", "coordinates": {}}),
                ErrorCode::InvalidGeometry,
                "MultiPolygon coordinates must be an array",
            ),
            (
                json!({"type": "Polygon", "coordinates": [[[21.0, 52.0], [200.0, 52.0], [21.0, 53.0]]]}),
                ErrorCode::InvalidCoordinates,
                "lon 200",
            ),
        ];
        for (geometry, code, needle) in cases {
            let err = locate(Some(&geometry)).unwrap_err();
            assert_eq!(err.code, code, "{geometry}: {}", err.message);
            assert!(err.message.contains(needle), "{geometry}: {}", err.message);
        }
    }

    #[test]
    fn ids_come_from_the_feature_then_its_properties_then_the_index() {
        let features = json!([
            {"type": "Feature", "id": "f-1", "properties": {"id": "ignored"}, "geometry": point(21.0, 52.0)},
            {"type": "Feature", "id": 7, "geometry": point(21.0, 52.0)},
            {"type": "Feature", "properties": {"id": "from-props"}, "geometry": point(21.0, 52.0)},
            {"type": "Feature", "properties": null, "geometry": point(21.0, 52.0)},
            {"type": "Feature", "id": {"no": 1}, "geometry": point(21.0, 52.0)},
        ]);
        let c = parse(collection(features), 10).unwrap();
        let ids: Vec<&Value> = c.buildings.iter().map(|b| &b.id).collect();
        assert_eq!(
            ids,
            [
                &json!("f-1"),
                &json!(7),
                &json!("from-props"),
                &json!(3),
                &json!(4)
            ]
        );
        assert!(c.buildings[..4].iter().all(|b| b.position.is_ok()));
        assert_eq!(error_code(&c.buildings[4]), ErrorCode::InvalidBuilding);
    }

    #[test]
    fn non_features_and_bad_properties_fail_alone() {
        let features =
            json!(["nope", {"type": "Feature", "properties": [1], "geometry": point(21.0, 52.0)}]);
        let c = parse(collection(features), 10).unwrap();
        assert_eq!(error_code(&c.buildings[0]), ErrorCode::InvalidBuilding);
        assert!(
            c.buildings[1]
                .position
                .as_ref()
                .unwrap_err()
                .message
                .contains("properties must be an object")
        );
    }

    #[test]
    fn collections_without_usable_features_are_refused_whole() {
        let mut no_features = collection(json!([]));
        no_features.remove("features");
        let err = parse(no_features, 10).unwrap_err();
        assert!(err.to_string().contains("no \"features\" array"), "{err}");
        let err = parse(collection(json!({})), 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"features\" must be an array, not an object"
        );
        assert_eq!(
            parse(collection(json!([])), 10).unwrap_err().code(),
            "invalid_request"
        );
        let three = json!([{"geometry": point(1.0, 1.0)}, {"geometry": point(1.0, 1.0)}, {"geometry": point(1.0, 1.0)}]);
        assert_eq!(
            parse(collection(three), 2).unwrap_err().code(),
            "too_many_buildings"
        );
    }

    #[test]
    fn the_answer_is_the_input_annotated_in_place() {
        let features = json!([
            {"type": "Feature", "id": "a", "properties": {"roof": "flat"}, "geometry": point(21.0, 52.0)},
            {"type": "Feature", "id": "b", "geometry": {"type": "LineString", "coordinates": []}},
            "garbage",
        ]);
        let c = parse(collection(features), 10).unwrap();
        let outcomes: Vec<Outcome> = c
            .buildings
            .iter()
            .map(|b| match &b.position {
                Ok(_) => Ok(Scored {
                    label: "red".into(),
                    score: 0.75,
                    probabilities: vec![0.75, 0.25],
                    labels: None,
                    registry: None,
                }),
                Err(e) => Err(e.clone()),
            })
            .collect();
        let model = ModelInfo::named("file:///m.onnx", "1", &["red", "blue"]);
        let answer = c.answer(&model, &outcomes, &Timing::default());
        let keys: Vec<&String> = answer.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["type", "name", "features", "failed", "timing", "model"]
        );
        assert_eq!(answer["failed"], 2);
        let f = &answer["features"];
        assert_eq!(
            f[0]["properties"],
            json!({"roof": "flat", "prediction": {"label": "red", "score": 0.75, "probabilities": {"red": 0.75, "blue": 0.25}}})
        );
        assert_eq!(f[0]["geometry"], point(21.0, 52.0));
        assert_eq!(f[1]["properties"]["error"]["code"], "invalid_geometry");
        assert_eq!(f[1]["id"], "b");
        assert_eq!(f[2]["type"], "Feature");
        assert_eq!(f[2]["properties"]["error"]["code"], "invalid_building");
        assert_eq!(answer["model"]["labels"], json!(["red", "blue"]));
    }
}
