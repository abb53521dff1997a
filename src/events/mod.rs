//! Who sent an event and what it asks for. [`detect`] names the event's shape from explicit
//! markers (never by trying parsers in turn); [`parse`] and [`parse_body`] turn it into a
//! [`Request`]: the buildings to predict plus what the answer needs to take the caller's shape.
//!
//! Shapes and their markers:
//! - direct invoke: a `buildings` member;
//! - GeoJSON: `"type": "FeatureCollection"` ([`geojson`]);
//! - Step Functions Distributed Map with an ItemBatcher: an `Items` member ([`stepfunctions`]);
//! - API Gateway HTTP API (payload 2.0, also Lambda function URLs): `"version": "2.0"` and a
//!   `requestContext.http` object; REST API (payload 1.0): a `requestContext` and an
//!   `httpMethod` ([`apigw`]). Their body is a direct or a GeoJSON request.
//!
//! An event with none of the markers, or with more than one, is refused with the list of
//! accepted shapes. This module knows nothing of models or imagery.

pub mod apigw;
pub mod chips;
pub mod geojson;
pub mod stepfunctions;

use serde_json::{Map, Value};

use crate::error::RequestError;
use crate::outcome::{ModelInfo, Outcome, Timing};
use crate::request::{BuildingInput, kind, parse_building_list};

/// The shapes an API Gateway request body may take, for error messages.
const BODY_SHAPES: &str = "a direct request {\"buildings\": [{\"id\", \"lat\", \"lon\"}, ...]}; \
     a GeoJSON FeatureCollection of Point/Polygon/MultiPolygon features";

/// The shapes an event may take, for error messages (README "Callers" shows each).
const EVENT_SHAPES: &str = "a direct invoke {\"buildings\": [{\"id\", \"lat\", \"lon\"}, ...]}; \
     a GeoJSON FeatureCollection of Point/Polygon/MultiPolygon features; \
     an API Gateway proxy event (HTTP API payload 2.0 or REST payload 1.0) whose body is one of those two; \
     a Step Functions ItemBatcher batch {\"Items\": [{\"id\", \"lat\", \"lon\"}, ...], \"BatchInput\": {...}}";

/// What the event is, from its markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A request answered as the invocation's result.
    Request(RequestKind),
    /// An API Gateway proxy event: its body holds the request, the answer is a proxy response.
    ApiGateway(apigw::Version),
}

/// The requests that come as the event itself ([`RequestKind::Direct`] and
/// [`RequestKind::GeoJson`] also come as an API Gateway body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Direct,
    GeoJson,
    StepFunctionsBatch,
}

impl Shape {
    /// The shape in a caller's words, for messages.
    pub fn description(self) -> &'static str {
        match self {
            Self::Request(RequestKind::Direct) => "a direct request ({\"buildings\": [...]})",
            Self::Request(RequestKind::GeoJson) => "a GeoJSON FeatureCollection",
            Self::Request(RequestKind::StepFunctionsBatch) => {
                "a Step Functions batch ({\"Items\": [...]})"
            }
            Self::ApiGateway(apigw::Version::V1) => "an API Gateway REST API (payload 1.0) event",
            Self::ApiGateway(apigw::Version::V2) => "an API Gateway HTTP API (payload 2.0) event",
        }
    }
}

