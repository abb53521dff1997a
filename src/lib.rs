//! tilepredict: an AWS Lambda function that turns building coordinates into per-building
//! predictions from aerial imagery, with one ONNX model run in batches.
//!
//! `main.rs` only wires these together: `config` (environment → settings), `geo` (web
//! mercator), `imagery` (URLs, fetch, decode, stitch, cache), `preprocess` (pixels → tensor),
//! `source` + `model` (bytes → ONNX Runtime session), `pipeline` (the overlapped
//! fetch/infer loop), `registry` (the known-buildings register each prediction is checked
//! against), `request` (bodies → buildings), `app` (per-sandbox state) and `handler` (event
//! shapes → answers).

pub mod app;
pub mod config;
pub mod error;
pub mod geo;
pub mod handler;
pub mod imagery;
pub mod model;
pub mod pipeline;
pub mod preprocess;
pub mod registry;
pub mod request;
pub mod source;
