//! `make bench`: the end-to-end benchmark, on loopback, no network.
//!
//! The real `bootstrap` (release) runs under the Runtime API emulator with its model in a
//! loopback S3 server and imagery from a tile server that answers after 80 ms ± 20 ms (seeded).
//! Printed, as Markdown tables: ONNX Runtime alone, init, 110 and 1,000 buildings cold and warm
//! (warm with the tile cache off — the main figure — and on), the floor of each case and our
//! ratio to it, the two-phase baseline, the tuning sweep, and the targets.
//!
//! `cargo bench --bench e2e` (what `make bench` runs, after making the model) passes `--bench`;
//! `-- --quick` skips the sweep; `-- --managed` runs only the many-small-requests section
//! (Lambda Managed Instances), which takes prices with `--lambda-price`, `--request-price`,
//! `--instance-price` and `--management-fee`. With `BENCH_MODEL_INT8` (the quantized bench
//! model, which `make bench` makes from `-- --calibration OUT.npy`'s chips) it also compares
//! int8 with float32. Without `--bench` (as `cargo test --all-targets` runs bench
//! targets) it only checks that the benchmark's world is what it claims to be.

// The integration tests' support code: the bench uses its servers and emulator, not the rest.
#[allow(dead_code)]
#[path = "../../tests/it/support/mod.rs"]
mod support;

mod floor;
mod function;
mod geotiff;
mod int8;
mod managed;
mod report;
mod two_phase;
mod world;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tilepredict::config::Config;

use function::{Function, Run, Services};
use report::{Stat, Table, load_average, machine, ms};
use world::Case;

/// Warm invocations per main case, and per sweep point.
const WARM_RUNS: usize = 5;
const SWEEP_RUNS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        self_check();
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let geotiff_only = args.iter().any(|a| a == "--geotiff");
    let prices = managed::Prices::from_args(&args).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = std::env::var_os("BENCH_MODEL")
        .map_or_else(|| root.join(".bench/resnet18_128.onnx"), PathBuf::from);
    let ort_library = std::env::var_os("ORT_DYLIB_PATH")
        .map_or_else(|| root.join(".ort/libonnxruntime.so"), PathBuf::from);
    if !model.is_file() {
        eprintln!(
            "no bench model at {}: run `make bench` (it makes the model first)",
            model.display()
        );
        std::process::exit(2);
    }
    if let Some(at) = args.iter().position(|a| a == "--calibration") {
        let Some(out) = args.get(at + 1) else {
            eprintln!("usage: cargo bench --bench e2e -- --calibration OUT.npy");
            std::process::exit(2);
        };
        int8::write_calibration(&floor::Ort::load(&ort_library, &model), out.as_ref());
        return;
    }
    let int8_model = std::env::var_os("BENCH_MODEL_INT8")
        .map(PathBuf::from)
        .filter(|p| p.is_file());
    let bench = Bench::new(model, ort_library, int8_model);
    if let Some(at) = args.iter().position(|a| a == "--profile") {
        let runs = args.get(at + 1).and_then(|n| n.parse().ok()).unwrap_or(10);
        let settings: Vec<(&str, String)> = args
            .iter()
            .filter_map(|a| a.split_once('='))
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        bench.profile(runs, &settings);
    } else if geotiff_only {
        bench.geotiff_only();
    } else if args.iter().any(|a| a == "--managed") {
        bench.managed_only(prices);
    } else {
        bench.run(quick, prices);
    }
}

/// The function's defaults, as `Config` computes them on a 2-vCPU Lambda (3,538 MB).
struct Defaults {
    batch_size: usize,
    concurrency: usize,
    threads: usize,
    sessions: usize,
}

fn defaults() -> Defaults {
    let c = Config::from_lookup(|name| match name {
        "MODEL_URI" => Some("s3://b/m.onnx".into()),
        "TILE_URL" => Some("http://t/{z}/{x}/{y}.jpg".into()),
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE" => Some("3538".into()),
        _ => None,
    })
    .expect("default config");
    Defaults {
        batch_size: c.batch_size,
        concurrency: c.max_concurrent_downloads,
        threads: c.inference_threads,
        sessions: c.inference.sessions,
    }
}

/// One configuration's runs in one fresh function process.
struct Measured {
    cold: Run,
    warm: Vec<Run>,
    peak_rss_mb: f64,
    ready: Duration,
    init_split: function::InitSplit,
}

