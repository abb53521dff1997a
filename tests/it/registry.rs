//! The registry join end to end: registers (CSV and GeoJSON, points and footprints) served by
//! the loopback S3 server, loaded by the real `bootstrap` during init, and checked in the
//! answers of real invocations through the Runtime API emulator.
//!
//! The model is `rgb_tiny.onnx` (labels red, green, blue; it answers the chip's dominant
//! colour) with `REGISTRY_POSITIVE_LABEL=red`, and the tile server paints everything west of
//! `SPLIT_LON` red and everything east of it green, so a building's "flag" is chosen by where
//! it stands. Register positions are placed at exact geodesic distances with Karney's
//! algorithm (`geographiclib-rs`).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use geographiclib_rs::{DirectGeodesic, Geodesic};
use serde_json::{Value, json};

use crate::support::function::{manifest, ort_library};
use crate::support::runtime::LambdaProcess;
use crate::support::s3::S3Server;
use crate::support::tiles::{self, TileResponse, TileServer};

/// West of this longitude the imagery is red (flagged), east of it green.
const SPLIT_LON: f64 = 21.01;
const RED: (f64, f64) = (52.2297, 21.0010);
const RED_2: (f64, f64) = (52.2310, 21.0010);
const GREEN: (f64, f64) = (52.2297, 21.0200);

/// `(lat, lon)` `metres` away from `from` on `azimuth` (degrees from north), on WGS 84.
fn offset(from: (f64, f64), azimuth: f64, metres: f64) -> (f64, f64) {
    Geodesic::wgs84().direct(from.0, from.1, azimuth, metres)
}

/// Tiles west of `SPLIT_LON` are red, the others green.
fn split_world() -> tiles::Handler {
    let red = tiles::encode_png(&image::RgbImage::from_pixel(
        256,
        256,
        image::Rgb([255, 0, 0]),
    ));
    let green = tiles::encode_png(&image::RgbImage::from_pixel(
        256,
        256,
        image::Rgb([0, 255, 0]),
    ));
    let split_x = ((SPLIT_LON + 180.0) / 360.0 * f64::from(1u32 << 19)) as u64;
    Arc::new(move |req| match tiles::parse_xyz(&req.path) {
        Some((_, x, _)) if x < split_x => TileResponse::png(red.clone()),
        Some(_) => TileResponse::png(green.clone()),
        None => TileResponse::status(404),
    })
}

/// An S3 server holding the register, a tile server, and the function's environment.
struct World {
    s3: S3Server,
    tiles: TileServer,
}

impl World {
    fn new() -> Self {
        Self {
            s3: S3Server::start(),
            tiles: TileServer::start(split_world()),
        }
    }

    /// The environment for `bootstrap`: the file model, the tile server, S3, and `extra` (wins).
    fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = self.s3.env();
        env.extend(
            [
                ("MODEL_URI", manifest("fixtures/models/rgb_tiny.onnx")),
                (
                    "TILE_URL",
                    format!("{}/{{z}}/{{x}}/{{y}}.png", self.tiles.base_url()),
                ),
                ("ORT_DYLIB_PATH", ort_library()),
                ("REGISTRY_POSITIVE_LABEL", "red".to_string()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    fn spawn(&self, extra: &[(&str, &str)]) -> LambdaProcess {
        LambdaProcess::spawn(&self.env(extra))
    }
}

fn buildings(list: &[(&str, (f64, f64))]) -> Value {
    let list: Vec<Value> = list
        .iter()
        .map(|(id, (lat, lon))| json!({"id": id, "lat": lat, "lon": lon}))
        .collect();
    json!({ "buildings": list })
}

/// The answer's prediction for building `id`.
fn prediction<'a>(answer: &'a Value, id: &str) -> &'a Value {
    answer["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no prediction for {id} in {answer:#}"))
}

