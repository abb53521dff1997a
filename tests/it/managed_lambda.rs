//! Lambda Managed Instances through the real `bootstrap` under the Runtime API emulator, which
//! hands out as many invocations at once as the function keeps `/next` polls open
//! (`AWS_LAMBDA_MAX_CONCURRENCY`): many requests in flight in one process, sharing its batches,
//! its fetches and its sessions, each answered, logged and measured as its own; one request's
//! deadline, panic or bad input touching no other. And classic Lambda, one at a time, as ever.
//!
//! Most tests hold every tile until all their requests are in flight ([`Gate`]), so the
//! requests really are served together, and use `rgb_slow.onnx` (rgb_tiny's answers, a few ms
//! per chip) so that chips arrive faster than the model takes them and batches fill with
//! several requests' chips.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::function::{
    ROW, ZOOM, by_column, codes, expect_error, in_tile, json_lines, log_lines, logs_after,
    solid_png, spawn_on,
};
use crate::support::runtime::{Invocation, LambdaProcess, Pending};
use crate::support::tiles::{TileResponse, TileServer, encode_png};

/// Tiles of this column answer 404.
const MISSING: u32 = 2999;
/// Tiles of this column are 512 px (the function resizes them, and logs a warning).
const OVERSIZED: u32 = 2998;
/// Tiles of this column are magenta: the panic drill's colour.
const MAGENTA: u32 = 2997;
/// Tiles of this column take 3 s.
const SLOW: u32 = 2996;
const LABELS: [&str; 3] = ["red", "green", "blue"];

/// The label the model gives a chip on `column`'s tiles (solid red, green or blue by column).
fn label(column: u32) -> &'static str {
    LABELS[column as usize % 3]
}

/// Holds tile answers until opened, so the requests under test are all in flight before any
/// chip exists.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn pass(&self) {
        let (open, changed) = &*self.0;
        let mut open = open.lock().unwrap();
        while !*open {
            open = changed.wait(open).unwrap();
        }
    }

    fn open(&self) {
        let (open, changed) = &*self.0;
        *open.lock().unwrap() = true;
        changed.notify_all();
    }

    /// Opens once `lambda` has `n` invocations in flight; fails the test if it never does.
    fn open_when_in_flight(&self, lambda: &LambdaProcess, n: usize) {
        let reached = lambda.wait_in_flight(n, Duration::from_secs(60));
        self.open();
        assert!(
            reached,
            "the function never had {n} invocations in flight (at most {}); logs:\n{}",
            lambda.max_in_flight(),
            lambda.logs()
        );
    }
}

/// Solid red, green or blue tiles by column, behind `gate`, with the special columns above.
fn tiles(gate: &Gate) -> TileServer {
    let colours: Vec<Vec<u8>> = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
        .iter()
        .map(|rgb| solid_png(*rgb))
        .collect();
    let magenta = solid_png([255, 0, 255]);
    // Green, as `label(OVERSIZED)` says.
    let big = encode_png(&image::RgbImage::from_pixel(
        512,
        512,
        image::Rgb([0, 255, 0]),
    ));
    let gate = gate.clone();
    by_column(move |x| {
        gate.pass();
        match x as u32 {
            MISSING => TileResponse::status(404),
            MAGENTA => TileResponse::png(magenta.clone()),
            OVERSIZED => TileResponse::png(big.clone()),
            SLOW => TileResponse::png(colours[x as usize % 3].clone())
                .with_delay(Duration::from_secs(3)),
            _ => TileResponse::png(colours[x as usize % 3].clone()),
        }
    })
}

/// A function serving `concurrency` invocations at once.
fn managed(
    model: &str,
    tiles: &TileServer,
    concurrency: usize,
    extra: &[(&str, &str)],
) -> LambdaProcess {
    let concurrency = concurrency.to_string();
    let mut env = vec![("AWS_LAMBDA_MAX_CONCURRENCY", concurrency.as_str())];
    env.extend_from_slice(extra);
    spawn_on(model, tiles, &env)
}

