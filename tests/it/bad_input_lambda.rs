//! Bad input through the real `bootstrap` under the Runtime API emulator (direct invoke): a
//! request the function cannot use is refused whole with a Lambda error whose `errorType` names
//! the problem; a bad building is answered on its own line and the rest of the request goes on.
//! Nothing panics, and the sandbox keeps serving. (API Gateway's 4xx answers are tested with
//! the API Gateway shapes.)

use serde_json::{Value, json};

use crate::support::function::{expect_error, spawn, xyz};
use crate::support::runtime::LambdaProcess;
use crate::support::tiles::{TileServer, solid_tile_handler};

/// Lambda's limit on a synchronous request or response payload.
const LAMBDA_PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;

fn function(tiles: &TileServer, extra: &[(&str, &str)]) -> LambdaProcess {
    spawn("rgb_tiny.onnx", &xyz(&tiles.base_url()), extra)
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |inner, _| json!([inner]))
}

fn assert_survives(lambda: &LambdaProcess) {
    let ok = lambda
        .invoke(&json!({"buildings": [{"lat": 1.0, "lon": 1.0}]}), 10_000)
        .unwrap_response();
    assert_eq!(ok["failed"], 0, "{ok}");
    let logs = lambda.logs();
    assert!(!logs.contains("panicked"), "{logs}");
}

#[test]
fn requests_the_function_cannot_use_are_refused_with_a_named_error_type() {
    let tiles = TileServer::start(solid_tile_handler([255, 0, 0]));
    let lambda = function(&tiles, &[("MAX_BUILDINGS", "5")]);
    let one = json!({"lat": 1.0, "lon": 1.0});
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!(null), "InvalidRequest", "the event is null"),
        (
            json!("buildings"),
            "InvalidRequest",
            "the event is a string",
        ),
        (json!(42), "InvalidRequest", "the event is a number"),
        (
            json!([one.clone()]),
            "InvalidRequest",
            "the event is an array",
        ),
        (json!({}), "InvalidRequest", "unrecognised event"),
        (
            json!({"Buildings": [one.clone()]}),
            "InvalidRequest",
            "unrecognised event",
        ),
        (json!({"buildings": null}), "InvalidRequest", "not null"),
        (json!({"buildings": "b1"}), "InvalidRequest", "not a string"),
        (
            json!({"buildings": {"id": "b1"}}),
            "InvalidRequest",
            "not an object",
        ),
        (json!({"buildings": []}), "InvalidRequest", "no buildings"),
        (
            json!({"buildings": vec![one.clone(); 6]}),
            "TooManyBuildings",
            "limit is 5",
        ),
        (
            json!({"buildings": vec![one.clone(); 100_000]}),
            "TooManyBuildings",
            "100000 buildings",
        ),
        (nested(200), "InvalidRequest", "recursion limit"),
        (
            json!({"buildings": [{"lat": 1.0, "lon": 1.0, "deep": nested(130)}]}),
            "InvalidRequest",
            "recursion limit",
        ),
        // A request as large as Lambda accepts, with nothing the function can use in it.
        (
            json!({"junk": "x".repeat(LAMBDA_PAYLOAD_LIMIT - 100)}),
            "InvalidRequest",
            "unrecognised event",
        ),
    ];
    for (event, error_type, needle) in &cases {
        let (got_type, message) = expect_error(lambda.invoke(event, 30_000));
        let shown: String = event.to_string().chars().take(80).collect();
        assert_eq!(&got_type, error_type, "{shown}: {message}");
        assert!(message.contains(needle), "{shown}: {message}");
        assert!(
            message.len() < 1000,
            "the message stays short: {}",
            message.len()
        );
    }
    let raw: [(&[u8], &str); 4] = [
        (
            b"<html>not json</html>",
            "expected value at line 1 column 1",
        ),
        (b"{\"buildings\": [{\"lat\": 1", "EOF"),
        (
            b"{\"buildings\": [{\"lat\": 1e400, \"lon\": 1}]}",
            "number out of range",
        ),
        (b"", "EOF"),
    ];
    for (body, needle) in raw {
        let (outcome, _) = lambda.invoke_raw_timed(body.to_vec(), 10_000);
        let (error_type, message) = expect_error(outcome);
        assert_eq!(error_type, "InvalidRequest", "{message}");
        assert!(
            message.contains("not usable JSON") && message.contains(needle),
            "{message}"
        );
    }
    assert_eq!(tiles.total(), 0, "nothing refused was fetched for");
    assert_survives(&lambda);
}

