//! `"include_chips": true` through the real `bootstrap` under the Runtime API emulator: each
//! building's chip comes back as base64 JPEG of the model's input size showing what its tile
//! showed, in direct, GeoJSON and API Gateway answers; a request whose chips could not fit
//! Lambda's 6 MB response is refused before a single tile is fetched, and the number of
//! buildings the refusal says would fit does fit.

use base64::Engine;
use image::RgbImage;
use serde_json::{Value, json};

use crate::support::batch::{buildings, coloured_tiles};
use crate::support::function::{expect_error, in_tile, spawn_on};

const TIMEOUT_MS: u64 = 60_000;

/// A chip from its base64 text.
fn chip(text: &Value) -> RgbImage {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.as_str().expect("a base64 string"))
        .expect("base64");
    assert_eq!(&bytes[..2], [0xFF, 0xD8], "a JPEG");
    image::load_from_memory(&bytes).expect("a JPEG").to_rgb8()
}

/// The chip's mean colour, as the label's channel is the strongest.
fn assert_colour(chip: &RgbImage, label: &str) {
    assert_eq!(chip.dimensions(), (32, 32), "rgb_tiny's input size");
    let channel = ["red", "green", "blue"]
        .iter()
        .position(|l| *l == label)
        .unwrap();
    for pixel in chip.pixels() {
        for c in 0..3 {
            let want = if c == channel { 255 } else { 0 };
            assert!(pixel[c].abs_diff(want) <= 8, "{label}: {pixel:?}");
        }
    }
}

#[test]
fn chips_come_back_beside_each_prediction_in_every_answer_shape() {
    let tiles = coloured_tiles(None);
    let lambda = spawn_on("rgb_tiny.onnx", &tiles, &[]);
    let mut list: Vec<Value> = (0..6).map(|c| in_tile(format!("b{c}"), c)).collect();
    list.push(json!({"id": "bad", "lat": 95.0, "lon": 1.0}));

    let plain = lambda
        .invoke(&json!({"buildings": list}), TIMEOUT_MS)
        .unwrap_response();
    assert!(
        !plain.to_string().contains("\"chip\""),
        "no chips unless asked"
    );

    let direct = lambda
        .invoke(
            &json!({"buildings": list, "include_chips": true}),
            TIMEOUT_MS,
        )
        .unwrap_response();
    let predictions = direct["predictions"].as_array().unwrap();
    for p in &predictions[..6] {
        assert_colour(&chip(&p["chip"]), p["label"].as_str().unwrap());
    }
    assert_eq!(predictions[6]["error"]["code"], "invalid_coordinates");
    assert!(
        predictions[6].get("chip").is_none(),
        "no chip without a position"
    );

    let features: Vec<Value> = (0..3)
        .map(|c| {
            let b = in_tile(format!("f{c}"), c);
            json!({"type": "Feature", "id": b["id"], "properties": {},
                   "geometry": {"type": "Point", "coordinates": [b["lon"], b["lat"]]}})
        })
        .collect();
    let collection =
        json!({"type": "FeatureCollection", "features": features, "include_chips": true});
    let geo = lambda.invoke(&collection, TIMEOUT_MS).unwrap_response();
    for f in geo["features"].as_array().unwrap() {
        let p = &f["properties"];
        assert_colour(
            &chip(&p["chip"]),
            p["prediction"]["label"].as_str().unwrap(),
        );
    }

    let body = json!({"buildings": &list[..2], "include_chips": true}).to_string();
    let event: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/events/apigw-http.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let mut event = event;
    event["body"] = json!(body);
    event["isBase64Encoded"] = json!(false);
    let response = lambda.invoke(&event, TIMEOUT_MS).unwrap_response();
    assert_eq!(response["statusCode"], 200, "{response}");
    let answer: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_colour(&chip(&answer["predictions"][1]["chip"]), "green");

    let (error_type, message) = expect_error(lambda.invoke(
        &json!({"buildings": list, "include_chips": "yes"}),
        TIMEOUT_MS,
    ));
    assert_eq!(error_type, "InvalidRequest");
    assert_eq!(
        message,
        "\"include_chips\" must be true or false, not a string"
    );
}

#[test]
fn chips_that_could_not_fit_are_refused_before_any_work_and_the_stated_number_fits() {
    let tiles = coloured_tiles(None);
    let lambda = spawn_on("rgb_tiny.onnx", &tiles, &[("MAX_BUILDINGS", "5000")]);
    let list: Vec<Value> = buildings(3000, 10, |i| format!("b{i}"))
        .iter()
        .map(|b| json!({"id": b.id, "lat": b.lat, "lon": b.lon}))
        .collect();
    let (error_type, message) = expect_error(lambda.invoke(
        &json!({"buildings": list, "include_chips": true}),
        TIMEOUT_MS,
    ));
    assert_eq!(error_type, "ResponseTooLarge", "{message}");
    assert_eq!(tiles.total(), 0, "refused before fetching anything");
    let fit: usize = message
        .split("at most ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {message:?}"));
    assert!((1000..3000).contains(&fit), "{message}");

    let answer = lambda
        .invoke(
            &json!({"buildings": &list[..fit], "include_chips": true}),
            TIMEOUT_MS,
        )
        .unwrap_response();
    assert_eq!(answer["failed"], 0);
    let size = answer.to_string().len();
    assert!(size <= 6 * 1024 * 1024, "{size}");
    let predictions = answer["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), fit);
    assert_colour(
        &chip(&predictions[fit - 1]["chip"]),
        predictions[fit - 1]["label"].as_str().unwrap(),
    );
}