impl Measured {
    fn take(f: &Function<'_>, cases: &[(&Case, usize)]) -> Self {
        let warm = cases
            .iter()
            .flat_map(|(case, n)| (0..*n).map(|_| f.invoke(case)))
            .collect();
        Self {
            cold: f.cold.clone(),
            warm,
            peak_rss_mb: f.peak_rss_mb(),
            ready: f.ready,
            init_split: f.init_split,
        }
    }

    fn warm_stat(&self, field: impl Fn(&Run) -> f64) -> Stat {
        Stat::of(self.warm.iter().map(field))
    }
}

struct Bench {
    model: PathBuf,
    ort_library: PathBuf,
    /// The quantized bench model (`BENCH_MODEL_INT8`), when made.
    int8_model: Option<PathBuf>,
    /// The GeoTIFF case's COG (`BENCH_COG`), if made.
    cog: Option<PathBuf>,
    defaults: Defaults,
    cases: [Case; 2],
}

/// What the main cases measured, per case: (cache off, cache on).
type Main = Vec<(Measured, Measured)>;

impl Bench {
    fn new(model: PathBuf, ort_library: PathBuf, int8_model: Option<PathBuf>) -> Self {
        let cog = std::env::var_os("BENCH_COG")
            .map(PathBuf::from)
            .filter(|p| p.is_file());
        Self {
            model,
            ort_library,
            int8_model,
            cog,
            defaults: defaults(),
            cases: [world::neighbourhood(), world::town()],
        }
    }

    /// The machine, the model and the defaults: the head of every report.
    fn header(&self) {
        let d = &self.defaults;
        println!("# tilepredict benchmark\n");
        println!("- machine: {}", machine());
        println!("- load average at start: {}", load_average());
        println!(
            "- model: {} ({:.1} MB): ResNet-18-shaped, 3×128×128, dynamic batch, output [N,2], random seeded weights",
            self.model.display(),
            std::fs::metadata(&self.model).map_or(0, |m| m.len()) as f64 / 1e6
        );
        println!(
            "- function defaults: BATCH_SIZE={} MAX_CONCURRENT_DOWNLOADS={} INFERENCE_THREADS={} INFERENCE_SESSIONS={}",
            d.batch_size, d.concurrency, d.threads, d.sessions
        );
    }

    /// `-- --managed`: only the Managed Instances section.
    fn managed_only(&self, prices: managed::Prices) {
        let started = Instant::now();
        self.header();
        println!();
        let services = Services::start(
            &self.model,
            self.ort_library.clone(),
            Arc::new(world::tile_variants()),
        );
        let ort = floor::Ort::load(&self.ort_library, &self.model);
        managed::run(&services, &ort, self.defaults.threads, prices);
        println!(
            "load average at end: {}; the benchmark took {:.0} s",
            load_average(),
            started.elapsed().as_secs_f64()
        );
    }

    fn run(&self, quick: bool, prices: managed::Prices) {
        let started = Instant::now();
        let d = &self.defaults;
        self.header();

        let variants = Arc::new(world::tile_variants());
        let mean_tile_bytes =
            variants.iter().map(|v| v.len() as f64).sum::<f64>() / variants.len() as f64;
        let decode = decode_ms(&variants);
        println!(
            "- tiles: {} aerial-looking 256×256 JPEGs (q85), {} KB; decode {:.2} ms each on one core",
            variants.len(),
            Stat::of(variants.iter().map(|v| v.len() as f64 / 1024.0)).show(1),
            decode
        );
        let services = Services::start(&self.model, self.ort_library.clone(), variants);
        println!(
            "- tile server: 127.0.0.1, {} ms ± {} ms per request (uniform, seeded)",
            services.latency.mean.as_millis(),
            services.latency.jitter.as_millis()
        );

        let ort = floor::Ort::load(&self.ort_library, &self.model);
        let started_session = Instant::now();
        let model = ort.model(d.threads);
        let session_ms = ms(started_session.elapsed());
        let chip = model.input.width as u32;
        let tile_url = format!("{}/{{z}}/{{x}}/{{y}}.jpg", services.tiles.base_url());
        let imagery = Arc::new(two_phase::imagery(&tile_url, chip, d.concurrency));
        let unique: Vec<usize> = self
            .cases
            .iter()
            .map(|c| floor::unique_images(&imagery, &c.points))
            .collect();
        for (case, u) in self.cases.iter().zip(&unique) {
            println!("- event {}: {u} unique tiles", case.name);
        }
        println!();

        self.ort_alone(&ort, session_ms);
        let main = self.main_cases(&services);
        let api = managed::run(&services, &ort, d.threads, prices);
        drop(ort);
        let quickest_tile = ms(services
            .latency
            .mean
            .saturating_sub(services.latency.jitter));
        let floors = self.floors(&model, &main, &unique, decode, quickest_tile);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(d.threads)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let int8 = self
            .int8_model
            .as_ref()
            .map(|path| self.int8(path, &services, &model, &imagery, &main));
        let baseline = self.two_phase(&rt, &model, imagery, &main);
        drop(model);
        match &self.cog {
            Some(cog) => self.geotiff_case(&services, cog, &main, chip, mean_tile_bytes),
            None => println!("(no bench COG: run `make bench` for the GeoTIFF case)\n"),
        }
        if !quick {
            self.sweep(&services, &main);
        }
        self.targets(&main, &floors, &baseline, &api, int8.as_ref());
        println!(
            "load average at end: {}; the benchmark took {:.0} s",
            load_average(),
            started.elapsed().as_secs_f64()
        );
    }

