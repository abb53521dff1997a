//! Registry benchmark: load time, memory and lookup cost for a generated register of
//! 1,000,000 points (CSV and GeoJSON) and 200,000 footprints (GeoJSON), the sizes a national
//! register reaches. Run it with `make bench-registry` (a release build).
//!
//!     cargo run --release --example registry_bench [-- POINTS]
//!
//! Each register is written to `.bench/`, then loaded by a fresh child process (this program
//! again, with a phase argument), so its resident-memory figures are not blurred by the
//! generator's or an earlier phase's allocations. Reported per phase:
//! - `load_s`: parse + index of the file's bytes, as `REGISTRY_URI` does at init (the fetch is
//!   not included: S3 throughput is not ours to measure here);
//! - `rss_mb`: resident memory the loaded registry keeps (process RSS after loading and
//!   dropping the file's bytes, less RSS before reading it); `records_mb` of it is the
//!   records' text and offsets, the rest is the spatial index;
//! - `peak_mb`: peak RSS during the load, file bytes included, above the same baseline;
//! - lookups: 1,000 buildings, half within 0–20 m of a register entry (or inside a footprint),
//!   half anywhere, looked up 300 times; the median and 99th-percentile time per 1,000
//!   buildings (the rare slow round is the machine's scheduler, not the lookup).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tilepredict::blob::BlobUri;
use tilepredict::geo::LatLon;
use tilepredict::registry::{Registry, RegistrySettings};

/// Poland's bounding box: the density a national register has.
const SOUTH: f64 = 49.0;
const NORTH: f64 = 54.8;
const WEST: f64 = 14.1;
const EAST: f64 = 24.1;
const BUILDINGS: usize = 1000;
const ROUNDS: usize = 300;
/// Footprint side in degrees of latitude (≈ 11 m).
const SIDE: f64 = 0.0001;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [phase, kind, path, count] if phase == "phase" => {
            measure(kind, Path::new(path), count.parse().expect("a count"))
        }
        [] => run(1_000_000),
        [points] => run(points.parse().expect("usage: registry_bench [POINTS]")),
        _ => panic!("usage: registry_bench [POINTS]"),
    }
}

