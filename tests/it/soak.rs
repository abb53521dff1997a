//! Soak: many warm invocations of mixed good and bad events through the real `bootstrap` and
//! the Runtime API emulator. Every building of every answer must be accounted for (the right
//! prediction or the right error, in order), every refused request must be refused with the
//! right `errorType`, and peak memory must not keep growing once warm.
//!
//! The same mix runs one at a time (classic Lambda) and eight at a time (Lambda Managed
//! Instances, `AWS_LAMBDA_MAX_CONCURRENCY=8`: the emulator keeps eight invocations in flight).
//! `soak_short` and `soak_short_concurrent` (60 invocations each) run with the suite; `make
//! soak` runs `soak` and `soak_concurrent` with `SOAK_INVOCATIONS` (default 500) and prints the
//! figures.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};

use crate::support::function::{ZOOM, expect_error, logs_after, spawn, xyz};
use crate::support::runtime::{Invocation, LambdaProcess, Pending};
use crate::support::tiles::{
    TileResponse, TileServer, encode_png, parse_xyz, point_in_tile, render_tile,
};

/// The area buildings fall in: 24 × 8 tiles, more than the warm cache holds.
const COLUMNS: std::ops::Range<u32> = 2000..2024;
const ROWS: std::ops::Range<u32> = 1300..1308;
/// Tiles of this column answer 404; those of the next fail once with 503, then answer.
const MISSING: u32 = 2030;
const FLAKY: u32 = 2031;
const MAX_BUILDINGS: usize = 50;
/// Peak RSS may grow this much between the checkpoint and the end.
const MAX_GROWTH: f64 = 0.10;

/// What one building's answer must be.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Label,
    Code(&'static str),
}