#[test]
fn an_answer_over_lambdas_response_limit_is_refused_with_its_size() {
    let tiles = TileServer::start(solid_tile_handler([255, 0, 0]));
    let lambda = function(&tiles, &[]);
    // 1,000 buildings at one spot with 6 KB of properties each: the request fits Lambda's
    // 6 MB, the answer (the same properties plus a prediction each) does not.
    let note = "n".repeat(6_150);
    let buildings: Vec<Value> = (0..1000)
        .map(|i| json!({"id": i, "lat": 1.0, "lon": 1.0, "note": note}))
        .collect();
    let event = json!({ "buildings": buildings });
    assert!(serde_json::to_vec(&event).unwrap().len() < LAMBDA_PAYLOAD_LIMIT);
    let (error_type, message) = expect_error(lambda.invoke(&event, 60_000));
    assert_eq!(error_type, "ResponseTooLarge", "{message}");
    assert!(
        message.contains("Lambda's response limit is 6291456")
            && message.contains("fewer buildings or smaller properties"),
        "{message}"
    );
    assert_survives(&lambda);
}

/// One building of the request and what its answer must be.
struct Case {
    building: Value,
    /// The error code, or `None` for a prediction.
    code: Option<&'static str>,
    /// The id the answer must echo.
    id: Value,
}

fn case(building: Value, code: Option<&'static str>) -> Case {
    let id = building["id"].clone();
    Case { building, code, id }
}

