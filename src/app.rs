//! The sandbox's long-lived state and its one job: buildings in, predictions out.
//!
//! [`App::init`] runs once, during Lambda's init phase: it loads ONNX Runtime and the model,
//! builds the session and the HTTP client, and loads the registry (if any) alongside.
//! [`App::predict`] runs per invocation and pays for none of that. Event shapes (direct, API
//! Gateway, …) and reporting are the handler's business, not this.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use image::RgbImage;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::blob::BlobUri;
use crate::config::Config;
use crate::error::{BuildingError, ConfigError, ErrorCode, StartupError};
use crate::imagery::fetch::{FetchSettings, Fetcher};
use crate::imagery::source::SourceSpec;
use crate::imagery::{Imagery, Source};
use crate::model::{Model, ModelOptions, onnx_runtime, ort_library_path};
use crate::outcome::{ModelInfo, Outcome, Timing, ms, round2};
use crate::pipeline::Pipeline;
use crate::pipeline::assembly::ChipMaker;
use crate::registry::Registry;
use crate::request::BuildingInput;

/// Per building, the chip its prediction was made on, exactly as batched (before
/// normalisation); `None` where no chip was made (a parse error, a failed image, the deadline).
pub type Chips = Vec<Option<Arc<RgbImage>>>;

/// Everything built once per sandbox.
pub struct App {
    pub config: Config,
    pub model_info: ModelInfo,
    pipeline: Pipeline,
    model_load_ms: f64,
    registry: Option<Registry>,
    /// True until the first invocation has reported the cold start.
    cold: AtomicBool,
}

impl App {
    /// Loads ONNX Runtime, the model (S3 or file) and builds the session and HTTP client.
    ///
    /// The registry loads at the same time on its own task: building the ONNX session blocks
    /// this task for a while, and a spawned task keeps fetching and parsing on another worker
    /// meanwhile (`try_join!` on one task would stall it). Dropping the `JoinSet` on an early
    /// error cancels it.
    pub async fn init(config: Config) -> Result<Self, StartupError> {
        let mut registry_task = JoinSet::new();
        if let Some(settings) = config.registry.clone() {
            registry_task.spawn(crate::registry::load(settings, config.model_load_timeout));
        }
        let fetcher = Arc::new(
            Fetcher::new(FetchSettings {
                timeout: config.download_timeout,
                retries: config.download_retries,
                max_bytes: config.max_image_bytes,
                headers: config.tile_headers.expose().to_vec(),
                max_connections: config.max_concurrent_downloads,
            })
            .map_err(|e| StartupError::Imagery(format!("cannot build the HTTP client: {e}")))?,
        );
        // A GeoTIFF's header (or a mosaic's index) is read alongside the model, like the register.
        let mut source_task = JoinSet::new();
        let geotiff = match &config.source {
            SourceSpec::Template(_) => None,
            SourceSpec::GeoTiff(location) => Some((location.clone(), false)),
            SourceSpec::Mosaic(location) => Some((location.clone(), true)),
        };
        if let Some((location, mosaic)) = geotiff {
            source_task.spawn(crate::imagery::geotiff::open(
                location,
                mosaic,
                Imagery::range_reader(&fetcher),
                config.bands,
                config.max_image_bytes as u64,
                config.model_load_timeout,
            ));
        }
        let LoadedModel {
            model,
            version,
            bytes: model_bytes,
            fetch_ms,
            load_ms: model_load_ms,
        } = load_model(&config, &config.model_uri).await?;
        let registry = match registry_task.join_next().await {
            None => None,
            Some(joined) => Some(joined.map_err(|e| {
                StartupError::RegistryLoad(format!("the registry loader failed: {e}"))
            })??),
        };
        if let Some(registry) = &registry {
            check_positive_label(&registry.settings.positive_label, &model.labels)?;
        }

        for note in &model.notes {
            tracing::warn!(model = %config.model_uri, "{note}");
        }
        if let Some(fixed) = model.input.fixed_batch
            && fixed != config.batch_size
        {
            tracing::warn!(
                model_batch = fixed,
                batch_size = config.batch_size,
                "the model has a fixed batch size; BATCH_SIZE follows it"
            );
        }
        let chip_size = model.input.chip_size;
        let source = match (&config.source, source_task.join_next().await) {
            (SourceSpec::Template(template), _) => Source::Template(template.clone()),
            (_, Some(Ok(Ok(opened)))) => {
                tracing::info!(source = %opened.describe(), "imagery ready");
                Source::GeoTiff(opened)
            }
            (_, Some(Ok(Err(why)))) => return Err(StartupError::Imagery(why)),
            (_, Some(Err(e))) => {
                return Err(StartupError::Imagery(format!(
                    "the imagery loader failed: {e}"
                )));
            }
            (_, None) => {
                return Err(StartupError::Imagery(
                    "the imagery source was not opened (a bug)".into(),
                ));
            }
        };
        let imagery = Imagery::with_source(
            source,
            fetcher,
            config.tile_zoom,
            chip_size,
            config.tile_cache_bytes,
        )
        .with_ground_resolution(config.chip_gsd_m);
        let model_info = model.info(&config.model_uri.to_string(), &version);
        tracing::info!(
            model = %model_info.uri,
            version = %model_info.version,
            labels = %model_info.labels.join(","),
            input = %format!(
                "{} {} {} {} {}",
                model_info.input.shape,
                model_info.input.element_type,
                model_info.input.layout,
                model_info.input.channels,
                model_info.input.range
            ),
            output = %format!(
                "{} {} {}",
                model_info.output.name, model_info.output.shape, model_info.output.kind
            ),
            decision = %model_info.decision.rule,
            chip_size,
            zoom = config.tile_zoom,
            threads = config.inference_threads,
            sessions = config.inference.sessions,
            max_concurrency = config.inference.max_concurrency,
            model_load_ms,
            model_fetch_ms = fetch_ms,
            model_bytes,
            session_ms = model_load_ms - fetch_ms,
            "model ready"
        );
        let chips = ChipMaker {
            imagery: Arc::new(imagery),
            download_slots: Arc::new(Semaphore::new(config.max_concurrent_downloads)),
            decode_slots: Arc::new(Semaphore::new(config.inference_threads)),
        };
        let pipeline = Pipeline::new(
            Arc::new(model),
            chips,
            config.batch_size,
            config.fault_panic_rgb,
        );
        Ok(Self {
            config,
            model_info,
            pipeline,
            model_load_ms,
            registry,
            cold: AtomicBool::new(true),
        })
    }

