//! GeoTIFF imagery through the real `bootstrap` under the Lambda Runtime API emulator: a COG
//! on the in-process S3 server (read with the function's own S3 client and credentials), a STAC
//! mosaic over the loopback HTTP server with Range support, the exact ranged reads each costs,
//! and the init errors a user sees for files that cannot be used.
//!
//! Each test starts its own `bootstrap` process (a sandbox: its own header and tile caches).

use std::collections::BTreeSet;
use std::ops::Range;
use std::time::Duration;

use serde_json::{Value, json};

use crate::geotiff::{cluster, fixtures};
use crate::support::function::{codes, env, model};
use crate::support::runtime::LambdaProcess;
use crate::support::s3::S3Server;
use crate::support::tiles::{TileServer, files_handler};

const FILE: &str = "world_3857_deflate.tif";

fn buildings(points: &[tilepredict::geo::LatLon]) -> Vec<Value> {
    points
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"id": i, "lat": p.lat, "lon": p.lon}))
        .collect()
}

fn invoke(function: &LambdaProcess, buildings: &[Value]) -> Value {
    function
        .invoke(&json!({ "buildings": buildings }), 60_000)
        .unwrap_response()
}

fn timing(answer: &Value, field: &str) -> u64 {
    answer["timing"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("timing.{field} in {}", answer["timing"]))
}

/// The function on the tiny RGB model (32-px input), 64-px chips at zoom 17, on `tile_url`.
fn function(tile_url: &str, extra: &[(String, String)]) -> LambdaProcess {
    let mut vars = env(
        &model("rgb_tiny.onnx"),
        tile_url,
        &[("TILE_ZOOM", "17"), ("CHIP_SIZE", "64")],
    );
    vars.extend(extra.iter().cloned());
    LambdaProcess::spawn(&vars)
}

/// The tiles of `tiles` that `reads` cover, and whether any byte was read twice.
fn covered(reads: &[Range<u64>], tiles: &[Range<u64>]) -> (BTreeSet<usize>, bool) {
    let read = tiles
        .iter()
        .enumerate()
        .filter(|(_, t)| reads.iter().any(|r| r.start <= t.start && t.end <= r.end))
        .map(|(i, _)| i)
        .collect();
    let mut sorted = reads.to_vec();
    sorted.sort_by_key(|r| r.start);
    (read, sorted.windows(2).any(|w| w[1].start < w[0].end))
}

#[test]
fn a_cog_on_s3_reads_its_header_once_and_each_tile_once_per_sandbox() {
    let fx = fixtures();
    let s3 = S3Server::start();
    s3.put(
        "imagery",
        "ortho/world.tif",
        &std::fs::read(fx.dir.join(FILE)).unwrap(),
    );
    let function = function("s3://imagery/ortho/world.tif", &s3.env());
    let points = cluster(&fx);
    let mut request = buildings(&points);
    request.push(json!({"id": "far", "lat": 50.0, "lon": 19.0}));

    let cold = invoke(&function, &request);
    let got = codes(&cold);
    assert!(got[..110].iter().all(|c| c == "none"), "{got:?}");
    assert_eq!(got[110], "no_coverage");
    assert!(
        cold["predictions"][110]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("s3://imagery/ortho/world.tif does not cover this building"),
        "{}",
        cold["predictions"][110]
    );

    let reads: Vec<Range<u64>> = s3.reads().into_iter().map(|(_, r)| r).collect();
    assert_eq!(reads[0], 0..65536, "the header, once, at init");
    let tile_reads = &reads[1..];
    let tiles = fx.tiles(FILE, 0);
    let (read, twice) = covered(tile_reads, &tiles);
    assert!(!twice, "a byte read twice: {tile_reads:?}");
    assert_eq!(timing(&cold, "range_requests"), tile_reads.len() as u64);
    assert_eq!(timing(&cold, "images_fetched"), read.len() as u64);
    let bytes: u64 = tile_reads.iter().map(|r| r.end - r.start).sum();
    assert_eq!(timing(&cold, "bytes_fetched"), bytes);
    let compressed: u64 = read.iter().map(|&i| tiles[i].end - tiles[i].start).sum();
    assert!(bytes <= 2 * compressed, "{bytes} bytes for {compressed}");
    eprintln!(
        "110 buildings: {} tiles in {} ranged GETs, {bytes} bytes ({compressed} compressed)",
        read.len(),
        tile_reads.len()
    );

    // Warm: the same buildings come from the cache, with no request at all.
    let warm = invoke(&function, &request);
    assert_eq!(timing(&warm, "range_requests"), 0);
    assert_eq!(timing(&warm, "cache_hits"), read.len() as u64);
    assert_eq!(s3.reads().len(), reads.len());
    assert_eq!(cold["predictions"][7], warm["predictions"][7]);
}

#[test]
fn a_stac_mosaic_over_http_reads_each_building_from_its_newest_file() {
    let fx = fixtures();
    let server = TileServer::start(files_handler(fx.dir.clone()));
    let function = function(&format!("{}/mosaic/stac.json", server.base_url()), &[]);
    let names = ["centre", "east", "south", "in_patch", "outside"];
    let request: Vec<Value> = names
        .iter()
        .map(|n| {
            let s = fx.sample(n);
            json!({"id": n, "lat": s.at.lat, "lon": s.at.lon})
        })
        .collect();
    let answer = invoke(&function, &request);
    assert_eq!(
        codes(&answer),
        ["none", "none", "none", "none", "no_coverage"]
    );
    assert_eq!(
        answer["predictions"][3]["label"], "red",
        "the newest file there is a red patch"
    );
    assert!(timing(&answer, "range_requests") > 0);
    // Headers of the files read, once each; the index was read at init.
    let mut headers: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| {
            r.headers
                .iter()
                .any(|(n, v)| n == "range" && v.starts_with("bytes=0-"))
        })
        .map(|r| r.path.clone())
        .collect();
    headers.sort();
    let unique: BTreeSet<&String> = headers.iter().collect();
    assert_eq!(headers.len(), unique.len(), "{headers:?}");
    assert!(headers.contains(&"/mosaic/stac.json".to_string()));
}

#[test]
fn files_that_cannot_be_used_fail_init_naming_the_file() {
    let fx = fixtures();
    let s3 = S3Server::start();
    s3.create_bucket("imagery");
    for (tile_url, needles) in [
        (
            "s3://imagery/missing.tif".to_string(),
            vec!["s3://imagery/missing.tif", "NoSuchKey"],
        ),
        (
            fx.url("strip_3857.tif"),
            vec![
                "strip_3857.tif",
                "gdal_translate -of COG",
                "rio cogeo create",
            ],
        ),
        (
            fx.url("bad/broken_index.geojson"),
            vec!["mosaic index", "features[2]: no geometry"],
        ),
        (
            fx.url("bad/user_crs.tif"),
            vec!["user_crs.tif", "user-defined", "gdalwarp -t_srs"],
        ),
    ] {
        let (error_type, message) = function(&tile_url, &s3.env())
            .wait_init_error(Duration::from_secs(30))
            .expect("an init error is reported");
        assert_eq!(error_type, "ImageryError", "{message}");
        for needle in needles {
            assert!(message.contains(needle), "{needle:?} not in {message}");
        }
    }
}
