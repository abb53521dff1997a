//! Faults around the real `bootstrap` under the Lambda Runtime API emulator: S3 dead, hanging
//! or slow at init; a model that is corrupt or the wrong shape; a model that fails or answers
//! NaN at run time; a tile server that goes away and comes back. Each ends in a typed answer
//! or a typed init error within Lambda's limits, never in a silent or crashed sandbox.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::function::{
    by_column, codes, dead_port, env, in_tile, model, socket_addr, solid_png, spawn_on, xyz,
};
use crate::support::proxy::{Mode, TcpProxy};
use crate::support::runtime::LambdaProcess;
use crate::support::s3::S3Server;
use crate::support::tiles::{TileResponse, TileServer};

/// Lambda's cap on the init phase.
const INIT_CAP: Duration = Duration::from_secs(10);

/// Tiles of one colour per column: red below 3000, black from 3000 to 3999, blue from 4000.
fn coloured_tiles() -> TileServer {
    let (red, black, blue) = (
        solid_png([255, 0, 0]),
        solid_png([0, 0, 0]),
        solid_png([0, 0, 255]),
    );
    by_column(move |x| match x {
        ..3000 => TileResponse::png(red.clone()),
        3000..4000 => TileResponse::png(black.clone()),
        _ => TileResponse::png(blue.clone()),
    })
}

/// The function with its model in `s3` (bucket `models`, key `roof.onnx`) reached at `endpoint`.
fn from_s3(s3: &S3Server, endpoint: &str, extra: &[(&str, &str)]) -> LambdaProcess {
    let mut vars = s3.env();
    vars.extend(env(
        "s3://models/roof.onnx",
        "http://127.0.0.1:9/{z}/{x}/{y}.png",
        extra,
    ));
    vars.push(("AWS_ENDPOINT_URL".into(), endpoint.into()));
    LambdaProcess::spawn(&vars)
}

