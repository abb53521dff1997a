//! The function as Lambda runs it: the release `bootstrap` under the Runtime API emulator
//! (`support::runtime`), its model in a loopback S3 server, its imagery from the benchmark's
//! tile server. A fresh process per configuration, so the first invocation is a real cold start
//! and `VmHWM` is that configuration's own peak RSS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::runtime::LambdaProcess;
use crate::support::s3::S3Server;
use crate::support::tiles::TileServer;
use crate::world::{Case, Latency, ZOOM, tile_server};
use tilepredict::outcome::Timing;

pub const BUCKET: &str = "bench";
pub const MODEL_KEY: &str = "models/resnet18_128.onnx";
/// What one S3 GET delivers (AWS's S3 performance guidelines: 85–90 MB/s per request); the
/// loopback S3 server paces every body to it.
pub const S3_STREAM_BYTES_PER_S: f64 = 90e6;
/// Lambda's timeout for every benchmark invocation (the emulator's deadline header).
const TIMEOUT_MS: u64 = 120_000;

/// One invocation as measured.
#[derive(Debug, Clone)]
pub struct Run {
    pub timing: Timing,
    /// Mean added latency of the tile requests served during the invocation.
    pub mean_latency: Duration,
    /// CPU time the function process used during the invocation (all threads), in ms.
    pub cpu_ms: f64,
}

/// The loopback services every function process talks to.
pub struct Services {
    pub s3: S3Server,
    pub tiles: TileServer,
    pub latency: Arc<Latency>,
    pub ort_library: PathBuf,
}

impl Services {
    pub fn start(model: &Path, ort_library: PathBuf, variants: Arc<Vec<Vec<u8>>>) -> Self {
        let s3 = S3Server::start_with_stream_rate(Some(S3_STREAM_BYTES_PER_S));
        let bytes = std::fs::read(model)
            .unwrap_or_else(|e| panic!("cannot read the bench model {}: {e}", model.display()));
        s3.put(BUCKET, MODEL_KEY, &bytes);
        let latency = Latency::new(Duration::from_millis(80), Duration::from_millis(20));
        let tiles = tile_server(variants, Arc::clone(&latency));
        Self {
            s3,
            tiles,
            latency,
            ort_library,
        }
    }
}

/// A running function process.
pub struct Function<'a> {
    services: &'a Services,
    process: LambdaProcess,
    /// Process start → ready for the first event (exec, ONNX Runtime, model from S3, session),
    /// as seen from outside: wall time to the first answer less that invocation's duration.
    pub ready: Duration,
    pub cold: Run,
    /// The init's two parts as the function logged them: model bytes from S3, session build.
    pub init_split: InitSplit,
}

/// `model_fetch_ms` and `session_ms` from the function's "model ready" log line.
#[derive(Debug, Clone, Copy, Default)]
pub struct InitSplit {
    pub fetch_ms: f64,
    pub session_ms: f64,
}

impl InitSplit {
    fn from_logs(logs: &str) -> Self {
        let line = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["fields"]["message"] == "model ready" || l["message"] == "model ready")
            .unwrap_or_else(|| panic!("no \"model ready\" line in the logs:\n{logs}"));
        let field = |name: &str| {
            line["fields"][name]
                .as_f64()
                .or_else(|| line[name].as_f64())
                .unwrap_or_else(|| panic!("no {name} in {line}"))
        };
        Self {
            fetch_ms: field("model_fetch_ms"),
            session_ms: field("session_ms"),
        }
    }
}

impl<'a> Function<'a> {
    /// Starts `bootstrap` with the production-like environment plus `settings`, and sends it
    /// `first` as its cold invocation.
    pub fn start(services: &'a Services, settings: &[(&str, String)], first: &Case) -> Self {
        let mut env = services.s3.env();
        for (k, v) in [
            ("MODEL_URI", format!("s3://{BUCKET}/{MODEL_KEY}")),
            (
                "TILE_URL",
                format!("{}/{{z}}/{{x}}/{{y}}.jpg", services.tiles.base_url()),
            ),
            ("TILE_ZOOM", ZOOM.to_string()),
            (
                "ORT_DYLIB_PATH",
                services.ort_library.to_string_lossy().into_owned(),
            ),
            // 2 vCPUs on Lambda (and the INFERENCE_THREADS default follows it).
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "3538".to_string()),
            // `info` for the app's "model ready" line (init split into fetch and session).
            ("RUST_LOG", "warn,tilepredict::app=info".to_string()),
        ] {
            env.push((k.to_string(), v));
        }
        env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let started = Instant::now();
        let process = LambdaProcess::spawn(&env);
        let (cold, duration) = invoke(services, &process, first);
        let ready = started.elapsed().saturating_sub(duration);
        assert!(
            cold.timing.cold_start,
            "the first answer is not a cold start"
        );
        let init_split = InitSplit::from_logs(&process.logs());
        Self {
            services,
            process,
            ready,
            cold,
            init_split,
        }
    }

    pub fn invoke(&self, case: &Case) -> Run {
        invoke(self.services, &self.process, case).0
    }

    /// The process under the emulator, for callers that drive it themselves (several
    /// invocations at once).
    pub fn process(&self) -> &LambdaProcess {
        &self.process
    }

    /// The function process's id (for `perf record -p`).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Peak resident memory of the function process so far (VmHWM), in MB.
    pub fn peak_rss_mb(&self) -> f64 {
        self.process.peak_rss_kb().unwrap_or(0) as f64 / 1024.0
    }
}

/// CPU time the function process has used so far (user + system, all threads), from
/// `/proc/PID/stat` at the kernel's 100 Hz tick; `None` once it has exited.
pub fn cpu_time(process: &LambdaProcess) -> Option<Duration> {
    let stat = process.proc_file("stat")?;
    // Fields after the command name (which may hold spaces) start at state (field 3); utime
    // and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn invoke(services: &Services, process: &LambdaProcess, case: &Case) -> (Run, Duration) {
    services.latency.reset();
    let cpu_before = cpu_time(process).unwrap_or_default();
    let (outcome, duration) = process.invoke_timed(&case.event, TIMEOUT_MS);
    let cpu = cpu_time(process)
        .unwrap_or_default()
        .saturating_sub(cpu_before);
    let answer = outcome.unwrap_response();
    let failed = answer["failed"].as_u64().unwrap_or(u64::MAX);
    if failed != 0 {
        let first_error = answer["predictions"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p.get("error").is_some()))
            .map(|p| p["error"].to_string())
            .unwrap_or_default();
        panic!(
            "{}: {failed} buildings failed (first: {first_error}); logs:\n{}",
            case.name,
            process.logs()
        );
    }
    let timing: Timing = serde_json::from_value(answer["timing"].clone())
        .unwrap_or_else(|e| panic!("unexpected timing block {}: {e}", answer["timing"]));
    let (_, mean_latency) = services.latency.served();
    (
        Run {
            timing,
            mean_latency,
            cpu_ms: cpu.as_secs_f64() * 1000.0,
        },
        duration,
    )
}