/// What one building of a request must come back as.
#[derive(Clone, Debug, PartialEq)]
enum Expect {
    Label(&'static str),
    Code(&'static str),
}

/// A request: its event, and per building its id and what it must be answered.
struct Planned {
    event: Value,
    expected: Vec<(Value, Expect)>,
}

impl Planned {
    fn new(buildings: Vec<(Value, Expect)>) -> Self {
        let event =
            json!({"buildings": buildings.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>()});
        let expected = buildings
            .into_iter()
            .map(|(b, e)| (b["id"].clone(), e))
            .collect();
        Self { event, expected }
    }

    /// Checks `answer` building by building: ids in order, echoed positions, labels, codes.
    fn check(&self, answer: &Value) {
        let predictions = answer["predictions"].as_array().expect("predictions");
        assert_eq!(predictions.len(), self.expected.len(), "{answer}");
        let sent = self.event["buildings"].as_array().unwrap();
        for ((p, (id, expect)), building) in predictions.iter().zip(&self.expected).zip(sent) {
            assert_eq!(&p["id"], id, "{answer}");
            for axis in ["lat", "lon"] {
                // serde_json reads floats to within one unit in the last place.
                let same = match (p[axis].as_f64(), building[axis].as_f64()) {
                    (Some(got), Some(sent)) => (got - sent).abs() < 1e-9,
                    _ => p[axis] == building[axis],
                };
                assert!(same, "its own position echoed: {p} for {building}");
            }
            match expect {
                Expect::Label(label) => assert_eq!(p["label"], *label, "{p}"),
                Expect::Code(code) => assert_eq!(p["error"]["code"], *code, "{p}"),
            }
        }
        let failed = self
            .expected
            .iter()
            .filter(|(_, e)| matches!(e, Expect::Code(_)))
            .count();
        assert_eq!(answer["failed"], failed, "{answer}");
    }
}

fn on(id: impl Into<Value>, column: u32) -> (Value, Expect) {
    (in_tile(id, column), Expect::Label(label(column)))
}

/// Submits every request, opens `gate` once all are in flight, and returns the answers with
/// their request ids, in order.
fn serve_together(
    lambda: &LambdaProcess,
    gate: &Gate,
    planned: &[Planned],
) -> Vec<(Pending, Value)> {
    let pending: Vec<Pending> = planned
        .iter()
        .map(|p| lambda.submit(&p.event, 60_000))
        .collect();
    gate.open_when_in_flight(lambda, planned.len());
    pending
        .into_iter()
        .map(|p| {
            let answer = lambda.wait(&p).0.unwrap_response();
            (p, answer)
        })
        .collect()
}

/// The ids a JSON log line carries: its own `requestId`, its span's, or a batch span's list.
fn ids_of(line: &Value) -> Vec<String> {
    let mut ids: Vec<String> = [&line["requestId"], &line["span"]["requestId"]]
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    if let Some(list) = line["span"]["requestIds"].as_str() {
        ids.extend(
            list.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
    }
    ids
}

#[test]
fn classic_lambda_still_takes_one_invocation_at_a_time() {
    let gate = Gate::default();
    gate.open();
    let tiles = tiles(&gate);
    let lambda = spawn_on("rgb_tiny.onnx", &tiles, &[]);
    let events: Vec<Value> = (0..6)
        .map(|k| json!({"buildings": [in_tile("a", 2000 + k), in_tile("b", 2010 + k)]}))
        .collect();
    for outcome in lambda.invoke_all(&events, 30_000) {
        assert_eq!(codes(&outcome.unwrap_response()), ["none", "none"]);
    }
    assert_eq!(
        lambda.max_in_flight(),
        1,
        "six queued at once, each handed out after the last was answered"
    );
}

#[test]
fn sixteen_concurrent_requests_of_mixed_sizes_are_each_answered_logged_and_measured() {
    let gate = Gate::default();
    let tiles = tiles(&gate);
    let lambda = managed(
        "rgb_slow.onnx",
        &tiles,
        16,
        &[("METRICS_NAMESPACE", "tp-managed")],
    );
    let sizes = [1, 3, 5, 8, 13, 21, 34, 2, 40, 1, 6, 17, 4, 29, 9, 11];
    let planned: Vec<Planned> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            Planned::new(
                (0..n)
                    .map(|j| {
                        let id = format!("r{k}-b{j}");
                        match (k, j) {
                            (3, 1) => (in_tile(id, MISSING), Expect::Code("image_unavailable")),
                            (5, 2) => (in_tile(id, OVERSIZED), Expect::Label(label(OVERSIZED))),
                            (_, j) if k % 4 == 1 && j % 5 == 4 => (
                                json!({"id": id, "lat": 91.0, "lon": 0.0}),
                                Expect::Code("invalid_coordinates"),
                            ),
                            // Columns overlap between requests: shared tiles.
                            _ => on(id, 2000 + ((k * 7 + j * 3) % 60) as u32),
                        }
                    })
                    .collect(),
            )
        })
        .collect();
    let answers = serve_together(&lambda, &gate, &planned);
    assert_eq!(lambda.max_in_flight(), 16);

    for (plan, (_, answer)) in planned.iter().zip(&answers) {
        plan.check(answer);
    }
    let timing = |a: &Value, f: &str| a["timing"][f].as_u64().unwrap() as usize;
    let cold: Vec<bool> = answers
        .iter()
        .map(|(_, a)| a["timing"]["cold_start"].as_bool().unwrap())
        .collect();
    assert_eq!(
        cold.iter().filter(|c| **c).count(),
        1,
        "one cold start: {cold:?}"
    );
    let mates: Vec<usize> = answers
        .iter()
        .map(|(_, a)| timing(a, "batched_with"))
        .collect();
    assert!(mates.iter().all(|m| *m <= 15), "{mates:?}");
    assert!(
        mates.iter().any(|m| *m > 0),
        "chips of different requests shared batches: {mates:?}"
    );
    for request in tiles.requests() {
        assert_eq!(
            tiles.count(&request.path),
            1,
            "each tile fetched once for all the requests needing it: {}",
            request.path
        );
    }

    // The operator's view: one log line and one EMF line per request, each with its own id
    // and its own counts; every line written while serving names the request(s) it is about.
    let logs = logs_after(&lambda, 16, 16);
    let by_id: HashMap<&str, &Value> = answers.iter().map(|(p, a)| (p.id(), a)).collect();
    let done = log_lines(&logs, "invocation done");
    assert_eq!(done.len(), 16, "{logs}");
    for line in &done {
        let id = line["requestId"].as_str().unwrap();
        assert_eq!(line["span"]["requestId"], id, "{line}");
        let answer = by_id[id];
        let predictions = answer["predictions"].as_array().unwrap().len();
        let failed = answer["failed"].as_u64().unwrap() as usize;
        assert_eq!(line["buildings"], predictions, "{line}");
        assert_eq!(line["failed"], failed, "{line}");
        assert_eq!(line["cold_start"], answer["timing"]["cold_start"], "{line}");
        assert_eq!(
            line["batched_with"], answer["timing"]["batched_with"],
            "{line}"
        );
    }
    let emf: Vec<Value> = json_lines(&lambda.stdout())
        .into_iter()
        .filter(|l| l.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 16);
    let mut seen = HashSet::new();
    for doc in &emf {
        let id = doc["requestId"].as_str().unwrap();
        assert!(
            seen.insert(id.to_string()),
            "one EMF line per request: {id}"
        );
        let answer = by_id[id];
        let failed = answer["failed"].as_f64().unwrap();
        let total = answer["predictions"].as_array().unwrap().len() as f64;
        assert_eq!(doc["Predictions"], total - failed, "{doc}");
        assert_eq!(doc["Failed"], failed, "{doc}");
        assert_eq!(
            doc["BatchedWith"],
            answer["timing"]["batched_with"].as_f64().unwrap()
        );
    }
    let cold_starts: f64 = emf.iter().map(|d| d["ColdStart"].as_f64().unwrap()).sum();
    assert_eq!(cold_starts, 1.0);

    let lines = json_lines(&logs);
    let ready = lines
        .iter()
        .position(|l| l["message"] == "model ready")
        .expect("a model ready line");
    let serving: Vec<&Value> = lines[ready + 1..].iter().collect();
    assert!(
        serving
            .iter()
            .any(|l| l["message"] == "image has an unexpected size; resized"),
        "the oversized tile was logged: {logs}"
    );
    for line in serving {
        let ids = ids_of(line);
        assert!(
            !ids.is_empty() && ids.iter().all(|id| by_id.contains_key(id.as_str())),
            "a line written while serving names its request: {line}"
        );
    }
}

#[test]
fn requests_with_the_same_building_ids_each_get_their_own_predictions() {
    let gate = Gate::default();
    let tiles = tiles(&gate);
    let lambda = managed("rgb_slow.onnx", &tiles, 8, &[]);
    // Eight requests, each for buildings "a" to "d" on tiles of its own colour and places.
    let planned: Vec<Planned> = (0..8u32)
        .map(|k| {
            Planned::new(
                ["a", "b", "c", "d"]
                    .iter()
                    .enumerate()
                    .map(|(j, id)| on(*id, 2100 + 3 * (4 * k + j as u32) + k % 3))
                    .collect(),
            )
        })
        .collect();
    let answers = serve_together(&lambda, &gate, &planned);
    for (plan, (_, answer)) in planned.iter().zip(&answers) {
        plan.check(answer);
    }
    let shared: u64 = answers
        .iter()
        .map(|(_, a)| a["timing"]["batched_with"].as_u64().unwrap())
        .sum();
    assert!(shared > 0, "the requests' chips shared batches");
}

#[test]
fn a_short_deadline_ends_one_request_and_not_the_fetch_it_shares() {
    let gate = Gate::default();
    gate.open();
    let tiles = tiles(&gate);
    // No warm cache: a second request for the slow tile can only be spared by the shared fetch.
    let lambda = managed(
        "rgb_tiny.onnx",
        &tiles,
        3,
        &[("DEADLINE_MARGIN_MS", "300"), ("TILE_CACHE_MB", "0")],
    );
    let slow_tile = format!("/{ZOOM}/{SLOW}/{ROW}.png");
    let hurried = Planned::new(vec![
        on("d-fast", 2200),
        (in_tile("d-slow", SLOW), Expect::Code("deadline_exceeded")),
    ]);
    let short = lambda.submit(&hurried.event, 1500);
    // The hurried request starts the slow tile's fetch; the others join it.
    let started = (0..2000).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        tiles.count(&slow_tile) == 1
    });
    assert!(
        started,
        "the slow tile was asked for; logs:\n{}",
        lambda.logs()
    );
    let patient: Vec<Planned> = (0..2)
        .map(|k| {
            Planned::new(vec![
                on(format!("s{k}-fast"), 2201 + k),
                on(format!("s{k}-slow"), SLOW),
            ])
        })
        .collect();
    let waiting: Vec<Pending> = patient
        .iter()
        .map(|p| lambda.submit(&p.event, 30_000))
        .collect();

    hurried.check(&lambda.wait(&short).0.unwrap_response());
    for (plan, pending) in patient.iter().zip(&waiting) {
        plan.check(&lambda.wait(pending).0.unwrap_response());
    }
    assert_eq!(
        tiles.count(&slow_tile),
        1,
        "the fetch outlived the request that started it, and was not started again"
    );
}

