//! tilepredict: an AWS Lambda function that turns building coordinates into per-building
//! predictions from aerial imagery, with one ONNX model run in batches.
//!
//! `main.rs` only wires these together: `config` (environment → settings, with `secrets` for
//! values that must never be printed), `geo` (web mercator), `imagery` (URLs, fetch, decode,
//! stitch, cache), `preprocess` (pixels → tensor), `source` + `model` (bytes → ONNX Runtime
//! session), `pipeline` (the overlapped fetch/infer loop), `registry` (the known-buildings
//! register each prediction is checked against), `request` (building lists → buildings),
//! `app` (per-sandbox state), `events` (event shapes: direct, GeoJSON, API Gateway, Step
//! Functions; with `centroid` for footprints), `answer` (outcomes → JSON), `handler` (one
//! invocation, end to end), `invocation` (the runtime boundary: payload, response limit, the
//! per-invocation log and metrics lines), `logging` and `metrics` (EMF).

pub mod allocator;
pub mod answer;
pub mod app;
pub mod centroid;
pub mod config;
pub mod error;
pub mod events;
pub mod geo;
pub mod handler;
pub mod imagery;
pub mod invocation;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod preprocess;
pub mod registry;
pub mod request;
pub mod secrets;
pub mod source;
