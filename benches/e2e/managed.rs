//! The API case under Lambda Managed Instances: 64 requests of 5 buildings each (all different
//! buildings, no tile shared, the warm cache off), served one at a time as classic Lambda does,
//! and with up to 32 in flight in one process (`AWS_LAMBDA_MAX_CONCURRENCY`), where their chips
//! share batches. Printed: throughput, latency, CPU, memory, the session layout, and what 1,000
//! predictions cost either way at the prices given (`--lambda-price`, `--request-price`,
//! `--instance-price`, `--management-fee`; defaults below).
//!
//! The clients are a closed loop: as many client threads as the function takes invocations at
//! once, each sending its next request as soon as the last is answered, so the function always
//! has that many in flight (a steady load, the case Managed Instances are for).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::floor;
use crate::function::{Function, Services, cpu_time};
use crate::report::{Table, ms};
use crate::world::{self, Case};

pub const REQUESTS: usize = 64;
pub const BUILDINGS: usize = 5;
/// The concurrency the goals are set at.
pub const CONCURRENCY: usize = 16;
const CONCURRENCIES: [usize; 5] = [1, 4, 8, 16, 32];
const TIMEOUT_MS: u64 = 120_000;
/// The function's memory on classic Lambda in this benchmark (2 vCPUs), in MB.
const CLASSIC_MEMORY_MB: f64 = 3538.0;
/// The Managed Instances environment measured: 2 vCPUs at the smallest memory per vCPU, 2 GiB,
/// as on a c7i.large (2 vCPUs, 4 GiB).
const MANAGED_VCPUS: f64 = 2.0;
const MANAGED_GIB_PER_VCPU: f64 = 2.0;

/// Prices in US dollars. The defaults are AWS's published on-demand prices for us-east-1 (the
/// AWS Lambda and Amazon EC2 pricing pages, November 2026; this machine cannot reach them, so
/// they are not re-checked at run time): Lambda x86 duration and requests; for Managed
/// Instances a c7i.large (2 vCPUs, 4 GiB, the environment measured here), plus Lambda's 15 %
/// management fee on the instance's on-demand price, plus the same request charge.
#[derive(Debug, Clone, Copy)]
pub struct Prices {
    /// Classic Lambda, per GB-second (x86).
    pub lambda_gb_s: f64,
    /// Per million requests, either mode.
    pub requests_per_million: f64,
    /// The instance, per hour.
    pub instance_hour: f64,
    /// Managed Instances' management fee, as a share of the instance's price.
    pub management_fee: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Self {
            lambda_gb_s: 0.000_016_666_7,
            requests_per_million: 0.20,
            instance_hour: 0.089_25,
            management_fee: 0.15,
        }
    }
}

impl Prices {
    /// The defaults, with any `--lambda-price`, `--request-price`, `--instance-price` or
    /// `--management-fee VALUE` given.
    pub fn from_args(args: &[String]) -> Result<Self, String> {
        let mut prices = Self::default();
        for (flag, slot) in [
            ("--lambda-price", &mut prices.lambda_gb_s),
            ("--request-price", &mut prices.requests_per_million),
            ("--instance-price", &mut prices.instance_hour),
            ("--management-fee", &mut prices.management_fee),
        ] {
            if let Some(at) = args.iter().position(|a| a == flag) {
                let value = args.get(at + 1).ok_or(format!("{flag} needs a value"))?;
                *slot = value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or(format!("{flag} {value}: not a price"))?;
            }
        }
        Ok(prices)
    }
}

/// One run of the requests at one concurrency, in a fresh function process.
struct Run {
    concurrency: usize,
    predictions: usize,
    wall: Duration,
    cpu: Duration,
    /// Each invocation's duration: handed out → answered (what Lambda bills).
    durations: Vec<Duration>,
    batched_with: Vec<f64>,
    peak_rss_mb: f64,
    /// Resident memory after init and two invocations, before the measured run.
    warm_rss_mb: f64,
}

impl Run {
    fn per_s(&self) -> f64 {
        self.predictions as f64 / self.wall.as_secs_f64()
    }

