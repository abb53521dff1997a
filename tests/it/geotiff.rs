//! GeoTIFF imagery in-process: the pipeline's chip assembly (`ChipMaker`, the path Lambda runs)
//! over COGs of the tests' synthetic world, read from files and from a loopback HTTP server with
//! Range support. Chips agree with the XYZ world and with rio-tiler's reading of the same
//! windows; every byte range is counted; every bad file fails with a message naming it. S3 and
//! the Lambda side are covered by `geotiff_lambda.rs`.
//!
//! The fixtures are made by `make geotiff-fixtures` (scripts/make_geotiff_fixtures.py, with
//! rasterio, rio-cogeo and rio-tiler): `make test` makes them first.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use image::{Rgb, RgbImage};
use serde_json::Value;
use tilepredict::error::{BuildingError, ErrorCode};
use tilepredict::geo::LatLon;
use tilepredict::imagery::fetch::{FetchSettings, Fetcher};
use tilepredict::imagery::source::SourceSpec;
use tilepredict::imagery::{Imagery, Source, geotiff};
use tilepredict::pipeline::assembly::ChipMaker;
use tokio::sync::Semaphore;

use crate::support::tiles::{TileServer, files_handler, world_pixel};

/// The fixtures' folder and their description (fixtures.json).
pub struct Fixtures {
    pub dir: PathBuf,
    pub doc: Value,
}

pub fn fixtures() -> Fixtures {
    let dir = std::env::var_os("GEOTIFF_FIXTURES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/geotiff-fixtures"),
        PathBuf::from,
    );
    let text = std::fs::read_to_string(dir.join("fixtures.json")).unwrap_or_else(|e| {
        panic!(
            "no GeoTIFF fixtures in {} ({e}): run `make geotiff-fixtures` (`make test` does)",
            dir.display()
        )
    });
    Fixtures {
        doc: serde_json::from_str(&text).unwrap(),
        dir,
    }
}

impl Fixtures {
    pub fn url(&self, file: &str) -> String {
        format!("file://{}", self.dir.join(file).display())
    }

    /// A sample chip: its position and the window (left, top) at `zoom`.
    pub fn sample(&self, name: &str) -> Sample {
        let s = &self.doc["samples"][name];
        Sample {
            at: LatLon::new(s["lat"].as_f64().unwrap(), s["lon"].as_f64().unwrap()).unwrap(),
            left: s["left"].as_i64().unwrap(),
            top: s["top"].as_i64().unwrap(),
            zoom: s["zoom"].as_u64().unwrap() as u8,
        }
    }

    /// rio-tiler's chip of `file` at `sample`, and its mask.
    fn reference(&self, file: &str, sample: &str) -> (RgbImage, Vec<u8>) {
        let stem = format!("ref/{}.{sample}", file.trim_end_matches(".tif"));
        let rgb = std::fs::read(self.dir.join(format!("{stem}.rgb"))).unwrap();
        let mask = std::fs::read(self.dir.join(format!("{stem}.mask"))).unwrap();
        (RgbImage::from_raw(CHIP, CHIP, rgb).unwrap(), mask)
    }

    /// `file`'s level `level` tiles: (offset, byte count) each, row by row.
    pub fn tiles(&self, file: &str, level: usize) -> Vec<Range<u64>> {
        let layout = &self.doc["files"][file]["layout"];
        let images: Vec<&Value> = layout
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["subfile_type"].as_u64().unwrap() & 4 == 0)
            .collect();
        let l = images[level];
        let offsets = l["offsets"].as_array().unwrap();
        let counts = l["byte_counts"].as_array().unwrap();
        offsets
            .iter()
            .zip(counts)
            .map(|(o, c)| {
                let (o, c) = (o.as_u64().unwrap(), c.as_u64().unwrap());
                o..o + c
            })
            .collect()
    }

    pub fn region(&self) -> (i64, i64, i64) {
        let n = |k: &str| self.doc[k].as_i64().unwrap();
        (n("left"), n("top"), n("side"))
    }
}

pub struct Sample {
    pub at: LatLon,
    pub left: i64,
    pub top: i64,
    pub zoom: u8,
}

pub const CHIP: u32 = 64;

/// `w`×`h` pixels of the world from global pixel (`left`, `top`).
pub fn world(left: i64, top: i64, w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |i, j| {
        Rgb(world_pixel(
            (left + i64::from(i)) as u64,
            (top + i64::from(j)) as u64,
        ))
    })
}

fn settings() -> FetchSettings {
    FetchSettings {
        timeout: Duration::from_secs(5),
        retries: 1,
        max_bytes: 8 << 20,
        headers: Vec::new(),
        max_connections: 8,
    }
}