    /// `-- --geotiff`: the main cases (the tile server's figures) and the GeoTIFF case only.
    fn geotiff_only(&self) {
        let Some(cog) = &self.cog else {
            eprintln!("no bench COG: run `make bench BENCH_ARGS=--geotiff` (it makes it)");
            std::process::exit(2);
        };
        println!("# tilepredict benchmark: the GeoTIFF case\n");
        println!("- machine: {}", machine());
        println!("- load average at start: {}\n", load_average());
        let variants = Arc::new(world::tile_variants());
        let mean_tile_bytes =
            variants.iter().map(|v| v.len() as f64).sum::<f64>() / variants.len() as f64;
        let services = Services::start(&self.model, self.ort_library.clone(), variants);
        let main = self.main_cases(&services);
        let chip = floor::Ort::load(&self.ort_library, &self.model)
            .model(1)
            .input
            .width as u32;
        self.geotiff_case(&services, cog, &main, chip, mean_tile_bytes);
        println!("load average at end: {}", load_average());
    }

    /// The GeoTIFF case: the COG put on the loopback S3 server, then the main cases from it.
    fn geotiff_case(
        &self,
        services: &Services,
        cog: &std::path::Path,
        main: &Main,
        chip: u32,
        mean_tile_bytes: f64,
    ) {
        let bytes = std::fs::read(cog).expect("the bench COG");
        services.s3.put(function::BUCKET, geotiff::COG_KEY, &bytes);
        drop(bytes);
        let layout = geotiff::Layout::read(cog);
        geotiff::run(services, &self.cases, main, &layout, chip, mean_tile_bytes);
    }

    /// `-- --profile N [NAME=VALUE…]`: one function process with the defaults (tile cache off)
    /// changed by the settings given, then N warm invocations of the 1,000-building event after
    /// a pause that prints its pid, for a profiler to attach (`perf record -g -p PID`). Prints
    /// each invocation's timing and the peak RSS.
    fn profile(&self, runs: usize, settings: &[(&str, String)]) {
        let services = Services::start(
            &self.model,
            self.ort_library.clone(),
            Arc::new(world::tile_variants()),
        );
        let case = &self.cases[1];
        let mut all = vec![("TILE_CACHE_MB", "0".to_string())];
        all.extend(settings.iter().cloned());
        let f = Function::start(&services, &all, case);
        println!(
            "init {:.0} ms = fetch {:.0} ms + session {:.0} ms",
            f.cold.timing.model_load_ms, f.init_split.fetch_ms, f.init_split.session_ms
        );
        println!("function pid {}; starting in 3 s", f.pid());
        std::thread::sleep(Duration::from_secs(3));
        for _ in 0..runs {
            let r = f.invoke(case);
            println!(
                "total {:.0} ms, inference {:.0} ms, decode {:.0} ms, cpu {:.0} ms, batches {}",
                r.timing.total_ms,
                r.timing.inference_ms,
                r.timing.decode_ms,
                r.cpu_ms,
                r.timing.batches
            );
        }
        println!("peak RSS {:.0} MB", f.peak_rss_mb());
    }

