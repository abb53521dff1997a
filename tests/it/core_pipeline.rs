//! The core slice in-process: `App::init` with real ONNX Runtime on the fixture models, real
//! imagery from a loopback tile server, and `App::predict` / `handler::handle` answers.

use std::collections::HashMap;

use serde_json::{Value, json};
use tilepredict::app::App;
use tilepredict::config::Config;
use tilepredict::error::{ErrorCode, RequestError};
use tilepredict::geo::{ChipWindow, LatLon, from_pixel};
use tilepredict::handler;

use crate::support::function::ort_library;
use crate::support::tiles::{
    TileRequest, TileResponse, TileServer, solid_tile_handler, world_pixel, xyz_world_handler,
};

/// A fixture model by name, or any absolute path as is.
fn fixture(name: &str) -> String {
    if name.starts_with('/') {
        name.to_string()
    } else {
        format!("{}/fixtures/models/{name}", env!("CARGO_MANIFEST_DIR"))
    }
}

fn config(model: &str, tiles: &TileServer, extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("MODEL_URI".to_string(), fixture(model)),
        (
            "TILE_URL".to_string(),
            format!("{}/{{z}}/{{x}}/{{y}}.png", tiles.base_url()),
        ),
        ("ORT_DYLIB_PATH".to_string(), ort_library()),
        ("INFERENCE_THREADS".to_string(), "2".to_string()),
    ]);
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    Config::from_lookup(|name| vars.get(name).cloned()).expect("valid test config")
}

