//! Every caller's event, as shipped in `events/`, through the real `bootstrap` under the
//! Lambda Runtime API emulator: what `sam local invoke -e events/…` does with Docker. The demo
//! model and the bundled demo tiles (`fixtures/demo-tiles`, which cover the events' buildings)
//! stand in for the deployed model and imagery; one test loads the model from S3 as deployed.
//! Bad requests check the status codes (API Gateway) and `errorType`s (direct invoke).

use std::collections::HashMap;
use std::process::Command;

use base64::Engine;
use serde_json::{Value, json};

use crate::support::function::ort_library;
use crate::support::runtime::{Invocation, LambdaProcess};
use crate::support::s3::S3Server;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TIMEOUT_MS: u64 = 30_000;
/// Lambda's 6 MiB payload limit: the default `MAX_BODY_BYTES`.
const DEFAULT_BODY_LIMIT: usize = 6 * 1024 * 1024;

fn shipped(name: &str) -> Value {
    let path = format!("{ROOT}/events/{name}");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// What `make run` and `sam local invoke` (docs/OPERATIONS.md) use: the demo model and demo tiles.
fn demo_env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "MODEL_URI".to_string(),
            format!("{ROOT}/fixtures/models/roof_demo.onnx"),
        ),
        (
            "TILE_URL".to_string(),
            format!("file://{ROOT}/fixtures/demo-tiles/{{z}}/{{x}}/{{y}}.png"),
        ),
        ("TILE_ZOOM".to_string(), "19".to_string()),
        ("ORT_DYLIB_PATH".to_string(), ort_library()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

fn answer(lambda: &LambdaProcess, event: &Value) -> Value {
    lambda.invoke(event, TIMEOUT_MS).unwrap_response()
}

/// `(statusCode, content-type, parsed body)` of a proxy response.
fn proxy(response: &Value) -> (u64, String, Value) {
    let status = response["statusCode"].as_u64().expect("statusCode");
    let content_type = response["headers"]["content-type"]
        .as_str()
        .expect("content-type header")
        .to_string();
    assert_eq!(response["isBase64Encoded"], false, "{response}");
    let body = serde_json::from_str(response["body"].as_str().expect("body string")).unwrap();
    (status, content_type, body)
}

/// `id → {label, score, probabilities}` of a direct answer's successful predictions.
fn by_id(answer: &Value) -> HashMap<String, Value> {
    answer["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p.get("label").is_some())
        .map(|p| {
            let scored = json!({"label": p["label"], "score": p["score"], "probabilities": p["probabilities"]});
            (p["id"].as_str().unwrap().to_string(), scored)
        })
        .collect()
}

fn ids(answer: &Value) -> Vec<&str> {
    answer["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect()
}

fn assert_roof_prediction(prediction: &Value) {
    let label = prediction["label"].as_str().unwrap();
    assert!(["other", "asbestos"].contains(&label), "{prediction}");
    let p = &prediction["probabilities"];
    let sum = p["other"].as_f64().unwrap() + p["asbestos"].as_f64().unwrap();
    assert!((sum - 1.0).abs() < 1e-5, "{prediction}");
    assert_eq!(prediction["score"], p[label], "{prediction}");
}

#[test]
fn the_direct_event_answers_every_building_in_order() {
    let lambda = LambdaProcess::spawn(&demo_env(&[]));
    let answer = answer(&lambda, &shipped("direct.json"));
    assert_eq!(
        ids(&answer),
        ["b1", "b2", "b3", "b4", "b5", "b6", "bad-lat", "no-lon"]
    );
    assert_eq!(answer["failed"], 2);
    for p in &answer["predictions"].as_array().unwrap()[..6] {
        assert_roof_prediction(p);
    }
    assert_eq!(
        answer["predictions"][0]["properties"]["address"],
        "ul. Marszałkowska 1"
    );
    for p in &answer["predictions"].as_array().unwrap()[6..] {
        assert_eq!(p["error"]["code"], "invalid_coordinates", "{p}");
    }
    assert_eq!(answer["model"]["labels"], json!(["other", "asbestos"]));
    assert_eq!(answer["timing"]["cold_start"], true);
}

/// The GeoJSON answer is the input collection with a prediction or an error in each feature's
/// properties; footprints are classified at their centroid, which for these symmetric shapes
/// is the matching direct-invoke building, so the probabilities must agree exactly. (A demo
/// roof is 40 px in a 64 px chip: a point more than ≈ 12 px, ≈ 2 m, off changes the answer;
/// `centroid`'s unit tests check the exact arithmetic.)
#[test]
fn the_geojson_event_comes_back_as_the_same_features_annotated() {
    let lambda = LambdaProcess::spawn(&demo_env(&[]));
    let direct = by_id(&answer(&lambda, &shipped("direct.json")));
    let input = shipped("geojson.json");
    let answer = answer(&lambda, &input);

    assert_eq!(answer["type"], "FeatureCollection");
    assert_eq!(answer["name"], input["name"]);
    assert_eq!(answer["failed"], 1);
    assert!(answer["timing"]["total_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(answer["timing"]["cold_start"], false);
    assert_eq!(answer["model"]["labels"], json!(["other", "asbestos"]));
    let features = answer["features"].as_array().unwrap();
    let sent = input["features"].as_array().unwrap();
    assert_eq!(features.len(), sent.len());
    for (i, (got, sent)) in features.iter().zip(sent).enumerate() {
        let mut stripped = got.clone();
        let props = stripped["properties"].as_object_mut().unwrap();
        let added = props.remove("prediction").or_else(|| props.remove("error"));
        assert!(added.is_some(), "feature {i}: {got}");
        assert_eq!(&stripped, sent, "feature {i} must come back as sent");
    }
    // Point b1, Polygon b2 (id from properties.id), MultiPolygon b4, Polygon-with-hole b6.
    for (i, id) in [(0, "b1"), (1, "b2"), (2, "b4"), (3, "b6")] {
        let prediction = &features[i]["properties"]["prediction"];
        assert_roof_prediction(prediction);
        assert_eq!(
            prediction, &direct[id],
            "feature {i} should be located at {id}"
        );
    }
    let error = &features[4]["properties"]["error"];
    assert_eq!(error["code"], "invalid_geometry", "{error}");
    assert!(error["message"].as_str().unwrap().contains("LineString"));
}

#[test]
fn the_step_functions_batch_reads_csv_strings_and_echoes_batch_input() {
    let lambda = LambdaProcess::spawn(&demo_env(&[]));
    let direct = by_id(&answer(&lambda, &shipped("direct.json")));
    let event = shipped("sfn-batch.json");
    let answer = answer(&lambda, &event);
    assert_eq!(ids(&answer), ["b1", "b2", "b3", "b4", "b5", "b6"]);
    assert_eq!(answer["failed"], 0);
    assert_eq!(answer["batch_input"], event["BatchInput"]);
    let batch = by_id(&answer);
    for id in ["b1", "b2", "b3", "b4", "b5", "b6"] {
        assert_eq!(batch[id], direct[id], "{id}");
    }
    // The CSV strings came back as the numbers they were read as.
    assert_eq!(answer["predictions"][0]["lat"], json!(52.2297));
    assert_eq!(
        answer["predictions"][0]["properties"]["address"],
        "ul. Marszałkowska 1"
    );
}

/// The HTTP API event against the deployed configuration: the model comes from S3.
#[test]
fn the_http_api_event_gets_a_json_proxy_response_with_the_model_from_s3() {
    let s3 = S3Server::start();
    let model = std::fs::read(format!("{ROOT}/fixtures/models/roof_demo.onnx")).unwrap();
    s3.put("roof-models", "models/roof_demo.onnx", &model);
    let mut env = s3.env();
    env.extend(demo_env(&[(
        "MODEL_URI",
        "s3://roof-models/models/roof_demo.onnx",
    )]));
    let lambda = LambdaProcess::spawn(&env);

    let response = answer(&lambda, &shipped("apigw-http.json"));
    let (status, content_type, body) = proxy(&response);
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    assert_eq!(response["cookies"], json!([]));
    assert_eq!(ids(&body), ["b1", "b2", "b3", "b4", "b5", "b6"]);
    assert_eq!(body["failed"], 0);
    assert_eq!(
        body["model"]["uri"],
        "s3://roof-models/models/roof_demo.onnx"
    );
    // The object's ETag (s3s-fs makes it the MD5 of the bytes), not a file's size-mtime.
    let version = body["model"]["version"].as_str().unwrap();
    assert!(
        version.len() == 32 && version.chars().all(|c| c.is_ascii_hexdigit()),
        "{version}"
    );
}

#[test]
fn the_rest_api_event_with_a_base64_geojson_body_gets_geo_json_back() {
    let lambda = LambdaProcess::spawn(&demo_env(&[]));
    let event = shipped("apigw-rest.json");
    assert_eq!(event["isBase64Encoded"], true);
    let (status, content_type, body) = proxy(&answer(&lambda, &event));
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/geo+json")
    );
    assert_eq!(body["type"], "FeatureCollection");
    assert_eq!(body["features"].as_array().unwrap().len(), 5);
    assert_eq!(body["failed"], 1);
    assert_roof_prediction(&body["features"][1]["properties"]["prediction"]);
    assert_eq!(
        body["features"][4]["properties"]["error"]["code"],
        "invalid_geometry"
    );
}

/// An API Gateway event with `body` replaced (plain, or base64 when `base64`).
fn with_body(event: &Value, body: Option<&str>, base64: bool) -> Value {
    let mut event = event.clone();
    event["body"] = match body {
        Some(text) if base64 => json!(base64::engine::general_purpose::STANDARD.encode(text)),
        Some(text) => json!(text),
        None => Value::Null,
    };
    event["isBase64Encoded"] = json!(base64);
    event
}

fn buildings(n: usize) -> String {
    let list: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("b{i}"), "lat": 52.2297, "lon": 21.0122}))
        .collect();
    json!({"buildings": list}).to_string()
}

#[test]
fn bad_bodies_through_api_gateway_get_4xx_proxy_responses_with_json_errors() {
    let lambda = LambdaProcess::spawn(&demo_env(&[("MAX_BUILDINGS", "8")]));
    let oversized = format!("{}{}", buildings(1), " ".repeat(DEFAULT_BODY_LIMIT));
    let empty_features = json!({"type": "FeatureCollection", "features": []}).to_string();
    let cases: [(Option<&str>, bool, u64, &str, &str); 10] = [
        (
            Some("{\"buildings\": [ oops"),
            false,
            400,
            "invalid_request",
            "not JSON",
        ),
        (Some("<xml/>"), true, 400, "invalid_request", "not JSON"),
        (
            Some("%%% not base64 %%%"),
            false,
            400,
            "invalid_request",
            "not JSON",
        ),
        (None, false, 400, "invalid_request", "no body"),
        (
            Some("{\"points\": []}"),
            false,
            400,
            "invalid_request",
            "FeatureCollection",
        ),
        (
            Some("{\"buildings\": []}"),
            false,
            400,
            "invalid_request",
            "no buildings",
        ),
        (
            Some(&empty_features),
            false,
            400,
            "invalid_request",
            "no buildings",
        ),
        (
            Some(&buildings(9)),
            false,
            413,
            "too_many_buildings",
            "limit is 8",
        ),
        (
            Some(&buildings(9)),
            true,
            413,
            "too_many_buildings",
            "MAX_BUILDINGS",
        ),
        (
            Some(&oversized),
            false,
            413,
            "payload_too_large",
            "limit is 6291456",
        ),
    ];
    for base in [shipped("apigw-http.json"), shipped("apigw-rest.json")] {
        for (body, base64, want_status, want_code, needle) in &cases {
            let event = with_body(&base, *body, *base64);
            let response = match lambda.invoke(&event, TIMEOUT_MS) {
                Invocation::Response(r) => r,
                other => panic!("API Gateway must get a proxy response, not {other:?}"),
            };
            let (status, content_type, body) = proxy(&response);
            let what = format!("{} {:?}: {body}", base["version"], want_code);
            assert_eq!(status, *want_status, "{what}");
            assert_eq!(content_type, "application/json", "{what}");
            let error = body["error"].as_object().expect("an error object");
            assert_eq!(error.len(), 2, "{what}");
            assert_eq!(error["code"], *want_code, "{what}");
            let message = error["message"].as_str().unwrap();
            assert!(message.contains(needle), "{what}");
        }
        // Bad base64 is refused as such, before any JSON parsing.
        let mut event = with_body(&base, None, true);
        event["body"] = json!("%%% not base64 %%%");
        let (status, _, body) = proxy(&answer(&lambda, &event));
        assert_eq!(status, 400);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not valid base64")
        );
    }
    // A body just under the limit is not refused for its size.
    let padded = format!("{}{}", buildings(1), " ".repeat(DEFAULT_BODY_LIMIT - 200));
    let event = with_body(&shipped("apigw-http.json"), Some(&padded), false);
    let (status, _, body) = proxy(&answer(&lambda, &event));
    assert_eq!(status, 200, "{body}");
    // And the function still answers the shipped event afterwards.
    let (status, _, _) = proxy(&answer(&lambda, &shipped("apigw-http.json")));
    assert_eq!(status, 200);
}

