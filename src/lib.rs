//! tilepredict: an AWS Lambda function that turns building coordinates into per-building
//! predictions from aerial imagery, with one ONNX model run in batches.
//!
//! # Layers
//!
//! Each module uses only modules of its own layer or below, and no two top-level modules import
//! each other, directly or around a loop. `scripts/check_layers.py` (run by `make test`) reads
//! this list and fails when the code leaves it.
//!
//! 1. **Front ends** — `main.rs` (arguments, runtime, init) starts one of: [`lambda`] (the
//!    Runtime API loop, one invocation at a time or, on Lambda Managed Instances, many; the
//!    init-error report), [`cli`] (local commands: one event, or a whole file of buildings with
//!    progress and a review page) or [`tools`] (the model tools: `inspect`, `metadata`,
//!    `chips`, `compare`).
//! 2. **One invocation** — [`handler`]: event in, answer out, within Lambda's response limit.
//! 3. **Caller shapes and reporting** — [`events`] (direct, GeoJSON, API Gateway, Step
//!    Functions: detect and parse), [`answer`] (outcomes → JSON), [`telemetry`] (the
//!    invocation's log line and EMF metrics line), [`files`] (building files of local runs:
//!    CSV, GeoJSON, JSON Lines in and out, resuming), [`review`] (the review page's cards and
//!    HTML).
//! 4. **The sandbox** — [`app`]: built once at init (model, imagery, registry), then
//!    `predict` per request.
//! 5. **Settings** — [`config`]: environment → a validated [`config::Config`] holding the
//!    settings types of the layers below; nothing below reads the environment.
//! 6. **Engines** — [`pipeline`] (positions → chips → batches, overlapped; one batcher for
//!    every request in flight), [`imagery`] (URL templates and GeoTIFFs: fetch, decode, stitch
//!    or warp, cache, one fetch per image in flight), [`model`] (what the model takes and
//!    answers, chips → its input tensor, a pool of ONNX Runtime sessions, raw output →
//!    probabilities → labels), [`registry`] (the known-buildings register).
//! 7. **Foundations** — [`outcome`] (what a run produces: outcomes, timing, model info),
//!    [`error`] (every error a caller or operator sees), [`request`] (building lists →
//!    buildings), [`geo`] and [`centroid`] (web-mercator and footprint math), [`chip_jpeg`]
//!    (chips as size-bounded JPEG, for people to look at), [`blob`] (files read at init from
//!    S3 or disk), [`secrets`],
//!    [`logging`], [`allocator`].
//!
//! docs/ARCHITECTURE.md has the code map, the life of one request through these modules, and
//! recipes for the usual changes.

pub mod allocator;
pub mod answer;
pub mod app;
pub mod blob;
pub mod centroid;
pub mod chip_jpeg;
pub mod cli;
pub mod config;
pub mod error;
pub mod events;
pub mod files;
pub mod geo;
pub mod handler;
pub mod imagery;
pub mod lambda;
pub mod logging;
pub mod model;
pub mod outcome;
pub mod pipeline;
pub mod registry;
pub mod request;
pub mod review;
pub mod secrets;
pub mod telemetry;
pub mod tools;