/// The fields of the first JSON log line whose message is `message`.
fn log_fields(lambda: &LambdaProcess, message: &str) -> Value {
    let logs = lambda.logs_containing(&format!("\"message\":{}", json!(message)));
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == message)
        .unwrap_or_else(|| panic!("no log line {message:?} in:\n{logs}"))
}

/// Waits for the child's `/runtime/init/error` and for it to exit.
fn init_error(mut lambda: LambdaProcess) -> (String, String) {
    let error = lambda
        .wait_init_error(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no init error; logs:\n{}", lambda.logs()));
    let status = lambda.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    error
}

#[test]
fn csv_points_match_within_15_m_14_m_in_16_m_out() {
    let world = World::new();
    let at_14 = offset(RED, 60.0, 14.0);
    let at_16 = offset(RED_2, 200.0, 16.0);
    let near_green = offset(GREEN, 300.0, 3.0);
    let csv = format!(
        "id,lat,lon,address,year\n\
         A-14,{},{},\"ul. Marszałkowska 1, Warszawa\",1975\n\
         A-16,{},{},ul. Prosta 2,1981\n\
         A-G,{},{},,1969\n",
        at_14.0, at_14.1, at_16.0, at_16.1, near_green.0, near_green.1
    );
    world.s3.put("registers", "pl/asbestos.csv", csv.as_bytes());
    let lambda = world.spawn(&[("REGISTRY_URI", "s3://registers/pl/asbestos.csv")]);
    let event = buildings(&[
        ("red-14", RED),
        ("red-16", RED_2),
        ("green-3", GREEN),
        ("bad", (95.0, 21.0)),
    ]);
    let answer = lambda.invoke(&event, 30_000).unwrap_response();

    let listed = prediction(&answer, "red-14");
    assert_eq!(listed["label"], "red");
    assert_eq!(listed["registry"]["listed"], true);
    assert_eq!(
        listed["registry"]["record"],
        json!({"id": "A-14", "lat": at_14.0.to_string(), "lon": at_14.1.to_string(),
               "address": "ul. Marszałkowska 1, Warszawa", "year": "1975"})
    );
    let distance = listed["registry"]["distance_m"].as_f64().unwrap();
    assert!((distance - 14.0).abs() <= 0.01, "{distance}");

    let unlisted = prediction(&answer, "red-16");
    assert_eq!(
        unlisted["registry"],
        json!({"listed": false, "record": null, "distance_m": null})
    );
    let green = prediction(&answer, "green-3");
    assert_eq!(green["label"], "green");
    assert_eq!(green["registry"]["record"]["id"], "A-G");
    assert!((green["registry"]["distance_m"].as_f64().unwrap() - 3.0).abs() <= 0.01);
    let failed = prediction(&answer, "bad");
    assert!(
        failed.get("error").is_some() && failed.get("registry").is_none(),
        "{failed}"
    );

    assert_eq!(
        answer["registry"],
        json!({"uri": "s3://registers/pl/asbestos.csv",
               "version": answer["registry"]["version"], "records": 3, "radius_m": 15.0,
               "positive_label": "red", "checked": 3, "listed": 2, "flagged": 2,
               "flagged_unlisted": 1, "listed_not_flagged": 1})
    );
    assert_eq!(
        answer["registry"]["version"].as_str().unwrap().len(),
        32,
        "the ETag"
    );
    assert!(answer["timing"]["registry_load_ms"].as_f64().unwrap() > 0.0);
    assert!(answer["timing"]["registry_lookup_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(answer["timing"]["cold_start"], true);

    let warm = lambda.invoke(&event, 30_000).unwrap_response();
    assert_eq!(warm["timing"]["registry_load_ms"], 0.0);
    assert_eq!(warm["registry"], answer["registry"]);
}

#[test]
fn geojson_footprints_match_by_containment_and_points_by_distance() {
    let world = World::new();
    // A square around RED; an L whose notch holds RED_2 (inside the L's box, outside the L); a
    // square with a hole where GREEN stands; a point 5 m from IN_GREEN.
    let square = |c: (f64, f64), half: f64| {
        let (s, n, w, e) = (c.0 - half, c.0 + half, c.1 - half, c.1 + half);
        json!([[w, s], [e, s], [e, n], [w, n], [w, s]])
    };
    let (lat, lon) = RED_2;
    let l_shape = json!([[
        [lon - 0.0003, lat - 0.0003],
        [lon + 0.0003, lat - 0.0003],
        [lon + 0.0003, lat - 0.0001],
        [lon - 0.0001, lat - 0.0001],
        [lon - 0.0001, lat + 0.0003],
        [lon - 0.0003, lat + 0.0003],
        [lon - 0.0003, lat - 0.0003]
    ]]);
    let in_green = offset(GREEN, 0.0, 100.0);
    let point = offset(in_green, 90.0, 5.0);
    let register = json!({"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "F-1", "geometry": {"type": "Polygon", "coordinates": [square(RED, 0.0002)]},
         "properties": {"year": 1975, "roof_m2": 180.5}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": l_shape},
         "properties": {"id": "F-L"}},
        {"type": "Feature", "geometry": {"type": "Polygon",
         "coordinates": [square(GREEN, 0.0003), square(GREEN, 0.0001)]}, "properties": {"id": "F-HOLE"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [point.1, point.0]},
         "properties": {"id": "P-5"}},
    ]});
    world.s3.put(
        "registers",
        "footprints.geojson",
        register.to_string().as_bytes(),
    );
    let lambda = world.spawn(&[("REGISTRY_URI", "s3://registers/footprints.geojson")]);
    let event = buildings(&[
        ("inside", RED),
        ("notch", RED_2),
        ("hole", GREEN),
        ("near-point", in_green),
    ]);
    let answer = lambda.invoke(&event, 30_000).unwrap_response();

    assert_eq!(
        prediction(&answer, "inside")["registry"],
        json!({"listed": true, "record": {"id": "F-1", "year": 1975, "roof_m2": 180.5}, "distance_m": 0.0})
    );
    assert_eq!(prediction(&answer, "notch")["registry"]["listed"], false);
    assert_eq!(prediction(&answer, "hole")["registry"]["listed"], false);
    let near = &prediction(&answer, "near-point")["registry"];
    assert_eq!(near["record"], json!({"id": "P-5"}));
    assert!(
        (near["distance_m"].as_f64().unwrap() - 5.0).abs() <= 0.01,
        "{near}"
    );
    let summary = &answer["registry"];
    assert_eq!(
        [
            &summary["records"],
            &summary["checked"],
            &summary["listed"],
            &summary["flagged"],
            &summary["flagged_unlisted"],
            &summary["listed_not_flagged"]
        ],
        [4, 4, 2, 2, 1, 1].map(|n| json!(n)).each_ref()
    );

    let ready = log_fields(&lambda, "registry ready");
    assert_eq!(
        [
            &ready["format"],
            &ready["records"],
            &ready["points"],
            &ready["footprints"],
            &ready["bad_rows"]
        ],
        [json!("geojson"), json!(4), json!(1), json!(3), json!(0)].each_ref()
    );
}

#[test]
fn malformed_csv_fails_init_with_the_line_and_reason() {
    let world = World::new();
    world.s3.put(
        "registers",
        "bad-number.csv",
        b"id,lat,lon\nA,52.1,21.0\nB,52.2,21.1\nC,\"52,3\",21.2\n",
    );
    world.s3.put(
        "registers",
        "no-lon.csv",
        b"id,lat,longitude_2180\nA,52.1,600000\n",
    );
    world.s3.put(
        "registers",
        "short-row.csv",
        b"id,lat,lon\nA,52.1,21.0\nB,52.2\n",
    );
    for (key, expected) in [
        (
            "bad-number.csv",
            "registry s3://registers/bad-number.csv: line 4: lat \"52,3\" is not a number",
        ),
        (
            "no-lon.csv",
            "registry s3://registers/no-lon.csv: line 1: no lon column (accepted names: lon, lng, long, longitude); the header has: id, lat, longitude_2180",
        ),
        (
            "short-row.csv",
            "registry s3://registers/short-row.csv: line 3: 2 fields, but the header has 3",
        ),
    ] {
        let uri = format!("s3://registers/{key}");
        let (error_type, message) = init_error(world.spawn(&[("REGISTRY_URI", &uri)]));
        assert_eq!(
            (error_type.as_str(), message.as_str()),
            ("RegistryError", expected)
        );
    }
}

#[test]
fn malformed_geojson_fails_init_with_the_feature_and_reason() {
    let world = World::new();
    let register = json!({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [21.0, 52.0]}, "properties": {}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [21.0, 52.0]}, "properties": {}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [210.0, 52.0]}, "properties": {}},
    ]});
    world
        .s3
        .put("registers", "r.geojson", register.to_string().as_bytes());
    let (error_type, message) =
        init_error(world.spawn(&[("REGISTRY_URI", "s3://registers/r.geojson")]));
    assert_eq!(error_type, "RegistryError");
    assert_eq!(
        message,
        "registry s3://registers/r.geojson: features[2]: lon 210 is outside -180..180"
    );
}

