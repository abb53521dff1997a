//! Imagery through the real `bootstrap` under the Lambda Runtime API emulator: each failure of
//! a tile server lands on exactly the buildings needing that image, images are fetched once
//! per request and kept warm across invocations of one sandbox (within `TILE_CACHE_MB`), and
//! `TILE_HEADERS` go out with every request but never into the logs.
//!
//! Each test starts its own `bootstrap` process: a process is a sandbox, with its own warm
//! cache, and the answers and logs are exactly what Lambda would see.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use image::{Rgb, RgbImage};
use serde_json::{Value, json};

use crate::support::runtime::LambdaProcess;
use crate::support::tiles::{
    TileRequest, TileResponse, TileServer, bomb_png, encode_jpeg, encode_png, parse_xyz,
    point_in_tile, render_tile,
};

const ZOOM: u8 = 12;
/// The tile row every test building sits in.
const ROW: u32 = 1300;

/// The function with the tiny RGB model (32 px chips) on the tiles at `base`.
fn lambda(base: &str, env: &[(&str, &str)]) -> LambdaProcess {
    let root = env!("CARGO_MANIFEST_DIR");
    let ort = std::env::var("ORT_DYLIB_PATH")
        .unwrap_or_else(|_| format!("{root}/.ort/libonnxruntime.so"));
    let mut vars: Vec<(String, String)> = vec![
        (
            "MODEL_URI".into(),
            format!("{root}/fixtures/models/rgb_tiny.onnx"),
        ),
        ("TILE_URL".into(), format!("{base}/{{z}}/{{x}}/{{y}}.png")),
        ("TILE_ZOOM".into(), ZOOM.to_string()),
        ("ORT_DYLIB_PATH".into(), ort),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    LambdaProcess::spawn(&vars)
}

/// A building in the middle of tile (`column`, `ROW`): its chip needs that tile only.
fn in_tile(id: &str, column: u32) -> Value {
    let (lat, lon) = point_in_tile(ZOOM, column, ROW, 128.3, 128.3);
    json!({"id": id, "lat": lat, "lon": lon})
}

/// A building on the edge between tiles `column` and `column + 1`: it needs both.
fn on_edge(id: &str, column: u32) -> Value {
    let (lat, lon) = point_in_tile(ZOOM, column + 1, ROW, 0.3, 128.3);
    json!({"id": id, "lat": lat, "lon": lon})
}

fn tile_path(column: u32) -> String {
    format!("/{ZOOM}/{column}/{ROW}.png")
}

/// The column of a request for a tile in `ROW`.
fn column_of(req: &TileRequest) -> Option<u32> {
    let (_, x, y) = parse_xyz(&req.path)?;
    (y == u64::from(ROW)).then_some(x as u32)
}

fn world_tile(req: &TileRequest) -> TileResponse {
    match parse_xyz(&req.path) {
        Some((z, x, y)) => TileResponse::png(encode_png(&render_tile(z, x, y))),
        None => TileResponse::status(404),
    }
}

fn invoke(function: &LambdaProcess, buildings: &[Value]) -> Value {
    function
        .invoke(&json!({ "buildings": buildings }), 60_000)
        .unwrap_response()
}

/// `id` → its prediction entry.
fn by_id(answer: &Value) -> HashMap<String, Value> {
    answer["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_string(), p.clone()))
        .collect()
}

fn counters(answer: &Value) -> (u64, u64) {
    let timing = &answer["timing"];
    (
        timing["images_fetched"].as_u64().unwrap(),
        timing["cache_hits"].as_u64().unwrap(),
    )
}

/// Tile columns and what the server does for each.
mod column {
    pub const OK: u32 = 2000;
    pub const NOT_FOUND: u32 = 2001;
    pub const RATE_LIMITED_ONCE: u32 = 2002;
    pub const UNAVAILABLE_TWICE: u32 = 2003;
    pub const UNAVAILABLE: u32 = 2004;
    pub const SLOW: u32 = 2005;
    pub const HTML: u32 = 2006;
    pub const TRUNCATED_JPEG: u32 = 2007;
    pub const ONE_PIXEL: u32 = 2008;
    pub const BOMB: u32 = 2009;
    pub const TOO_LARGE: u32 = 2010;
}

#[test]
fn every_failure_lands_on_exactly_the_buildings_needing_that_image() {
    let noise = RgbImage::from_fn(256, 256, |x, y| {
        let v = (x * 7919 + y * 104_729) ^ (x * y * 31);
        Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
    });
    let noise_png = encode_png(&noise);
    let jpeg = encode_jpeg(&render_tile(u32::from(ZOOM), 0, 0), 90);
    let truncated = jpeg[..jpeg.len() / 2].to_vec();
    let dot = encode_png(&RgbImage::from_pixel(1, 1, Rgb([200, 10, 20])));
    let bomb = bomb_png(100_000, 100_000);
    let server = TileServer::start(Arc::new(move |req| match column_of(req) {
        Some(column::NOT_FOUND) => TileResponse::status(404),
        Some(column::RATE_LIMITED_ONCE) if req.nth == 0 => {
            TileResponse::status(429).with_header("Retry-After", "1")
        }
        Some(column::UNAVAILABLE_TWICE) if req.nth < 2 => TileResponse::status(503),
        Some(column::UNAVAILABLE) => TileResponse::status(503),
        Some(column::SLOW) => world_tile(req).with_delay(Duration::from_secs(3)),
        Some(column::HTML) => {
            let mut page = TileResponse::status(200);
            page.content_type = "text/html".into();
            page.body = b"<html><body>Service temporarily down</body></html>".to_vec();
            page
        }
        Some(column::TRUNCATED_JPEG) => TileResponse::jpeg(truncated.clone()),
        Some(column::ONE_PIXEL) => TileResponse::png(dot.clone()),
        Some(column::BOMB) => TileResponse::png(bomb.clone()),
        Some(column::TOO_LARGE) => TileResponse::png(noise_png.clone()),
        _ => world_tile(req),
    }));
    let function = lambda(
        &server.base_url(),
        &[
            ("DOWNLOAD_TIMEOUT_MS", "1000"),
            ("MAX_IMAGE_BYTES", "65536"),
        ],
    );
    let answer = invoke(
        &function,
        &[
            in_tile("ok", column::OK),
            in_tile("ok-again", column::OK), // identical coordinates
            on_edge("ok-and-404", column::OK),
            in_tile("404", column::NOT_FOUND),
            in_tile("429-once", column::RATE_LIMITED_ONCE),
            in_tile("503-twice", column::UNAVAILABLE_TWICE),
            in_tile("503", column::UNAVAILABLE),
            in_tile("slow", column::SLOW),
            in_tile("html", column::HTML),
            in_tile("truncated", column::TRUNCATED_JPEG),
            in_tile("1x1", column::ONE_PIXEL),
            in_tile("bomb", column::BOMB),
            in_tile("too-large", column::TOO_LARGE),
        ],
    );
    let p = by_id(&answer);
    let error = |id: &str| {
        let e = &p[id]["error"];
        (
            e["code"].as_str().unwrap_or("none").to_string(),
            e["message"].as_str().unwrap_or("").to_string(),
        )
    };
    for id in ["ok", "ok-again", "429-once", "503-twice", "1x1"] {
        assert!(p[id]["label"].is_string(), "{id}: {}", p[id]);
    }
    assert_eq!(p["ok"]["probabilities"], p["ok-again"]["probabilities"]);
    assert_eq!(
        p["1x1"]["label"], "red",
        "the 1×1 red PNG, resized, is the chip"
    );

    let path = tile_path;
    for (id, code, needles) in [
        (
            "ok-and-404",
            "image_unavailable",
            vec!["HTTP 404".to_string(), path(column::NOT_FOUND)],
        ),
        (
            "404",
            "image_unavailable",
            vec!["HTTP 404".into(), path(column::NOT_FOUND)],
        ),
        (
            "503",
            "image_unavailable",
            vec!["HTTP 503".into(), "(after 3 attempts)".into()],
        ),
        (
            "slow",
            "image_unavailable",
            vec![
                "no complete answer within 1000 ms".into(),
                "(after 3 attempts)".into(),
            ],
        ),
        (
            "html",
            "image_invalid",
            vec!["\"text/html\" instead of an image".into()],
        ),
        (
            "truncated",
            "image_invalid",
            vec!["a JPEG cut off before its end".into()],
        ),
        (
            "bomb",
            "image_invalid",
            vec!["100000x100000 px is over the decoder's limits".into()],
        ),
        (
            "too-large",
            "image_invalid",
            vec!["larger than 65536 bytes (MAX_IMAGE_BYTES)".into()],
        ),
    ] {
        let (got, message) = error(id);
        assert_eq!(got, code, "{id}: {message}");
        for needle in needles {
            assert!(
                message.contains(&needle),
                "{id}: {needle:?} not in {message:?}"
            );
        }
    }
    assert_eq!(answer["failed"], 8);

    // Each unique image was asked for once per attempt: shared tiles once, retried ones per
    // DOWNLOAD_RETRIES (2), the rest once.
    let attempts = HashMap::from([
        (column::OK, 1),
        (column::NOT_FOUND, 1),
        (column::RATE_LIMITED_ONCE, 2),
        (column::UNAVAILABLE_TWICE, 3),
        (column::UNAVAILABLE, 3),
        (column::SLOW, 3),
        (column::HTML, 1),
        (column::TRUNCATED_JPEG, 1),
        (column::ONE_PIXEL, 1),
        (column::BOMB, 1),
        (column::TOO_LARGE, 1),
    ]);
    for (column, expected) in &attempts {
        assert_eq!(
            server.count(&tile_path(*column)),
            *expected,
            "tile column {column}"
        );
    }
    assert_eq!(server.total(), attempts.values().sum::<usize>());
    assert_eq!(counters(&answer), (attempts.len() as u64, 0));

    // The resized image is reported in the log, naming the URL and both sizes.
    let logs = function.logs_containing("unexpected size");
    let warning = logs
        .lines()
        .find(|l| l.contains("unexpected size"))
        .unwrap_or_else(|| panic!("no resize warning in:\n{logs}"));
    for needle in [&tile_path(column::ONE_PIXEL), "1x1", "256x256", "WARN"] {
        assert!(warning.contains(needle), "{needle} not in {warning}");
    }
}

#[test]
fn warm_invocations_reuse_cached_images_but_not_failures() {
    const FLAKY: u32 = 2003;
    let server = TileServer::start(Arc::new(|req| match column_of(req) {
        Some(FLAKY) if req.nth == 0 => TileResponse::status(404),
        _ => world_tile(req),
    }));
    let function = lambda(&server.base_url(), &[]);
    let first = [
        on_edge("a", 2000),
        in_tile("b", 2001),
        in_tile("flaky", FLAKY),
    ];

    let cold = invoke(&function, &first);
    assert_eq!(
        counters(&cold),
        (3, 0),
        "tiles 2000, 2001 and the flaky one"
    );
    assert_eq!(by_id(&cold)["flaky"]["error"]["code"], "image_unavailable");

    let warm = invoke(&function, &first);
    assert_eq!(
        counters(&warm),
        (1, 2),
        "the two good tiles come from the cache; the failure was not kept"
    );
    let (cold_p, warm_p) = (by_id(&cold), by_id(&warm));
    for id in ["a", "b"] {
        assert_eq!(
            cold_p[id]["probabilities"], warm_p[id]["probabilities"],
            "{id}"
        );
    }
    assert!(warm_p["flaky"]["label"].is_string(), "{}", warm_p["flaky"]);

    let mixed = invoke(&function, &[in_tile("c", 2000), in_tile("d", 2004)]);
    assert_eq!(counters(&mixed), (1, 1));
    for column in [2000, 2001, 2004] {
        assert_eq!(server.count(&tile_path(column)), 1, "tile column {column}");
    }
    assert_eq!(server.count(&tile_path(FLAKY)), 2);
}

#[test]
fn warm_invocations_reuse_the_http_connections_of_the_first() {
    let server = TileServer::start(Arc::new(world_tile));
    let function = lambda(
        &server.base_url(),
        &[("TILE_CACHE_MB", "0"), ("MAX_CONCURRENT_DOWNLOADS", "2")],
    );
    let buildings: Vec<Value> = (2000..2006).map(|c| in_tile(&c.to_string(), c)).collect();
    assert_eq!(counters(&invoke(&function, &buildings)), (6, 0));
    let opened = server.connections();
    assert!(
        (1..=2).contains(&opened),
        "at most MAX_CONCURRENT_DOWNLOADS connections: {opened}"
    );
    for _ in 0..3 {
        assert_eq!(counters(&invoke(&function, &buildings)), (6, 0));
    }
    assert_eq!(
        server.total(),
        24,
        "every image fetched every time (cache off)"
    );
    assert_eq!(
        server.connections(),
        opened,
        "warm invocations go over the connections the first one opened"
    );
}

#[test]
fn tile_cache_mb_bounds_the_warm_cache_and_zero_disables_it() {
    let server = TileServer::start(Arc::new(world_tile));
    // 1 MiB holds five decoded 256×256 RGB tiles (5 × 196,608 bytes), not six.
    let bounded = lambda(&server.base_url(), &[("TILE_CACHE_MB", "1")]);
    assert_eq!(counters(&invoke(&bounded, &[in_tile("a", 2000)])), (1, 0));
    let five: Vec<Value> = (2001..=2005).map(|c| in_tile(&c.to_string(), c)).collect();
    assert_eq!(counters(&invoke(&bounded, &five)), (5, 0));
    let again = [in_tile("a", 2000), in_tile("e", 2005)];
    assert_eq!(
        counters(&invoke(&bounded, &again)),
        (1, 1),
        "the oldest tile was evicted, the newest kept"
    );
    assert_eq!(server.count(&tile_path(2000)), 2);

    let uncached = lambda(&server.base_url(), &[("TILE_CACHE_MB", "0")]);
    for _ in 0..2 {
        assert_eq!(counters(&invoke(&uncached, &[in_tile("z", 2100)])), (1, 0));
    }
    assert_eq!(server.count(&tile_path(2100)), 2);
}

#[test]
fn tile_headers_go_with_every_request_and_never_into_the_logs() {
    const SECRET: &str = "tp-secret-7f3a9c";
    let server = TileServer::start(Arc::new(|req| match column_of(req) {
        Some(2001) if req.nth == 0 => TileResponse::status(503),
        Some(2002) => TileResponse::status(403),
        _ => world_tile(req),
    }));
    let headers =
        json!({"Authorization": format!("Bearer {SECRET}"), "Referer": "https://example.org/map"});
    let function = lambda(
        &server.base_url(),
        &[
            ("TILE_HEADERS", headers.to_string().as_str()),
            // Everything every crate logs, including the HTTP client's own traces.
            ("RUST_LOG", "trace"),
        ],
    );
    let answer = invoke(
        &function,
        &[
            on_edge("a", 2000),
            in_tile("retried", 2001),
            in_tile("forbidden", 2002),
        ],
    );
    assert_eq!(answer["failed"], 1);
    let requests = server.requests();
    assert_eq!(requests.len(), 4, "three tiles, one of them retried");
    for req in &requests {
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            header("Authorization"),
            Some(format!("Bearer {SECRET}").as_str()),
            "{}",
            req.path
        );
        assert_eq!(
            header("Referer"),
            Some("https://example.org/map"),
            "{}",
            req.path
        );
    }
    let logs = function.logs();
    assert!(logs.lines().count() > 20, "trace logging was on:\n{logs}");
    assert!(
        !logs.contains(SECRET),
        "the header value was logged:\n{logs}"
    );
}
