//! GeoJSON registers: a `FeatureCollection` whose features are Points, MultiPoints, Polygons
//! or MultiPolygons (building footprints). A feature's `properties` are its record, with the
//! feature's `id` added as `"id"` when the properties have none.
//!
//! Each feature is parsed on its own from a borrowed slice of the file, so a bad feature is
//! reported (or skipped) by its index and the file is never copied into a tree of
//! `serde_json::Value`s, which would take several times its size in memory.
//!
//! Not the `geojson` crate's `Feature`: it refuses features without `"type"` (this reader takes
//! them), and decodes every feature's properties into a map only for them to be re-encoded, which
//! makes loading slower (docs/PERFORMANCE.md, "Hand-written geometry vs crates").

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::index::{Position, Rings};
use super::records::Records;
use super::rows::{ParseError, Parsed, Row, check_position};

#[derive(Deserialize)]
struct Collection<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(borrow, default)]
    features: Option<Vec<&'a RawValue>>,
}

#[derive(Deserialize)]
struct Feature<'a> {
    #[serde(default)]
    id: Option<Value>,
    #[serde(borrow, default)]
    geometry: Option<&'a RawValue>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Geometry<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(borrow)]
    coordinates: &'a RawValue,
}

/// The geometry of one feature.
enum Shape {
    Points(Vec<Position>),
    Polygons(Vec<Rings>),
}

/// Parses the whole file; the first bad feature fails it unless `skip_bad_rows`.
pub fn parse(bytes: &[u8], skip_bad_rows: bool) -> Result<Parsed, ParseError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let collection: Collection<'_> = serde_json::from_slice(bytes)
        .map_err(|e| ParseError::document(format!("not a GeoJSON FeatureCollection: {e}")))?;
    if collection.kind != "FeatureCollection" {
        return Err(ParseError::document(format!(
            "a GeoJSON {} where a FeatureCollection was expected",
            collection.kind
        )));
    }
    let features = collection
        .features
        .ok_or_else(|| ParseError::document("the FeatureCollection has no \"features\" array"))?;
    let mut parsed = Parsed::new(Records::json(), skip_bad_rows);
    for (i, raw) in features.into_iter().enumerate() {
        match feature(raw) {
            Ok((shape, record_text)) => {
                let record = parsed.next_record()?;
                parsed
                    .records
                    .push_json(&record_text)
                    .map_err(ParseError::document)?;
                match shape {
                    Shape::Points(points) => {
                        parsed
                            .points
                            .extend(points.into_iter().map(|p| (p, record)));
                    }
                    Shape::Polygons(polygons) => {
                        parsed
                            .polygons
                            .extend(polygons.into_iter().map(|p| (p, record)));
                    }
                }
            }
            Err(reason) => parsed
                .bad_rows
                .handle(ParseError::at(Row::Feature(i), reason))?,
        }
    }
    Ok(parsed)
}

/// One feature's shape and its record's JSON text, or why it cannot be used.
fn feature(raw: &RawValue) -> Result<(Shape, String), String> {
    let feature: Feature<'_> =
        serde_json::from_str(raw.get()).map_err(|e| format!("not a GeoJSON Feature: {e}"))?;
    let geometry = feature
        .geometry
        .filter(|g| g.get() != "null")
        .ok_or("the feature has no geometry")?;
    let geometry: Geometry<'_> = serde_json::from_str(geometry.get())
        .map_err(|e| format!("the geometry is not a GeoJSON geometry: {e}"))?;
    let shape = shape(&geometry)?;
    Ok((shape, record(feature.id, feature.properties)?))
}

