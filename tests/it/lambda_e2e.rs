//! The real `bootstrap` binary under an emulated Lambda Runtime API: the model comes from a
//! real S3 endpoint on loopback, imagery from a loopback tile server, inference from real
//! ONNX Runtime. What passes here is what Lambda runs.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::function::{manifest, ort_library};
use crate::support::runtime::{Invocation, LambdaProcess};
use crate::support::s3::S3Server;
use crate::support::tiles::{TileServer, solid_tile_handler};

/// The function's environment: model from S3, tiles from `tiles`, ONNX Runtime from `make ort`.
fn function_env(
    s3: &S3Server,
    tiles: &TileServer,
    model_uri: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env = s3.env();
    env.extend(
        [
            ("MODEL_URI", model_uri.to_string()),
            (
                "TILE_URL",
                format!("{}/{{z}}/{{x}}/{{y}}.png", tiles.base_url()),
            ),
            ("ORT_DYLIB_PATH", ort_library()),
            ("TILE_ZOOM", "19".to_string()),
        ]
        .into_iter()
        .chain(extra.iter().map(|(k, v)| (*k, v.to_string())))
        .map(|(k, v)| (k.to_string(), v)),
    );
    env
}

/// Starts the function with `env` and returns the init error it reports.
fn init_error(env: &[(String, String)]) -> (String, String) {
    LambdaProcess::spawn(env)
        .wait_init_error(Duration::from_secs(30))
        .expect("an init error is reported")
}

fn direct_event() -> Value {
    serde_json::from_slice(&std::fs::read(manifest("events/direct.json")).unwrap()).unwrap()
}