    /// ONNX Runtime alone: images/s by threads and batch size, and the two-session layout.
    fn ort_alone(&self, ort: &floor::Ort, session_ms: f64) {
        println!("## ONNX Runtime alone (in memory, the function's session settings)\n");
        println!(
            "Session from bytes in memory: {session_ms:.0} ms. Images/s over 128 chips (best of 2):\n"
        );
        let batches = [1, 8, 16, 32, 64];
        let mut header = vec!["layout".to_string()];
        header.extend(batches.iter().map(|b| format!("batch {b}")));
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        let mut table = Table::new(&header);
        let chips = 128;
        let most = self.defaults.threads.max(2);
        for threads in 1..=most {
            let model = ort.model(threads);
            let mut row = vec![format!("1 session × {threads} thread(s)")];
            for b in batches {
                let t = floor::ort_time(&model, chips, b, 2);
                row.push(format!("{:.0}", chips as f64 / t.as_secs_f64()));
            }
            table.row(row);
        }
        let mut row = vec!["2 sessions × 1 thread".to_string()];
        for b in batches {
            row.push(format!(
                "{:.0}",
                floor::two_sessions_throughput(ort, chips, b)
            ));
        }
        table.row(row);
        table.print();
    }

    /// Each case in a fresh process with the cache off (the main figure), then with it on.
    fn main_cases(&self, services: &Services) -> Main {
        println!("## End to end (release `bootstrap` under the Runtime API emulator)\n");
        println!(
            "1 cold + {WARM_RUNS} warm invocations per case and cache setting, a fresh process each. \
             `cache off` = TILE_CACHE_MB=0 (every warm run downloads everything: the main figure); \
             `cache on` = the default 256 MB warm tile cache. Cells: median (min–max).\n"
        );
        let mut table = Table::new(&[
            "case",
            "run",
            "total_ms",
            "download_ms",
            "inference_ms",
            "decode_ms",
            "predictions/s",
            "images fetched",
            "cache hits",
            "batches",
            "CPU busy",
            "peak RSS MB",
        ]);
        let mut main = Vec::new();
        for case in &self.cases {
            let mut pair = Vec::new();
            for (mode, settings) in [
                ("cache off", vec![("TILE_CACHE_MB", "0".to_string())]),
                ("cache on", vec![]),
            ] {
                let f = Function::start(services, &settings, case);
                let m = Measured::take(&f, &[(case, WARM_RUNS)]);
                drop(f);
                if mode == "cache off" {
                    table.row(timing_row(
                        case.name,
                        "cold",
                        std::slice::from_ref(&m.cold),
                        m.peak_rss_mb,
                    ));
                }
                table.row(timing_row(
                    case.name,
                    &format!("warm, {mode}"),
                    &m.warm,
                    m.peak_rss_mb,
                ));
                pair.push(m);
            }
            let on = pair.pop().expect("cache on");
            let off = pair.pop().expect("cache off");
            main.push((off, on));
        }
        table.print();

        let processes: Vec<&Measured> = main.iter().flat_map(|(a, b)| [a, b]).collect();
        println!(
            "Init (model from loopback S3 into a ready session, `model_load_ms`, {} cold starts): {} ms \
             = fetch {} ms + session {} ms; process start → ready for the first event: {} ms.\n",
            processes.len(),
            Stat::of(processes.iter().map(|m| m.cold.timing.model_load_ms)).show(0),
            Stat::of(processes.iter().map(|m| m.init_split.fetch_ms)).show(0),
            Stat::of(processes.iter().map(|m| m.init_split.session_ms)).show(0),
            Stat::of(processes.iter().map(|m| ms(m.ready))).show(0),
        );
        main
    }

