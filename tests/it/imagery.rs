//! Imagery in-process, on a real loopback server: every `TILE_URL` kind cuts the same chip from the
//! same synthetic world, and every way a server can misbehave ends in the right error after
//! the right number of requests. Runs the pipeline's chip assembly (`ChipMaker`: the cache,
//! fetch, decode and stitch path Lambda runs) without a model; inference and the Lambda side
//! are covered by `imagery_lambda.rs`.

use std::collections::HashMap;
use std::f64::consts::PI;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};
use tilepredict::error::{BuildingError, ErrorCode};
use tilepredict::geo::LatLon;
use tilepredict::imagery::Imagery;
use tilepredict::imagery::fetch::{FetchSettings, Fetcher};
use tilepredict::imagery::template::TileTemplate;
use tilepredict::pipeline::assembly::ChipMaker;
use tokio::sync::Semaphore;

use crate::support::tiles::{
    TileRequest, TileResponse, TileServer, bomb_png, encode_jpeg, encode_png, pixel_of,
    point_in_tile, world_pixel,
};

// ---------------------------------------------------------------------------------------------
// The synthetic world, served in every source kind. The geometry (`pixel_of`, `point_at`) is
// the test support's own, not `tilepredict::geo`, so a shared mistake cannot make both agree.

/// Half the world's width in EPSG:3857 metres (π · 6378137).
const HALF_WORLD_M: f64 = PI * 6_378_137.0;

/// `w`×`h` pixels of the world from global pixel (`left`, `top`).
fn region(left: i64, top: i64, w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |i, j| {
        Rgb(world_pixel(
            (left + i64::from(i)) as u64,
            (top + i64::from(j)) as u64,
        ))
    })
}

/// Global pixel of the top-left corner of the chip a building at `p` must get: `size` pixels
/// centred on it at `zoom`.
fn chip_corner(p: LatLon, zoom: u8, size: u32) -> (i64, i64) {
    let (x, y) = pixel_of(p.lat, p.lon, 256.0 * 2f64.powi(i32::from(zoom)));
    let half = f64::from(size) / 2.0;
    for v in [x - half, y - half] {
        assert!(
            (v.fract() - 0.5).abs() > 0.01,
            "pick a position whose rounding is clear"
        );
    }
    ((x - half).round() as i64, (y - half).round() as i64)
}

/// The chip a building at `p` must get.
fn true_chip(p: LatLon, zoom: u8, size: u32) -> RgbImage {
    let (left, top) = chip_corner(p, zoom, size);
    region(left, top, size, size)
}

fn mime(format: &str) -> &'static str {
    match format {
        "png" => "image/png",
        "jpg" => "image/jpeg",
        "webp" => "image/webp",
        other => panic!("no format {other}"),
    }
}

fn encoded(image: &RgbImage, format: &str) -> TileResponse {
    let body = match format {
        "png" => encode_png(image),
        "jpg" => encode_jpeg(image, 90),
        _ => {
            let mut out = Vec::new();
            image::codecs::webp::WebPEncoder::new_lossless(&mut out)
                .encode(
                    image.as_raw(),
                    image.width(),
                    image.height(),
                    image::ExtendedColorType::Rgb8,
                )
                .unwrap();
            out
        }
    };
    let mut response = TileResponse::png(body);
    response.content_type = mime(format).into();
    response
}

/// Query parameter `name` (case-sensitive, as servers differ).
fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn numbers(text: &str, separator: char) -> Vec<f64> {
    text.split(separator).map(|v| v.parse().unwrap()).collect()
}

