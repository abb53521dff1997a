//! Environment variables → a typed, validated [`Config`] with the documented defaults.
//!
//! Parsing is a pure function of a lookup (`from_lookup`), so every default and every
//! rejection — the tile template's and the register's included — is unit-tested without
//! touching the process environment. It owns names, defaults and range checks, and builds the
//! settings types of the layers below (`SourceSpec`, `BlobUri`, `RegistrySettings`); those
//! layers never read the environment or import this module. It does not open files or reach
//! the network.

mod inference;
mod registry;
mod values;

pub use inference::{
    Inference, THREADS_PER_SESSION, default_inference_sessions, default_inference_threads,
    lambda_vcpus,
};

use std::path::PathBuf;
use std::time::Duration;

use crate::blob::BlobUri;
use crate::error::ConfigError;
use crate::imagery::source::SourceSpec;
use crate::model::settings::ModelSettings;
use crate::registry::RegistrySettings;
use crate::secrets::TileHeaders;
use values::{bands, decimal, headers, number};

/// Everything the function reads from its environment. Defaults are in docs/CONFIGURATION.md.
/// `Debug` is safe to log: `source` and `tile_headers` redact their secrets.
#[derive(Debug, Clone)]
pub struct Config {
    pub model_uri: BlobUri,
    /// The model settings given here (`MODEL_LABELS`, `OUTPUT_KIND`, `INPUT_*`, `CHIP_SIZE`,
    /// …); `None` where unset, so the model's metadata, then its shape, can decide.
    pub model: ModelSettings,
    /// `TILE_URL`, parsed: a template, a GeoTIFF or a mosaic index; prints with literal query
    /// values redacted.
    pub source: SourceSpec,
    pub tile_zoom: u8,
    /// `CHIP_GSD_M`: the chips' ground resolution in metres per pixel, instead of `TILE_ZOOM`'s.
    pub chip_gsd_m: Option<f64>,
    /// `BANDS`: a GeoTIFF's red, green and blue bands (1-based); `None` → the file's own.
    pub bands: Option<[u16; 3]>,
    pub batch_size: usize,
    pub max_concurrent_downloads: usize,
    pub max_buildings: usize,
    /// `MAX_BODY_BYTES`: largest API Gateway request body, as received.
    pub max_body_bytes: usize,
    /// Total ONNX Runtime threads (`INFERENCE_THREADS`, over all sessions).
    pub inference_threads: usize,
    /// `INFERENCE_SESSIONS` and `AWS_LAMBDA_MAX_CONCURRENCY`, with the threads above.
    pub inference: Inference,
    /// `FAULT_PANIC_ON_RGB`: the panic drill's colour; `None` (unset) in production.
    pub fault_panic_rgb: Option<[u8; 3]>,
    pub ort_dylib_path: Option<PathBuf>,
    pub download_timeout: Duration,
    pub download_retries: u32,
    pub max_image_bytes: usize,
    /// Warm tile cache budget in bytes (`TILE_CACHE_MB`); 0 disables it.
    pub tile_cache_bytes: usize,
    /// `TILE_HEADERS` (a JSON object of header → value); prints names only.
    pub tile_headers: TileHeaders,
    pub deadline_margin: Duration,
    pub metrics_namespace: String,
    /// `AWS_LAMBDA_FUNCTION_NAME` (set by Lambda; `local` elsewhere): the metrics' dimension.
    pub function_name: String,
    /// `REGISTRY_URI` and its settings; `None` when no registry is configured.
    pub registry: Option<RegistrySettings>,
    /// `MODEL_LOAD_TIMEOUT_MS`: the whole model load at init (S3 or file), retries included.
    pub model_load_timeout: Duration,
}

/// Lambda's limit on a synchronous invocation's payload (6 MiB): no body can be larger, so
/// `MAX_BODY_BYTES` can only lower it.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