    /// The floor per case and the warm median's ratio to it.
    fn floors(
        &self,
        model: &tilepredict::model::Model,
        main: &Main,
        unique: &[usize],
        decode_ms: f64,
        quickest_tile: f64,
    ) -> Vec<Floor> {
        let d = &self.defaults;
        println!("## The floor\n");
        println!(
            "(a) ONNX Runtime alone for the same number of chips, batches of {}, {} threads, inputs in memory (best of 3); \
             (b) ⌈unique tiles / {}⌉ × the mean latency served. floor = max(a, b); ratio = warm median (cache off) / floor. \
             (c) the CPU floor: (a) plus decoding every unique tile ({decode_ms:.2} ms each on one core) spread over {} vCPUs, \
             the CPU work no schedule can avoid on this machine; ratio (c) = warm median / max(b, c). \
             (d) (a) plus the quickest possible tile round trip ({quickest_tile:.0} ms): no chip can be inferred before its \
             first image arrives, so an inference-bound case cannot beat (d).\n",
            d.batch_size, d.threads, d.concurrency, d.threads
        );
        let mut table = Table::new(&[
            "case",
            "chips",
            "unique tiles",
            "(a) ORT ms",
            "(b) download ms",
            "floor ms",
            "warm median ms",
            "ratio",
            "(c) CPU floor ms",
            "ratio (c)",
            "(d) a + first tile ms",
            "ratio (d)",
        ]);
        let mut floors = Vec::new();
        for ((case, (off, _)), u) in self.cases.iter().zip(main).zip(unique) {
            let chips = case.points.len();
            let a = ms(floor::ort_time(model, chips, d.batch_size, 3));
            let latency = Stat::of(off.warm.iter().map(|r| ms(r.mean_latency))).median;
            let b = ms(floor::download_floor(
                *u,
                d.concurrency,
                Duration::from_secs_f64(latency / 1000.0),
            ));
            let fetched = off.warm_stat(|r| r.timing.images_fetched as f64).median;
            if fetched as usize != *u {
                println!(
                    "(note: {} fetched {fetched} images, the plan has {u})",
                    case.name
                );
            }
            let e2e = off.warm_stat(|r| r.timing.total_ms).median;
            let floor = a.max(b);
            let cpu_floor = a + *u as f64 * decode_ms / d.threads as f64;
            let start_floor = a + quickest_tile;
            table.row(vec![
                case.name.into(),
                chips.to_string(),
                u.to_string(),
                format!("{a:.0}"),
                format!("{b:.0} (mean latency {latency:.1})"),
                format!("{floor:.0}"),
                format!("{e2e:.0}"),
                format!("{:.2}", e2e / floor),
                format!("{cpu_floor:.0}"),
                format!("{:.2}", e2e / cpu_floor.max(b)),
                format!("{start_floor:.0}"),
                format!("{:.2}", e2e / start_floor),
            ]);
            floors.push(Floor {
                ort_ms: a,
                floor_ms: floor,
                e2e_ms: e2e,
            });
        }
        table.print();
        floors
    }

    /// The old two-phase strategy on the same tiles and model, and our speed-up over it.
    fn two_phase(
        &self,
        rt: &tokio::runtime::Runtime,
        model: &tilepredict::model::Model,
        imagery: Arc<tilepredict::imagery::Imagery>,
        main: &Main,
    ) -> Vec<f64> {
        let d = &self.defaults;
        println!("## Baseline: two phases (all downloads, then all batches)\n");
        println!(
            "In this process, from the library's pieces: fetch every unique tile ({} in flight, same HTTP client), \
             then decode on {} threads, stitch, normalise and run batches of {}. One discarded run first (warm pool).\n",
            d.concurrency, d.threads, d.batch_size
        );
        let mut table = Table::new(&[
            "case",
            "runs",
            "download phase ms",
            "inference phase ms",
            "total ms",
            "ours (warm median) ms",
            "speed-up",
        ]);
        let baseline = two_phase::TwoPhase {
            imagery,
            concurrency: d.concurrency,
            batch_size: d.batch_size,
            threads: d.threads,
        };
        let mut speedups = Vec::new();
        for (case, (off, _)) in self.cases.iter().zip(main) {
            let runs = if case.points.len() > 500 {
                2
            } else {
                WARM_RUNS
            };
            baseline.run(rt, model, &case.points);
            let phases: Vec<_> = (0..runs)
                .map(|_| baseline.run(rt, model, &case.points))
                .collect();
            let total = Stat::of(phases.iter().map(|p| ms(p.total())));
            let ours = off.warm_stat(|r| r.timing.total_ms).median;
            table.row(vec![
                case.name.into(),
                runs.to_string(),
                Stat::of(phases.iter().map(|p| ms(p.download))).show(0),
                Stat::of(phases.iter().map(|p| ms(p.inference))).show(0),
                total.show(0),
                format!("{ours:.0}"),
                format!("{:.2}×", total.median / ours),
            ]);
            speedups.push(total.median / ours);
        }
        table.print();
        speedups
    }