/// The image a request asks for, as `(left, top, width, height)` in global pixels of the
/// synthetic world and the format, or `None` (a 404).
fn resolve(req: &TileRequest) -> Option<((i64, i64, u32, u32), String)> {
    let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let (stem, format) = match segments.last()?.rsplit_once('.') {
        Some((stem, ext)) => (stem, ext.to_string()),
        None => (*segments.last()?, String::new()),
    };
    let tile = |x: &str, y: &str| -> Option<(i64, i64, u32, u32)> {
        Some((
            x.parse::<i64>().ok()? * 256,
            y.parse::<i64>().ok()? * 256,
            256,
            256,
        ))
    };
    match segments.as_slice() {
        ["xyz", _z, x, _] => Some((tile(x, stem)?, format)),
        ["esri", _z, y, _] => Some((tile(stem, y)?, format)),
        ["tms", z, x, _] => {
            let rows = 1i64 << z.parse::<u32>().ok()?;
            let y = rows - 1 - stem.parse::<i64>().ok()?;
            Some((tile(x, &y.to_string())?, format))
        }
        ["quadkey", _] => {
            let (mut x, mut y) = (0i64, 0i64);
            for digit in stem.strip_prefix('a')?.bytes() {
                let d = i64::from(digit - b'0');
                x = x * 2 + (d & 1);
                y = y * 2 + (d >> 1);
            }
            Some(((x * 256, y * 256, 256, 256), format))
        }
        // Mapbox-like: /static/{lon},{lat},{zoom}/{w}x{h}.png with 512-px zoom levels.
        ["static512", centre, _] => {
            let c = numbers(centre, ',');
            let size = numbers(stem, 'x');
            let world = 512.0 * 2f64.powf(c[2]);
            Some((centred(c[1], c[0], world, size[0], size[1]), format))
        }
        // Google-like: /staticmap?center={lat},{lon}&zoom={zoom}&size={w}x{h}&format=png.
        ["staticmap"] => {
            let c = numbers(param(&req.query, "center")?, ',');
            let world = 256.0 * 2f64.powf(param(&req.query, "zoom")?.parse().ok()?);
            let size = numbers(param(&req.query, "size")?, 'x');
            let format = param(&req.query, "format")?.to_string();
            Some((centred(c[0], c[1], world, size[0], size[1]), format))
        }
        // WMS 1.3.0 GetMap, CRS=EPSG:3857: the bbox in metres, drawn into WIDTH×HEIGHT.
        ["wms"] => {
            if param(&req.query, "REQUEST")? != "GetMap" || param(&req.query, "CRS")? != "EPSG:3857"
            {
                return None;
            }
            let b = numbers(param(&req.query, "BBOX")?, ',');
            let (w, h): (f64, f64) = (
                param(&req.query, "WIDTH")?.parse().ok()?,
                param(&req.query, "HEIGHT")?.parse().ok()?,
            );
            // The asked resolution, snapped to the zoom level whose pixels it is (like an
            // orthophoto WMS serving from its native raster): the bbox is rounded to the
            // millimetre, so deriving the scale from it alone would misplace the image by
            // (0.001 m / width) × millions of pixels.
            let asked = (b[2] - b[0]) / w;
            assert!(((b[3] - b[1]) / h - asked).abs() < 1e-4, "square pixels");
            let zoom = (2.0 * HALF_WORLD_M / 256.0 / asked).log2().round();
            let metres_per_pixel = 2.0 * HALF_WORLD_M / (256.0 * 2f64.powf(zoom));
            assert!(
                (asked / metres_per_pixel - 1.0).abs() < 1e-4,
                "a zoom level's resolution"
            );
            let left = (b[0] + HALF_WORLD_M) / metres_per_pixel;
            let top = (HALF_WORLD_M - b[3]) / metres_per_pixel;
            let format = param(&req.query, "FORMAT")?.strip_prefix("image/")?;
            let format = if format == "jpeg" { "jpg" } else { format };
            Some((
                (left.round() as i64, top.round() as i64, w as u32, h as u32),
                format.to_string(),
            ))
        }
        _ => None,
    }
}

/// A `w`×`h` image whose centre is the point (`lat`, `lon`).
fn centred(lat: f64, lon: f64, world: f64, w: f64, h: f64) -> (i64, i64, u32, u32) {
    let (x, y) = pixel_of(lat, lon, world);
    (
        (x - w / 2.0).round() as i64,
        (y - h / 2.0).round() as i64,
        w as u32,
        h as u32,
    )
}