fn shape(geometry: &Geometry<'_>) -> Result<Shape, String> {
    let coordinates = geometry.coordinates.get();
    let parse_error = |e: serde_json::Error| {
        format!(
            "{} coordinates are not the right nesting of numbers: {e}",
            geometry.kind
        )
    };
    match geometry.kind.as_str() {
        "Point" => {
            let point: Vec<f64> = serde_json::from_str(coordinates).map_err(parse_error)?;
            Ok(Shape::Points(vec![position(&point)?]))
        }
        "MultiPoint" => {
            let points: Vec<Vec<f64>> = serde_json::from_str(coordinates).map_err(parse_error)?;
            let points = points
                .iter()
                .map(|p| position(p))
                .collect::<Result<Vec<_>, _>>()?;
            if points.is_empty() {
                return Err("the MultiPoint has no points".into());
            }
            Ok(Shape::Points(points))
        }
        "Polygon" => {
            let polygon: Vec<Vec<Vec<f64>>> =
                serde_json::from_str(coordinates).map_err(parse_error)?;
            Ok(Shape::Polygons(vec![rings(&polygon)?]))
        }
        "MultiPolygon" => {
            let polygons: Vec<Vec<Vec<Vec<f64>>>> =
                serde_json::from_str(coordinates).map_err(parse_error)?;
            if polygons.is_empty() {
                return Err("the MultiPolygon has no polygons".into());
            }
            let polygons = polygons
                .iter()
                .map(|p| rings(p))
                .collect::<Result<_, _>>()?;
            Ok(Shape::Polygons(polygons))
        }
        other => Err(format!(
            "geometry type {other} is not supported (Point, MultiPoint, Polygon, MultiPolygon)"
        )),
    }
}

/// `[lon, lat]` or `[lon, lat, altitude]`.
fn position(numbers: &[f64]) -> Result<Position, String> {
    match numbers {
        [lon, lat, ..] => check_position(*lat, *lon),
        _ => Err(format!("a position needs [lon, lat], got {numbers:?}")),
    }
}

/// A polygon's rings: each a closed line of at least four positions (RFC 7946 §3.1.6).
fn rings(polygon: &[Vec<Vec<f64>>]) -> Result<Rings, String> {
    if polygon.is_empty() {
        return Err("the polygon has no rings".into());
    }
    polygon
        .iter()
        .map(|ring| {
            let ring = ring
                .iter()
                .map(|p| position(p))
                .collect::<Result<Vec<_>, _>>()?;
            if ring.len() < 4 {
                return Err(format!(
                    "a polygon ring needs at least 4 positions, got {}",
                    ring.len()
                ));
            }
            Ok(ring)
        })
        .collect()
}

