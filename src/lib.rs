//! tilepredict: an AWS Lambda function that turns building coordinates into per-building
//! predictions from aerial imagery, with one ONNX model run in batches.
//!
//! `main.rs` only wires these together: `config` (environment → settings), `geo` (web
//! mercator), `imagery` (URLs, fetch, decode, stitch, cache), `preprocess` (pixels → tensor),
//! `model_source` + `model` (bytes → ONNX Runtime session), `pipeline` (the overlapped
//! fetch/infer loop), `request` (bodies → buildings), `app` (per-sandbox state),
//! `handler` (event shapes → answers), `invocation` (the runtime boundary: payload, response
//! limit, the per-invocation log and metrics lines), `logging`, `metrics` (EMF) and `secrets`
//! (configuration values that must never be printed).

pub mod app;
pub mod config;
pub mod error;
pub mod geo;
pub mod handler;
pub mod imagery;
pub mod invocation;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod model_source;
pub mod pipeline;
pub mod preprocess;
pub mod request;
pub mod secrets;