/// Writes the registers, then measures each in its own process.
fn run(points: usize) {
    let dir = PathBuf::from(".bench");
    std::fs::create_dir_all(&dir).expect("create .bench/");
    let footprints = points / 5;
    let files = [
        ("csv-points", points, write_csv(&dir, points)),
        ("geojson-points", points, write_geojson_points(&dir, points)),
        (
            "geojson-footprints",
            footprints,
            write_geojson_footprints(&dir, footprints),
        ),
    ];
    println!(
        "registry_bench: {} cores available; lookups of {BUILDINGS} buildings × {ROUNDS} rounds",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "| register | entries | file MB | load s | rss MB | records MB | peak MB | lookup ms / 1,000 (median) | p99 | listed |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (kind, count, path) in files {
        let out = Command::new(std::env::current_exe().expect("own path"))
            .args(["phase", kind, &path.to_string_lossy(), &count.to_string()])
            .output()
            .expect("run a phase");
        assert!(
            out.status.success(),
            "phase {kind} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

/// One phase, in a fresh process: load, measure memory, time the lookups, print a table row.
fn measure(kind: &str, path: &Path, count: usize) {
    let baseline = proc_status_kb("VmRSS:");
    reset_peak();
    let bytes = std::fs::read(path).expect("read the register");
    let file_mb = bytes.len() as f64 / 1e6;
    let settings = RegistrySettings {
        uri: BlobUri::File(path.to_path_buf()),
        radius_m: 15.0,
        positive_label: "asbestos".into(),
        skip_bad_rows: false,
    };
    let started = Instant::now();
    let registry = Registry::parse(&bytes, settings).expect("the generated register parses");
    let load = started.elapsed();
    drop(bytes);
    let kept_mb = (proc_status_kb("VmRSS:") - baseline) as f64 / 1024.0;
    let peak_mb = (proc_status_kb("VmHWM:") - baseline) as f64 / 1024.0;
    assert_eq!(registry.info.records, count);

    let footprints = kind.ends_with("footprints");
    let buildings = buildings(count, footprints);
    let mut rounds: Vec<Duration> = Vec::with_capacity(ROUNDS);
    let mut listed = 0;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        listed = buildings
            .iter()
            .filter(|b| registry.listing(**b).listed)
            .count();
        rounds.push(started.elapsed());
    }
    rounds.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {kind} | {count} | {file_mb:.1} | {:.2} | {kept_mb:.0} | {:.0} | {peak_mb:.0} | {:.3} | {:.3} | {listed} |",
        load.as_secs_f64(),
        registry.record_bytes() as f64 / (1024.0 * 1024.0),
        ms(rounds[ROUNDS / 2]),
        ms(rounds[ROUNDS * 99 / 100]),
    );
}

/// Entry `i`'s position (lat, lon): spread uniformly over the box, the same in every process.
fn entry(i: usize) -> (f64, f64) {
    let mut rng = fastrand::Rng::with_seed(i as u64 ^ 0x5eed_0000_0000);
    (
        SOUTH + rng.f64() * (NORTH - SOUTH),
        WEST + rng.f64() * (EAST - WEST),
    )
}

/// Half of them near (0–20 m) an entry, or inside a footprint; half anywhere in the box.
fn buildings(count: usize, footprints: bool) -> Vec<LatLon> {
    let mut rng = fastrand::Rng::with_seed(7);
    (0..BUILDINGS)
        .map(|n| {
            let (lat, lon) = if n % 2 == 0 {
                let (lat, lon) = entry(rng.usize(..count));
                if footprints {
                    (lat + SIDE / 2.0, lon + SIDE / 2.0)
                } else {
                    let (metres, bearing) = (rng.f64() * 20.0, rng.f64() * std::f64::consts::TAU);
                    (
                        lat + metres * bearing.cos() / 111_320.0,
                        lon + metres * bearing.sin() / (111_320.0 * lat.to_radians().cos()),
                    )
                }
            } else {
                entry(usize::MAX - n)
            };
            LatLon { lat, lon }
        })
        .collect()
}

fn write_csv(dir: &Path, count: usize) -> PathBuf {
    write(dir, "registry-points.csv", |out| {
        writeln!(out, "id,lat,lon,address,year")?;
        for i in 0..count {
            let (lat, lon) = entry(i);
            writeln!(
                out,
                "PL-{i:07},{lat:.6},{lon:.6},\"ul. Testowa {}, Miasto {}\",{}",
                i % 200 + 1,
                i % 997,
                1950 + i % 45
            )?;
        }
        Ok(())
    })
}

fn write_geojson_points(dir: &Path, count: usize) -> PathBuf {
    write(dir, "registry-points.geojson", |out| {
        write!(out, r#"{{"type":"FeatureCollection","features":["#)?;
        for i in 0..count {
            let (lat, lon) = entry(i);
            let comma = if i + 1 < count { "," } else { "" };
            writeln!(
                out,
                r#"{{"type":"Feature","id":"PL-{i:07}","geometry":{{"type":"Point","coordinates":[{lon:.6},{lat:.6}]}},"properties":{{"address":"ul. Testowa {}","year":{}}}}}{comma}"#,
                i % 200 + 1,
                1950 + i % 45
            )?;
        }
        write!(out, "]}}")
    })
}

fn write_geojson_footprints(dir: &Path, count: usize) -> PathBuf {
    write(dir, "registry-footprints.geojson", |out| {
        write!(out, r#"{{"type":"FeatureCollection","features":["#)?;
        for i in 0..count {
            let (s, w) = entry(i);
            let (n, e) = (s + SIDE, w + SIDE * 1.6);
            let comma = if i + 1 < count { "," } else { "" };
            writeln!(
                out,
                r#"{{"type":"Feature","geometry":{{"type":"Polygon","coordinates":[[[{w:.7},{s:.7}],[{e:.7},{s:.7}],[{e:.7},{n:.7}],[{w:.7},{n:.7}],[{w:.7},{s:.7}]]]}},"properties":{{"id":"PL-{i:07}","year":{}}}}}{comma}"#,
                1950 + i % 45
            )?;
        }
        write!(out, "]}}")
    })
}

fn write(
    dir: &Path,
    name: &str,
    body: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> PathBuf {
    let path = dir.join(name);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("create file"));
    body(&mut out)
        .and_then(|()| out.flush())
        .expect("write file");
    path
}

/// A field of `/proc/self/status`, in kB.
fn proc_status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a kB field")
}

/// Resets VmHWM to the current RSS, so the peak is the load's own.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