fn md5_hex(bytes: &[u8]) -> String {
    // s3s-fs answers the MD5 of the object as its ETag; compute it independently with md5sum.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("object");
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("md5sum")
        .arg(&path)
        .output()
        .expect("md5sum");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn direct_invoke_end_to_end_with_the_model_from_s3_cold_then_warm() {
    let s3 = S3Server::start();
    let model = std::fs::read(manifest("fixtures/models/rgb_tiny.onnx")).unwrap();
    s3.put("models", "roof/rgb_tiny.onnx", &model);
    let tiles = TileServer::start(solid_tile_handler([255, 0, 0]));
    let lambda = LambdaProcess::spawn(&function_env(
        &s3,
        &tiles,
        "s3://models/roof/rgb_tiny.onnx",
        &[],
    ));

    let first = lambda.invoke(&direct_event(), 30_000).unwrap_response();
    let predictions = first["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 8, "one answer per building: {first}");
    let ids: Vec<&str> = predictions
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["b1", "b2", "b3", "b4", "b5", "b6", "bad-lat", "no-lon"]
    );
    for p in &predictions[..6] {
        assert_eq!(p["label"], "red", "{p}");
        let e8 = 8f64.exp();
        assert!(
            (p["score"].as_f64().unwrap() - e8 / (e8 + 2.0)).abs() < 2e-6,
            "{p}"
        );
    }
    assert_eq!(
        predictions[0]["properties"],
        json!({"address": "ul. Marszałkowska 1"})
    );
    assert_eq!(predictions[6]["error"]["code"], "invalid_coordinates");
    assert_eq!(predictions[7]["error"]["code"], "invalid_coordinates");
    assert_eq!(first["failed"], 2);
    assert_eq!(first["model"]["uri"], "s3://models/roof/rgb_tiny.onnx");
    assert_eq!(first["model"]["version"], md5_hex(&model));
    assert_eq!(first["model"]["labels"], json!(["red", "green", "blue"]));
    let timing = &first["timing"];
    assert_eq!(timing["cold_start"], true);
    assert!(timing["model_load_ms"].as_f64().unwrap() > 0.0, "{timing}");
    assert!(timing["images_fetched"].as_u64().unwrap() >= 1);
    let fetched_cold = tiles.total();
    assert_eq!(
        timing["images_fetched"].as_u64().unwrap() as usize,
        fetched_cold
    );

    let second = lambda.invoke(&direct_event(), 30_000).unwrap_response();
    assert_eq!(second["timing"]["cold_start"], false);
    assert_eq!(second["timing"]["model_load_ms"], 0.0);
    assert_eq!(
        second["predictions"], first["predictions"],
        "same event, same answers"
    );
    assert_eq!(
        second["timing"]["images_fetched"], 0,
        "warm cache: {}",
        second["timing"]
    );
    assert_eq!(
        second["timing"]["cache_hits"].as_u64().unwrap() as usize,
        fetched_cold
    );
    assert_eq!(
        tiles.total(),
        fetched_cold,
        "no tile fetched twice across warm invocations"
    );
    assert_eq!(
        s3.request_count(),
        1,
        "the model is read from S3 once per sandbox"
    );
    let logs = lambda.logs_containing("\"invocation done\"");
    assert!(logs.contains("\"invocation done\""), "{logs}");
}

#[test]
fn a_missing_model_key_fails_init_naming_bucket_and_key() {
    let s3 = S3Server::start();
    s3.create_bucket("models");
    let tiles = TileServer::start(solid_tile_handler([0, 0, 0]));
    let mut lambda =
        LambdaProcess::spawn(&function_env(&s3, &tiles, "s3://models/missing.onnx", &[]));
    let (error_type, message) = lambda
        .wait_init_error(Duration::from_secs(30))
        .expect("an init error is reported");
    assert_eq!(error_type, "ModelLoadError");
    assert!(message.contains("s3://models/missing.onnx"), "{message}");
    assert!(
        message.contains("NoSuchKey") || message.contains("does not exist"),
        "{message}"
    );
    let status = lambda
        .wait_exit(Duration::from_secs(10))
        .expect("the process exits after an init error");
    assert!(!status.success());
}

#[test]
fn a_missing_onnx_runtime_library_fails_init_saying_where_and_how() {
    let s3 = S3Server::start();
    let tiles = TileServer::start(solid_tile_handler([0, 0, 0]));
    let env = function_env(
        &s3,
        &tiles,
        &manifest("fixtures/models/rgb_tiny.onnx"),
        &[("ORT_DYLIB_PATH", "/nowhere/libonnxruntime.so")],
    );
    let (error_type, message) = init_error(&env);
    assert_eq!(error_type, "OnnxRuntimeError");
    assert!(
        message.contains("/nowhere/libonnxruntime.so") && message.contains("make ort"),
        "{message}"
    );
}

#[test]
fn configuration_errors_fail_init_naming_the_variable() {
    let s3 = S3Server::start();
    let tiles = TileServer::start(solid_tile_handler([0, 0, 0]));
    let model = manifest("fixtures/models/rgb_tiny.onnx");
    for (name, value, needle) in [
        (
            "TILE_URL",
            "https://t/{z}/{x}/{row}.png",
            "unknown placeholder {row}",
        ),
        ("BATCH_SIZE", "0", "BATCH_SIZE"),
    ] {
        let (error_type, message) =
            init_error(&function_env(&s3, &tiles, &model, &[(name, value)]));
        assert_eq!(error_type, "ConfigError");
        assert!(message.contains(needle), "{message}");
    }
}

#[test]
fn a_request_without_buildings_is_a_typed_lambda_error() {
    let s3 = S3Server::start();
    let tiles = TileServer::start(solid_tile_handler([0, 0, 0]));
    let env = function_env(
        &s3,
        &tiles,
        &manifest("fixtures/models/rgb_tiny.onnx"),
        &[("MAX_BUILDINGS", "2")],
    );
    let lambda = LambdaProcess::spawn(&env);
    match lambda.invoke(&json!({"points": []}), 10_000) {
        Invocation::Error {
            error_type,
            error_message,
            ..
        } => {
            assert_eq!(error_type, "InvalidRequest");
            assert!(error_message.contains("buildings"), "{error_message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let three = json!({"buildings": [{"lat": 1.0, "lon": 1.0}, {"lat": 1.0, "lon": 1.0}, {"lat": 1.0, "lon": 1.0}]});
    match lambda.invoke(&three, 10_000) {
        Invocation::Error {
            error_type,
            error_message,
            ..
        } => {
            assert_eq!(error_type, "TooManyBuildings");
            assert!(error_message.contains("limit is 2"), "{error_message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // The sandbox survives bad requests and still answers good ones.
    let ok = lambda
        .invoke(&json!({"buildings": [{"lat": 1.0, "lon": 1.0}]}), 10_000)
        .unwrap_response();
    assert_eq!(ok["failed"], 0);
}