/// Serves the world in every kind. Answers are remembered: the XYZ kinds ask for the same
/// tiles, and encoding them again would only slow the tests down.
fn world_server() -> TileServer {
    let answers = Mutex::new(HashMap::new());
    TileServer::start(Arc::new(move |req| match resolve(req) {
        Some(((left, top, w, h), format)) => answers
            .lock()
            .unwrap()
            .entry((left, top, w, h, format.clone()))
            .or_insert_with(|| encoded(&region(left, top, w, h), &format))
            .clone(),
        None => TileResponse::status(404),
    }))
}

/// One template per source kind, as real services spell them, serving `format`.
fn templates(base: &str, format: &str) -> Vec<(&'static str, String)> {
    let m = mime(format);
    vec![
        ("xyz", format!("{base}/xyz/{{z}}/{{x}}/{{y}}.{format}")),
        ("esri", format!("{base}/esri/{{z}}/{{y}}/{{x}}.{format}")),
        ("tms", format!("{base}/tms/{{z}}/{{x}}/{{-y}}.{format}")),
        ("quadkey", format!("{base}/quadkey/a{{q}}.{format}?g=1")),
        (
            "static map (Google-like)",
            format!(
                "{base}/staticmap?center={{lat}},{{lon}}&zoom={{zoom}}&size={{width}}x{{height}}&maptype=satellite&format={format}"
            ),
        ),
        (
            "static map (Mapbox-like, 512-px zoom)",
            format!("{base}/static512/{{lon}},{{lat}},{{zoom512}}/{{width}}x{{height}}.{format}"),
        ),
        (
            "WMS GetMap",
            format!(
                "{base}/wms?SERVICE=WMS&REQUEST=GetMap&VERSION=1.3.0&LAYERS=ortho&STYLES=&CRS=EPSG:3857&BBOX={{bbox}}&WIDTH={{width}}&HEIGHT={{height}}&FORMAT={m}"
            ),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Building the chip assembly the way `App::init` does, with settings a test can tune.

fn settings() -> FetchSettings {
    FetchSettings {
        timeout: Duration::from_secs(5),
        retries: 2,
        max_bytes: 8 << 20,
        headers: Vec::new(),
        max_connections: 8,
    }
}

/// The pipeline's chip assembly over one source, cutting chips at their own size (no resize).
struct Chips {
    maker: ChipMaker,
    size: u32,
}

impl Chips {
    /// The chip for a building at `p`, as the pipeline would hand it to the model.
    async fn chip(
        &self,
        p: LatLon,
        cutoff: tokio::time::Instant,
    ) -> Result<RgbImage, BuildingError> {
        let size = (self.size, self.size);
        self.maker.cut(&[p], size, cutoff).await.remove(0)
    }
}

fn imagery(template: &str, zoom: u8, chip_size: u32, settings: FetchSettings) -> Chips {
    let template = TileTemplate::parse(template).unwrap();
    let imagery = Imagery::new(
        template,
        Fetcher::new(settings).unwrap(),
        zoom,
        chip_size,
        0,
    );
    Chips {
        maker: ChipMaker {
            imagery: Arc::new(imagery),
            download_slots: Arc::new(Semaphore::new(8)),
            decode_slots: Arc::new(Semaphore::new(2)),
        },
        size: chip_size,
    }
}

fn far_cutoff() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(60)
}

/// Positions chosen to land on tile corners and edges as well as inside tiles, north and south,
/// east and west.
const PLACES: [(f64, f64); 4] = [
    (52.2297, 21.0122),
    (-33.8568, 151.2093),
    (0.0001, -0.0001),
    (64.1466, -21.9426),
];
const ZOOM: u8 = 17;

/// Mean and largest absolute channel difference.
fn difference(a: &RgbImage, b: &RgbImage) -> (f64, u8) {
    assert_eq!(a.dimensions(), b.dimensions());
    let diffs = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y));
    let max = diffs.clone().max().unwrap_or(0);
    let mean = diffs.map(f64::from).sum::<f64>() / a.as_raw().len() as f64;
    (mean, max)
}