/// The chip assembly over `tile_url` as `App::init` builds it (64-px chips, no warm cache
/// unless `cache_bytes`), or the init error.
async fn maker(
    tile_url: &str,
    zoom: u8,
    bands: Option<[u16; 3]>,
    cache_bytes: usize,
) -> Result<ChipMaker, String> {
    let fetcher = Arc::new(Fetcher::new(settings()).unwrap());
    let (location, mosaic) = match SourceSpec::parse(tile_url).map_err(|e| e.to_string())? {
        SourceSpec::GeoTiff(l) => (l, false),
        SourceSpec::Mosaic(l) => (l, true),
        SourceSpec::Template(_) => panic!("{tile_url} is a template"),
    };
    let source = geotiff::open(
        location,
        mosaic,
        Imagery::range_reader(&fetcher),
        bands,
        8 << 20,
        Duration::from_secs(10),
    )
    .await?;
    let imagery = Imagery::with_source(Source::GeoTiff(source), fetcher, zoom, CHIP, cache_bytes);
    Ok(ChipMaker {
        imagery: Arc::new(imagery),
        download_slots: Arc::new(Semaphore::new(8)),
        decode_slots: Arc::new(Semaphore::new(2)),
    })
}

fn far() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(60)
}

async fn chips(maker: &ChipMaker, points: &[LatLon]) -> Vec<Result<RgbImage, BuildingError>> {
    maker.cut(points, (CHIP, CHIP), far()).await
}

async fn chip(maker: &ChipMaker, p: LatLon) -> Result<RgbImage, BuildingError> {
    chips(maker, &[p]).await.remove(0)
}

/// Mean and largest absolute channel difference over the pixels `keep` selects.
fn difference(a: &RgbImage, b: &RgbImage, keep: impl Fn(usize) -> bool) -> (f64, u8, usize) {
    let (mut sum, mut max, mut n) = (0.0, 0u8, 0usize);
    for (i, (x, y)) in a.pixels().zip(b.pixels()).enumerate() {
        if !keep(i) {
            continue;
        }
        for k in 0..3 {
            let d = x.0[k].abs_diff(y.0[k]);
            sum += f64::from(d);
            max = max.max(d);
        }
        n += 1;
    }
    (sum / (3 * n.max(1)) as f64, max, n)
}

const ON_DATA: [&str; 4] = ["centre", "tile_corner", "east", "south"];

#[tokio::test]
async fn lossless_web_mercator_cogs_cut_the_xyz_chip_pixel_for_pixel() {
    let fx = fixtures();
    for codec in ["deflate", "lzw", "zstd", "webp"] {
        let file = format!("world_3857_{codec}.tif");
        let maker = maker(&fx.url(&file), fx.sample("centre").zoom, None, 0)
            .await
            .unwrap();
        for name in ON_DATA {
            let s = fx.sample(name);
            let got = chip(&maker, s.at).await.unwrap();
            let want = world(s.left, s.top, CHIP, CHIP);
            assert!(
                got == want,
                "{file} at {name}: {:?}",
                difference(&got, &want, |_| true)
            );
        }
    }
}

#[tokio::test]
async fn jpeg_and_reprojected_cogs_agree_with_the_world_within_resampling_error() {
    let fx = fixtures();
    for (file, samples) in [
        ("world_3857_jpeg.tif", &ON_DATA[..]),
        ("world_2180.tif", &ON_DATA[..]),
        ("world_32634.tif", &ON_DATA[..]),
        ("world_4326.tif", &ON_DATA[..]),
    ] {
        let maker = maker(&fx.url(file), 17, None, 0).await.unwrap();
        for name in samples {
            let s = fx.sample(name);
            let got = chip(&maker, s.at).await.unwrap();
            let (mean, max, _) = difference(&got, &world(s.left, s.top, CHIP, CHIP), |_| true);
            eprintln!("{file} {name}: world mean {mean:.2} max {max}");
            // The world is smooth inside its 256-px cells and jumps at their seams (255 → 0):
            // a resampled seam pixel is far off, everything else within a few levels.
            assert!(mean < 6.0, "{file} at {name}: mean {mean:.2}, max {max}");
            let shifted = |dx: i64, dy: i64| {
                difference(&got, &world(s.left + dx, s.top + dy, CHIP, CHIP), |_| true).0
            };
            for (dx, dy) in [(-1, 0), (1, 0), (0, -1), (0, 1)] {
                assert!(
                    shifted(dx, dy) > mean,
                    "{file} at {name}: a window off by ({dx}, {dy}) fits better"
                );
            }
        }
    }
}