#[test]
fn bad_buildings_are_answered_one_by_one_and_the_rest_go_on() {
    let tiles = TileServer::start(solid_tile_handler([255, 0, 0]));
    let lambda = function(&tiles, &[]);
    let long_id = "é".repeat(100_000);
    let id_256 = "ž".repeat(256);
    let unicode = "żółć 🏠 דירה \u{202e}rtl \u{0000} \u{fffd}";
    let coords = "invalid_coordinates";
    let mut cases = vec![
        case(json!({"id": "ok", "lat": 52.2297, "lon": 21.0122}), None),
        case(json!({"id": "missing-lat", "lon": 21.0}), Some(coords)),
        case(json!({"id": "missing-both"}), Some(coords)),
        case(
            json!({"id": "null-lat", "lat": null, "lon": 21.0}),
            Some(coords),
        ),
        case(
            json!({"id": "nan", "lat": "NaN", "lon": 21.0}),
            Some(coords),
        ),
        case(
            json!({"id": "inf", "lat": 52.0, "lon": "Infinity"}),
            Some(coords),
        ),
        case(
            json!({"id": "-inf", "lat": "-inf", "lon": 21.0}),
            Some(coords),
        ),
        case(
            json!({"id": "numeric-strings", "lat": "52.2", "lon": "21.0"}),
            Some(coords),
        ),
        case(
            json!({"id": "bool", "lat": true, "lon": 21.0}),
            Some(coords),
        ),
        case(
            json!({"id": "array", "lat": [52.2], "lon": 21.0}),
            Some(coords),
        ),
        case(
            json!({"id": "object", "lat": {"deg": 52}, "lon": 21.0}),
            Some(coords),
        ),
        case(
            json!({"id": "north", "lat": 85.0512, "lon": 21.0}),
            Some(coords),
        ),
        case(
            json!({"id": "south", "lat": -90.0, "lon": 21.0}),
            Some(coords),
        ),
        case(
            json!({"id": "east", "lat": 52.0, "lon": 180.000001}),
            Some(coords),
        ),
        case(
            json!({"id": "west", "lat": 52.0, "lon": -181.0}),
            Some(coords),
        ),
        case(
            json!({"id": "huge", "lat": 1e300, "lon": 21.0}),
            Some(coords),
        ),
        case(
            json!({"id": "north-edge", "lat": 85.0511, "lon": 180.0}),
            None,
        ),
        case(
            json!({"id": "south-edge", "lat": -85.0511, "lon": -180.0}),
            None,
        ),
        case(json!({"id": "zero", "lat": -0.0, "lon": 0.0}), None),
        case(json!({"id": "dup", "lat": 52.23, "lon": 21.01}), None),
        case(json!({"id": "dup", "lat": 52.23, "lon": 21.01}), None),
        case(
            json!({"id": "dup", "lat": 95.0, "lon": 21.01}),
            Some(coords),
        ),
        case(json!({"id": 42, "lat": 10.0, "lon": 10.0}), None),
        case(json!({"id": -1.5, "lat": 10.0, "lon": 10.0}), None),
        case(json!({"id": u64::MAX, "lat": 10.0, "lon": 10.0}), None),
        case(json!({"id": 1e300, "lat": 10.0, "lon": 10.0}), None),
        case(json!({"id": id_256, "lat": 10.0, "lon": 10.0}), None),
        case(
            json!({"id": unicode, "lat": 10.0, "lon": 10.0, "ünïcode": unicode}),
            None,
        ),
        case(json!({"id": "", "lat": 10.0, "lon": 10.0}), None),
    ];
    let long = format!("{}…", "é".repeat(256));
    cases.push(Case {
        building: json!({"id": long_id, "lat": 10.0, "lon": 10.0}),
        code: Some("invalid_building"),
        id: json!(long),
    });
    for (building, code) in [
        (
            json!({"id": true, "lat": 10.0, "lon": 10.0}),
            "invalid_building",
        ),
        (
            json!({"id": ["a"], "lat": 10.0, "lon": 10.0}),
            "invalid_building",
        ),
        (
            json!({"id": {"a": 1}, "lat": 10.0, "lon": 10.0}),
            "invalid_building",
        ),
        (json!(17), "invalid_building"),
        (json!("b7"), "invalid_building"),
        (json!(null), "invalid_building"),
        (json!([52.2, 21.0]), "invalid_building"),
    ] {
        // Unusable ids and non-objects are echoed as their index.
        let index = cases.len();
        cases.push(Case {
            building,
            code: Some(code),
            id: json!(index),
        });
    }
    let request: Vec<Value> = cases.iter().map(|c| c.building.clone()).collect();
    let answer = lambda
        .invoke(&json!({ "buildings": request }), 60_000)
        .unwrap_response();
    let predictions = answer["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), cases.len(), "one answer per building");
    for (i, (c, p)) in cases.iter().zip(predictions).enumerate() {
        let shown: String = p.to_string().chars().take(200).collect();
        assert_eq!(p["id"], c.id, "building {i}: {shown}");
        match c.code {
            None => assert!(p["label"].is_string(), "building {i}: {shown}"),
            Some(code) => {
                assert_eq!(p["error"]["code"], code, "building {i}: {shown}");
                assert!(p.get("label").is_none(), "building {i}: {shown}");
            }
        }
        // Coordinates come back as they were sent, bad ones included.
        if let Some(building) = c.building.as_object() {
            for field in ["lat", "lon"] {
                assert_eq!(
                    p[field],
                    building.get(field).cloned().unwrap_or(Value::Null),
                    "building {i}: {shown}"
                );
            }
        }
    }
    let failed = cases.iter().filter(|c| c.code.is_some()).count();
    assert_eq!(answer["failed"], failed);
    let unicode_answer = &predictions[27];
    assert_eq!(unicode_answer["properties"], json!({"ünïcode": unicode}));
    // The two identical "dup" buildings share one chip and so one prediction.
    assert_eq!(
        predictions[19]["probabilities"],
        predictions[20]["probabilities"]
    );
    assert_survives(&lambda);
}
