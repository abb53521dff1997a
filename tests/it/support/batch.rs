//! `bootstrap predict` as a user runs it: the real binary as a child process, its stdout and
//! stderr in files, its peak memory from the kernel (`wait4`'s `ru_maxrss`, the child's own
//! figure, whatever else this test binary does), on a world of coloured tiles whose every
//! building's label is known in advance.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};

use serde_json::{Value, json};

use super::function::{model, ort_library, xyz};
use super::tiles::{TileResponse, TileServer, encode_png, parse_xyz, point_in_tile};

/// Buildings sit on zoom-12 tiles, rows from this one down.
pub const ZOOM: u8 = 12;
pub const FIRST_ROW: u32 = 1300;
/// Tile columns used per row.
const COLUMNS: u32 = 4000;
/// The labels of `rgb_tiny.onnx`, which names a chip by its strongest channel.
pub const LABELS: [&str; 3] = ["red", "green", "blue"];

/// One building of a generated input: where it is and the label its tile gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Building {
    pub id: String,
    pub lat: f64,
    pub lon: f64,
    pub label: &'static str,
}

/// The colour of tile column `x`: red, green, blue, red, …
pub fn label_of_column(x: u64) -> &'static str {
    LABELS[(x % 3) as usize]
}

/// `n` buildings, `per_tile` to a tile (each at its own spot, so no two share a chip), tile
/// after tile along the rows; ids `b0`, `b1`, … unless `ids` says otherwise.
pub fn buildings(n: usize, per_tile: usize, ids: impl Fn(usize) -> String) -> Vec<Building> {
    (0..n)
        .map(|i| {
            let tile = (i / per_tile) as u32;
            let (x, y) = (tile % COLUMNS, FIRST_ROW + tile / COLUMNS);
            let spot = (i % per_tile) as f64;
            // A 32-px chip around (px, 128) stays inside the tile for px in 17..=239.
            let px = 20.0 + spot * (200.0 / per_tile.max(1) as f64);
            let (lat, lon) = point_in_tile(ZOOM, x, y, px, 128.0);
            Building {
                id: ids(i),
                lat,
                lon,
                label: label_of_column(u64::from(x)),
            }
        })
        .collect()
}

/// Lets a test hold tile answers back until it says so (to interrupt a run that cannot have
/// finished), per tile column from `from_column` on.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn open(&self) {
        let (open, changed) = &*self.0;
        *open.lock().unwrap() = true;
        changed.notify_all();
    }

    fn wait(&self) {
        let (open, changed) = &*self.0;
        let mut is_open = open.lock().unwrap();
        while !*is_open {
            is_open = changed.wait(is_open).unwrap();
        }
    }
}

/// A tile server painting each column red, green or blue; tiles from column `gate.1` on wait
/// for the gate.
pub fn coloured_tiles(gate: Option<(Gate, u64)>) -> TileServer {
    let pngs: Vec<Vec<u8>> = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
        .iter()
        .map(|rgb| encode_png(&image::RgbImage::from_pixel(256, 256, image::Rgb(*rgb))))
        .collect();
    TileServer::start(Arc::new(move |req| match parse_xyz(&req.path) {
        Some((_, x, _)) => {
            if let Some((gate, from)) = &gate
                && x >= *from
            {
                gate.wait();
            }
            TileResponse::png(pngs[(x % 3) as usize].clone())
        }
        None => TileResponse::status(404),
    }))
}