#[tokio::test]
async fn chips_agree_with_rio_tiler_reading_the_same_windows() {
    let fx = fixtures();
    let files = [
        "world_3857_deflate.tif",
        "world_3857_jpeg.tif",
        "world_2180.tif",
        "world_32634.tif",
        "world_4326.tif",
    ];
    for file in files {
        for name in ["centre", "tile_corner", "east", "south", "zoom16"] {
            let s = fx.sample(name);
            let maker = maker(&fx.url(file), s.zoom, None, 0).await.unwrap();
            let got = chip(&maker, s.at).await.unwrap();
            let (reference, mask) = fx.reference(file, name);
            let (mean, max, n) = difference(&got, &reference, |i| mask[i] > 0);
            eprintln!("{file} {name}: rio-tiler mean {mean:.3} max {max} over {n} px");
            assert!(
                n > (CHIP * CHIP) as usize / 2,
                "{file} {name}: {n} pixels compared"
            );
            // Lossless files: the same bilinear sampling, off by a level now and then (GDAL's
            // overview choice at zoom 16). JPEG files: the decoders' chroma upsampling differs
            // too (libjpeg's "fancy" upsampling vs jpeg-decoder's). Measured: ≤ 1.1 and ≤ 3.1.
            let limit = if file.contains("jpeg") || file.contains("32634") {
                4.0
            } else {
                1.5
            };
            assert!(mean < limit, "{file} at {name}: mean {mean:.3}, max {max}");
        }
    }
}

#[tokio::test]
async fn bands_pick_red_green_and_blue_from_a_four_band_file() {
    let fx = fixtures();
    let s = fx.sample("centre");
    let want = world(s.left, s.top, CHIP, CHIP);
    let url = fx.url("world_nbgr_3857.tif");
    let picked = maker(&url, 17, Some([4, 3, 2]), 0).await.unwrap();
    let got = chip(&picked, s.at).await.unwrap();
    assert!(got == want, "{:?}", difference(&got, &want, |_| true));
    let first_three = chip(&maker(&url, 17, None, 0).await.unwrap(), s.at)
        .await
        .unwrap();
    assert_eq!(
        first_three.get_pixel(0, 0).0[0],
        200,
        "band 1 is the NIR one"
    );
    let err = maker(&url, 17, Some([1, 2, 5]), 0).await.err().unwrap();
    assert!(
        err.contains("BANDS names band 5, but the file has 4"),
        "{err}"
    );
}

fn expect_code(chip: &Result<RgbImage, BuildingError>, code: ErrorCode, needle: &str) {
    let err = chip.as_ref().expect_err("the chip should fail");
    assert_eq!(err.code, code, "{err:?}");
    assert!(
        err.message.contains(needle),
        "{needle:?} not in {:?}",
        err.message
    );
}

#[tokio::test]
async fn buildings_outside_the_data_are_no_coverage() {
    let fx = fixtures();
    let deflate = maker(&fx.url("world_3857_deflate.tif"), 17, None, 0)
        .await
        .unwrap();
    let got = chips(
        &deflate,
        &[
            fx.sample("outside").at,
            fx.sample("mostly_outside").at,
            fx.sample("masked").at,
            LatLon::new(-33.86, 151.2).unwrap(),
        ],
    )
    .await;
    expect_code(
        &got[0],
        ErrorCode::NoCoverage,
        "does not cover this building",
    );
    expect_code(
        &got[1],
        ErrorCode::NoCoverage,
        "has data for 25 % of this building's chip",
    );
    assert!(got[2].is_ok(), "the deflate file has no mask");
    expect_code(&got[3], ErrorCode::NoCoverage, "does not cover");
    let masked = maker(&fx.url("world_3857_jpeg.tif"), 17, None, 0)
        .await
        .unwrap();
    expect_code(
        &chip(&masked, fx.sample("masked").at).await,
        ErrorCode::NoCoverage,
        "has data for 0 %",
    );
}

/// Which tiles of `tiles` a set of byte ranges read, and whether any byte was read twice.
fn tiles_read(reads: &[Range<u64>], tiles: &[Range<u64>]) -> (BTreeSet<usize>, bool) {
    let read: BTreeSet<usize> = tiles
        .iter()
        .enumerate()
        .filter(|(_, t)| reads.iter().any(|r| r.start <= t.start && t.end <= r.end))
        .map(|(i, _)| i)
        .collect();
    let mut sorted: Vec<&Range<u64>> = reads.iter().collect();
    sorted.sort_by_key(|r| r.start);
    let overlap = sorted.windows(2).any(|w| w[1].start < w[0].end);
    (read, overlap)
}