    /// Predicts every building that parsed; the others keep their parse error. `outcomes[i]`
    /// answers `buildings[i]`. `total_ms` is measured from `started` (the handler's start).
    pub async fn predict(
        &self,
        buildings: &[BuildingInput],
        cutoff: tokio::time::Instant,
        started: Instant,
    ) -> (Vec<Outcome>, Timing) {
        let (outcomes, timing, _) = self.run(buildings, cutoff, started, false).await;
        (outcomes, timing)
    }

    /// [`App::predict`], also giving back each building's chip (`chips[i]` for
    /// `buildings[i]`), for answers and pages that show what the model saw.
    pub async fn predict_with_chips(
        &self,
        buildings: &[BuildingInput],
        cutoff: tokio::time::Instant,
        started: Instant,
    ) -> (Vec<Outcome>, Timing, Chips) {
        self.run(buildings, cutoff, started, true).await
    }

    /// The chips' size: the model's input, width × height.
    pub fn chip_dimensions(&self) -> (u32, u32) {
        let input = &self.pipeline.model.input;
        (input.width as u32, input.height as u32)
    }

    async fn run(
        &self,
        buildings: &[BuildingInput],
        cutoff: tokio::time::Instant,
        started: Instant,
        keep_chips: bool,
    ) -> (Vec<Outcome>, Timing, Chips) {
        let valid: Vec<_> = buildings
            .iter()
            .filter_map(|b| b.position.as_ref().ok().copied())
            .collect();
        let output = if keep_chips {
            self.pipeline.run_keeping_chips(&valid, cutoff).await
        } else {
            self.pipeline.run(&valid, cutoff).await
        };
        let chips: Chips = if keep_chips {
            let mut kept = output.chips.into_iter();
            buildings
                .iter()
                .map(|b| b.position.as_ref().ok().and_then(|_| kept.next().flatten()))
                .collect()
        } else {
            Vec::new()
        };
        let mut results = output.results.into_iter();
        let mut outcomes: Vec<Outcome> = buildings
            .iter()
            .map(|b| match &b.position {
                Err(error) => Err(error.clone()),
                Ok(_) => results
                    .next()
                    .expect("one result per valid building")
                    .and_then(|p| self.scored(p)),
            })
            .collect();
        let registry_lookup_ms = self.registry.as_ref().map(|registry| {
            let looking = Instant::now();
            for (building, outcome) in buildings.iter().zip(&mut outcomes) {
                if let (Ok(at), Ok(scored)) = (&building.position, outcome) {
                    scored.registry = Some(registry.listing(*at));
                }
            }
            ms(looking.elapsed())
        });
        let cold_start = self.take_cold_start();
        let total = started.elapsed();
        let succeeded = outcomes.iter().filter(|o| o.is_ok()).count();
        let s = output.stats;
        let timing = Timing {
            total_ms: ms(total),
            download_ms: ms(s.download),
            decode_ms: ms(s.decode),
            inference_ms: ms(s.inference),
            model_load_ms: if cold_start { self.model_load_ms } else { 0.0 },
            cold_start,
            throughput_per_s: round2(succeeded as f64 / total.as_secs_f64().max(1e-9)),
            batches: s.batches,
            batch_size: self.pipeline.effective_batch_size(),
            images_fetched: s.images_fetched,
            cache_hits: s.cache_hits,
            range_requests: self.reads_ranges().then_some(s.range_requests),
            bytes_fetched: self.reads_ranges().then_some(s.bytes_fetched),
            batched_with: s.batched_with,
            registry_load_ms: self
                .registry
                .as_ref()
                .map(|r| if cold_start { r.info.load_ms } else { 0.0 }),
            registry_lookup_ms,
        };
        (outcomes, timing, chips)
    }

