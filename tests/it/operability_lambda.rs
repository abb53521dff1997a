//! What the operator sees, from the captured output of the real `bootstrap` under the Runtime
//! API emulator: one JSON log line per invocation (request id, cold start, counts, timings) on
//! stderr, one CloudWatch Embedded Metric Format line per invocation on stdout, and Lambda's
//! and `RUST_LOG`'s log levels obeyed.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::support::function::{
    by_column, expect_error, in_tile, json_lines, log_lines, logs_after, solid_png, spawn_on,
};
use crate::support::runtime::LambdaProcess;
use crate::support::tiles::{TileResponse, TileServer};

/// The tile column answering 404.
const MISSING: u64 = 2999;

fn tiles() -> TileServer {
    let red = solid_png([255, 0, 0]);
    by_column(move |x| match x {
        MISSING => TileResponse::status(404),
        _ => TileResponse::png(red.clone()),
    })
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Two predictions, one bad coordinate, one missing tile.
fn mixed_event() -> Value {
    json!({"buildings": [
        in_tile("a", 2000), in_tile("b", 2001), {"id": "bad", "lat": 95.0, "lon": 0.0},
        in_tile("gone", MISSING as u32),
    ]})
}

/// The value of metric `name` in an EMF document, checking it is declared with `unit`.
fn metric(doc: &Value, name: &str, unit: &str) -> f64 {
    let declared = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Name"] == name)
        .unwrap_or_else(|| panic!("{name} is not declared in {doc}"));
    assert_eq!(declared["Unit"], unit, "{doc}");
    doc[name]
        .as_f64()
        .unwrap_or_else(|| panic!("{name} has no number in {doc}"))
}

#[test]
fn each_invocation_writes_one_log_line_and_one_emf_line() {
    let tiles = tiles();
    let lambda = spawn_on(
        "rgb_tiny.onnx",
        &tiles,
        &[
            ("MAX_BUILDINGS", "10"),
            ("METRICS_NAMESPACE", "tp-test"),
            ("DOWNLOAD_RETRIES", "0"),
        ],
    );
    let started = epoch_ms();
    let cold = lambda.invoke(&mixed_event(), 30_000).unwrap_response();
    assert_eq!(cold["failed"], 2, "{cold}");
    let too_many = json!({"buildings": vec![json!({"lat": 1.0, "lon": 1.0}); 11]});
    expect_error(lambda.invoke(&too_many, 30_000));
    let warm = lambda.invoke(&mixed_event(), 30_000).unwrap_response();
    assert_eq!(warm["failed"], 2, "{warm}");
    let ended = epoch_ms();
    let ids = lambda.request_ids();
    let logs = logs_after(&lambda, 3, 3);

    // EMF: on stdout, one JSON line each, in order.
    let emf: Vec<Value> = json_lines(&lambda.stdout())
        .into_iter()
        .filter(|l| l.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 3, "{}", lambda.stdout());
    assert!(
        json_lines(&logs)
            .iter()
            .filter(|l| l.get("_aws").is_some())
            .count()
            == 3,
        "EMF lines go to stdout only"
    );
    for (doc, id) in emf.iter().zip(&ids) {
        let aws = &doc["_aws"];
        let at = aws["Timestamp"].as_u64().expect("an integer Timestamp");
        assert!(
            started <= at && at <= ended,
            "{at} not in {started}..{ended}"
        );
        let directives = aws["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives.len(), 1);
        assert_eq!(directives[0]["Namespace"], "tp-test");
        assert_eq!(directives[0]["Dimensions"], json!([["FunctionName"]]));
        assert_eq!(doc["FunctionName"], "tilepredict-test");
        assert_eq!(&doc["requestId"], id);
        for m in directives[0]["Metrics"].as_array().unwrap() {
            let name = m["Name"].as_str().unwrap();
            assert!(doc[name].is_number(), "{name} has a value: {doc}");
            assert!(["Milliseconds", "Count"].contains(&m["Unit"].as_str().unwrap()));
        }
        assert!(metric(doc, "TotalMs", "Milliseconds") > 0.0);
    }
    let (first, refused, second) = (&emf[0], &emf[1], &emf[2]);
    for (doc, cold_start, cache_hits, images_fetched) in
        [(first, 1.0, 0.0, 3.0), (second, 0.0, 2.0, 1.0)]
    {
        assert_eq!(doc["outcome"], "answered");
        assert_eq!(metric(doc, "Predictions", "Count"), 2.0);
        assert_eq!(metric(doc, "Failed", "Count"), 2.0);
        assert_eq!(metric(doc, "InvalidInput", "Count"), 1.0);
        assert_eq!(metric(doc, "ImageFailed", "Count"), 1.0);
        assert_eq!(metric(doc, "DeadlineExceeded", "Count"), 0.0);
        assert_eq!(metric(doc, "InferenceFailed", "Count"), 0.0);
        assert_eq!(metric(doc, "RequestErrors", "Count"), 0.0);
        assert_eq!(metric(doc, "ColdStart", "Count"), cold_start);
        assert_eq!(metric(doc, "CacheHits", "Count"), cache_hits);
        assert_eq!(metric(doc, "ImagesFetched", "Count"), images_fetched);
        assert!(metric(doc, "DownloadMs", "Milliseconds") > 0.0);
        assert!(metric(doc, "InferenceMs", "Milliseconds") > 0.0);
    }
    assert_eq!(refused["outcome"], "TooManyBuildings");
    assert_eq!(metric(refused, "RequestErrors", "Count"), 1.0);
    assert_eq!(metric(refused, "ColdStart", "Count"), 0.0);
    assert_eq!(metric(refused, "Predictions", "Count"), 0.0);
    assert!(refused.get("DownloadMs").is_none(), "{refused}");

    // Logs: one "invocation done" line each, with the request id and what happened.
    let lines = log_lines(&logs, "invocation done");
    assert_eq!(lines.len(), 3, "{logs}");
    for (line, id) in lines.iter().zip(&ids) {
        assert_eq!(&line["requestId"], id, "{line}");
        assert_eq!(
            &line["span"]["requestId"], id,
            "lambda_runtime's span: {line}"
        );
        let at = line["timestamp"].as_str().unwrap();
        assert!(at.ends_with('Z') && at.contains('T'), "RFC 3339: {at}");
        assert!(line["duration_ms"].as_f64().unwrap() > 0.0, "{line}");
        let left = line["remaining_ms"].as_f64().unwrap();
        assert!(left > 20_000.0 && left < 30_000.0, "{line}");
    }
    for (line, cold_start) in [(&lines[0], true), (&lines[2], false)] {
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["outcome"], "answered");
        assert_eq!(line["cold_start"], cold_start);
        assert_eq!(
            (&line["buildings"], &line["predictions"], &line["failed"]),
            (&json!(4), &json!(2), &json!(2))
        );
        assert_eq!(line["errors"], "image_unavailable=1,invalid_coordinates=1");
        for field in ["total_ms", "download_ms", "inference_ms"] {
            assert!(line[field].as_f64().unwrap() > 0.0, "{field}: {line}");
        }
        assert!(line["images_fetched"].is_number() && line["cache_hits"].is_number());
    }
    assert!(
        !logs.contains("lambda_runtime::layers::panic"),
        "no second line for a refused request: {logs}"
    );
    assert_eq!(lines[1]["level"], "WARN");
    assert_eq!(lines[1]["outcome"], "TooManyBuildings");
    assert!(
        lines[1]["error"].as_str().unwrap().contains("limit is 10"),
        "{}",
        lines[1]
    );
}

#[test]
fn a_refused_first_request_is_the_cold_start() {
    let tiles = tiles();
    let lambda = spawn_on("rgb_tiny.onnx", &tiles, &[]);
    expect_error(lambda.invoke(&json!({"nothing": 1}), 30_000));
    let answer = lambda.invoke(&mixed_event(), 30_000).unwrap_response();
    assert_eq!(answer["timing"]["cold_start"], false, "{answer}");
    let lines = log_lines(&logs_after(&lambda, 2, 2), "invocation done");
    assert_eq!(
        lines
            .iter()
            .map(|l| l["cold_start"].clone())
            .collect::<Vec<_>>(),
        [json!(true), json!(false)]
    );
}

/// The function's log lines for one good and one refused invocation under these variables,
/// once it has written `lines` "invocation done" lines.
fn logs_with(env: &[(&str, &str)], lines: usize) -> (LambdaProcess, Vec<Value>) {
    let tiles = tiles();
    let lambda = spawn_on("rgb_tiny.onnx", &tiles, env);
    lambda.invoke(&mixed_event(), 30_000).unwrap_response();
    expect_error(lambda.invoke(&json!({"buildings": []}), 30_000));
    let logs = logs_after(&lambda, lines, 2);
    let lines = json_lines(&logs)
        .into_iter()
        .filter(|l| l.get("_aws").is_none())
        .collect();
    (lambda, lines)
}

fn levels(lines: &[Value]) -> Vec<String> {
    let mut levels: Vec<String> = lines
        .iter()
        .map(|l| l["level"].as_str().unwrap_or("?").to_string())
        .collect();
    levels.sort();
    levels.dedup();
    levels
}

#[test]
fn lambdas_log_level_wins_over_rust_log_and_rust_log_can_name_targets() {
    // Lambda's application log level (advanced logging controls) set to WARN: only the refused
    // request's line is left, whatever RUST_LOG asks for; metrics still go out.
    let (lambda, lines) = logs_with(
        &[("AWS_LAMBDA_LOG_LEVEL", "WARN"), ("RUST_LOG", "trace")],
        1,
    );
    assert_eq!(levels(&lines), ["WARN"], "{lines:?}");
    assert_eq!(log_lines(&lambda.logs(), "invocation done").len(), 1);
    assert_eq!(
        lambda.stdout().lines().count(),
        2,
        "EMF is not a log level's business"
    );

    let (_, lines) = logs_with(&[("RUST_LOG", "warn")], 1);
    assert_eq!(levels(&lines), ["WARN"], "{lines:?}");

    let (_, lines) = logs_with(&[("AWS_LAMBDA_LOG_LEVEL", "DEBUG")], 2);
    assert!(levels(&lines).contains(&"DEBUG".to_string()), "{lines:?}");

    // RUST_LOG with a target: our debug lines, nobody else's.
    let (_, lines) = logs_with(&[("RUST_LOG", "info,tilepredict=debug")], 2);
    let debug: Vec<&Value> = lines.iter().filter(|l| l["level"] == "DEBUG").collect();
    assert!(!debug.is_empty(), "{lines:?}");
    assert!(
        debug
            .iter()
            .all(|l| l["target"].as_str().unwrap().starts_with("tilepredict")),
        "{debug:?}"
    );
}