#[tokio::test]
async fn every_source_kind_cuts_the_same_chip_pixel_for_pixel() {
    let server = world_server();
    for format in ["png", "webp"] {
        for (kind, template) in templates(&server.base_url(), format) {
            for size in [32, 45] {
                let imagery = imagery(&template, ZOOM, size, settings());
                for (lat, lon) in PLACES {
                    let p = LatLon::new(lat, lon).unwrap();
                    let chip = imagery.chip(p, far_cutoff()).await.unwrap();
                    assert!(
                        chip == true_chip(p, ZOOM, size),
                        "{kind} ({format}), {size} px at {lat},{lon}: {:?}",
                        difference(&chip, &true_chip(p, ZOOM, size))
                    );
                }
            }
        }
    }
    // XYZ kinds asked for tiles, the others for one image per chip.
    let per_chip = server
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/static") || r.path == "/wms")
        .count();
    assert_eq!(per_chip, 2 * 3 * 2 * PLACES.len());
}

#[tokio::test]
async fn jpeg_sources_agree_within_jpeg_error() {
    let server = world_server();
    for (kind, template) in templates(&server.base_url(), "jpg") {
        let imagery = imagery(&template, ZOOM, 64, settings());
        for (lat, lon) in PLACES {
            let p = LatLon::new(lat, lon).unwrap();
            let chip = imagery.chip(p, far_cutoff()).await.unwrap();
            let (mean, max) = difference(&chip, &true_chip(p, ZOOM, 64));
            // Quality 90 on this world: a mean error under 1, up to a few tens at its sharp
            // 256-px seams.
            assert!(
                mean < 1.5 && max < 64,
                "{kind} at {lat},{lon}: mean {mean:.2}, max {max}"
            );
            // And the chip is where it should be: every window one pixel away is further off
            // (by ≥ 0.15 here: one channel off by one, blurred by the JPEG noise).
            let (left, top) = chip_corner(p, ZOOM, 64);
            for (dx, dy) in [
                (-1, -1),
                (0, -1),
                (1, -1),
                (-1, 0),
                (1, 0),
                (-1, 1),
                (0, 1),
                (1, 1),
            ] {
                let shifted = difference(&chip, &region(left + dx, top + dy, 64, 64)).0;
                assert!(
                    shifted > mean + 0.1,
                    "{kind} at {lat},{lon}: off by ({dx}, {dy})? {shifted:.2} vs {mean:.2}"
                );
            }
        }
    }
}

#[tokio::test]
async fn local_file_templates_cut_the_same_chip() {
    let dir = tempfile::tempdir().unwrap();
    let p = LatLon::new(PLACES[0].0, PLACES[0].1).unwrap();
    let (x, y) = pixel_of(p.lat, p.lon, 256.0 * 2f64.powi(i32::from(ZOOM)));
    let (tx, ty) = ((x / 256.0) as i64, (y / 256.0) as i64);
    for (dx, dy) in [
        (-1, -1),
        (0, -1),
        (1, -1),
        (-1, 0),
        (0, 0),
        (1, 0),
        (-1, 1),
        (0, 1),
        (1, 1),
    ] {
        let (tx, ty) = (tx + dx, ty + dy);
        let path = dir.path().join(format!("{ZOOM}/{tx}/{ty}.png"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, encode_png(&region(tx * 256, ty * 256, 256, 256))).unwrap();
    }
    let template = format!("file://{}/{{z}}/{{x}}/{{y}}.png", dir.path().display());
    let chip = imagery(&template, ZOOM, 64, settings())
        .chip(p, far_cutoff())
        .await
        .unwrap();
    assert!(chip == true_chip(p, ZOOM, 64));

    let far = LatLon::new(-40.0, -60.0).unwrap();
    let err = imagery(&template, ZOOM, 64, settings())
        .chip(far, far_cutoff())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ImageUnavailable, "{err:?}");
    assert!(err.message.starts_with("file://"), "{}", err.message);
}