    /// BATCH_SIZE, INFERENCE_THREADS and MAX_CONCURRENT_DOWNLOADS, one at a time around the
    /// defaults; warm medians with the cache off, a fresh process per point.
    fn sweep(&self, services: &Services, main: &Main) {
        let d = &self.defaults;
        println!("## Tuning sweep\n");
        println!(
            "One setting changed at a time from the defaults; a fresh process per point, cold run discarded, \
             then {SWEEP_RUNS} warm runs of each case (cache off). The default point repeats the main runs.\n"
        );
        let mut table = Table::new(&[
            "setting",
            "110: total_ms",
            "1,000: total_ms",
            "1,000: predictions/s",
            "1,000: inference_ms",
            "1,000: batches",
            "peak RSS MB",
        ]);
        let mut points: Vec<(&str, usize)> = Vec::new();
        points.extend([8, 16, 32, 64].map(|v| ("BATCH_SIZE", v)));
        points.extend([1, 2].map(|v| ("INFERENCE_THREADS", v)));
        points.extend([25, 50, 100, 200].map(|v| ("MAX_CONCURRENT_DOWNLOADS", v)));
        for (name, value) in points {
            let is_default = match name {
                "BATCH_SIZE" => value == d.batch_size,
                "INFERENCE_THREADS" => value == d.threads,
                _ => value == d.concurrency,
            };
            let (small, large, rss) = if is_default {
                let (a, b) = (&main[0].0, &main[1].0);
                (
                    a.warm.clone(),
                    b.warm.clone(),
                    a.peak_rss_mb.max(b.peak_rss_mb),
                )
            } else {
                let settings = [
                    ("BATCH_SIZE", d.batch_size.to_string()),
                    ("INFERENCE_THREADS", d.threads.to_string()),
                    ("MAX_CONCURRENT_DOWNLOADS", d.concurrency.to_string()),
                    ("TILE_CACHE_MB", "0".to_string()),
                ]
                .map(|(k, v)| {
                    if k == name {
                        (k, value.to_string())
                    } else {
                        (k, v)
                    }
                });
                let f = Function::start(services, &settings, &self.cases[0]);
                let m = Measured::take(
                    &f,
                    &[(&self.cases[0], SWEEP_RUNS), (&self.cases[1], SWEEP_RUNS)],
                );
                let (a, b) = m.warm.split_at(SWEEP_RUNS);
                (a.to_vec(), b.to_vec(), m.peak_rss_mb)
            };
            let stat = |runs: &[Run], f: fn(&Run) -> f64| Stat::of(runs.iter().map(f));
            table.row(vec![
                format!(
                    "{name}={value}{}",
                    if is_default { " (default)" } else { "" }
                ),
                stat(&small, |r| r.timing.total_ms).show(0),
                stat(&large, |r| r.timing.total_ms).show(0),
                format!("{:.0}", stat(&large, |r| r.timing.throughput_per_s).median),
                format!("{:.0}", stat(&large, |r| r.timing.inference_ms).median),
                format!("{:.0}", stat(&large, |r| r.timing.batches as f64).median),
                format!("{rss:.0}"),
            ]);
        }
        table.print();
    }