/// The record's JSON text: the properties as they are in the file (no re-encoding), with the
/// feature's `id` added when there is one and the properties lack it.
fn record(id: Option<Value>, properties: Option<&RawValue>) -> Result<String, String> {
    let text = properties.map_or("null", RawValue::get);
    let id = id.filter(|id| !id.is_null());
    if text == "null" {
        let mut object = Map::new();
        if let Some(id) = id {
            object.insert("id".into(), id);
        }
        return Ok(Value::Object(object).to_string());
    }
    if !text.starts_with('{') {
        return Err("properties must be an object or null".into());
    }
    match id {
        None => Ok(text.to_string()),
        Some(id) => {
            let mut object: Map<String, Value> =
                serde_json::from_str(text).map_err(|e| format!("bad properties: {e}"))?;
            if !object.contains_key("id") {
                object.shift_insert(0, "id".into(), id);
            }
            Ok(Value::Object(object).to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn collection(features: Value) -> String {
        json!({"type": "FeatureCollection", "features": features}).to_string()
    }

    fn point(id: Value, lon: f64, lat: f64, properties: Value) -> Value {
        json!({"type": "Feature", "id": id, "geometry": {"type": "Point", "coordinates": [lon, lat]},
               "properties": properties})
    }

    #[test]
    fn points_and_footprints_with_their_properties() {
        let square = json!([[[21.0, 52.0], [21.001, 52.0], [21.001, 52.001], [21.0, 52.0]]]);
        let text = collection(json!([
            point(json!("A-1"), 21.01, 52.23, json!({"year": 1975, "area_m2": 120.5})),
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": square},
             "properties": {"id": "own", "kind": "roof"}, "id": 9},
            {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [square, square]},
             "properties": null},
            {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[19.9, 50.0, 210.0]]}},
        ]));
        let parsed = parse(text.as_bytes(), false).unwrap();
        assert_eq!(parsed.records.len(), 4);
        assert_eq!(parsed.points, vec![([21.01, 52.23], 0), ([19.9, 50.0], 3)]);
        assert_eq!(
            parsed.polygons.iter().map(|(_, r)| *r).collect::<Vec<_>>(),
            [1, 2, 2]
        );
        assert_eq!(parsed.polygons[0].0[0].len(), 4);
        assert_eq!(
            parsed.records.get(0),
            json!({"id": "A-1", "year": 1975, "area_m2": 120.5})
        );
        assert_eq!(parsed.records.get(1), json!({"id": "own", "kind": "roof"}));
        assert_eq!(parsed.records.get(2), json!({}));
        assert_eq!(parsed.records.get(3), json!({}));
    }

    #[test]
    fn bad_features_fail_with_their_index_and_reason() {
        let good = point(json!(1), 21.0, 52.0, json!({}));
        let cases = [
            (
                json!({"type": "Feature", "geometry": null}),
                "features[1]: the feature has no geometry",
            ),
            (
                json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [21.0, 95.0]}}),
                "features[1]: lat 95 is outside -90..90",
            ),
            (
                json!({"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}}),
                "features[1]: geometry type LineString is not supported (Point, MultiPoint, Polygon, MultiPolygon)",
            ),
            (
                json!({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}}),
                "features[1]: a polygon ring needs at least 4 positions, got 3",
            ),
            (
                json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [21.0]}}),
                "features[1]: a position needs [lon, lat], got [21.0]",
            ),
            (
                json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [21.0, 52.0]}, "properties": [1]}),
                "features[1]: properties must be an object or null",
            ),
        ];
        for (bad, expected) in cases {
            let text = collection(json!([good, bad]));
            let error = parse(text.as_bytes(), false).err().unwrap();
            assert_eq!(error.to_string(), expected);
        }
        let text = collection(
            json!([good, {"type": "Feature", "geometry": {"type": "Point", "coordinates": ["21", 52]}}]),
        );
        let error = parse(text.as_bytes(), false).err().unwrap();
        assert_eq!(error.row, Some(Row::Feature(1)));
        assert!(
            error.reason.starts_with("Point coordinates are not"),
            "{error}"
        );
    }

    #[test]
    fn documents_that_are_not_feature_collections_fail_as_a_whole() {
        let e = parse(br#"{"type": "Feature"}"#, false).err().unwrap();
        assert_eq!(e.row, None);
        assert!(e.reason.contains("a GeoJSON Feature where"), "{e}");
        let e = parse(br#"{"type": "FeatureCollection"}"#, false)
            .err()
            .unwrap();
        assert!(e.reason.contains("no \"features\""), "{e}");
        let e = parse(b"{\"type\": ", false).err().unwrap();
        assert!(
            e.reason.starts_with("not a GeoJSON FeatureCollection"),
            "{e}"
        );
    }

    /// RFC 7946 asks writers for `"type": "Feature"`; a register that leaves it out still loads.
    #[test]
    fn features_without_a_type_member_are_read() {
        let text = collection(json!([
            {"geometry": {"type": "Point", "coordinates": [21.0, 52.0]}, "properties": {"n": 1}},
        ]));
        let parsed = parse(text.as_bytes(), false).unwrap();
        assert_eq!(parsed.points, vec![([21.0, 52.0], 0)]);
        assert_eq!(parsed.records.get(0), json!({"n": 1}));
    }

    #[test]
    fn skipped_features_are_counted() {
        let text = collection(json!([
            point(json!(1), 21.0, 52.0, json!({})),
            {"type": "Feature", "geometry": null},
            point(json!(3), 21.2, 52.2, json!({"n": 3})),
        ]));
        let parsed = parse(text.as_bytes(), true).unwrap();
        assert_eq!(parsed.records.len(), 2);
        assert_eq!(parsed.points[1], ([21.2, 52.2], 1));
        assert_eq!(parsed.records.get(1), json!({"id": 3, "n": 3}));
        assert_eq!(parsed.bad_rows.count, 1);
        assert_eq!(parsed.bad_rows.examples[0].row, Some(Row::Feature(1)));
    }
}