#[test]
fn skipped_bad_rows_are_counted_and_logged() {
    let world = World::new();
    let good = offset(RED, 0.0, 2.0);
    let csv = format!(
        "id,lat,lon\nA,{},{}\nB,north,21.0\nC,52.3\nD,52.4,21.4\n",
        good.0, good.1
    );
    world.s3.put("registers", "dirty.csv", csv.as_bytes());
    let lambda = world.spawn(&[
        ("REGISTRY_URI", "s3://registers/dirty.csv"),
        ("REGISTRY_SKIP_BAD_ROWS", "true"),
    ]);
    let answer = lambda
        .invoke(&buildings(&[("red", RED)]), 30_000)
        .unwrap_response();
    assert_eq!(prediction(&answer, "red")["registry"]["record"]["id"], "A");
    assert_eq!(answer["registry"]["records"], 2);
    assert_eq!(log_fields(&lambda, "registry ready")["bad_rows"], 2);
    let skipped = log_fields(
        &lambda,
        "registry rows skipped (REGISTRY_SKIP_BAD_ROWS=true)",
    );
    assert_eq!(skipped["bad_rows"], 2);
    assert_eq!(
        skipped["first"],
        "line 3: lat \"north\" is not a number; line 4: 2 fields, but the header has 3"
    );
}

