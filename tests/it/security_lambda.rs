//! Security through the real `bootstrap` under the Runtime API emulator: request data only ever
//! becomes numbers in an imagery URL, whatever the caller puts in ids, properties or
//! coordinates; and no credential — a `TILE_HEADERS` value, a key in `TILE_URL`'s query, the
//! AWS secret key or session token — ever reaches an answer or a log line, even at
//! `RUST_LOG=trace` and on every failure path.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::function::{
    dead_port, env, expect_error, in_tile, logs_after, model, solid_png, spawn, spawn_on, xyz,
};
use crate::support::runtime::LambdaProcess;
use crate::support::s3::{S3Server, SECRET_KEY};
use crate::support::tiles::{TileRequest, TileResponse, TileServer, parse_xyz};

/// Strings that would do harm if they reached a path, a query, a header or a template.
const HOSTILE: &[&str] = &[
    "../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e",
    "?x=1",
    "&zoom=0",
    "#fragment",
    "{z}",
    "{lat}",
    "{bbox}",
    "a\r\nHost: evil.example",
    "http://evil.example/",
    "//evil.example",
    "\u{0000}",
    "${jndi:ldap://evil.example/a}",
    "'; DROP TABLE roofs; --",
    "<script>alert(1)</script>",
    "🏠\u{202e}",
];

/// Every hostile string as an id, as property names and values, and as coordinates.
fn hostile_buildings() -> Vec<Value> {
    let mut buildings = Vec::new();
    for (i, text) in HOSTILE.iter().enumerate() {
        let mut b = in_tile(*text, 2000 + i as u32);
        b["note"] = json!(text);
        b[*text] = json!({"nested": text, "list": [text]});
        buildings.push(b);
        buildings.push(json!({"id": format!("coords-{i}"), "lat": text, "lon": text}));
    }
    buildings
}

/// A server answering any path with a 256-px red PNG (which the function resizes for
/// static-map and WMS chips), logging every request.
fn red_server() -> TileServer {
    let red = solid_png([255, 0, 0]);
    TileServer::start(Arc::new(move |_| TileResponse::png(red.clone())))
}

fn invoke(lambda: &LambdaProcess, buildings: &[Value]) -> Value {
    lambda
        .invoke(&json!({ "buildings": buildings }), 60_000)
        .unwrap_response()
}