    /// Nearest-rank percentile of the invocations' durations, in ms.
    fn percentile(&self, p: f64) -> f64 {
        let mut d: Vec<f64> = self.durations.iter().map(|d| ms(*d)).collect();
        d.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * d.len() as f64).ceil().max(1.0) as usize;
        d[rank - 1]
    }

    fn per_thousand(&self, total: f64) -> f64 {
        total / self.predictions as f64 * 1000.0
    }
}

/// What the section measured, for the targets.
pub struct Summary {
    pub speedup: f64,
    pub share_of_ort: f64,
}

/// Starts a function with `settings` (the tile cache off), warms it with two invocations, then
/// sends every request from `concurrency` client threads.
fn measure(
    services: &Services,
    settings: &[(&str, String)],
    concurrency: usize,
    requests: &[Case],
    warmup: &Case,
) -> Run {
    let mut all = vec![("TILE_CACHE_MB", "0".to_string())];
    if concurrency > 1 {
        all.push(("AWS_LAMBDA_MAX_CONCURRENCY", concurrency.to_string()));
    }
    all.extend(settings.iter().cloned());
    let f = Function::start(services, &all, warmup);
    f.invoke(warmup);
    let process = f.process();
    let warm_rss_mb = process.rss_kb().unwrap_or(0) as f64 / 1024.0;
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    let cpu_before = cpu_time(process).unwrap_or_default();
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(case) = requests.get(i) else { break };
                    let (outcome, duration) = process.invoke_timed(&case.event, TIMEOUT_MS);
                    let answer = outcome.unwrap_response();
                    assert_eq!(answer["failed"], 0, "request {i}: {answer}");
                    let mates = answer["timing"]["batched_with"].as_f64().unwrap_or(0.0);
                    results.lock().unwrap().push((duration, mates));
                }
            });
        }
    });
    let wall = started.elapsed();
    let cpu = cpu_time(process)
        .unwrap_or_default()
        .saturating_sub(cpu_before);
    let results = results.into_inner().unwrap();
    Run {
        concurrency,
        predictions: requests.iter().map(|c| c.points.len()).sum(),
        wall,
        cpu,
        durations: results.iter().map(|(d, _)| *d).collect(),
        batched_with: results.iter().map(|(_, m)| *m).collect(),
        peak_rss_mb: f.peak_rss_mb(),
        warm_rss_mb,
    }
}

