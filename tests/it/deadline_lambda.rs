//! The invocation deadline through the real `bootstrap` under the Runtime API emulator, which
//! hands over `Lambda-Runtime-Deadline-Ms` as Lambda does: the function stops starting work
//! `DEADLINE_MARGIN_MS` before it, keeps what finished, marks the rest `deadline_exceeded`, and
//! its answer arrives before the deadline.

use std::time::Duration;

use serde_json::json;

use crate::support::function::{by_column, codes, in_tile, solid_png, spawn_on};
use crate::support::runtime::LambdaProcess;
use crate::support::tiles::{TileResponse, TileServer};

/// Tiles in columns from this one on take 5 s to arrive.
const SLOW_FROM: u64 = 3000;

/// Red tiles; those in columns ≥ `SLOW_FROM` after 5 s.
fn tiles() -> TileServer {
    let red = solid_png([255, 0, 0]);
    by_column(move |x| {
        let tile = TileResponse::png(red.clone());
        if x >= SLOW_FROM {
            tile.with_delay(Duration::from_secs(5))
        } else {
            tile
        }
    })
}

fn function(tiles: &TileServer) -> LambdaProcess {
    let lambda = spawn_on("rgb_tiny.onnx", tiles, &[("DEADLINE_MARGIN_MS", "300")]);
    // Init done and the runtime waiting: the deadline clock starts when the event is queued.
    let warm = lambda.invoke(&json!({"buildings": [in_tile("warm", 1000)]}), 30_000);
    assert_eq!(codes(&warm.unwrap_response()), ["none"]);
    lambda
}

#[test]
fn a_short_deadline_keeps_what_finished_and_answers_before_it() {
    let tiles = tiles();
    let lambda = function(&tiles);
    let event = json!({"buildings": [
        in_tile("fast-1", 2000), in_tile("slow-1", 3000), in_tile("fast-2", 2001),
        in_tile("slow-2", 3001), {"id": "bad", "lat": 95.0, "lon": 0.0}, in_tile("fast-3", 2002),
    ]});
    let timeout = Duration::from_millis(1500);
    let (answer, took) = lambda.invoke_timed(&event, timeout.as_millis() as u64);
    let answer = answer.unwrap_response();
    assert!(
        took < timeout,
        "answered after {took:?}, the deadline was {timeout:?}"
    );
    assert!(
        took >= Duration::from_millis(1000),
        "the slow tiles were waited for until the cutoff (1200 ms): {took:?}"
    );
    assert_eq!(
        codes(&answer),
        [
            "none",
            "deadline_exceeded",
            "none",
            "deadline_exceeded",
            "invalid_coordinates",
            "none"
        ],
        "{answer}"
    );
    for i in [0, 2, 5] {
        assert_eq!(answer["predictions"][i]["label"], "red", "{answer}");
    }
    let message = answer["predictions"][1]["error"]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("deadline"), "{message}");
    assert_eq!(answer["failed"], 3);

    // The sandbox is fine afterwards, and the slow tiles were not left running into it.
    let next = lambda.invoke(&json!({"buildings": [in_tile("fast-4", 2003)]}), 30_000);
    assert_eq!(codes(&next.unwrap_response()), ["none"]);
}

#[test]
fn a_deadline_already_within_the_margin_answers_at_once_without_fetching() {
    let tiles = tiles();
    let lambda = function(&tiles);
    let before = tiles.total();
    let event = json!({"buildings": [
        in_tile("a", 2100), in_tile("b", 2101), {"id": "bad", "lat": "x", "lon": 0.0},
    ]});
    let (answer, took) = lambda.invoke_timed(&event, 250);
    let answer = answer.unwrap_response();
    assert!(took < Duration::from_millis(250), "{took:?}");
    assert_eq!(
        codes(&answer),
        [
            "deadline_exceeded",
            "deadline_exceeded",
            "invalid_coordinates"
        ],
        "{answer}"
    );
    assert_eq!(tiles.total(), before, "no download started past the cutoff");
}