#[test]
fn a_panic_in_one_request_fails_only_that_requests_buildings() {
    let gate = Gate::default();
    let tiles = tiles(&gate);
    let lambda = managed(
        "rgb_slow.onnx",
        &tiles,
        4,
        &[("FAULT_PANIC_ON_RGB", "255,0,255")],
    );
    let poisoned = json!({"buildings": [
        in_tile("p0", 2300), in_tile("p1", MAGENTA), in_tile("p2", 2301), in_tile("p3", 2302),
    ]});
    let others: Vec<Planned> = (0..3u32)
        .map(|k| {
            Planned::new(
                (0..6)
                    .map(|j| on(format!("q{k}-{j}"), 2310 + 6 * k + j))
                    .collect(),
            )
        })
        .collect();
    let p = lambda.submit(&poisoned, 60_000);
    let pending: Vec<Pending> = others
        .iter()
        .map(|o| lambda.submit(&o.event, 60_000))
        .collect();
    gate.open_when_in_flight(&lambda, 4);

    let answer = lambda.wait(&p).0.unwrap_response();
    let predictions = answer["predictions"].as_array().unwrap();
    let message = |p: &Value| p["error"]["message"].as_str().unwrap_or("").to_string();
    assert_eq!(
        predictions[1]["error"]["code"], "inference_failed",
        "{answer}"
    );
    assert!(
        message(&predictions[1]).contains("FAULT_PANIC_ON_RGB"),
        "{answer}"
    );
    for (p, column) in [
        (&predictions[0], 2300),
        (&predictions[2], 2301),
        (&predictions[3], 2302),
    ] {
        // Its own other chips may have shared the panicking batch.
        if p.get("error").is_some() {
            assert!(message(p).contains("FAULT_PANIC_ON_RGB"), "{p}");
        } else {
            assert_eq!(p["label"], label(column), "{p}");
        }
    }
    for (plan, pending) in others.iter().zip(&pending) {
        plan.check(&lambda.wait(pending).0.unwrap_response());
    }
    // Every session is still there, and the panic was logged as one JSON line naming the
    // requests of the batch it hit.
    let after = Planned::new(vec![on("after-1", 2400), on("after-2", 2401)]);
    after.check(&lambda.invoke(&after.event, 30_000).unwrap_response());
    let logs = logs_after(&lambda, 5, 5);
    let panics = log_lines(&logs, "a thread panicked");
    assert!(!panics.is_empty(), "{logs}");
    for line in panics {
        assert_eq!(line["level"], "ERROR");
        assert!(
            line["panic"]
                .as_str()
                .unwrap()
                .contains("FAULT_PANIC_ON_RGB"),
            "{line}"
        );
        assert!(ids_of(&line).iter().any(|id| id == p.id()), "{line}");
    }
}