/// The ranges a loopback file server was asked for, by path.
fn ranges(server: &TileServer) -> Vec<(String, Range<u64>)> {
    server
        .requests()
        .into_iter()
        .map(|r| {
            let range = r
                .headers
                .iter()
                .find(|(n, _)| n == "range")
                .map(|(_, v)| v.clone())
                .expect("every GeoTIFF read is ranged");
            let (a, b) = range.trim_start_matches("bytes=").split_once('-').unwrap();
            (r.path, a.parse().unwrap()..b.parse::<u64>().unwrap() + 1)
        })
        .collect()
}

/// 110 buildings in a cluster around the region's centre, like a neighbourhood.
pub fn cluster(fx: &Fixtures) -> Vec<LatLon> {
    let (left, top, side) = fx.region();
    let world = 256.0 * 2f64.powi(17);
    (0..110)
        .map(|i| {
            let (gx, gy) = (
                (left + side / 2) as f64 + f64::from(i % 11) * 37.3 - 190.0,
                (top + side / 2) as f64 + f64::from(i / 11) * 41.7 - 200.0,
            );
            let (lat, lon) = crate::support::tiles::point_at(gx, gy, world);
            LatLon::new(lat, lon).unwrap()
        })
        .collect()
}

/// The level-0 tiles (row-major indexes) the chips of `points` show pixels of.
fn shown_tiles(fx: &Fixtures, points: &[LatLon]) -> BTreeSet<usize> {
    let (left, top, side) = fx.region();
    let across = side / 256;
    let world = 256.0 * 2f64.powi(17);
    let mut out = BTreeSet::new();
    for p in points {
        let (x, y) = crate::support::tiles::pixel_of(p.lat, p.lon, world);
        let (cl, ct) = (
            (x - 32.0).round() as i64 - left,
            (y - 32.0).round() as i64 - top,
        );
        for row in ct.div_euclid(256)..=(ct + 63).div_euclid(256) {
            for col in cl.div_euclid(256)..=(cl + 63).div_euclid(256) {
                out.insert((row * across + col) as usize);
            }
        }
    }
    out
}

#[tokio::test]
async fn a_request_reads_the_header_once_and_each_needed_tile_once_in_merged_ranges() {
    let fx = fixtures();
    let server = TileServer::start(files_handler(fx.dir.clone()));
    let file = "world_3857_deflate.tif";
    let url = format!("{}/{file}", server.base_url());
    let maker = maker(&url, 17, None, 64 << 20).await.unwrap();
    let opened = ranges(&server);
    assert_eq!(opened.len(), 1, "the header in one read: {opened:?}");
    assert_eq!(opened[0].1, 0..65536);

    let points = cluster(&fx);
    let got = chips(&maker, &points).await;
    assert!(got.iter().all(Result::is_ok));
    let reads: Vec<Range<u64>> = ranges(&server)[1..]
        .iter()
        .map(|(_, r)| r.clone())
        .collect();
    let tiles = fx.tiles(file, 0);
    let (read, overlap) = tiles_read(&reads, &tiles);
    assert!(!overlap, "a byte was read twice: {reads:?}");
    let shown = shown_tiles(&fx, &points);
    assert!(shown.is_subset(&read), "shown {shown:?}, read {read:?}");
    assert_eq!(read, shown, "no tile read that no chip shows");
    assert!(
        reads.len() < read.len(),
        "adjacent tiles merged: {} requests for {} tiles",
        reads.len(),
        read.len()
    );
    let bytes: u64 = reads.iter().map(|r| r.end - r.start).sum();
    let compressed: u64 = read.iter().map(|&i| tiles[i].end - tiles[i].start).sum();
    assert!(
        bytes <= 2 * compressed,
        "{bytes} bytes read for {compressed}"
    );

    // Again, warm: every tile from the cache, nothing read.
    let before = server.total();
    assert!(chips(&maker, &points).await.iter().all(Result::is_ok));
    assert_eq!(server.total(), before, "a warm request reads nothing");
}

#[tokio::test]
async fn overviews_serve_coarser_chips() {
    let fx = fixtures();
    let server = TileServer::start(files_handler(fx.dir.clone()));
    let file = "world_3857_deflate.tif";
    let maker = maker(&format!("{}/{file}", server.base_url()), 16, None, 0)
        .await
        .unwrap();
    assert!(chip(&maker, fx.sample("zoom16").at).await.is_ok());
    let reads: Vec<Range<u64>> = ranges(&server)[1..]
        .iter()
        .map(|(_, r)| r.clone())
        .collect();
    let (level1, _) = tiles_read(&reads, &fx.tiles(file, 1));
    let (level0, _) = tiles_read(&reads, &fx.tiles(file, 0));
    assert!(
        !level1.is_empty() && level0.is_empty(),
        "{level1:?} {level0:?}"
    );
}