/// Why an event has no single shape.
enum Unrecognised {
    /// Not a JSON object: its kind ("an array", …).
    NotAnObject(&'static str),
    /// No marker: the first few member names.
    NoMarker(String),
    /// More than one marker.
    Several(Vec<Shape>),
}

impl Unrecognised {
    /// The message about `what` ("event", "request body") for a caller who may send one of
    /// `accepted`.
    fn into_error(self, what: &str, accepted: &str) -> RequestError {
        RequestError::Invalid(match self {
            Self::NotAnObject(kind) => {
                format!("the {what} is {kind}, not an object; expected {accepted}")
            }
            Self::NoMarker(members) => {
                format!("unrecognised {what} (members: {members}); expected {accepted}")
            }
            Self::Several(shapes) => format!(
                "the {what} looks like several shapes at once ({}); send exactly one of: {accepted}",
                shapes
                    .iter()
                    .map(|s| s.description())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        })
    }
}

/// Names the event's shape, or explains why it has none.
pub fn detect(event: &Value) -> Result<Shape, RequestError> {
    shape_of(event).map_err(|why| why.into_error("event", EVENT_SHAPES))
}

fn shape_of(event: &Value) -> Result<Shape, Unrecognised> {
    let Some(object) = event.as_object() else {
        return Err(Unrecognised::NotAnObject(kind(event)));
    };
    let markers = [
        (
            Shape::Request(RequestKind::Direct),
            object.contains_key("buildings"),
        ),
        (
            Shape::Request(RequestKind::GeoJson),
            object.get("type").and_then(Value::as_str) == Some("FeatureCollection"),
        ),
        (
            Shape::Request(RequestKind::StepFunctionsBatch),
            object.contains_key("Items"),
        ),
        (Shape::ApiGateway(apigw::Version::V2), is_http_api(object)),
        (Shape::ApiGateway(apigw::Version::V1), is_rest_api(object)),
    ];
    let found: Vec<Shape> = markers
        .iter()
        .filter(|(_, present)| *present)
        .map(|(shape, _)| *shape)
        .collect();
    match found.as_slice() {
        [shape] => Ok(*shape),
        [] => Err(Unrecognised::NoMarker(member_names(object))),
        several => Err(Unrecognised::Several(several.to_vec())),
    }
}

/// HTTP API payload 2.0 (and Lambda function URLs, which use the same format).
fn is_http_api(object: &Map<String, Value>) -> bool {
    object.get("version").and_then(Value::as_str) == Some("2.0")
        && object
            .get("requestContext")
            .and_then(|c| c.get("http"))
            .is_some_and(Value::is_object)
}

/// REST API payload 1.0. ALB events look alike but carry `requestContext.elb`: not ours.
fn is_rest_api(object: &Map<String, Value>) -> bool {
    object.get("httpMethod").is_some_and(Value::is_string)
        && object
            .get("requestContext")
            .and_then(Value::as_object)
            .is_some_and(|c| !c.contains_key("elb"))
}

/// The first few member names of an unrecognised event, so the caller sees what we saw.
fn member_names(object: &Map<String, Value>) -> String {
    const SHOWN: usize = 8;
    let mut names: Vec<String> = object
        .keys()
        .take(SHOWN)
        .map(|k| format!("{k:?}"))
        .collect();
    if object.len() > SHOWN {
        names.push(format!("… {} more", object.len() - SHOWN));
    }
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// A request with its envelope taken off: the buildings, and what the answer must echo.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Direct(Vec<BuildingInput>),
    GeoJson(geojson::Collection),
    Batch(stepfunctions::Batch),
}

impl Request {
    /// Every building, in request order.
    pub fn buildings(&self) -> &[BuildingInput] {
        match self {
            Self::Direct(buildings) => buildings,
            Self::GeoJson(collection) => &collection.buildings,
            Self::Batch(batch) => &batch.buildings,
        }
    }

    /// The media type of the answer, for API Gateway.
    pub fn content_type(&self) -> &'static str {
        match self {
            Self::GeoJson(_) => "application/geo+json",
            Self::Direct(_) | Self::Batch(_) => "application/json",
        }
    }