// ---------------------------------------------------------------------------------------------
// Misbehaving servers. Each test serves one tile path and counts what reached it.

/// A position whose 32-px chip lies inside tile (`x`, `y`) at `ZOOM`: it needs only that tile.
fn inside_tile(x: u32, y: u32) -> LatLon {
    let (lat, lon) = point_in_tile(ZOOM, x, y, 128.3, 128.3);
    LatLon::new(lat, lon).unwrap()
}

const TILE: &str = "/xyz/17/70000/40000.png";

/// `Imagery::chip` for the building inside `TILE`, served by `handler`, and the server.
async fn chip_from(
    handler: impl Fn(&TileRequest) -> TileResponse + Send + Sync + 'static,
    settings: FetchSettings,
) -> (Result<RgbImage, BuildingError>, TileServer, Duration) {
    let server = TileServer::start(Arc::new(move |req| {
        assert_eq!(req.path, TILE, "the chip needs exactly this tile");
        handler(req)
    }));
    let template = format!("{}/xyz/{{z}}/{{x}}/{{y}}.png", server.base_url());
    let started = Instant::now();
    let chip = imagery(&template, ZOOM, 32, settings)
        .chip(inside_tile(70_000, 40_000), far_cutoff())
        .await;
    (chip, server, started.elapsed())
}

fn the_tile() -> TileResponse {
    encoded(&region(70_000 * 256, 40_000 * 256, 256, 256), "png")
}

fn expect_error(chip: Result<RgbImage, BuildingError>, code: ErrorCode, needles: &[&str]) {
    let err = chip.expect_err("the chip should fail");
    assert_eq!(err.code, code, "{err:?}");
    for needle in needles {
        assert!(
            err.message.contains(needle),
            "{needle:?} not in {:?}",
            err.message
        );
    }
}

/// Serves `handler` for the chip's tile, checks that the chip fails with `code` and a message
/// holding every needle after exactly `requests` requests, and says how long that took.
async fn expect_failure(
    handler: impl Fn(&TileRequest) -> TileResponse + Send + Sync + 'static,
    settings: FetchSettings,
    (code, needles): (ErrorCode, &[&str]),
    requests: usize,
) -> Duration {
    let (chip, server, took) = chip_from(handler, settings).await;
    expect_error(chip, code, needles);
    assert_eq!(
        server.count(TILE),
        requests,
        "requests that reached the server"
    );
    took
}

#[tokio::test]
async fn a_server_failing_twice_then_answering_is_retried_until_it_answers() {
    let (chip, server, _) = chip_from(
        |req| {
            if req.nth < 2 {
                TileResponse::status(503)
            } else {
                the_tile()
            }
        },
        settings(),
    )
    .await;
    assert_eq!(
        chip.unwrap().get_pixel(0, 0).0,
        world_pixel(70_000 * 256 + 112, 40_000 * 256 + 112)
    );
    assert_eq!(server.count(TILE), 3, "two failures, then the answer");

    // DOWNLOAD_RETRIES=1: two attempts in all, both failed.
    expect_failure(
        |req| {
            if req.nth < 2 {
                TileResponse::status(500)
            } else {
                the_tile()
            }
        },
        FetchSettings {
            retries: 1,
            ..settings()
        },
        (
            ErrorCode::ImageUnavailable,
            &["HTTP 500", "(after 2 attempts)", TILE],
        ),
        2,
    )
    .await;
}

#[tokio::test]
async fn server_errors_exhaust_the_retries() {
    expect_failure(
        |_| TileResponse::status(503),
        settings(),
        (
            ErrorCode::ImageUnavailable,
            &["HTTP 503 Service Unavailable", "(after 3 attempts)"],
        ),
        3,
    )
    .await;
}

#[tokio::test]
async fn not_found_is_not_retried() {
    expect_failure(
        |_| TileResponse::status(404),
        settings(),
        (ErrorCode::ImageUnavailable, &["HTTP 404 Not Found", TILE]),
        1,
    )
    .await;
}