#[test]
fn the_positive_label_must_be_one_of_the_models() {
    let world = World::new();
    world.s3.put("registers", "r.csv", b"lat,lon\n52.0,21.0\n");
    let (error_type, message) = init_error(world.spawn(&[
        ("REGISTRY_URI", "s3://registers/r.csv"),
        ("REGISTRY_POSITIVE_LABEL", "asbestos"),
    ]));
    assert_eq!(error_type, "ConfigError");
    assert!(
        message.starts_with(
            "REGISTRY_POSITIVE_LABEL=\"asbestos\": not one of the model's labels (red, green, blue)"
        ),
        "{message}"
    );
}

#[test]
fn a_missing_register_fails_init_naming_it() {
    let world = World::new();
    world.s3.create_bucket("registers");
    let (error_type, message) =
        init_error(world.spawn(&[("REGISTRY_URI", "s3://registers/none.csv")]));
    assert_eq!(error_type, "RegistryLoadError");
    assert!(
        message.starts_with("cannot load registry s3://registers/none.csv: "),
        "{message}"
    );
}

#[test]
fn without_a_registry_there_is_no_registry_field() {
    let world = World::new();
    let lambda = world.spawn(&[]);
    let answer = lambda
        .invoke(&buildings(&[("red", RED), ("green", GREEN)]), 30_000)
        .unwrap_response();
    assert_eq!(prediction(&answer, "red")["label"], "red");
    for p in answer["predictions"].as_array().unwrap() {
        assert!(p.get("registry").is_none(), "{p}");
    }
    assert!(answer.get("registry").is_none());
    assert!(answer["timing"].get("registry_load_ms").is_none());
    assert!(answer["timing"].get("registry_lookup_ms").is_none());
}