impl Config {
    /// Reads the real process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds a config from any name → value lookup; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let required = |name: &'static str| {
            get(name).ok_or_else(|| {
                ConfigError::new(name, "", "is required (see README: Configuration)")
            })
        };

        let model_uri = BlobUri::parse("MODEL_URI", &required("MODEL_URI")?)?;
        let model = ModelSettings::parse(|key| get(key.env())).map_err(|e| ConfigError {
            name: e.key.env(),
            value: e.value,
            reason: e.reason,
        })?;
        let source = SourceSpec::parse(&required("TILE_URL")?).map_err(|e| ConfigError {
            name: "TILE_URL",
            value: e.template,
            reason: e.reason,
        })?;
        let tile_zoom = number("TILE_ZOOM", get("TILE_ZOOM"), 19u8, 0..=24)?;
        let chip_gsd_m = decimal("CHIP_GSD_M", get("CHIP_GSD_M"), 0.01..=1000.0)?;
        let bands = bands(get("BANDS"), crate::imagery::geotiff::header::MAX_BANDS)?;
        if bands.is_some() && source.template().is_some() {
            return Err(ConfigError::new(
                "BANDS",
                &get("BANDS").unwrap_or_default(),
                "applies to GeoTIFF sources only (TILE_URL names a tile template)",
            ));
        }
        // Both defaults were chosen by `make bench`'s sweep (docs/PERFORMANCE.md, "Why the
        // defaults are what they are").
        let batch_size = number("BATCH_SIZE", get("BATCH_SIZE"), 32usize, 1..=1024)?;
        let max_concurrent_downloads = number(
            "MAX_CONCURRENT_DOWNLOADS",
            get("MAX_CONCURRENT_DOWNLOADS"),
            100usize,
            1..=1024,
        )?;
        let max_buildings = number(
            "MAX_BUILDINGS",
            get("MAX_BUILDINGS"),
            1000usize,
            1..=100_000,
        )?;
        let max_body_bytes = number(
            "MAX_BODY_BYTES",
            get("MAX_BODY_BYTES"),
            MAX_PAYLOAD_BYTES,
            1024..=MAX_PAYLOAD_BYTES,
        )?;
        let available = std::thread::available_parallelism().map_or(1, |n| n.get());
        let inference = Inference::from_lookup(&get, available)?;
        let download_timeout = Duration::from_millis(number(
            "DOWNLOAD_TIMEOUT_MS",
            get("DOWNLOAD_TIMEOUT_MS"),
            10_000u64,
            1..=900_000,
        )?);
        let download_retries = number("DOWNLOAD_RETRIES", get("DOWNLOAD_RETRIES"), 2u32, 0..=10)?;
        let max_image_bytes = number(
            "MAX_IMAGE_BYTES",
            get("MAX_IMAGE_BYTES"),
            8 * 1024 * 1024usize,
            1024..=256 * 1024 * 1024,
        )?;
        let tile_cache_mb = number("TILE_CACHE_MB", get("TILE_CACHE_MB"), 256usize, 0..=10_240)?;
        let tile_headers = match get("TILE_HEADERS") {
            Some(raw) => TileHeaders::new(headers(&raw)?),
            None => TileHeaders::default(),
        };
        let deadline_margin = Duration::from_millis(number(
            "DEADLINE_MARGIN_MS",
            get("DEADLINE_MARGIN_MS"),
            500u64,
            0..=60_000,
        )?);
        let model_load_timeout = Duration::from_millis(number(
            "MODEL_LOAD_TIMEOUT_MS",
            get("MODEL_LOAD_TIMEOUT_MS"),
            crate::blob::DEFAULT_LOAD_TIMEOUT.as_millis() as u64,
            100..=900_000,
        )?);
        Ok(Self {
            model_uri,
            model,
            source,
            tile_zoom,
            chip_gsd_m,
            bands,
            batch_size,
            max_concurrent_downloads,
            max_buildings,
            max_body_bytes,
            inference_threads: inference.threads,
            inference,
            fault_panic_rgb: inference::fault_panic_rgb(get("FAULT_PANIC_ON_RGB"))?,
            ort_dylib_path: get("ORT_DYLIB_PATH").map(PathBuf::from),
            download_timeout,
            download_retries,
            max_image_bytes,
            tile_cache_bytes: tile_cache_mb * 1024 * 1024,
            tile_headers,
            deadline_margin,
            metrics_namespace: get("METRICS_NAMESPACE")
                .unwrap_or_else(|| "tilepredict".to_string()),
            function_name: get("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| "local".to_string()),
            registry: registry::settings(&get)?,
            model_load_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::LatLon;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    const BASE: [(&str, &str); 2] = [
        ("MODEL_URI", "s3://models/roof.onnx"),
        ("TILE_URL", "https://t/{z}/{x}/{y}.png"),
    ];

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = config(&BASE).unwrap();
        assert_eq!(
            c.model_uri,
            BlobUri::S3 {
                bucket: "models".into(),
                key: "roof.onnx".into()
            }
        );
        assert_eq!(
            (
                c.tile_zoom,
                c.batch_size,
                c.max_concurrent_downloads,
                c.max_buildings
            ),
            (19, 32, 100, 1000)
        );
        assert_eq!(c.model, ModelSettings::default(), "the model decides");
        assert_eq!(c.download_timeout, Duration::from_secs(10));
        assert_eq!(c.download_retries, 2);
        assert_eq!(c.max_image_bytes, 8 << 20);
        assert_eq!(c.max_body_bytes, 6 << 20);
        assert_eq!(c.tile_cache_bytes, 256 << 20);
        assert_eq!(c.deadline_margin, Duration::from_millis(500));
        assert_eq!(c.metrics_namespace, "tilepredict");
        assert_eq!(c.function_name, "local");
        assert_eq!(c.model_load_timeout, Duration::from_secs(8));
        assert!(c.inference_threads >= 1);
    }

    #[test]
    fn required_variables_are_named_when_missing() {
        let err = config(&[("TILE_URL", "x")]).unwrap_err();
        assert_eq!(err.name, "MODEL_URI");
        let err = config(&[("MODEL_URI", "/m.onnx")]).unwrap_err();
        assert_eq!(err.name, "TILE_URL");
    }

    #[test]
    fn model_settings_are_read_and_errors_name_the_variable() {
        let c = config(&[
            BASE[0],
            BASE[1],
            ("INPUT_MEAN", "0.485, 0.456,0.406"),
            ("INPUT_STD", "0.5"),
            ("OUTPUT_KIND", "sigmoid"),
            ("CHIP_SIZE", "96"),
        ])
        .unwrap();
        assert_eq!(c.model.input_mean, Some([0.485, 0.456, 0.406]));
        assert_eq!(c.model.input_std, Some([0.5; 3]));
        assert_eq!(c.model.chip_size, Some(96));
        assert_eq!(
            c.model.output_kind,
            Some(crate::model::settings::OutputKind::Sigmoid)
        );
        for (name, value) in [
            ("INPUT_MEAN", "1,2"),
            ("INPUT_STD", "0"),
            ("INPUT_MEAN", "nan"),
            ("POSITIVE_THRESHOLD", "1.5"),
            ("INPUT_LAYOUT", "hwc"),
            ("CHIP_SIZE", "4"),
        ] {
            let err = config(&[BASE[0], BASE[1], (name, value)]).unwrap_err();
            assert_eq!((err.name, err.value.as_str()), (name, value), "{err}");
        }
    }

    #[test]
    fn numbers_out_of_range_are_rejected_with_the_range() {
        let err = config(&[BASE[0], BASE[1], ("BATCH_SIZE", "0")]).unwrap_err();
        assert_eq!(err.name, "BATCH_SIZE");
        assert!(err.reason.contains("1..=1024"), "{err}");
        assert!(config(&[BASE[0], BASE[1], ("TILE_ZOOM", "abc")]).is_err());
        assert!(config(&[BASE[0], BASE[1], ("TILE_ZOOM", "25")]).is_err());
        // Lambda refuses payloads over 6 MiB: a higher body limit would be a promise we break.
        let err = config(&[BASE[0], BASE[1], ("MAX_BODY_BYTES", "7000000")]).unwrap_err();
        assert_eq!(err.name, "MAX_BODY_BYTES");
        let c = config(&[BASE[0], BASE[1], ("MAX_BODY_BYTES", "2048")]).unwrap();
        assert_eq!(c.max_body_bytes, 2048);
        assert_eq!(
            config(&[BASE[0], BASE[1], ("TILE_CACHE_MB", "0")])
                .unwrap()
                .tile_cache_bytes,
            0
        );
    }

    #[test]
    fn labels_are_split_and_trimmed() {
        let c = config(&[BASE[0], BASE[1], ("MODEL_LABELS", "other, asbestos")]).unwrap();
        assert_eq!(
            c.model.labels,
            Some(vec!["other".to_string(), "asbestos".to_string()])
        );
        assert!(config(&[BASE[0], BASE[1], ("MODEL_LABELS", "a,,b")]).is_err());
    }

    #[test]
    fn tile_headers_are_a_json_object_and_never_echoed_in_errors() {
        let c = config(&[
            BASE[0],
            BASE[1],
            (
                "TILE_HEADERS",
                r#"{"Referer":"https://x.org","X-Key":"s3cret"}"#,
            ),
        ])
        .unwrap();
        assert_eq!(c.tile_headers.len(), 2);
        let shown = format!("{c:?}");
        assert!(
            shown.contains("X-Key") && !shown.contains("s3cret"),
            "{shown}"
        );
        let err = config(&[
            BASE[0],
            BASE[1],
            ("TILE_HEADERS", "Authorization: Bearer s3cret"),
        ])
        .unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn debug_output_shows_no_key_from_tile_url_or_tile_headers() {
        let c = config(&[
            BASE[0],
            ("TILE_URL", "https://t/{z}/{x}/{y}.png?key=url-s3cret"),
            ("TILE_HEADERS", r#"{"Authorization":"Bearer hdr-s3cret"}"#),
        ])
        .unwrap();
        let shown = format!("{c:?} {c:#?}");
        assert!(
            shown.contains("key=…") && shown.contains("Authorization"),
            "{shown}"
        );
        assert!(!shown.contains("s3cret"), "{shown}");
        // The key is still in the URLs the template makes: only its printing is redacted.
        let window = crate::geo::ChipWindow::centred_on(LatLon::new(52.0, 21.0).unwrap(), 19, 64);
        let url = &c.source.template().unwrap().plan(&window)[0].url;
        assert!(url.ends_with(".png?key=url-s3cret"), "{url}");
    }

    #[test]
    fn tile_url_errors_name_the_variable_and_redact_keys() {
        let err = config(&[BASE[0], ("TILE_URL", "https://t/{z}/{x}.png?key=s3cret")]).unwrap_err();
        assert_eq!(err.name, "TILE_URL");
        assert!(err.reason.contains("needs {z}, {x} and {y}"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let err = config(&[BASE[0], ("TILE_URL", "ftp://t/{z}/{x}/{y}")]).unwrap_err();
        assert!(err.reason.contains("must start with"), "{err}");
    }

    #[test]
    fn tile_url_names_a_template_a_geotiff_or_a_mosaic_and_each_mistake_is_named() {
        use crate::imagery::geotiff::Location;
        let c = config(&[BASE[0], ("TILE_URL", "s3://ortho/pl/sheet.tif")]).unwrap();
        assert_eq!(
            c.source,
            SourceSpec::GeoTiff(Location::S3 {
                bucket: "ortho".into(),
                key: "pl/sheet.tif".into()
            })
        );
        let c = config(&[BASE[0], ("TILE_URL", "https://h/stac/items.json")]).unwrap();
        assert!(matches!(c.source, SourceSpec::Mosaic(_)));
        for (raw, needle) in [
            ("s3://b/{z}/{x}/{y}.png", "not a template"),
            ("https://h/tile.png", "does not name a GeoTIFF"),
            ("s3://b/.tif", "needs a bucket and a key"),
            ("file://rel/x.tif", "absolute path"),
            ("gs://b/x.tif", "must start with"),
        ] {
            let err = config(&[BASE[0], ("TILE_URL", raw)]).unwrap_err();
            assert_eq!(err.name, "TILE_URL");
            assert!(err.reason.contains(needle), "{raw}: {err}");
        }
    }

    #[test]
    fn chip_gsd_m_and_bands_are_checked() {
        let tif = ("TILE_URL", "file:///data/naip.tif");
        let c = config(&[BASE[0], tif, ("CHIP_GSD_M", "0.6"), ("BANDS", "4, 3,2")]).unwrap();
        assert_eq!((c.chip_gsd_m, c.bands), (Some(0.6), Some([4, 3, 2])));
        assert_eq!(config(&BASE).unwrap().chip_gsd_m, None);
        for (name, value, needle) in [
            ("CHIP_GSD_M", "0", "0.01..=1000"),
            ("CHIP_GSD_M", "fine", "0.01..=1000"),
            ("BANDS", "1,2", "three band numbers"),
            ("BANDS", "0,1,2", "each 1..=16"),
            ("BANDS", "1,2,99", "each 1..=16"),
        ] {
            let err = config(&[BASE[0], tif, (name, value)]).unwrap_err();
            assert_eq!(err.name, name);
            assert!(err.reason.contains(needle), "{err}");
        }
        let err = config(&[BASE[0], BASE[1], ("BANDS", "1,2,3")]).unwrap_err();
        assert!(err.reason.contains("GeoTIFF sources only"), "{err}");
    }
}