#[tokio::test]
async fn too_many_requests_is_retried_after_the_servers_retry_after() {
    let times = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&times);
    let (chip, server, _) = chip_from(
        move |req| {
            seen.lock().unwrap().push(Instant::now());
            if req.nth == 0 {
                TileResponse::status(429).with_header("Retry-After", "1")
            } else {
                the_tile()
            }
        },
        settings(),
    )
    .await;
    assert!(chip.is_ok(), "{chip:?}");
    assert_eq!(server.count(TILE), 2);
    let times = times.lock().unwrap();
    // Our own first back-off is at most 100 ms: waiting a second is the server's Retry-After.
    let waited = times[1] - times[0];
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
}

#[tokio::test]
async fn a_slow_server_times_out_on_every_attempt() {
    let took = expect_failure(
        |_| the_tile().with_delay(Duration::from_secs(3)),
        FetchSettings {
            timeout: Duration::from_millis(300),
            retries: 1,
            ..settings()
        },
        (
            ErrorCode::ImageUnavailable,
            &["no complete answer within 300 ms", "(after 2 attempts)"],
        ),
        2,
    )
    .await;
    assert!(
        took < Duration::from_millis(1500),
        "two 300 ms attempts took {took:?}"
    );
}

#[tokio::test]
async fn an_html_error_page_is_image_invalid_naming_its_content_type() {
    let page = |_: &TileRequest| {
        let mut page = TileResponse::png(b"<html><body>Quota exceeded</body></html>".to_vec());
        page.content_type = "text/html; charset=utf-8".into();
        page
    };
    let named = "\"text/html; charset=utf-8\" instead of an image";
    // Not retried: an error page will not turn into an image.
    expect_failure(page, settings(), (ErrorCode::ImageInvalid, &[named]), 1).await;
}

#[tokio::test]
async fn a_truncated_jpeg_is_image_invalid() {
    let jpeg = encode_jpeg(&region(0, 0, 256, 256), 90);
    let half = jpeg[..jpeg.len() / 2].to_vec();
    expect_failure(
        move |_| TileResponse::jpeg(half.clone()),
        settings(),
        (
            ErrorCode::ImageInvalid,
            &["a JPEG cut off before its end", TILE],
        ),
        1,
    )
    .await;
}

#[tokio::test]
async fn a_one_pixel_png_is_resized_to_the_tile_it_stands_for() {
    let dot = encode_png(&RgbImage::from_pixel(1, 1, Rgb([200, 10, 20])));
    let (chip, _, _) = chip_from(move |_| TileResponse::png(dot.clone()), settings()).await;
    let chip = chip.unwrap();
    assert_eq!(chip.dimensions(), (32, 32));
    assert!(chip.pixels().all(|p| p.0 == [200, 10, 20]));
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_from_its_header() {
    let bomb = bomb_png(100_000, 100_000);
    assert!(bomb.len() < 200, "a small file: {} bytes", bomb.len());
    let took = expect_failure(
        move |_| TileResponse::png(bomb.clone()),
        settings(),
        (
            ErrorCode::ImageInvalid,
            &["100000x100000 px is over the decoder's limits"],
        ),
        1,
    )
    .await;
    assert!(
        took < Duration::from_secs(2),
        "refused without decoding: {took:?}"
    );
}

#[tokio::test]
async fn a_body_over_max_image_bytes_is_image_invalid() {
    expect_failure(
        |_| the_tile(),
        FetchSettings {
            max_bytes: 1024,
            ..settings()
        },
        (
            ErrorCode::ImageInvalid,
            &["larger than 1024 bytes (MAX_IMAGE_BYTES)"],
        ),
        1,
    )
    .await;
}

/// A server that answers every connection with `response` (raw bytes) and closes it: for what
/// a well-behaved HTTP library will not send (no Content-Length, a body cut short).
fn raw_server(response: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = stream.write_all(&response);
        }
    });
    (base, connections)
}