    /// The int8 model against float32, all in one process each: ONNX Runtime alone (the
    /// function's session settings, batch `BATCH_SIZE`), end to end on the 1,000-building case
    /// (warm, cache off, a fresh process), and the answers on every chip of both cases.
    fn int8(
        &self,
        path: &std::path::Path,
        services: &Services,
        float: &tilepredict::model::Model,
        imagery: &Arc<tilepredict::imagery::Imagery>,
        main: &Main,
    ) -> Int8 {
        let d = &self.defaults;
        println!("## int8 (static QDQ, per-channel; `make bench` quantizes the bench model)\n");
        let bytes = std::fs::read(path).expect("int8 bench model");
        let quantized = floor::Ort::load(&self.ort_library, path).model(d.threads);
        let chips = 128;
        let rate = |m: &tilepredict::model::Model| {
            chips as f64 / floor::ort_time(m, chips, d.batch_size, 3).as_secs_f64()
        };
        let (float_rate, int8_rate) = (rate(float), rate(&quantized));

        let mut cut = Vec::new();
        for case in &self.cases {
            cut.extend(int8::cut(imagery, float, &case.points));
        }
        let same = tilepredict::model::compare::compare(
            float,
            &quantized,
            &int8::batch(float, &cut),
            d.batch_size,
        )
        .expect("both models take the bench's chips");

        services.s3.put(function::BUCKET, INT8_KEY, &bytes);
        let town = &self.cases[1];
        let settings = [
            ("TILE_CACHE_MB", "0".to_string()),
            ("MODEL_URI", format!("s3://{}/{INT8_KEY}", function::BUCKET)),
        ];
        let f = Function::start(services, &settings, town);
        let e2e = Measured::take(&f, &[(town, WARM_RUNS)]);
        drop(f);
        let e2e_float = main[1].0.warm_stat(|r| r.timing.throughput_per_s).median;
        let e2e_int8 = e2e.warm_stat(|r| r.timing.throughput_per_s).median;

        println!(
            "ONNX Runtime alone: {chips} chips in batches of {}, {} threads, best of 3. End to end: \
             {} warm runs of the 1,000-building case (cache off), median. Answers: every chip of \
             both cases ({} chips; the model was calibrated on other buildings), the function's \
             own decision rule.\n",
            d.batch_size, d.threads, WARM_RUNS, same.chips
        );
        let (at_median, median) = same.agreement_at_median(1);
        let (low, high) = same.spread(1);
        println!(
            "float32's p(asbestos) on these chips spans {low:.4}–{high:.4} (random weights: every \
             chip is \"other\" at the default threshold of 0.5, so the same answer there is \
             certain). The hardest test puts the threshold at float32's median, {median:.4}: half \
             the chips on each side, as near the boundary as they come.\n"
        );
        let mut table = Table::new(&[
            "model",
            "MB",
            "ONNX Runtime alone, images/s",
            "1,000 buildings, predictions/s",
            "peak RSS MB",
            "same answer as float32",
            "same side of the median",
            "largest |Δp|",
        ]);
        table.row(vec![
            "float32".into(),
            format!(
                "{:.1}",
                std::fs::metadata(&self.model).map_or(0, |m| m.len()) as f64 / 1e6
            ),
            format!("{float_rate:.0}"),
            format!("{e2e_float:.0}"),
            format!("{:.0}", main[1].0.peak_rss_mb),
            "—".into(),
            "—".into(),
            "—".into(),
        ]);
        table.row(vec![
            "int8 QDQ".into(),
            format!("{:.1}", bytes.len() as f64 / 1e6),
            format!("{int8_rate:.0} ({:.2}×)", int8_rate / float_rate),
            format!("{e2e_int8:.0} ({:.2}×)", e2e_int8 / e2e_float),
            format!("{:.0}", e2e.peak_rss_mb),
            format!(
                "{} of {} ({:.2} %)",
                same.same,
                same.chips,
                same.agreement_percent()
            ),
            format!("{at_median:.2} %"),
            format!("{:.4}", same.largest),
        ]);
        table.print();
        Int8 {
            speedup: int8_rate / float_rate,
            agreement: same.agreement_percent(),
            at_median,
        }
    }

    fn targets(
        &self,
        main: &Main,
        floors: &[Floor],
        speedups: &[f64],
        api: &managed::Summary,
        int8: Option<&Int8>,
    ) {
        println!("## Targets\n");
        let mut table = Table::new(&["target", "measured", "goal", "met"]);
        let mut check = |name: &str, measured: String, goal: &str, met: bool| {
            table.row(vec![
                name.into(),
                measured,
                goal.into(),
                if met { "yes" } else { "NO" }.into(),
            ]);
        };
        let r = floors[0].e2e_ms / floors[0].floor_ms;
        check(
            "110 buildings, warm median / floor",
            format!("{r:.2}"),
            "≤ 1.15",
            r <= 1.15,
        );
        let ort_rate = self.cases[1].points.len() as f64 / (floors[1].ort_ms / 1000.0);
        let e2e_rate = main[1].0.warm_stat(|r| r.timing.throughput_per_s).median;
        let share = e2e_rate / ort_rate;
        check(
            "1,000 buildings, predictions/s vs ONNX Runtime alone",
            format!("{e2e_rate:.0} / {ort_rate:.0} = {:.0} %", share * 100.0),
            "≥ 90 %",
            share >= 0.9,
        );
        check(
            "110 buildings, speed-up over two phases",
            format!("{:.2}×", speedups[0]),
            "≥ 1.8×",
            speedups[0] >= 1.8,
        );
        let processes = main.iter().flat_map(|(a, b)| [a, b]);
        let init = Stat::of(processes.map(|m| m.cold.timing.model_load_ms));
        check(
            "init: model from S3 into a ready session (median)",
            format!("{:.0} ms", init.median),
            "≤ 300 ms",
            init.median <= 300.0,
        );
        let (off, on) = (&main[1].0, &main[1].1);
        check(
            "peak RSS at 1,000 buildings (cache off; cache on)",
            format!("{:.0} MB; {:.0} MB", off.peak_rss_mb, on.peak_rss_mb),
            "≤ 600 MB",
            off.peak_rss_mb.max(on.peak_rss_mb) <= 600.0,
        );
        check(
            "many small requests, 16 in flight vs one at a time",
            format!("{:.2}×", api.speedup),
            "≥ 3×",
            api.speedup >= 3.0,
        );
        check(
            "many small requests, 16 in flight vs ONNX Runtime alone at batch 32",
            format!("{:.0} %", api.share_of_ort * 100.0),
            "≥ 85 %",
            api.share_of_ort >= 0.85,
        );
        if let Some(q) = int8 {
            check(
                "int8 bench model: ONNX Runtime alone vs float32, at the same answer",
                format!("{:.2}× at {:.2} %", q.speedup, q.agreement),
                "≥ 2.5× at ≥ 99 %",
                q.speedup >= 2.5 && q.agreement >= 99.0,
            );
            check(
                "int8 bench model: same side of a threshold at float32's median (the worst case)",
                format!("{:.2} %", q.at_median),
                "≥ 99 %",
                q.at_median >= 99.0,
            );
        }
        table.print();
    }
}