/// Waits for the init error and the process's exit; returns it with the time it took.
fn init_failure(lambda: &mut LambdaProcess, started: Instant) -> (String, String, Duration) {
    let (error_type, message) = lambda
        .wait_init_error(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no init error; logs:\n{}", lambda.logs()));
    let took = started.elapsed();
    let status = lambda
        .wait_exit(Duration::from_secs(10))
        .expect("the process exits after an init error");
    assert!(!status.success());
    (error_type, message, took)
}

#[test]
fn s3_with_nothing_listening_fails_init_fast_naming_bucket_key_and_cause() {
    let s3 = S3Server::start();
    let started = Instant::now();
    let mut lambda = from_s3(&s3, &format!("http://127.0.0.1:{}", dead_port()), &[]);
    let (error_type, message, took) = init_failure(&mut lambda, started);
    assert_eq!(error_type, "ModelLoadError");
    assert!(message.contains("s3://models/roof.onnx"), "{message}");
    assert!(
        message.to_lowercase().contains("connection refused"),
        "the cause is named: {message}"
    );
    assert!(took < INIT_CAP, "init error after {took:?}");
}

#[test]
fn a_hanging_s3_fails_init_within_lambdas_cap_after_three_attempts() {
    let s3 = S3Server::start();
    s3.put(
        "models",
        "roof.onnx",
        &std::fs::read(model("rgb_tiny.onnx")).unwrap(),
    );
    let proxy = TcpProxy::start(socket_addr(&s3.endpoint()), Mode::Hang);
    let started = Instant::now();
    let mut lambda = from_s3(&s3, &proxy.url(), &[]);
    let (error_type, message, took) = init_failure(&mut lambda, started);
    assert_eq!(error_type, "ModelLoadError");
    assert!(
        message.contains("s3://models/roof.onnx") && message.contains("timeout"),
        "{message}"
    );
    assert!(took < INIT_CAP, "init error after {took:?}");
    assert_eq!(
        proxy.connections(),
        3,
        "one connection per attempt: {message}"
    );
    assert_eq!(s3.request_count(), 0);
}

#[test]
fn model_load_timeout_ms_bounds_the_whole_load() {
    let s3 = S3Server::start();
    let proxy = TcpProxy::start(socket_addr(&s3.endpoint()), Mode::Hang);
    let started = Instant::now();
    let mut lambda = from_s3(&s3, &proxy.url(), &[("MODEL_LOAD_TIMEOUT_MS", "1200")]);
    let (error_type, message, took) = init_failure(&mut lambda, started);
    assert_eq!(error_type, "ModelLoadError");
    assert!(
        message.contains("not loaded within 1200 ms (MODEL_LOAD_TIMEOUT_MS)")
            && message.contains("s3://models/roof.onnx"),
        "{message}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn a_slow_s3_within_the_limits_still_loads_and_answers() {
    let s3 = S3Server::start();
    s3.put(
        "models",
        "roof.onnx",
        &std::fs::read(model("rgb_tiny.onnx")).unwrap(),
    );
    let proxy = TcpProxy::start(
        socket_addr(&s3.endpoint()),
        Mode::Delay(Duration::from_millis(900)),
    );
    let tiles = coloured_tiles();
    let mut vars = s3.env();
    vars.extend(env(
        "s3://models/roof.onnx",
        &xyz(&tiles.base_url()),
        &[("TILE_ZOOM", "12")],
    ));
    vars.push(("AWS_ENDPOINT_URL".into(), proxy.url()));
    let lambda = LambdaProcess::spawn(&vars);
    let answer = lambda
        .invoke(&json!({"buildings": [in_tile("r", 2000)]}), 30_000)
        .unwrap_response();
    assert_eq!(answer["predictions"][0]["label"], "red", "{answer}");
    assert_eq!(s3.request_count(), 1);
}

#[test]
fn corrupt_and_wrongly_shaped_models_from_s3_fail_init_as_model_errors() {
    let s3 = S3Server::start();
    for (bytes, needles) in [
        (
            b"<Error><Code>AccessDenied</Code></Error>".to_vec(),
            vec!["not a usable ONNX model"],
        ),
        (
            std::fs::read(model("grey_input.onnx")).unwrap(),
            vec!["[N,1,32,32]", "3-channel RGB or BGR"],
        ),
    ] {
        s3.put("models", "roof.onnx", &bytes);
        let mut lambda = from_s3(&s3, &s3.endpoint(), &[]);
        let (error_type, message, _) = init_failure(&mut lambda, Instant::now());
        assert_eq!(error_type, "ModelError");
        assert!(message.contains("s3://models/roof.onnx"), "{message}");
        for needle in needles {
            assert!(message.contains(needle), "{needle}: {message}");
        }
    }
}

#[test]
fn an_onnx_runtime_error_at_run_time_fails_only_the_buildings_it_hit() {
    let tiles = coloured_tiles();
    // Passes every check at init (its probe is all zeros); fails inside ONNX Runtime on a red
    // chip. Its batch is fixed at 1, so each building is its own run.
    let lambda = spawn_on("rgb_tiny_fails_on_red.onnx", &tiles, &[]);
    let event = json!({"buildings": [
        in_tile("red-1", 2000), in_tile("blue-1", 4000), in_tile("red-2", 2001),
        in_tile("blue-2", 4001), in_tile("red-3", 2002), in_tile("blue-3", 4002),
    ]});
    for _ in 0..2 {
        let answer = lambda.invoke(&event, 30_000).unwrap_response();
        let predictions = answer["predictions"].as_array().unwrap();
        assert_eq!(predictions.len(), 6);
        for p in predictions {
            if p["id"].as_str().unwrap().starts_with("red") {
                assert_eq!(p["error"]["code"], "inference_failed", "{p}");
                let message = p["error"]["message"].as_str().unwrap();
                assert!(
                    message.contains("Gather") && message.contains("out of data bounds"),
                    "ONNX Runtime's reason: {message}"
                );
            } else {
                assert_eq!(p["label"], "blue", "{p}");
            }
        }
        assert_eq!(answer["failed"], 3);
    }
    let blue_only = json!({"buildings": [in_tile("blue-4", 4003)]});
    let answer = lambda.invoke(&blue_only, 30_000).unwrap_response();
    assert_eq!(answer["failed"], 0, "the session still works: {answer}");
}

#[test]
fn a_model_answering_nan_gets_inference_failed_not_a_label() {
    let tiles = coloured_tiles();
    let lambda = spawn_on("rgb_log_nan_on_black.onnx", &tiles, &[]);
    let event = json!({"buildings": [in_tile("red", 2000), in_tile("black", 3000)]});
    let answer = lambda.invoke(&event, 30_000).unwrap_response();
    assert_eq!(answer["predictions"][0]["label"], "red", "{answer}");
    let error = &answer["predictions"][1]["error"];
    assert_eq!(error["code"], "inference_failed", "{answer}");
    assert!(
        error["message"].as_str().unwrap().contains("not finite"),
        "{error}"
    );
}

#[test]
fn a_tile_server_going_away_and_coming_back_is_survived() {
    let tiles = coloured_tiles();
    let proxy = TcpProxy::start(socket_addr(&tiles.base_url()), Mode::Forward);
    let lambda = LambdaProcess::spawn(&env(
        &model("rgb_tiny.onnx"),
        &xyz(&proxy.url()),
        &[("TILE_ZOOM", "12"), ("DOWNLOAD_TIMEOUT_MS", "1000")],
    ));
    let first = json!({"buildings": [in_tile("a", 2000)]});
    assert_eq!(
        codes(&lambda.invoke(&first, 30_000).unwrap_response()),
        ["none"]
    );

    proxy.set_mode(Mode::Refuse);
    let down = json!({"buildings": [in_tile("a", 2000), in_tile("b", 2001)]});
    let (answer, took) = lambda.invoke_timed(&down, 30_000);
    let answer = answer.unwrap_response();
    assert_eq!(
        codes(&answer),
        ["none", "image_unavailable"],
        "the cached tile still serves; the new one fails: {answer}"
    );
    let message = answer["predictions"][1]["error"]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("(after 3 attempts)"), "{message}");
    assert!(took < Duration::from_secs(5), "bounded retries: {took:?}");

    proxy.set_mode(Mode::Hang);
    let hanging = json!({"buildings": [in_tile("c", 2002)]});
    let answer = lambda.invoke(&hanging, 30_000).unwrap_response();
    assert_eq!(codes(&answer), ["image_unavailable"], "{answer}");

    proxy.set_mode(Mode::Forward);
    let back = json!({"buildings": [in_tile("b", 2001), in_tile("c", 2002)]});
    assert_eq!(
        codes(&lambda.invoke(&back, 30_000).unwrap_response()),
        ["none", "none"]
    );
}