    /// The answer in the caller's shape; `outcomes[i]` answers `buildings()[i]`.
    pub fn answer(self, model: &ModelInfo, outcomes: &[Outcome], timing: &Timing) -> Value {
        match self {
            Self::Direct(buildings) => crate::answer::direct(model, &buildings, outcomes, timing),
            Self::GeoJson(collection) => collection.answer(model, outcomes, timing),
            Self::Batch(batch) => batch.answer(model, outcomes, timing),
        }
    }
}

/// Parses a request that came as the event itself (API Gateway's come via [`parse_body`]).
pub fn parse(
    request_kind: RequestKind,
    event: Value,
    max_buildings: usize,
) -> Result<Request, RequestError> {
    let Value::Object(object) = event else {
        return Err(RequestError::Invalid(format!(
            "the event is {}, not an object",
            kind(&event)
        )));
    };
    match request_kind {
        RequestKind::Direct => match object.get("buildings") {
            Some(Value::Array(list)) => {
                Ok(Request::Direct(parse_building_list(list, max_buildings)?))
            }
            Some(other) => Err(RequestError::Invalid(format!(
                "\"buildings\" must be an array, not {}",
                kind(other)
            ))),
            None => Err(RequestError::Invalid("no \"buildings\" member".into())),
        },
        RequestKind::GeoJson => Ok(Request::GeoJson(geojson::parse(object, max_buildings)?)),
        RequestKind::StepFunctionsBatch => {
            Ok(Request::Batch(stepfunctions::parse(object, max_buildings)?))
        }
    }
}

/// Parses the body of an API Gateway request: a direct or a GeoJSON request, as JSON.
pub fn parse_body(body: &[u8], max_buildings: usize) -> Result<Request, RequestError> {
    parse_body_with_options(body, max_buildings).map(|(request, _)| request)
}

/// [`parse_body`], with the request's [`chips::Options`].
pub fn parse_body_with_options(
    body: &[u8],
    max_buildings: usize,
) -> Result<(Request, chips::Options), RequestError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        RequestError::Invalid(format!(
            "the request body is not JSON ({e}); send {{\"buildings\": [...]}} or a GeoJSON FeatureCollection"
        ))
    })?;
    match shape_of(&value) {
        Ok(Shape::Request(request_kind @ (RequestKind::Direct | RequestKind::GeoJson))) => {
            let options = chips::options(&value)?;
            Ok((parse(request_kind, value, max_buildings)?, options))
        }
        Ok(other) => Err(RequestError::Invalid(format!(
            "the request body is {}; send {BODY_SHAPES}",
            other.description()
        ))),
        Err(why) => Err(why.into_error("request body", BODY_SHAPES)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DIRECT: Shape = Shape::Request(RequestKind::Direct);
    const GEOJSON: Shape = Shape::Request(RequestKind::GeoJson);
    const BATCH: Shape = Shape::Request(RequestKind::StepFunctionsBatch);
    const HTTP_API: Shape = Shape::ApiGateway(apigw::Version::V2);
    const REST_API: Shape = Shape::ApiGateway(apigw::Version::V1);

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/apigw/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn shipped_event(name: &str) -> Value {
        let path = format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn message(error: RequestError) -> String {
        match error {
            RequestError::Invalid(message) => message,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn each_shape_is_recognised_by_its_marker() {
        let cases = [
            (json!({"buildings": []}), DIRECT),
            (
                json!({"type": "FeatureCollection", "features": []}),
                GEOJSON,
            ),
            (json!({"Items": [], "BatchInput": {}}), BATCH),
            (json!({"Items": []}), BATCH),
            (fixture("v2-request-iam.json"), HTTP_API),
            (fixture("sam-http-request.json"), HTTP_API),
            (fixture("rest-request.json"), REST_API),
            (fixture("sam-rest-request.json"), REST_API),
        ];
        for (event, want) in cases {
            assert_eq!(detect(&event).unwrap(), want, "{event}");
        }
    }

    #[test]
    fn the_shipped_events_are_the_shapes_their_names_say() {
        for (name, want) in [
            ("direct.json", DIRECT),
            ("geojson.json", GEOJSON),
            ("apigw-http.json", HTTP_API),
            ("apigw-rest.json", REST_API),
            ("sfn-batch.json", BATCH),
        ] {
            assert_eq!(detect(&shipped_event(name)).unwrap(), want, "{name}");
        }
    }

    #[test]
    fn unrecognised_events_list_the_accepted_shapes_and_what_was_seen() {
        for event in [
            json!({"points": [1]}),
            json!({"type": "Feature", "geometry": null}),
            json!({}),
            // An ALB event: a requestContext with `elb`, which we do not answer.
            json!({"requestContext": {"elb": {}}, "httpMethod": "POST", "body": "{}"}),
            // A payload-2.0 lookalike without requestContext.http.
            json!({"version": "2.0", "requestContext": {}}),
        ] {
            let text = message(detect(&event).unwrap_err());
            assert!(text.starts_with("unrecognised event"), "{text}");
            assert!(
                text.contains("FeatureCollection") && text.contains("Items"),
                "{text}"
            );
        }
        let text = message(detect(&json!({"points": [1], "b": 2})).unwrap_err());
        assert!(text.contains("\"points\", \"b\""), "{text}");
        let text = message(detect(&json!([1, 2])).unwrap_err());
        assert!(text.starts_with("the event is an array"), "{text}");
    }

    #[test]
    fn an_event_with_two_markers_is_ambiguous_not_guessed() {
        let event = json!({"buildings": [], "Items": []});
        let text = message(detect(&event).unwrap_err());
        assert!(
            text.contains("(a direct request ({\"buildings\": [...]}); a Step Functions batch"),
            "{text}"
        );
    }

    #[test]
    fn bodies_are_json_direct_or_geojson_requests() {
        let direct = parse_body(br#"{"buildings": [{"lat": 1.0, "lon": 2.0}]}"#, 10).unwrap();
        assert_eq!(direct.buildings().len(), 1);
        assert_eq!(direct.content_type(), "application/json");
        let features = br#"{"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [2.0, 1.0]}}]}"#;
        let geo = parse_body(features, 10).unwrap();
        assert_eq!(geo.content_type(), "application/geo+json");
        assert_eq!(geo.buildings()[0].position.as_ref().unwrap().lat, 1.0);

        let text = message(parse_body(b"{not json", 10).unwrap_err());
        assert!(text.starts_with("the request body is not JSON"), "{text}");
        let text = message(parse_body(br#"{"Items": []}"#, 10).unwrap_err());
        assert!(
            text.starts_with("the request body is a Step Functions batch"),
            "{text}"
        );
        let text = message(parse_body(br#"{"a": 1}"#, 10).unwrap_err());
        assert!(text.starts_with("unrecognised request body"), "{text}");
        // A body can only be one of the two body shapes: the message offers nothing else.
        assert!(
            !text.contains("Step Functions") && !text.contains("API Gateway"),
            "{text}"
        );
        let err = parse_body(br#"{"buildings": [{}, {}, {}]}"#, 2).unwrap_err();
        assert_eq!(err.code(), "too_many_buildings");
        let text = message(parse_body(br#"{"buildings": []}"#, 2).unwrap_err());
        assert!(text.contains("no buildings"), "{text}");
    }

    #[test]
    fn a_direct_request_needs_an_array() {
        let text = message(parse(RequestKind::Direct, json!({"buildings": {}}), 5).unwrap_err());
        assert_eq!(text, "\"buildings\" must be an array, not an object");
    }
}