/// One invocation: the payload and what must come back.
enum Plan {
    Answer(Value, Vec<(Value, Expect)>),
    Refuse(Vec<u8>, &'static str),
}

/// The synthetic world, each tile encoded once (the server is not what is being soaked).
/// Encoded tiles by (x, y).
type Encoded = Mutex<HashMap<(u64, u64), Vec<u8>>>;

/// The tiles are the same for every soak in this process, so they are encoded once for all.
fn tiles() -> TileServer {
    static ENCODED: OnceLock<Encoded> = OnceLock::new();
    let encoded = ENCODED.get_or_init(Mutex::default);
    TileServer::start(Arc::new(move |req| match parse_xyz(&req.path) {
        Some((_, x, _)) if x == u64::from(MISSING) => TileResponse::status(404),
        Some((_, x, _)) if x == u64::from(FLAKY) && req.nth == 0 => TileResponse::status(503),
        Some((z, x, y)) => {
            // Encoded outside the lock: eight invocations at once ask for hundreds of tiles,
            // and encoding them one after another made some wait past the client's timeout.
            let known = encoded.lock().unwrap().get(&(x, y)).cloned();
            let png = known.unwrap_or_else(|| {
                let png = encode_png(&render_tile(z, x, y));
                encoded.lock().unwrap().insert((x, y), png.clone());
                png
            });
            TileResponse::png(png)
        }
        None => TileResponse::status(404),
    }))
}

fn building(rng: &mut fastrand::Rng, index: usize) -> (Value, Value, Expect) {
    let hostile = ["../../etc/passwd", "?x=1", "{z}", "a\r\nb", "🏠"];
    let id = match rng.u8(0..10) {
        0 => json!(rng.u32(..)),
        1 => json!(hostile[rng.usize(..hostile.len())]),
        2 => Value::Null,
        _ => json!(format!("b{}", rng.u16(..500))),
    };
    let echoed = if id.is_null() {
        json!(index)
    } else {
        id.clone()
    };
    let (column, row) = (rng.u32(COLUMNS), rng.u32(ROWS));
    let (px, py) = (rng.f64() * 256.0, rng.f64() * 256.0);
    let (b, expect) = match rng.u8(0..20) {
        0 => (
            json!({"lat": 95.0, "lon": 21.0}),
            Expect::Code("invalid_coordinates"),
        ),
        1 => (
            json!({"lat": "52.1", "lon": 21.0}),
            Expect::Code("invalid_coordinates"),
        ),
        2 => {
            let (lat, lon) = point_in_tile(ZOOM, MISSING, row, 128.0, 128.0);
            (
                json!({"lat": lat, "lon": lon}),
                Expect::Code("image_unavailable"),
            )
        }
        3 => {
            let (lat, lon) = point_in_tile(ZOOM, FLAKY, row, 128.0, 128.0);
            (json!({"lat": lat, "lon": lon}), Expect::Label)
        }
        _ => {
            let (lat, lon) = point_in_tile(ZOOM, column, row, px, py);
            (json!({"lat": lat, "lon": lon, "n": index}), Expect::Label)
        }
    };
    let mut b = b;
    if !id.is_null() {
        b["id"] = id;
    }
    (b, echoed, expect)
}

fn answer(buildings: Vec<(Value, Value, Expect)>) -> Plan {
    let event =
        json!({"buildings": buildings.iter().map(|(b, _, _)| b.clone()).collect::<Vec<_>>()});
    Plan::Answer(
        event,
        buildings.into_iter().map(|(_, id, e)| (id, e)).collect(),
    )
}

/// Invocation `i`'s event. The first is the largest kind, so later ones find memory warm.
fn plan(rng: &mut fastrand::Rng, i: usize) -> Plan {
    let kind = if i == 0 { 8 } else { rng.u8(0..10) };
    match kind {
        0..=5 => {
            let n = rng.usize(1..=40);
            answer((0..n).map(|j| building(rng, j)).collect())
        }
        6 => {
            // One spot, many times: one chip, one prediction, every building answered.
            let (lat, lon) = point_in_tile(ZOOM, rng.u32(COLUMNS), rng.u32(ROWS), 100.0, 100.0);
            let n = rng.usize(2..=30);
            let same = (
                json!({"id": "same", "lat": lat, "lon": lon}),
                json!("same"),
                Expect::Label,
            );
            answer(vec![same; n])
        }
        7 => match rng.u8(0..5) {
            0 => Plan::Refuse(br#"{"buildings": []}"#.to_vec(), "InvalidRequest"),
            1 => Plan::Refuse(br#"{"points": [1, 2]}"#.to_vec(), "InvalidRequest"),
            2 => {
                let many = vec![json!({"lat": 1.0, "lon": 1.0}); MAX_BUILDINGS + 1];
                Plan::Refuse(
                    json!({"buildings": many}).to_string().into_bytes(),
                    "TooManyBuildings",
                )
            }
            3 => Plan::Refuse(b"<html>not json</html>".to_vec(), "InvalidRequest"),
            _ => {
                let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
                Plan::Refuse(deep.into_bytes(), "InvalidRequest")
            }
        },
        8 => answer((0..MAX_BUILDINGS).map(|j| building(rng, j)).collect()),
        _ => {
            // Nothing to fetch: every building is bad.
            let n = rng.usize(1..=10);
            answer(
                (0..n)
                    .map(|j| {
                        (
                            json!({"lat": null, "lon": j}),
                            json!(j),
                            Expect::Code("invalid_coordinates"),
                        )
                    })
                    .collect(),
            )
        }
    }
}

/// Checks one answer against its plan; returns how many buildings it accounted for.
fn account(i: usize, answer: &Value, expected: &[(Value, Expect)]) -> usize {
    let predictions = answer["predictions"]
        .as_array()
        .unwrap_or_else(|| panic!("invocation {i}: no predictions in {answer}"));
    assert_eq!(
        predictions.len(),
        expected.len(),
        "invocation {i}: one answer per building"
    );
    let mut failed = 0;
    for (j, (p, (id, expect))) in predictions.iter().zip(expected).enumerate() {
        assert_eq!(&p["id"], id, "invocation {i}, building {j}: {p}");
        match expect {
            Expect::Label => {
                assert!(p["label"].is_string(), "invocation {i}, building {j}: {p}");
                assert!(
                    p.get("error").is_none(),
                    "invocation {i}, building {j}: {p}"
                );
            }
            Expect::Code(code) => {
                assert_eq!(
                    p["error"]["code"], *code,
                    "invocation {i}, building {j}: {p}"
                );
                assert!(
                    p.get("label").is_none(),
                    "invocation {i}, building {j}: {p}"
                );
                failed += 1;
            }
        }
    }
    assert_eq!(answer["failed"], failed, "invocation {i}");
    predictions.len()
}

/// Figures of one soak run.
struct Figures {
    invocations: usize,
    buildings: usize,
    refused: usize,
    peak_at_checkpoint_kb: u64,
    peak_at_end_kb: u64,
    rss_at_end_kb: u64,
}

/// Runs `invocations` planned invocations with `concurrency` in flight at once (one: classic
/// Lambda), checking each answer; `checkpoint` is the invocation after which peak RSS is noted.
fn run(invocations: usize, checkpoint: usize, concurrency: usize) -> Figures {
    let server = tiles();
    let concurrency_var = concurrency.to_string();
    let mut env = vec![
        ("TILE_ZOOM", "12"),
        ("MAX_BUILDINGS", "50"),
        // ≈ 42 decoded tiles: smaller than the area, so the cache keeps evicting.
        ("TILE_CACHE_MB", "8"),
        ("RUST_LOG", "warn"),
    ];
    if concurrency > 1 {
        env.push(("AWS_LAMBDA_MAX_CONCURRENCY", &concurrency_var));
    }
    let lambda: LambdaProcess = spawn("rgb_tiny.onnx", &xyz(&server.base_url()), &env);
    let mut rng = fastrand::Rng::with_seed(0x50a4);
    let (mut buildings, mut refused, mut peak_at_checkpoint_kb) = (0, 0, 0);
    // A sliding window: `concurrency` submitted, the oldest awaited, the next submitted.
    let mut window: VecDeque<(usize, Pending, Plan)> = VecDeque::new();
    let mut next = 1;
    for done in 1..=invocations {
        while window.len() < concurrency && next <= invocations {
            let plan = plan(&mut rng, next - 1);
            let pending = match &plan {
                Plan::Answer(event, _) => lambda.submit(event, 60_000),
                Plan::Refuse(body, _) => lambda.submit_raw(body.clone(), 60_000),
            };
            window.push_back((next, pending, plan));
            next += 1;
        }
        let (i, pending, plan) = window.pop_front().expect("one in flight");
        let (outcome, _) = lambda.wait(&pending);
        match plan {
            Plan::Answer(_, expected) => {
                buildings += account(i, &outcome.unwrap_response(), &expected);
            }
            Plan::Refuse(_, error_type) => {
                if let Invocation::Response(v) = &outcome {
                    panic!("invocation {i}: expected {error_type}, got {v}");
                }
                assert_eq!(expect_error(outcome).0, error_type, "invocation {i}");
                refused += 1;
            }
        }
        if done == checkpoint {
            peak_at_checkpoint_kb = lambda.peak_rss_kb().expect("the function is running");
        }
    }
    assert!(
        lambda.max_in_flight() <= concurrency,
        "never more in flight than AWS_LAMBDA_MAX_CONCURRENCY"
    );
    let figures = Figures {
        invocations,
        buildings,
        refused,
        peak_at_checkpoint_kb,
        peak_at_end_kb: lambda.peak_rss_kb().expect("the function is running"),
        rss_at_end_kb: lambda.rss_kb().expect("the function is running"),
    };
    let logs = logs_after(&lambda, refused, invocations);
    assert!(!logs.contains("panicked"), "{logs}");
    let metrics = lambda
        .stdout()
        .lines()
        .filter(|l| l.contains("\"_aws\""))
        .count();
    assert_eq!(metrics, invocations, "one EMF line per invocation");
    let growth = figures.peak_at_end_kb as f64 / figures.peak_at_checkpoint_kb as f64 - 1.0;
    eprintln!(
        "soak (concurrency {concurrency}, at most {} in flight): {} invocations ({} refused), \
         {} buildings answered and accounted for; \
         peak RSS at {checkpoint}: {} kB, at {}: {} kB ({:+.1} %); RSS at the end: {} kB",
        lambda.max_in_flight(),
        figures.invocations,
        figures.refused,
        figures.buildings,
        figures.peak_at_checkpoint_kb,
        figures.invocations,
        figures.peak_at_end_kb,
        growth * 100.0,
        figures.rss_at_end_kb,
    );
    assert!(
        growth <= MAX_GROWTH,
        "peak RSS grew {:.1} % between invocation {checkpoint} and {invocations}",
        growth * 100.0
    );
    figures
}

#[test]
fn soak_short() {
    let figures = run(60, 20, 1);
    assert!(figures.buildings > 500 && figures.refused > 0);
}

#[test]
fn soak_short_concurrent() {
    let figures = run(60, 20, 8);
    assert!(figures.buildings > 500 && figures.refused > 0);
}

fn soak_invocations() -> usize {
    let invocations = std::env::var("SOAK_INVOCATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    assert!(invocations >= 50, "the checkpoint is invocation 50");
    invocations
}

#[test]
#[ignore = "long: `make soak` runs it (SOAK_INVOCATIONS, default 500)"]
fn soak() {
    run(soak_invocations(), 50, 1);
}

#[test]
#[ignore = "long: `make soak` runs it (SOAK_INVOCATIONS, default 500)"]
fn soak_concurrent() {
    run(soak_invocations(), 50, 8);
}