/// The section: the concurrency sweep, the sessions, the costs and the goals.
pub fn run(services: &Services, ort: &floor::Ort, threads: usize, prices: Prices) -> Summary {
    let requests = world::api_requests(REQUESTS, BUILDINGS, world::SEED + 7);
    let warmup = world::api_requests(1, BUILDINGS, world::SEED + 8).remove(0);
    let predictions = REQUESTS * BUILDINGS;
    println!("## Many small requests: Lambda Managed Instances\n");
    println!(
        "{REQUESTS} requests of {BUILDINGS} buildings each ({predictions} predictions), every building \
         ≥ {:.0} m from every other (no tile shared, no cache hit; TILE_CACHE_MB=0), tiles at the \
         server's 80 ± 20 ms. A fresh process per row, warmed by two invocations; then a closed loop of \
         as many clients as invocations in flight. Concurrency 1 is classic Lambda (no \
         AWS_LAMBDA_MAX_CONCURRENCY); the others set it. Latency: each invocation's duration (handed \
         out → answered); p99 of {REQUESTS} is the slowest.\n",
        world::API_SPACING_M
    );
    // ONNX Runtime alone is measured right before each row, so a row and its reference see
    // the same machine: on shared vCPUs other work comes and goes.
    let model = ort.model(threads);
    let ort_rate =
        || predictions as f64 / floor::ort_time(&model, predictions, 32, 2).as_secs_f64();
    let rows: Vec<(Run, f64)> = CONCURRENCIES
        .iter()
        .map(|&c| {
            let reference = ort_rate();
            (measure(services, &[], c, &requests, &warmup), reference)
        })
        .collect();
    drop(model);
    let mut table = Table::new(&[
        "in flight",
        "predictions/s",
        "× one at a time",
        "% of ORT alone (images/s)",
        "p50 ms",
        "p99 ms",
        "CPU-s / 1,000",
        "batched with (mean)",
        "peak RSS MB",
    ]);
    let single = rows[0].0.per_s();
    for (r, reference) in &rows {
        table.row(vec![
            if r.concurrency == 1 {
                "1 (classic)".to_string()
            } else {
                r.concurrency.to_string()
            },
            format!("{:.0}", r.per_s()),
            format!("{:.2}×", r.per_s() / single),
            format!("{:.0} % of {reference:.0}", 100.0 * r.per_s() / reference),
            format!("{:.0}", r.percentile(50.0)),
            format!("{:.0}", r.percentile(99.0)),
            format!("{:.2}", r.per_thousand(r.cpu.as_secs_f64())),
            format!(
                "{:.1}",
                r.batched_with.iter().sum::<f64>() / r.batched_with.len() as f64
            ),
            format!("{:.0}", r.peak_rss_mb),
        ]);
    }
    table.print();
    println!(
        "ORT alone: ONNX Runtime on {predictions} chips in memory, batch 32, 1 session × {threads} threads \
         (the function's layout), best of 2, images/s, measured right before the row.\n"
    );

    let classic = &rows[0].0;
    let (managed, ort_rate) = rows
        .iter()
        .find(|(r, _)| r.concurrency == CONCURRENCY)
        .map(|(r, reference)| (r, *reference))
        .expect("the goal's concurrency is measured");
    sessions(services, &requests, &warmup, managed, threads);
    costs(classic, managed, prices);

    let summary = Summary {
        speedup: managed.per_s() / classic.per_s(),
        share_of_ort: managed.per_s() / ort_rate,
    };
    let mut goals = Table::new(&["target", "measured", "goal", "met"]);
    let yes = |met: bool| if met { "yes" } else { "NO" }.to_string();
    goals.row(vec![
        format!("{CONCURRENCY} in flight vs one at a time, predictions/s"),
        format!(
            "{:.0} / {:.0} = {:.2}×",
            managed.per_s(),
            classic.per_s(),
            summary.speedup
        ),
        "≥ 3×".into(),
        yes(summary.speedup >= 3.0),
    ]);
    goals.row(vec![
        format!("{CONCURRENCY} in flight vs ONNX Runtime alone at batch 32"),
        format!(
            "{:.0} / {ort_rate:.0} = {:.0} %",
            managed.per_s(),
            100.0 * summary.share_of_ort
        ),
        "≥ 85 %".into(),
        yes(summary.share_of_ort >= 0.85),
    ]);
    goals.row(vec![
        format!("latency p50 / p99, one at a time → {CONCURRENCY} in flight"),
        format!(
            "{:.0} / {:.0} ms → {:.0} / {:.0} ms",
            classic.percentile(50.0),
            classic.percentile(99.0),
            managed.percentile(50.0),
            managed.percentile(99.0)
        ),
        "reported".into(),
        "–".into(),
    ]);
    goals.print();
    summary
}

/// INFERENCE_SESSIONS at the goal's concurrency: the default (one session with every thread)
/// against one session per thread, and what a session costs in memory.
fn sessions(services: &Services, requests: &[Case], warmup: &Case, default: &Run, threads: usize) {
    if threads < 2 {
        return;
    }
    println!("### Sessions ({CONCURRENCY} in flight)\n");
    let split = measure(
        services,
        &[("INFERENCE_SESSIONS", threads.to_string())],
        CONCURRENCY,
        requests,
        warmup,
    );
    let mut table = Table::new(&[
        "INFERENCE_SESSIONS",
        "threads each",
        "predictions/s",
        "p50 ms",
        "RSS warm MB",
        "peak RSS MB",
    ]);
    for (sessions, r) in [(1, default), (threads, &split)] {
        table.row(vec![
            if sessions == 1 {
                "1 (default)".to_string()
            } else {
                sessions.to_string()
            },
            (threads / sessions).to_string(),
            format!("{:.0}", r.per_s()),
            format!("{:.0}", r.percentile(50.0)),
            format!("{:.0}", r.warm_rss_mb),
            format!("{:.0}", r.peak_rss_mb),
        ]);
    }
    table.print();
    println!(
        "Memory per extra session (warm RSS difference / extra sessions): {:.0} MB.\n",
        (split.warm_rss_mb - default.warm_rss_mb) / (threads - 1) as f64
    );
}

