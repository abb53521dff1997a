//! Property tests, in-process: the web-mercator geometry (lat/lon ↔ pixel round trips; the
//! tiles planned for a chip cover each of its pixels exactly once, with the right source pixel)
//! and the request parser and handler (any JSON: no panic, one answer per building, in order).

use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{Map, Value, json};
use tilepredict::app::App;
use tilepredict::config::Config;
use tilepredict::error::ErrorCode;
use tilepredict::geo::{
    ChipWindow, LatLon, MAX_LATITUDE, TILE_SIZE, from_pixel, to_pixel, world_pixels,
};
use tilepredict::handler;
use tilepredict::request::{MAX_ID_CHARS, parse_building, parse_building_list};

use crate::support::function::{model, ort_library};

fn lat() -> impl Strategy<Value = f64> {
    -MAX_LATITUDE..=MAX_LATITUDE
}

fn lon() -> impl Strategy<Value = f64> {
    -180.0..=180.0f64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lat_lon_to_pixel_and_back_is_exact(lat in lat(), lon in lon(), zoom in 0u8..=24) {
        let p = LatLon::new(lat, lon).unwrap();
        let (x, y) = to_pixel(p, zoom);
        let world = world_pixels(zoom);
        prop_assert!((0.0..=world).contains(&x) && (-1e-6..=world + 1e-6).contains(&y), "{x},{y}");
        let back = from_pixel(x, y, zoom);
        prop_assert!((back.lat - lat).abs() < 1e-9, "lat {lat} -> {}", back.lat);
        prop_assert!((back.lon - lon).abs() < 1e-9, "lon {lon} -> {}", back.lon);
    }

    #[test]
    fn pixel_to_lat_lon_and_back_is_exact(fx in 0.0..1.0f64, fy in 0.0..1.0f64, zoom in 0u8..=24) {
        let world = world_pixels(zoom);
        let (x, y) = (fx * world, fy * world);
        let p = from_pixel(x, y, zoom);
        prop_assert!(LatLon::new(p.lat, p.lon).is_ok(), "{p:?}");
        let (bx, by) = to_pixel(p, zoom);
        // f64 holds a zoom-24 pixel coordinate (< 2^32) to ~1e-6 px; trigonometry costs a bit more.
        prop_assert!((bx - x).abs() < 1e-3 && (by - y).abs() < 1e-3, "{x},{y} -> {bx},{by}");
    }

    #[test]
    fn a_chip_is_centred_on_its_building(lat in lat(), lon in lon(), zoom in 0u8..=24, size in 1u32..=1024) {
        let p = LatLon::new(lat, lon).unwrap();
        let (px, py) = to_pixel(p, zoom);
        let (cx, cy) = ChipWindow::centred_on(p, zoom, size).centre();
        prop_assert!((cx - px).abs() <= 0.5 + 1e-6 && (cy - py).abs() <= 0.5 + 1e-6);
    }

    #[test]
    fn the_planned_tiles_cover_every_chip_pixel_exactly_once_with_the_right_pixel(
        zoom in 0u8..=24,
        size in 1u32..=400,
        fx in -0.1..1.1f64,
        fy in -0.1..1.1f64,
    ) {
        let world = 1i64 << (8 + u32::from(zoom));
        let window = ChipWindow {
            left: (fx * world as f64) as i64,
            top: (fy * world as f64) as i64,
            size,
            zoom,
        };
        let tile = i64::from(TILE_SIZE);
        let side = size as usize;
        let mut covered = vec![0u8; side * side];
        for placement in window.tiles() {
            let t = placement.tile;
            prop_assert_eq!(t.z, zoom);
            prop_assert!(i64::from(t.x) < world / tile && i64::from(t.y) < world / tile, "{t:?}");
            let x0 = placement.dx.max(0);
            let x1 = (placement.dx + tile).min(i64::from(size));
            let y0 = placement.dy.max(0);
            let y1 = (placement.dy + tile).min(i64::from(size));
            prop_assert!(x0 < x1 && y0 < y1, "a placement covering nothing: {placement:?}");
            for cy in y0..y1 {
                for cx in x0..x1 {
                    covered[cy as usize * side + cx as usize] += 1;
                    // Chip pixel (cx, cy) shows tile pixel (cx - dx, cy - dy): the same global
                    // pixel, x modulo the world's width (the antimeridian wraps).
                    let gx = i64::from(t.x) * tile + cx - placement.dx;
                    let gy = i64::from(t.y) * tile + cy - placement.dy;
                    prop_assert_eq!(gx, (window.left + cx).rem_euclid(world));
                    prop_assert_eq!(gy, window.top + cy);
                }
            }
        }
        for cy in 0..side {
            let inside = (0..world).contains(&(window.top + cy as i64));
            for cx in 0..side {
                let want = u8::from(inside);
                prop_assert_eq!(covered[cy * side + cx], want, "chip pixel {},{} of {:?}", cx, cy, window);
            }
        }
    }
}

