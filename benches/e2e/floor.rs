//! What the hardware and the network allow, measured in the benchmark's own process:
//! ONNX Runtime alone on prepared tensors (the same `Model` and session settings the function
//! builds), and the download floor `⌈unique images / concurrency⌉ × mean latency`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tilepredict::geo::LatLon;
use tilepredict::imagery::Imagery;
use tilepredict::model::input::InputBatch;
use tilepredict::model::settings::ModelSettings;
use tilepredict::model::{Model, ModelOptions, onnx_runtime};

/// ONNX Runtime with the benchmark model, in memory.
pub struct Ort {
    env: &'static ort::environment::Environment,
    bytes: Vec<u8>,
}

impl Ort {
    pub fn load(library: &std::path::Path, model: &std::path::Path) -> Self {
        let env = onnx_runtime(library).unwrap_or_else(|e| panic!("{e}"));
        let bytes = std::fs::read(model).expect("bench model");
        Self { env, bytes }
    }

    /// A session exactly as `App::init` builds it (`Model::new`), with `threads` intra-op threads.
    pub fn model(&self, threads: usize) -> Model {
        let options = ModelOptions {
            threads,
            sessions: 1,
            settings: &ModelSettings::default(),
        };
        Model::new(self.env, &self.bytes, &options).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A batch of `n` random-pixel chips of the model's input size, in its input tensor.
pub fn tensor(model: &Model, n: usize) -> InputBatch {
    let mut rng = fastrand::Rng::with_seed(7);
    let (h, w) = (model.input.height as u32, model.input.width as u32);
    let chips: Vec<image::RgbImage> = (0..n)
        .map(|_| {
            image::RgbImage::from_fn(w, h, |_, _| {
                image::Rgb([rng.u8(..), rng.u8(..), rng.u8(..)])
            })
        })
        .collect();
    model.input.batch(&chips.iter().collect::<Vec<_>>())
}

/// ONNX Runtime time for `chips` chips in batches of `batch` (the last one partial), inputs
/// already in memory: the best of `repeats` passes after a warm-up run of each batch shape.
pub fn ort_time(model: &Model, chips: usize, batch: usize, repeats: usize) -> Duration {
    let full = tensor(model, batch);
    let tail = tensor(model, chips % batch);
    model.run(&full, batch).expect("warm-up run");
    if !chips.is_multiple_of(batch) {
        model.run(&tail, chips % batch).expect("warm-up run");
    }
    (0..repeats.max(1))
        .map(|_| {
            let started = Instant::now();
            for _ in 0..chips / batch {
                model.run(&full, batch).expect("ONNX Runtime run");
            }
            if !chips.is_multiple_of(batch) {
                model.run(&tail, chips % batch).expect("ONNX Runtime run");
            }
            started.elapsed()
        })
        .min()
        .expect("at least one pass")
}

/// Images per second of two sessions of one intra-op thread each, run side by side on their
/// own threads (the other session layout).
pub fn two_sessions_throughput(ort: &Ort, chips: usize, batch: usize) -> f64 {
    let models = [ort.model(1), ort.model(1)];
    let started = Instant::now();
    std::thread::scope(|s| {
        for model in &models {
            s.spawn(move || ort_time(model, chips / 2, batch, 1));
        }
    });
    chips as f64 / started.elapsed().as_secs_f64()
}

/// The unique images the function fetches for `points` (its plan, de-duplicated).
pub fn unique_images(imagery: &Imagery, points: &[LatLon]) -> usize {
    points
        .iter()
        .flat_map(|p| imagery.template_parts(*p))
        .map(|part| part.url)
        .collect::<HashSet<_>>()
        .len()
}

/// `⌈unique / concurrency⌉ × mean latency`.
pub fn download_floor(unique: usize, concurrency: usize, mean_latency: Duration) -> Duration {
    mean_latency * unique.div_ceil(concurrency) as u32
}