async fn app(model: &str, tiles: &TileServer, extra: &[(&str, &str)]) -> App {
    App::init(config(model, tiles, extra))
        .await
        .unwrap_or_else(|e| panic!("init failed: {e:?}"))
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|v| (v - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// The rgb_tiny model's answer for a chip: softmax(8 · mean(R, G, B) / 255).
fn expected_rgb_tiny(window: &ChipWindow) -> Vec<f64> {
    let mut sum = [0f64; 3];
    for y in window.top..window.top + i64::from(window.size) {
        for x in window.left..window.left + i64::from(window.size) {
            let p = world_pixel(x as u64, y as u64);
            for c in 0..3 {
                sum[c] += f64::from(p[c]);
            }
        }
    }
    let n = f64::from(window.size * window.size);
    softmax(&sum.map(|s| 8.0 * s / n / 255.0))
}

fn probabilities(prediction: &Value) -> Vec<f64> {
    ["red", "green", "blue"]
        .iter()
        .map(|l| prediction["probabilities"][l].as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_building_on_an_all_red_area_gets_the_label_the_weights_imply() {
    let tiles = TileServer::start(solid_tile_handler([255, 0, 0]));
    let app = app("rgb_tiny.onnx", &tiles, &[]).await;
    let event = json!({"buildings": [{"id": "red-roof", "lat": 52.2297, "lon": 21.0122}]});
    let answer = handler::handle(&app, event, None).await.unwrap();
    let p = &answer["predictions"][0];
    assert_eq!(p["label"], "red");
    let e8 = 8f64.exp();
    let want = [e8 / (e8 + 2.0), 1.0 / (e8 + 2.0), 1.0 / (e8 + 2.0)];
    for (got, want) in probabilities(p).iter().zip(want) {
        assert!((got - want).abs() < 2e-6, "{p}");
    }
    assert!((p["score"].as_f64().unwrap() - want[0]).abs() < 2e-6);
    assert_eq!(answer["failed"], 0);
    assert_eq!(answer["model"]["labels"], json!(["red", "green", "blue"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn chips_straddling_four_tiles_are_stitched_from_the_right_pixels() {
    let tiles = TileServer::start(xyz_world_handler());
    let app = app("rgb_tiny.onnx", &tiles, &[]).await;
    let zoom = 19;
    // Building pixels chosen so the 32-px chip straddles a tile corner, an edge, or sits inside one tile.
    let base_x = 256.0 * 292_736.0;
    let base_y = 256.0 * 172_630.0;
    let pixels = [
        (base_x + 256.0, base_y + 256.0),
        (base_x + 250.3, base_y + 128.0),
        (base_x + 100.0, base_y + 100.0),
        (base_x + 3.0, base_y + 509.7),
    ];
    let points: Vec<LatLon> = pixels
        .iter()
        .map(|(x, y)| from_pixel(*x, *y, zoom))
        .collect();
    let buildings: Vec<Value> = points
        .iter()
        .map(|p| json!({"lat": p.lat, "lon": p.lon}))
        .collect();
    let answer = handler::handle(&app, json!({ "buildings": buildings }), None)
        .await
        .unwrap();
    for (i, p) in points.iter().enumerate() {
        let window = ChipWindow::centred_on(*p, zoom, 32);
        let got = probabilities(&answer["predictions"][i]);
        let want = expected_rgb_tiny(&window);
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() < 1e-4,
                "building {i}: got {got:?}, want {want:?}"
            );
        }
    }
    // The corner chip needs 4 tiles, the edge chip 2, the inner chip 1; the last straddles a row.
    let unique: std::collections::HashSet<_> = points
        .iter()
        .flat_map(|p| ChipWindow::centred_on(*p, zoom, 32).tiles())
        .map(|t| t.tile)
        .collect();
    assert_eq!(tiles.total(), unique.len());
    assert_eq!(answer["timing"]["images_fetched"], unique.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn neighbours_sharing_a_tile_fetch_it_once() {
    let tiles = TileServer::start(solid_tile_handler([0, 0, 255]));
    let app = app("rgb_tiny.onnx", &tiles, &[("TILE_CACHE_MB", "0")]).await;
    // Ten buildings inside the middle of one zoom-19 tile: 32-px chips never leave it.
    let (x0, y0) = (256.0 * 292_736.0 + 100.0, 256.0 * 172_630.0 + 100.0);
    let buildings: Vec<Value> = (0..10)
        .map(|i| {
            let p = from_pixel(x0 + f64::from(i) * 5.0, y0 + f64::from(i) * 3.0, 19);
            json!({"id": format!("n{i}"), "lat": p.lat, "lon": p.lon})
        })
        .collect();
    let answer = handler::handle(&app, json!({ "buildings": buildings }), None)
        .await
        .unwrap();
    assert_eq!(tiles.total(), 1, "one tile request for ten neighbours");
    assert_eq!(answer["timing"]["images_fetched"], 1);
    assert!(
        answer["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["label"] == "blue")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_building_comes_back_in_order_with_a_prediction_or_an_error() {
    let tiles = TileServer::start(solid_tile_handler([0, 255, 0]));
    let app = app("rgb_tiny.onnx", &tiles, &[("BATCH_SIZE", "4")]).await;
    let mut buildings: Vec<Value> = (0..37)
        .map(|i| json!({"id": i, "lat": 52.2 + f64::from(i) * 0.001, "lon": 21.0}))
        .collect();
    buildings.insert(5, json!({"id": "too-north", "lat": 95.0, "lon": 21.0}));
    buildings.insert(9, json!({"id": "nan", "lat": "NaN", "lon": 21.0}));
    buildings.insert(20, json!("not an object"));
    let answer = handler::handle(&app, json!({ "buildings": buildings }), None)
        .await
        .unwrap();
    let predictions = answer["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 40);
    assert_eq!(answer["failed"], 3);
    assert_eq!(predictions[5]["error"]["code"], "invalid_coordinates");
    assert_eq!(predictions[9]["error"]["code"], "invalid_coordinates");
    assert_eq!(predictions[20]["error"]["code"], "invalid_building");
    let ok_ids: Vec<i64> = predictions
        .iter()
        .filter(|p| p["label"] == "green")
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ok_ids, (0..37).collect::<Vec<_>>(), "request order is kept");
    let timing = &answer["timing"];
    assert_eq!(timing["batch_size"], 4);
    assert!(
        timing["batches"].as_u64().unwrap() >= 10,
        "37 chips in batches of at most 4: {timing}"
    );
    for field in [
        "total_ms",
        "download_ms",
        "decode_ms",
        "inference_ms",
        "throughput_per_s",
    ] {
        assert!(timing[field].as_f64().unwrap() > 0.0, "{field}: {timing}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cold_start_and_model_load_are_reported_once() {
    let tiles = TileServer::start(solid_tile_handler([255, 0, 0]));
    let app = app("rgb_tiny.onnx", &tiles, &[]).await;
    let event = json!({"buildings": [{"lat": 10.0, "lon": 10.0}]});
    let first = handler::handle(&app, event.clone(), None).await.unwrap();
    let second = handler::handle(&app, event, None).await.unwrap();
    assert_eq!(first["timing"]["cold_start"], true);
    assert!(first["timing"]["model_load_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(second["timing"]["cold_start"], false);
    assert_eq!(second["timing"]["model_load_ms"], 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_with_a_fixed_batch_of_one_still_answers_every_building() {
    let tiles = TileServer::start(solid_tile_handler([255, 0, 0]));
    let app = app("rgb_tiny_batch1.onnx", &tiles, &[("BATCH_SIZE", "32")]).await;
    let buildings: Vec<Value> = (0..5)
        .map(|i| json!({"lat": 1.0 + f64::from(i), "lon": 1.0}))
        .collect();
    let answer = handler::handle(&app, json!({ "buildings": buildings }), None)
        .await
        .unwrap();
    assert_eq!(answer["failed"], 0);
    assert_eq!(answer["timing"]["batch_size"], 1);
    assert_eq!(answer["timing"]["batches"], 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn labels_come_from_the_environment_or_default_to_class_names() {
    let tiles = TileServer::start(solid_tile_handler([0, 0, 255]));
    let named = app(
        "rgb_tiny_nolabels.onnx",
        &tiles,
        &[("MODEL_LABELS", "r,g,b")],
    )
    .await;
    assert_eq!(named.model_info.labels, vec!["r", "g", "b"]);
    let unnamed = app("rgb_tiny_nolabels.onnx", &tiles, &[]).await;
    assert_eq!(
        unnamed.model_info.labels,
        vec!["class_0", "class_1", "class_2"]
    );
    let answer = handler::handle(
        &unnamed,
        json!({"buildings": [{"lat": 0.0, "lon": 0.0}]}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(answer["predictions"][0]["label"], "class_2");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_models_fail_init_naming_the_shapes() {
    let tiles = TileServer::start(solid_tile_handler([0, 0, 0]));
    let err = App::init(config("grey_input.onnx", &tiles, &[]))
        .await
        .err()
        .expect("a one-channel model is refused");
    let message = err.to_string();
    assert_eq!(err.error_type(), "ModelError");
    assert!(
        message.contains("[N,1,32,32]") && message.contains("3-channel RGB or BGR"),
        "{}",
        message
    );

    let err = App::init(config("rgb_tiny.onnx", &tiles, &[("MODEL_LABELS", "a,b")]))
        .await
        .err()
        .expect("2 labels for 3 classes");
    let message = err.to_string();
    assert!(
        message.contains("MODEL_LABELS names 2 label(s)") && message.contains("[N,3]"),
        "{}",
        message
    );

    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.onnx");
    std::fs::write(&corrupt, b"this is not a protobuf").unwrap();
    let err = App::init(config(corrupt.to_str().unwrap(), &tiles, &[]))
        .await
        .err()
        .expect("garbage is refused");
    let message = err.to_string();
    assert_eq!(err.error_type(), "ModelError");
    assert!(message.contains("not a usable ONNX model"), "{}", message);

    let err = App::init(config("/nonexistent/model.onnx", &tiles, &[]))
        .await
        .err()
        .expect("a missing file is refused");
    let message = err.to_string();
    assert_eq!(err.error_type(), "ModelLoadError");
    assert!(message.contains("/nonexistent/model.onnx"), "{}", message);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_a_usable_list_are_refused_whole() {
    let tiles = TileServer::start(solid_tile_handler([0, 0, 0]));
    let app = app("rgb_tiny.onnx", &tiles, &[("MAX_BUILDINGS", "3")]).await;
    let cases = [
        (json!({"points": []}), "InvalidRequest"),
        (json!({"buildings": {}}), "InvalidRequest"),
        (json!({"buildings": []}), "InvalidRequest"),
        (json!([1, 2]), "InvalidRequest"),
        (json!({"buildings": [{}, {}, {}, {}]}), "TooManyBuildings"),
    ];
    for (event, error_type) in cases {
        let err = handler::handle(&app, event.clone(), None)
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), error_type, "{event}: {err}");
    }
    let err = handler::handle(&app, json!({"buildings": [{}, {}, {}, {}]}), None)
        .await
        .unwrap_err();
    assert_eq!(err, RequestError::TooManyBuildings { count: 4, limit: 3 });
    assert!(err.to_string().contains("MAX_BUILDINGS"));
    assert_eq!(tiles.total(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_tile_fails_only_the_buildings_that_need_it() {
    let (x0, y0) = (256.0 * 292_736.0, 256.0 * 172_630.0);
    let broken = "/19/292736/172630.png";
    let red = solid_tile_handler([255, 0, 0]);
    let tiles = TileServer::start(std::sync::Arc::new(move |req: &TileRequest| {
        if req.path == broken {
            TileResponse::status(404)
        } else {
            red(req)
        }
    }));
    let app = app("rgb_tiny.onnx", &tiles, &[("DOWNLOAD_RETRIES", "0")]).await;
    let inside = from_pixel(x0 + 128.0, y0 + 128.0, 19);
    let next_door = from_pixel(x0 + 256.0 + 128.0, y0 + 128.0, 19);
    let event = json!({"buildings": [{"lat": inside.lat, "lon": inside.lon}, {"lat": next_door.lat, "lon": next_door.lon}]});
    let answer = handler::handle(&app, event, None).await.unwrap();
    let error = &answer["predictions"][0]["error"];
    assert_eq!(error["code"], ErrorCode::ImageUnavailable.as_str());
    assert!(
        error["message"].as_str().unwrap().contains("404"),
        "{error}"
    );
    assert_eq!(answer["predictions"][1]["label"], "red");
    assert_eq!(answer["failed"], 1);
    assert_eq!(tiles.count(broken), 1, "a 404 is not retried");
}