/// Any JSON value, nested a few levels, with the strings and numbers requests get wrong.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            Just(f64::MAX),
            Just(-0.0),
            Just(1e-320),
            Just(85.06),
            Just(-180.0001)
        ]
        .prop_map(Value::from),
        ".{0,300}".prop_map(Value::from),
        prop_oneof![
            Just("NaN"),
            Just("52.2"),
            Just("../../etc"),
            Just("{z}"),
            Just("\r\n")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A building-ish entry: an object with `id`/`lat`/`lon` of any JSON (often numbers), plus
/// extra fields; or any JSON at all.
fn any_building() -> impl Strategy<Value = Value> {
    let coordinate = prop_oneof![
        3 => (-100.0..100.0f64).prop_map(Value::from),
        3 => (-200.0..200.0f64).prop_map(Value::from),
        2 => any_json(),
    ];
    let id = prop_oneof![
        Just(None),
        any_json().prop_map(Some),
        ".{250,260}".prop_map(|s| Some(Value::from(s))),
    ];
    prop_oneof![
        4 => (id, prop::option::of(coordinate.clone()), prop::option::of(coordinate), any_json())
            .prop_map(|(id, lat, lon, extra)| {
                let mut b = Map::new();
                if let Some(id) = id { b.insert("id".into(), id); }
                if let Some(lat) = lat { b.insert("lat".into(), lat); }
                if let Some(lon) = lon { b.insert("lon".into(), lon); }
                b.insert("extra".into(), extra);
                Value::Object(b)
            }),
        1 => any_json(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_parser_answers_every_building_and_only_accepts_valid_positions(
        list in prop::collection::vec(any_building(), 1..40)
    ) {
        let parsed = parse_building_list(&list, 1000).unwrap();
        prop_assert_eq!(parsed.len(), list.len());
        for (i, (b, raw)) in parsed.iter().zip(&list).enumerate() {
            prop_assert_eq!(b, &parse_building(i, raw), "parsing is per building");
            match &b.position {
                Ok(p) => {
                    prop_assert!(LatLon::new(p.lat, p.lon).is_ok());
                    prop_assert_eq!(Some(p.lat), raw["lat"].as_f64());
                    prop_assert_eq!(Some(p.lon), raw["lon"].as_f64());
                }
                Err(e) => prop_assert!(matches!(
                    e.code,
                    ErrorCode::InvalidBuilding | ErrorCode::InvalidCoordinates
                )),
            }
            match &b.id {
                Value::Number(_) => {}
                Value::String(s) => prop_assert!(s.chars().count() <= MAX_ID_CHARS + 1),
                other => prop_assert!(false, "id echoed as {other}"),
            }
            prop_assert!(b.properties.keys().all(|k| !["id", "lat", "lon"].contains(&k.as_str())));
        }
    }

    #[test]
    fn the_parser_never_panics_on_any_json(value in any_json()) {
        let b = parse_building(3, &value);
        prop_assert!(b.position.is_err() || value.is_object());
        if let Value::Array(list) = &value {
            match parse_building_list(list, 5) {
                Ok(parsed) => prop_assert_eq!(parsed.len(), list.len()),
                Err(e) => prop_assert!(list.is_empty() || list.len() > 5, "{e}"),
            }
        }
    }
}

/// One `App` for the handler property: every valid building's imagery is a file that does not
/// exist, so each answer is immediate (and `image_unavailable`).
fn app() -> &'static (tokio::runtime::Runtime, App) {
    static APP: OnceLock<(tokio::runtime::Runtime, App)> = OnceLock::new();
    APP.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let vars = [
            ("MODEL_URI", model("rgb_tiny.onnx")),
            (
                "TILE_URL",
                "file:///nonexistent/{z}/{x}/{y}.png".to_string(),
            ),
            ("ORT_DYLIB_PATH", ort_library()),
            ("MAX_BUILDINGS", "30".to_string()),
            ("INFERENCE_THREADS", "1".to_string()),
        ];
        let config = Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        })
        .unwrap();
        let app = runtime.block_on(App::init(config)).unwrap();
        (runtime, app)
    })
}

#[test]
fn the_handler_answers_any_event_with_one_answer_per_building_or_a_typed_refusal() {
    let (runtime, app) = app();
    let event = prop_oneof![
        2 => prop::collection::vec(any_building(), 0..40).prop_map(|b| json!({"buildings": b})),
        1 => any_json().prop_map(|v| json!({"buildings": v})),
        1 => any_json(),
    ];
    let mut runner = TestRunner::new(ProptestConfig::with_cases(128));
    runner
        .run(&event, |event| {
            let buildings = event.get("buildings").and_then(Value::as_array).cloned();
            match (
                runtime.block_on(handler::handle(app, event, None)),
                buildings,
            ) {
                (Ok(answer), Some(list)) => {
                    let predictions = answer["predictions"].as_array().unwrap();
                    prop_assert_eq!(predictions.len(), list.len());
                    let mut failed = 0;
                    for (i, (p, raw)) in predictions.iter().zip(&list).enumerate() {
                        let code = p["error"]["code"].as_str();
                        prop_assert!(
                            p["label"].is_string() != code.is_some(),
                            "a label or an error: {}",
                            p
                        );
                        failed += usize::from(code.is_some());
                        prop_assert_eq!(&p["id"], &parse_building(i, raw).id);
                    }
                    prop_assert_eq!(&answer["failed"], &json!(failed));
                }
                (Ok(answer), None) => prop_assert!(false, "answered a non-list: {}", answer),
                (Err(e), list) => {
                    let why = e.error_type();
                    match list {
                        Some(list) => prop_assert!(
                            (list.is_empty() && why == "InvalidRequest")
                                || (list.len() > 30 && why == "TooManyBuildings"),
                            "{} buildings refused: {}",
                            list.len(),
                            e
                        ),
                        None => prop_assert_eq!(why, "InvalidRequest"),
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}
