//! The integration tests, built as one binary: the AWS SDK and the test servers are linked
//! once, and `support` is compiled once, so everything in it has a user.
//!
//! Each module is one area, and its first lines say how it runs:
//! - **in-process**: the library called directly (`App::init`, `handler::handle`, the imagery
//!   fetcher, the S3 loader, the ONNX reader) against loopback servers: `core_pipeline`,
//!   `imagery`, `model_graph`, `model_source`, `properties`, `support_selftest`;
//! - **through `bootstrap`**: the real binary as a child process under the Runtime API emulator
//!   (`support::runtime`), one process per test, as Lambda gives each sandbox its own: every
//!   other module, except `model_tools`, which runs `bootstrap`'s local commands as a user
//!   does, and `predict_cli` and `review_browser`, which run `bootstrap predict` as a user does
//!   (`support::batch`), the latter then opening its page in a real browser.
//!
//! The tests share this process, two at a time by default (libtest's `--test-threads` is the
//! number of CPUs), so none may change what the process shares:
//! - the environment: `model_source` must set it (the S3 client reads it once per process), so
//!   it runs alone in a child copy of this binary (`rusty_fork`);
//! - ONNX Runtime's one environment per process, which `model::onnx_runtime` creates on first
//!   use and shares: every in-process test loads the same library (`ORT_DYLIB_PATH`), and a
//!   test of a missing library must run `bootstrap` (as `lambda_e2e` does);
//! - no test installs a global tracing subscriber or measures this process's own memory or CPU
//!   time: memory and CPU are read from the `bootstrap` children.
//!
//! Run one area with `cargo test --test it MODULE::`, e.g. `cargo test --test it registry::`.

mod support;

mod bad_input_lambda;
mod callers;
mod chips_lambda;
mod core_pipeline;
mod deadline_lambda;
mod faults_lambda;
mod geotiff;
mod geotiff_lambda;
mod imagery;
mod imagery_lambda;
mod lambda_e2e;
mod managed_lambda;
mod model_graph;
mod model_source;
mod model_tools;
mod models_lambda;
mod operability_lambda;
mod predict_cli;
mod properties;
mod registry;
mod review_browser;
mod security_lambda;
mod soak;
mod support_selftest;