    /// Whether the imagery is read by byte ranges (GeoTIFFs), so answers count them.
    fn reads_ranges(&self) -> bool {
        !matches!(self.config.source, SourceSpec::Template(_))
    }

    /// The model, as init learnt it.
    pub fn model(&self) -> &Model {
        &self.pipeline.model
    }

    /// The sandbox's chip assembly (imagery and its limits), for tools that need the chips
    /// themselves (`bootstrap chips`).
    pub fn chip_maker(&self) -> &ChipMaker {
        &self.pipeline.chips
    }

    /// The registry, when `REGISTRY_URI` is set.
    pub fn registry(&self) -> Option<&Registry> {
        self.registry.as_ref()
    }

    /// True for the sandbox's first invocation only (the one that paid for init), whether it
    /// predicted or was refused.
    pub fn take_cold_start(&self) -> bool {
        self.cold.swap(false, Ordering::SeqCst)
    }

    /// The label(s) and score, or `inference_failed` when the model's row cannot be trusted:
    /// a row of another width than the labels (a model whose output width depends on its
    /// input) or non-finite values (NaN/∞ scores) would otherwise become a wrong label or a
    /// panic. The model's decision rule (threshold, argmax or multilabel) picks the label.
    fn scored(&self, probabilities: Vec<f32>) -> Outcome {
        let labels = &self.model_info.labels;
        if probabilities.len() != labels.len() {
            return Err(BuildingError::new(
                ErrorCode::InferenceFailed,
                format!(
                    "the model answered {} scores for this chip; it has {} labels",
                    probabilities.len(),
                    labels.len()
                ),
            ));
        }
        if probabilities.iter().any(|p| !p.is_finite()) {
            return Err(BuildingError::new(
                ErrorCode::InferenceFailed,
                "the model's output for this chip is not finite (NaN or infinite scores)",
            ));
        }
        Ok(self.pipeline.model.decision.decide(labels, probabilities))
    }
}

/// A model ready to run, and what loading it cost.
pub struct LoadedModel {
    pub model: Model,
    /// The S3 object's ETag, or the file's size and modification time.
    pub version: String,
    pub bytes: usize,
    pub fetch_ms: f64,
    /// Fetch and session, together.
    pub load_ms: f64,
}

/// Loads ONNX Runtime (once per process) and the model at `uri` (S3 or file) with `config`'s
/// model settings: what init does, and what `bootstrap inspect` and `compare` do without the
/// rest of the sandbox.
pub async fn load_model(config: &Config, uri: &BlobUri) -> Result<LoadedModel, StartupError> {
    let library = ort_library_path(config.ort_dylib_path.as_deref());
    let environment = onnx_runtime(&library).map_err(StartupError::OnnxRuntime)?;
    let started = Instant::now();
    let blob = crate::blob::load(uri, "model", config.model_load_timeout)
        .await
        .map_err(StartupError::ModelLoad)?;
    let fetch_ms = ms(started.elapsed());
    let options = ModelOptions {
        threads: config.inference.threads_per_session(),
        sessions: config.inference.sessions,
        settings: &config.model,
    };
    let model = Model::new(environment, &blob.bytes, &options)
        .map_err(|e| StartupError::Model(format!("model {uri}: {e}")))?;
    // The session holds its own copy of the weights; the downloaded bytes go when this returns.
    Ok(LoadedModel {
        model,
        version: blob.version,
        bytes: blob.bytes.len(),
        fetch_ms,
        load_ms: ms(started.elapsed()),
    })
}

/// `REGISTRY_POSITIVE_LABEL` must name one of the model's labels, or nothing would ever count
/// as flagged.
fn check_positive_label(positive: &str, labels: &[String]) -> Result<(), ConfigError> {
    if labels.iter().any(|l| l == positive) {
        return Ok(());
    }
    Err(ConfigError::new(
        "REGISTRY_POSITIVE_LABEL",
        positive,
        format!(
            "not one of the model's labels ({}): set it to the label that means \"flagged\", \
             or set MODEL_LABELS",
            labels.join(", ")
        ),
    ))
}