/// A TCP proxy in front of the S3 server that holds every new connection for `delay` before
/// passing it on, and records when each connection's first request line arrived.
struct SlowProxy {
    port: u16,
    arrivals: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl SlowProxy {
    fn start(upstream: std::net::SocketAddr, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let log = arrivals.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { break };
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut head = vec![0u8; 4096];
                    let Ok(n) = client.read(&mut head) else {
                        return;
                    };
                    head.truncate(n);
                    let line = String::from_utf8_lossy(&head)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    log.lock().unwrap().push((Instant::now(), line));
                    std::thread::sleep(delay);
                    let Ok(mut server) = TcpStream::connect(upstream) else {
                        return;
                    };
                    if server.write_all(&head).is_err() {
                        return;
                    }
                    pipe(client, server);
                });
            }
        });
        Self { port, arrivals }
    }

    /// When the first request line holding `needle` arrived.
    fn arrival(&self, needle: &str) -> Option<Instant> {
        self.arrivals
            .lock()
            .unwrap()
            .iter()
            .find(|(_, line)| line.contains(needle))
            .map(|(at, _)| *at)
    }
}

/// Copies both ways until either side closes.
fn pipe(client: TcpStream, server: TcpStream) {
    let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let upstream = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let (mut s_read, mut c_write) = (server, client);
    let _ = std::io::copy(&mut s_read, &mut c_write);
    let _ = c_write.shutdown(Shutdown::Write);
    let _ = upstream.join();
}

/// Both the model and the register come from S3 through a proxy that holds each connection
/// for 1.5 s: if init fetched them one after the other, the second request would arrive at
/// least 1.5 s after the first; loaded concurrently, both arrive at once.
#[test]
fn init_loads_the_registry_from_s3_concurrently_with_the_model() {
    let world = World::new();
    world.s3.put(
        "models",
        "rgb_tiny.onnx",
        &std::fs::read(manifest("fixtures/models/rgb_tiny.onnx")).unwrap(),
    );
    let point = offset(RED, 90.0, 4.0);
    world.s3.put(
        "registers",
        "concurrent.csv",
        format!("lat,lon\n{},{}\n", point.0, point.1).as_bytes(),
    );
    let delay = Duration::from_millis(1500);
    let upstream = world
        .s3
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = SlowProxy::start(upstream, delay);
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let lambda = world.spawn(&[
        ("AWS_ENDPOINT_URL", &endpoint),
        ("MODEL_URI", "s3://models/rgb_tiny.onnx"),
        ("REGISTRY_URI", "s3://registers/concurrent.csv"),
    ]);
    let answer = lambda
        .invoke(&buildings(&[("red", RED)]), 30_000)
        .unwrap_response();

    let model = proxy
        .arrival("/models/rgb_tiny.onnx")
        .expect("the model came through the proxy");
    let register = proxy
        .arrival("/registers/concurrent.csv")
        .expect("the register came through the proxy");
    let gap = if model > register {
        model - register
    } else {
        register - model
    };
    assert!(
        gap < delay / 2,
        "requests {gap:?} apart: loaded one after the other"
    );

    assert_eq!(prediction(&answer, "red")["registry"]["listed"], true);
    let registry_ms = answer["timing"]["registry_load_ms"].as_f64().unwrap();
    let model_ms = answer["timing"]["model_load_ms"].as_f64().unwrap();
    assert!(registry_ms >= delay.as_millis() as f64, "{registry_ms}");
    assert!(model_ms >= delay.as_millis() as f64, "{model_ms}");
    assert_eq!(log_fields(&lambda, "registry ready")["records"], 1);
}