#[test]
fn bad_input_in_one_request_affects_no_other() {
    let gate = Gate::default();
    let tiles = tiles(&gate);
    let lambda = managed("rgb_tiny.onnx", &tiles, 4, &[("MAX_BUILDINGS", "5")]);
    let good = Planned::new(vec![on("g1", 2500), on("g2", 2501), on("g3", 2502)]);
    let mixed = Planned::new(vec![
        on("m1", 2503),
        (
            json!({"id": "m2", "lat": "north", "lon": 0}),
            Expect::Code("invalid_coordinates"),
        ),
    ]);
    let not_json = lambda.submit_raw(b"{\"buildings\": [".to_vec(), 60_000);
    let too_many = lambda.submit(
        &json!({"buildings": (0..6).map(|j| in_tile(j, 2504)).collect::<Vec<_>>()}),
        60_000,
    );
    let g = lambda.submit(&good.event, 60_000);
    let m = lambda.submit(&mixed.event, 60_000);
    gate.open_when_in_flight(&lambda, 2);
    let (error_type, _) = expect_error(lambda.wait(&not_json).0);
    assert_eq!(error_type, "InvalidRequest");
    let (error_type, _) = expect_error(lambda.wait(&too_many).0);
    assert_eq!(error_type, "TooManyBuildings");
    good.check(&lambda.wait(&g).0.unwrap_response());
    mixed.check(&lambda.wait(&m).0.unwrap_response());
    assert!(matches!(
        lambda.invoke(&good.event, 30_000),
        Invocation::Response(_)
    ));
}