/// The environment of a run on `tiles` with `rgb_tiny.onnx`, plus `extra`.
pub fn env(tiles: &TileServer, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = [
        ("MODEL_URI", model("rgb_tiny.onnx")),
        ("TILE_URL", xyz(&tiles.base_url())),
        ("TILE_ZOOM", ZOOM.to_string()),
        ("ORT_DYLIB_PATH", ort_library()),
        ("PATH", std::env::var("PATH").unwrap_or_default()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    vars
}

/// How a run ended.
#[derive(Debug)]
pub struct Finished {
    /// The exit code, or 128 + the signal that ended it.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Peak resident memory, from the kernel.
    pub peak_rss_kb: u64,
}

/// A `bootstrap predict` child process.
pub struct Running {
    pid: libc::pid_t,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Running {
    /// Starts `bootstrap predict ARGS` in `dir` with `env` only.
    // The child is reaped by `wait4` in `Running::wait`, which also reads its peak memory.
    #[allow(clippy::zombie_processes)]
    pub fn start(dir: &Path, args: &[&str], env: &[(String, String)]) -> Running {
        let (stdout, stderr) = (dir.join("stdout.txt"), dir.join("stderr.txt"));
        let child = Command::new(env!("CARGO_BIN_EXE_bootstrap"))
            .arg("predict")
            .args(args)
            .current_dir(dir)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("start bootstrap");
        Running {
            pid: child.id() as libc::pid_t,
            stdout,
            stderr,
        }
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid, which is not reaped before `wait`.
        assert_eq!(unsafe { libc::kill(self.pid, signal) }, 0, "kill {signal}");
    }

    /// Waits for the process and reads what it wrote.
    pub fn wait(self) -> Finished {
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child; `status` and `usage` outlive the call.
        let waited = unsafe { libc::wait4(self.pid, &mut status, 0, &mut usage) };
        assert_eq!(waited, self.pid, "wait4");
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        Finished {
            code,
            stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
            peak_rss_kb: usage.ru_maxrss as u64,
        }
    }
}

/// Runs `bootstrap predict ARGS` in `dir` to the end.
pub fn predict(dir: &Path, args: &[&str], env: &[(String, String)]) -> Finished {
    Running::start(dir, args, env).wait()
}

/// The buildings as a CSV input (`id,lat,lon,note`).
pub fn write_csv(path: &Path, buildings: &[Building]) {
    let mut text = String::from("id,lat,lon,note\n");
    for b in buildings {
        text.push_str(&format!("{},{},{},\"n, {}\"\n", b.id, b.lat, b.lon, b.id));
    }
    std::fs::write(path, text).unwrap();
}

/// The buildings as JSON Lines of building objects.
pub fn write_jsonl(path: &Path, buildings: &[Building]) {
    let text: String = buildings
        .iter()
        .map(|b| {
            format!(
                "{}\n",
                json!({"id": b.id, "lat": b.lat, "lon": b.lon, "note": b.id})
            )
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

/// The buildings as a GeoJSON FeatureCollection of points.
pub fn write_geojson(path: &Path, buildings: &[Building]) {
    let features: Vec<Value> = buildings
        .iter()
        .map(|b| {
            json!({"type": "Feature", "id": b.id,
                   "geometry": {"type": "Point", "coordinates": [b.lon, b.lat]},
                   "properties": {"note": b.id}})
        })
        .collect();
    let collection = json!({"type": "FeatureCollection", "features": features});
    std::fs::write(path, collection.to_string()).unwrap();
}

/// `(id, label or error code)` of every building of an output, in order, read as a user
/// would read it: CSV with a CSV reader, GeoJSON and JSON Lines as JSON.
pub fn read_output(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => {
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            let header = reader.headers().unwrap().clone();
            let col = |name: &str| header.iter().position(|h| h == name).unwrap();
            let (id, label, code) = (col("id"), col("label"), col("error_code"));
            reader
                .records()
                .map(|r| {
                    let r = r.unwrap();
                    let outcome = if r[code].is_empty() {
                        &r[label]
                    } else {
                        &r[code]
                    };
                    (r[id].to_string(), outcome.to_string())
                })
                .collect()
        }
        Some("geojson") => {
            let collection: Value = serde_json::from_str(&text).expect("the output is JSON");
            collection["features"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    let p = &f["properties"];
                    let outcome = p["prediction"]["label"]
                        .as_str()
                        .or(p["error"]["code"].as_str())
                        .unwrap();
                    (id_text(&f["id"]), outcome.to_string())
                })
                .collect()
        }
        _ => json_lines_outcomes(&text),
    }
}

/// `(id, label or error code)` of JSON Lines predictions.
pub fn json_lines_outcomes(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|line| {
            let p: Value = serde_json::from_str(line).expect("every line is JSON");
            let outcome = p["label"].as_str().or(p["error"]["code"].as_str()).unwrap();
            (id_text(&p["id"]), outcome.to_string())
        })
        .collect()
}

fn id_text(id: &Value) -> String {
    id.as_str().map_or_else(|| id.to_string(), String::from)
}

/// What each building should come out as.
pub fn expected(buildings: &[Building]) -> Vec<(String, String)> {
    buildings
        .iter()
        .map(|b| (b.id.clone(), b.label.to_string()))
        .collect()
}