#[tokio::test]
async fn every_bad_file_fails_naming_itself_and_what_is_wrong() {
    let fx = fixtures();
    for (file, needle) in [
        ("bad/not_a_tiff.tif", "not a TIFF"),
        ("bad/no_georef.tif", "has no georeferencing"),
        ("bad/user_crs.tif", "user-defined"),
        ("bad/packbits.tif", "compression PackBits is not supported"),
        ("bad/float32.tif", "only 8-bit imagery"),
        ("strip_3857.tif", "gdal_translate -of COG"),
        ("bad/huge.tif", "declares 4000000000x1536 px"),
        ("bad/missing.tif", "No such file"),
        ("bad/broken_index.geojson", "features[2]: no geometry"),
    ] {
        let err = maker(&fx.url(file), 17, None, 0).await.err().unwrap();
        assert!(err.contains(file), "{file}: {err}");
        assert!(err.contains(needle), "{file}: {needle:?} not in {err}");
    }
}

#[tokio::test]
async fn a_hostile_tile_fails_its_buildings_only() {
    let fx = fixtures();
    let centre = fx.sample("centre").at;
    let east = fx.sample("east").at;
    for (file, needle) in [
        ("bad/offset_past_end.tif", "past the end of the file"),
        ("bad/bomb.tif", "decompression bomb"),
    ] {
        let maker = maker(&fx.url(file), 17, None, 0).await.unwrap();
        let got = chips(&maker, &[centre, east]).await;
        expect_code(&got[0], ErrorCode::ImageInvalid, needle);
        assert!(got[1].is_ok(), "{file}: the other tiles are fine");
    }
}

#[tokio::test]
async fn mosaics_read_each_building_from_the_file_covering_it() {
    let fx = fixtures();
    let points: Vec<LatLon> = ON_DATA.iter().map(|n| fx.sample(n).at).collect();
    for index in ["mosaic/index.geojson", "mosaic/stac.json"] {
        let maker = maker(&fx.url(index), 17, None, 0).await.unwrap();
        for (name, got) in ON_DATA.iter().zip(chips(&maker, &points).await) {
            let s = fx.sample(name);
            // "south" straddles q2 and q3: its chip is made from both files.
            let got = got.unwrap();
            let want = world(s.left, s.top, CHIP, CHIP);
            let diff = difference(&got, &want, |_| true);
            assert!(got == want, "{index} at {name}: {diff:?}");
        }
        let outside = chip(&maker, fx.sample("outside").at).await;
        expect_code(
            &outside,
            ErrorCode::NoCoverage,
            "no file in the mosaic index",
        );
    }
    // The patch overlaps q0: the GeoJSON index has no dates, so q0 (listed first) wins; the
    // STAC items have dates, so the newer patch does.
    let s = fx.sample("in_patch");
    let first = maker(&fx.url("mosaic/index.geojson"), 17, None, 0)
        .await
        .unwrap();
    assert!(chip(&first, s.at).await.unwrap() == world(s.left, s.top, CHIP, CHIP));
    let newest = maker(&fx.url("mosaic/stac.json"), 17, None, 0)
        .await
        .unwrap();
    let patch = chip(&newest, s.at).await.unwrap();
    assert!(
        patch.pixels().all(|p| p.0 == [250, 20, 10]),
        "{:?}",
        patch.get_pixel(0, 0)
    );
}

#[tokio::test]
async fn mosaic_headers_are_read_once_per_file_per_sandbox() {
    let fx = fixtures();
    let server = TileServer::start(files_handler(fx.dir.clone()));
    let url = format!("{}/mosaic/index.geojson", server.base_url());
    let maker = maker(&url, 17, None, 0).await.unwrap();
    let points: Vec<LatLon> = ON_DATA.iter().map(|n| fx.sample(n).at).collect();
    let count = |server: &TileServer| {
        let mut per: HashMap<String, usize> = HashMap::new();
        for (path, range) in ranges(server) {
            if range.start == 0 {
                *per.entry(path).or_default() += 1;
            }
        }
        per
    };
    assert!(chips(&maker, &points).await.iter().all(Result::is_ok));
    let first = count(&server);
    assert!(first.len() >= 2, "several files opened: {first:?}");
    assert!(first.values().all(|n| *n == 1), "{first:?}");
    assert!(chips(&maker, &points).await.iter().all(Result::is_ok));
    assert_eq!(count(&server), first, "no header read again");
}