#[tokio::test]
async fn the_body_cap_holds_while_streaming_without_a_content_length() {
    let body = encode_png(&region(0, 0, 256, 256));
    assert!(body.len() > 1024);
    let mut response =
        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n".to_vec();
    response.extend_from_slice(&body);
    let (base, connections) = raw_server(response);
    let template = format!("{base}/{{z}}/{{x}}/{{y}}.png");
    let chip = imagery(
        &template,
        ZOOM,
        32,
        FetchSettings {
            max_bytes: 1024,
            ..settings()
        },
    )
    .chip(inside_tile(70_000, 40_000), far_cutoff())
    .await;
    expect_error(chip, ErrorCode::ImageInvalid, &["larger than 1024 bytes"]);
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_cut_off_mid_transfer_is_retried_then_unavailable() {
    let response =
        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n\x89PNG\r\n"
            .to_vec();
    let (base, connections) = raw_server(response);
    let template = format!("{base}/{{z}}/{{x}}/{{y}}.png");
    let chip = imagery(&template, ZOOM, 32, settings())
        .chip(inside_tile(70_000, 40_000), far_cutoff())
        .await;
    expect_error(
        chip,
        ErrorCode::ImageUnavailable,
        &["body cut off", "(after 3 attempts)"],
    );
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn connection_refused_is_retried_then_unavailable() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The listener is dropped: nothing listens on `port` now.
    let template = format!("http://127.0.0.1:{port}/{{z}}/{{x}}/{{y}}.png");
    let started = Instant::now();
    let chip = imagery(&template, ZOOM, 32, settings())
        .chip(inside_tile(70_000, 40_000), far_cutoff())
        .await;
    expect_error(
        chip,
        ErrorCode::ImageUnavailable,
        &["connection failed", "(after 3 attempts)"],
    );
    // Two jittered back-offs (50–100 ms, then 100–200 ms) were waited.
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn tile_headers_go_with_every_request_including_retries() {
    let headers = vec![
        (
            "Referer".to_string(),
            "https://example.org/roofs".to_string(),
        ),
        ("X-Api-Key".to_string(), "k-123".to_string()),
    ];
    let (chip, server, _) = chip_from(
        |req| {
            if req.nth == 0 {
                TileResponse::status(502)
            } else {
                the_tile()
            }
        },
        FetchSettings {
            headers: headers.clone(),
            ..settings()
        },
    )
    .await;
    assert!(chip.is_ok());
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for req in requests {
        for (name, value) in &headers {
            assert!(
                req.headers
                    .iter()
                    .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value),
                "{name} missing from attempt {}: {:?}",
                req.nth,
                req.headers
            );
        }
    }
}

#[tokio::test]
async fn chip_gsd_m_cuts_the_ground_square_at_that_resolution_from_any_source() {
    let server = world_server();
    let p = LatLon::new(PLACES[0].0, PLACES[0].1).unwrap();
    let zoom_17 = tilepredict::geo::metres_per_pixel(p.lat, ZOOM);
    for (kind, template) in templates(&server.base_url(), "png") {
        let at = |gsd: f64| {
            let mut chips = imagery(&template, 12, 64, settings());
            let imagery = Arc::into_inner(chips.maker.imagery).unwrap();
            chips.maker.imagery = Arc::new(imagery.with_ground_resolution(Some(gsd)));
            chips
        };
        // TILE_ZOOM (12 here) no longer matters: zoom 17's own resolution is zoom 17's chip.
        let chip = at(zoom_17).chip(p, far_cutoff()).await.unwrap();
        assert!(chip == true_chip(p, ZOOM, 64), "{kind}");
        // 1.5 × that: 96 zoom-17 pixels of ground, resized to the 64-px chip.
        let chip = at(1.5 * zoom_17).chip(p, far_cutoff()).await.unwrap();
        let want = image::imageops::resize(
            &true_chip(p, ZOOM, 96),
            64,
            64,
            image::imageops::FilterType::Triangle,
        );
        assert!(chip == want, "{kind}: {:?}", difference(&chip, &want));
    }
}