/// Each answer echoes its building's id exactly; returns how many were predicted.
fn check_echo(answer: &Value, buildings: &[Value]) -> usize {
    let predictions = answer["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), buildings.len());
    for (p, b) in predictions.iter().zip(buildings) {
        assert_eq!(p["id"], b["id"], "{p}");
    }
    predictions
        .iter()
        .filter(|p| p["label"].is_string())
        .count()
}

/// A number: digits with an optional sign and decimal point.
fn numeric(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().filter(|c| *c == '.').count() <= 1
}

#[test]
fn hostile_ids_and_properties_only_ever_become_numbers_in_urls() {
    let buildings = hostile_buildings();

    // XYZ tiles: only /{z}/{x}/{y}.png paths with numbers, no query.
    let tiles = red_server();
    let lambda = spawn_on("rgb_tiny.onnx", &tiles, &[]);
    let answer = invoke(&lambda, &buildings);
    assert_eq!(check_echo(&answer, &buildings), HOSTILE.len(), "{answer}");
    let requests = tiles.requests();
    assert_eq!(requests.len(), HOSTILE.len());
    for req in &requests {
        assert!(parse_xyz(&req.path).is_some(), "{req:?}");
        assert!(req.query.is_empty(), "{req:?}");
    }

    // A static-map API and WMS: request data never reaches their queries either.
    for (template, fields) in [
        (
            "/static?center={lat},{lon}&zoom={zoom}&size={width}x{height}",
            vec!["center", "zoom", "size"],
        ),
        (
            "/wms?SERVICE=WMS&REQUEST=GetMap&CRS=EPSG:3857&BBOX={bbox}&WIDTH={width}&HEIGHT={height}",
            vec!["SERVICE", "REQUEST", "CRS", "BBOX", "WIDTH", "HEIGHT"],
        ),
    ] {
        let server = red_server();
        let url = format!("{}{template}", server.base_url());
        let lambda = spawn(
            "rgb_tiny.onnx",
            &url,
            &[("TILE_ZOOM", "12"), ("RUST_LOG", "error")],
        );
        let answer = invoke(&lambda, &buildings);
        assert_eq!(check_echo(&answer, &buildings), HOSTILE.len(), "{answer}");
        let requests = server.requests();
        assert_eq!(requests.len(), HOSTILE.len());
        for req in requests {
            let params: Vec<(&str, &str)> = req
                .query
                .split('&')
                .map(|p| p.split_once('=').unwrap_or((p, "")))
                .collect();
            let names: Vec<&str> = params.iter().map(|(n, _)| *n).collect();
            assert_eq!(names, fields, "{req:?}");
            for (name, value) in params {
                let fixed = ["WMS", "GetMap", "EPSG:3857"].contains(&value);
                let numbers = value.split([',', 'x']).all(numeric);
                assert!(fixed || numbers, "{name}={value} in {req:?}");
            }
        }
    }
}

const URL_KEY: &str = "SECRETurlKEY";
const HEADER_KEY: &str = "SECRETheaderKEY";
const SESSION_TOKEN: &str = "SECRETsessionTOKEN";

/// Tile columns and what the server does for each.
fn failing_server(seen: Arc<Mutex<Vec<TileRequest>>>) -> TileServer {
    let red = solid_png([255, 0, 0]);
    TileServer::start(Arc::new(move |req| {
        seen.lock().unwrap().push(req.clone());
        match parse_xyz(&req.path).map(|(_, x, _)| x) {
            Some(2001) => TileResponse::status(404),
            Some(2002) => TileResponse::status(403),
            Some(2003) => TileResponse::status(503),
            Some(2004) => TileResponse::png(red.clone()).with_delay(Duration::from_secs(2)),
            Some(2005) => {
                let mut page = TileResponse::status(200);
                page.content_type = "text/html".into();
                page.body = format!("<html>bad key {URL_KEY}</html>").into_bytes();
                page
            }
            Some(2006) => TileResponse::png(b"not a png".to_vec()),
            _ => TileResponse::png(red.clone()),
        }
    }))
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [URL_KEY, HEADER_KEY, SESSION_TOKEN, SECRET_KEY] {
        assert!(!text.contains(secret), "{secret} in {what}:\n{text}");
    }
}

#[test]
fn no_credential_reaches_an_answer_or_a_log_line() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tiles = failing_server(seen.clone());
    let s3 = S3Server::start();
    s3.put(
        "models",
        "roof.onnx",
        &std::fs::read(model("rgb_tiny.onnx")).unwrap(),
    );
    let headers = json!({"Authorization": format!("Bearer {HEADER_KEY}")}).to_string();
    let template = format!("{}?key={URL_KEY}", xyz(&tiles.base_url()));
    let mut vars = s3.env();
    vars.extend(env(
        "s3://models/roof.onnx",
        &template,
        &[
            ("TILE_ZOOM", "12"),
            ("TILE_HEADERS", &headers),
            ("AWS_SESSION_TOKEN", SESSION_TOKEN),
            ("DOWNLOAD_TIMEOUT_MS", "1000"),
            ("DOWNLOAD_RETRIES", "1"),
            ("RUST_LOG", "trace"),
        ],
    ));
    let lambda = LambdaProcess::spawn(&vars);
    let buildings: Vec<Value> = (2000..=2006)
        .map(|c| in_tile(format!("col-{c}"), c))
        .collect();
    let answer = invoke(&lambda, &buildings);
    let codes: Vec<&str> = answer["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["error"]["code"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(
        codes,
        [
            "none",
            "image_unavailable",
            "image_unavailable",
            "image_unavailable",
            "image_unavailable",
            "image_invalid",
            "image_invalid"
        ],
        "{answer}"
    );
    let answer_text = answer.to_string();
    assert!(
        answer_text.contains(".png?…"),
        "URLs are shown redacted: {answer}"
    );
    assert_no_secret("the answer", &answer_text);

    // The secrets were really used: the server got the key and the header.
    let requests = seen.lock().unwrap().clone();
    assert!(requests.iter().all(|r| r.query == format!("key={URL_KEY}")));
    assert!(requests.iter().all(|r| {
        r.headers
            .iter()
            .any(|(n, v)| n == "authorization" && v.contains(HEADER_KEY))
    }));

    // A refused request, and a template pointing nowhere: every failure path is clean too.
    expect_error(lambda.invoke(&json!({"buildings": "x"}), 10_000));
    let nowhere = format!(
        "http://127.0.0.1:{}/{{z}}/{{x}}/{{y}}.png?key={URL_KEY}",
        dead_port()
    );
    let dead = spawn(
        "rgb_tiny.onnx",
        &nowhere,
        &[("TILE_HEADERS", &headers), ("RUST_LOG", "trace")],
    );
    let answer = invoke(&dead, &[json!({"id": "x", "lat": 1.0, "lon": 1.0})]);
    assert_eq!(
        answer["predictions"][0]["error"]["code"],
        "image_unavailable"
    );
    assert_no_secret("the answer of a dead source", &answer.to_string());

    let logs = logs_after(&lambda, 2, 2) + &logs_after(&dead, 1, 1);
    assert!(logs.lines().count() > 50, "trace logging was on:\n{logs}");
    assert_no_secret("the logs", &logs);
}

#[test]
fn a_bad_template_fails_init_without_showing_its_key() {
    let mut lambda = spawn(
        "rgb_tiny.onnx",
        &format!("https://t.example/{{z}}/{{x}}/{{row}}.png?key={URL_KEY}"),
        &[],
    );
    let (error_type, message) = lambda
        .wait_init_error(Duration::from_secs(30))
        .expect("an init error");
    assert_eq!(error_type, "ConfigError");
    assert!(message.contains("{row}.png?key=…"), "{message}");
    assert_no_secret("the init error", &message);
    lambda.wait_exit(Duration::from_secs(10));
    assert_no_secret("the logs", &lambda.logs());
}