/// Where the int8 bench model goes in the loopback S3 server.
const INT8_KEY: &str = "models/resnet18_128.int8.onnx";

/// What the int8 section measured, for the targets.
struct Int8 {
    speedup: f64,
    agreement: f64,
    at_median: f64,
}

struct Floor {
    ort_ms: f64,
    floor_ms: f64,
    e2e_ms: f64,
}

fn timing_row(case: &str, run: &str, runs: &[Run], rss: f64) -> Vec<String> {
    let stat = |f: fn(&Run) -> f64| Stat::of(runs.iter().map(f));
    vec![
        case.into(),
        run.into(),
        stat(|r| r.timing.total_ms).show(0),
        stat(|r| r.timing.download_ms).show(0),
        stat(|r| r.timing.inference_ms).show(0),
        stat(|r| r.timing.decode_ms).show(0),
        stat(|r| r.timing.throughput_per_s).show(0),
        stat(|r| r.timing.images_fetched as f64).show(0),
        stat(|r| r.timing.cache_hits as f64).show(0),
        stat(|r| r.timing.batches as f64).show(0),
        format!("{:.0} %", cpu_busy(runs)),
        format!("{rss:.0}"),
    ]
}

/// Median share of the function's vCPUs its process kept busy during the invocations: CPU time
/// (all threads) / (`total_ms` × vCPUs). Near 100 % the CPU, not the network, sets the pace.
fn cpu_busy(runs: &[Run]) -> f64 {
    let cores = defaults().threads as f64;
    Stat::of(
        runs.iter()
            .map(|r| 100.0 * r.cpu_ms / (r.timing.total_ms * cores)),
    )
    .median
}

/// Mean time to decode one tile on one core (the CPU the pipeline spends per image).
fn decode_ms(variants: &[Vec<u8>]) -> f64 {
    let rounds = 10;
    let started = Instant::now();
    for _ in 0..rounds {
        for v in variants {
            tilepredict::imagery::decode::decode(v, (256, 256), "bench").expect("tile decodes");
        }
    }
    ms(started.elapsed()) / (rounds * variants.len()) as f64
}

/// What `cargo test --all-targets` runs: the world is seeded, sized and shaped as documented.
fn self_check() {
    let (small, large) = (world::neighbourhood(), world::town());
    assert_eq!((small.points.len(), large.points.len()), (110, 1000));
    assert_eq!(small.event["buildings"].as_array().map(Vec::len), Some(110));
    let spread = |c: &Case| {
        let lats = c.points.iter().map(|p| p.lat);
        let (lo, hi) = lats.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        (hi - lo) * 111_320.0
    };
    assert!(
        (400.0..=620.0).contains(&spread(&small)),
        "{}",
        spread(&small)
    );
    assert!(
        (2000.0..=3020.0).contains(&spread(&large)),
        "{}",
        spread(&large)
    );
    assert_eq!(world::neighbourhood().points, small.points, "seeded");
    let sizes = Stat::of(
        world::tile_variants()
            .iter()
            .map(|t| t.len() as f64 / 1024.0),
    );
    assert!(
        (18.0..=32.0).contains(&sizes.median),
        "tiles should weigh what aerial tiles do: {} KB",
        sizes.show(1)
    );
    managed::self_check();
    println!(
        "bench world ok: tiles {} KB (run the benchmark with `make bench`)",
        sizes.show(1)
    );
}
