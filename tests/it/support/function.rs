//! The function under test as Lambda would run it: the real `bootstrap` with a fixture model,
//! a tile template and ONNX Runtime from `make ort`, plus helpers to read its answers and its
//! JSON log lines.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Value, json};

use super::runtime::{Invocation, LambdaProcess};
use super::tiles::{TileResponse, TileServer, encode_png, parse_xyz, point_in_tile};

/// Tests place buildings on the zoom-12 tiles of one row and tell them apart by column
/// (zoom 12 has 4096 columns), so a tile server can treat each column its own way.
pub const ZOOM: u8 = 12;
pub const ROW: u32 = 1300;

/// A building in the middle of tile (`column`, `ROW`): its chip needs that tile only.
pub fn in_tile(id: impl Into<Value>, column: u32) -> Value {
    let (lat, lon) = point_in_tile(ZOOM, column, ROW, 128.3, 128.3);
    json!({"id": id.into(), "lat": lat, "lon": lon})
}

/// A 256-px PNG tile of one colour.
pub fn solid_png(rgb: [u8; 3]) -> Vec<u8> {
    encode_png(&image::RgbImage::from_pixel(256, 256, image::Rgb(rgb)))
}

/// A tile server answering `/{z}/{x}/{y}.png` with `answer(x)`, and 404 for anything else.
pub fn by_column(answer: impl Fn(u64) -> TileResponse + Send + Sync + 'static) -> TileServer {
    TileServer::start(Arc::new(move |req| match parse_xyz(&req.path) {
        Some((_, x, _)) => answer(x),
        None => TileResponse::status(404),
    }))
}

/// `bootstrap` with a fixture model on `tiles`' XYZ tiles at [`ZOOM`], plus `extra`.
pub fn spawn_on(model_name: &str, tiles: &TileServer, extra: &[(&str, &str)]) -> LambdaProcess {
    let zoom = ZOOM.to_string();
    let mut vars = vec![("TILE_ZOOM", zoom.as_str())];
    vars.extend_from_slice(extra);
    spawn(model_name, &xyz(&tiles.base_url()), &vars)
}

pub fn manifest(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// A fixture model's path (`fixtures/models/NAME`).
pub fn model(name: &str) -> String {
    manifest(&format!("fixtures/models/{name}"))
}

pub fn ort_library() -> String {
    std::env::var("ORT_DYLIB_PATH").unwrap_or_else(|_| manifest(".ort/libonnxruntime.so"))
}

/// `{base}/{z}/{x}/{y}.png`.
pub fn xyz(base: &str) -> String {
    format!("{base}/{{z}}/{{x}}/{{y}}.png")
}

/// The function's environment: `MODEL_URI`, `TILE_URL`, ONNX Runtime, then `extra` (which wins).
pub fn env(model_uri: &str, tile_url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars = vec![
        ("MODEL_URI".to_string(), model_uri.to_string()),
        ("TILE_URL".to_string(), tile_url.to_string()),
        ("ORT_DYLIB_PATH".to_string(), ort_library()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    vars
}

/// `bootstrap` with a fixture model (by file name) on `tile_url`.
pub fn spawn(model_name: &str, tile_url: &str, extra: &[(&str, &str)]) -> LambdaProcess {
    LambdaProcess::spawn(&env(&model(model_name), tile_url, extra))
}

/// The address behind `http://host:port`.
pub fn socket_addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// A loopback port with nothing listening on it.
pub fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `(errorType, errorMessage)` of a refused invocation; panics on an answer.
pub fn expect_error(outcome: Invocation) -> (String, String) {
    match outcome {
        Invocation::Error {
            error_type,
            error_message,
            ..
        } => (error_type, error_message),
        Invocation::Response(v) => panic!("expected a Lambda error, got an answer: {v}"),
    }
}

/// Every line of `text` that is a JSON object.
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

/// The JSON log lines whose message is `message`.
pub fn log_lines(text: &str, message: &str) -> Vec<Value> {
    json_lines(text)
        .into_iter()
        .filter(|l| l["message"] == message)
        .collect()
}

/// The function's output once it has written `lines` "invocation done" log lines and `emf`
/// EMF lines (or after 10 s): an answer can reach the test before the lines written just
/// before it have been read from the pipes.
pub fn logs_after(lambda: &LambdaProcess, lines: usize, emf: usize) -> String {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let logs = lambda.logs();
        let done = log_lines(&logs, "invocation done").len();
        let metrics = json_lines(&lambda.stdout())
            .iter()
            .filter(|l| l.get("_aws").is_some())
            .count();
        if (done >= lines && metrics >= emf) || std::time::Instant::now() > end {
            return logs;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The answer's `predictions[i].error.code`, or `"none"` for a prediction.
pub fn codes(answer: &Value) -> Vec<String> {
    answer["predictions"]
        .as_array()
        .expect("an answer with predictions")
        .iter()
        .map(|p| p["error"]["code"].as_str().unwrap_or("none").to_string())
        .collect()
}