/// CPU-seconds, GB-seconds and dollars per 1,000 predictions, classic against Managed Instances.
fn costs(classic: &Run, managed: &Run, prices: Prices) {
    println!("### Cost per 1,000 predictions\n");
    println!(
        "Classic Lambda bills every invocation's duration (rounded up to the ms) at the function's \
         memory ({CLASSIC_MEMORY_MB:.0} MB = 2 vCPUs), each in a sandbox of its own. Managed Instances \
         bill the instance while it runs, whatever it serves: here a {MANAGED_VCPUS:.0}-vCPU, \
         {:.0} GiB environment kept busy at the measured rate ({} in flight), so its GB-seconds are \
         its memory × wall time. Prices: Lambda ${}/GB-s, ${}/1M requests; instance ${}/h + {:.0} % \
         management fee (pass --lambda-price, --request-price, --instance-price, --management-fee).\n",
        MANAGED_VCPUS * MANAGED_GIB_PER_VCPU,
        managed.concurrency,
        prices.lambda_gb_s,
        prices.requests_per_million,
        prices.instance_hour,
        prices.management_fee * 100.0
    );
    let requests_per_thousand = classic.per_thousand(classic.durations.len() as f64);
    let request_cost = requests_per_thousand * prices.requests_per_million / 1e6;
    let billed_s: f64 = classic
        .durations
        .iter()
        .map(|d| (d.as_secs_f64() * 1000.0).ceil() / 1000.0)
        .sum();
    let classic_gb_s = classic.per_thousand(CLASSIC_MEMORY_MB / 1024.0 * billed_s);
    let managed_gb = MANAGED_VCPUS * MANAGED_GIB_PER_VCPU;
    let managed_gb_s = managed.per_thousand(managed_gb * managed.wall.as_secs_f64());
    let instance_s = managed.per_thousand(managed.wall.as_secs_f64());
    let classic_cost = classic_gb_s * prices.lambda_gb_s + request_cost;
    let managed_cost =
        instance_s / 3600.0 * prices.instance_hour * (1.0 + prices.management_fee) + request_cost;
    let mut table = Table::new(&["mode", "CPU-s", "GB-s", "$ per 1,000 predictions"]);
    table.row(vec![
        "classic Lambda (one at a time)".into(),
        format!("{:.2}", classic.per_thousand(classic.cpu.as_secs_f64())),
        format!("{classic_gb_s:.2}"),
        format!("{classic_cost:.6}"),
    ]);
    table.row(vec![
        format!("Managed Instances ({} in flight)", managed.concurrency),
        format!("{:.2}", managed.per_thousand(managed.cpu.as_secs_f64())),
        format!("{managed_gb_s:.2}"),
        format!("{managed_cost:.6}"),
    ]);
    table.print();
    println!(
        "Managed Instances cost {:.2}× classic Lambda per prediction at these prices, at full load; \
         an instance idling half the time costs twice as much per prediction.\n",
        managed_cost / classic_cost
    );
}

/// For the self-check: the API case is what the section says.
pub fn self_check() {
    let requests = world::api_requests(REQUESTS, BUILDINGS, world::SEED + 7);
    assert_eq!(requests.len(), REQUESTS);
    assert!(requests.iter().all(|c| c.points.len() == BUILDINGS));
    // No tile is needed by two buildings (the bench model's chips are 128 px).
    let mut seen = std::collections::HashSet::new();
    for p in requests.iter().flat_map(|c| c.points.iter()) {
        for placed in tilepredict::geo::ChipWindow::centred_on(*p, world::ZOOM, 128).tiles() {
            assert!(seen.insert(placed.tile), "tile {:?} shared", placed.tile);
        }
    }
    let prices = Prices::from_args(&["--instance-price".into(), "0.1".into()]).unwrap();
    assert_eq!(prices.instance_hour, 0.1);
    assert!(Prices::from_args(&["--lambda-price".into(), "x".into()]).is_err());
}