#[test]
fn bad_direct_invokes_are_lambda_errors_with_readable_error_types() {
    let lambda = LambdaProcess::spawn(&demo_env(&[("MAX_BUILDINGS", "8")]));
    let nine: Vec<Value> = (0..9)
        .map(|_| json!({"lat": 52.2297, "lon": 21.0122}))
        .collect();
    let point = json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [21.0122, 52.2297]}});
    let cases = [
        (
            json!({"points": []}),
            "InvalidRequest",
            "unrecognised event",
        ),
        (json!([1, 2]), "InvalidRequest", "not an object"),
        (json!("buildings"), "InvalidRequest", "not an object"),
        (json!({"buildings": []}), "InvalidRequest", "no buildings"),
        (
            json!({"buildings": "b1"}),
            "InvalidRequest",
            "must be an array",
        ),
        (
            json!({"buildings": nine}),
            "TooManyBuildings",
            "MAX_BUILDINGS",
        ),
        (
            json!({"Items": nine, "BatchInput": {}}),
            "TooManyBuildings",
            "limit is 8",
        ),
        (json!({"Items": []}), "InvalidRequest", "no buildings"),
        (
            json!({"type": "FeatureCollection", "features": vec![point; 9]}),
            "TooManyBuildings",
            "limit is 8",
        ),
        (
            json!({"type": "FeatureCollection"}),
            "InvalidRequest",
            "no \"features\"",
        ),
        (
            json!({"buildings": [], "Items": []}),
            "InvalidRequest",
            "several shapes",
        ),
    ];
    for (event, want_type, needle) in cases {
        match lambda.invoke(&event, TIMEOUT_MS) {
            Invocation::Error {
                error_type,
                error_message,
                ..
            } => {
                assert_eq!(error_type, want_type, "{event}: {error_message}");
                assert!(error_message.contains(needle), "{event}: {error_message}");
            }
            other => panic!("{event}: expected a Lambda error, got {other:?}"),
        }
    }
    // The refusal of an unknown shape tells the caller every shape we accept.
    let Invocation::Error { error_message, .. } = lambda.invoke(&json!({"a": 1}), TIMEOUT_MS)
    else {
        panic!("expected an error");
    };
    for shape in [
        "\"buildings\"",
        "FeatureCollection",
        "API Gateway",
        "\"Items\"",
    ] {
        assert!(error_message.contains(shape), "{error_message}");
    }
    assert_eq!(answer(&lambda, &shipped("direct.json"))["failed"], 2);
}

/// `bootstrap invoke EVENT.json` (what `make run` does) answers each shipped event.
#[test]
fn every_shipped_event_runs_locally_with_bootstrap_invoke() {
    for (name, check) in [
        ("direct.json", "predictions"),
        ("geojson.json", "features"),
        ("apigw-http.json", "statusCode"),
        ("apigw-rest.json", "statusCode"),
        ("sfn-batch.json", "batch_input"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_bootstrap"))
            .args(["invoke", &format!("{ROOT}/events/{name}")])
            .env_clear()
            .envs(demo_env(&[("RUST_LOG", "warn")]))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(answer.get(check).is_some(), "{name}: {answer}");
        if check == "statusCode" {
            assert_eq!(answer["statusCode"], 200, "{name}: {answer}");
        }
    }
}
