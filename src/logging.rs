//! Logs: one JSON object per line on stderr, through `tracing`.
//!
//! Each line has `timestamp` (RFC 3339) and `level`, which is what Lambda's JSON log format
//! needs to filter by level, and CloudWatch Logs Insights finds every other field on its own.
//! Lines written during an invocation carry lambda_runtime's span (`span.requestId`).
//!
//! lambda_runtime also logs every handler error at `ERROR` as a Rust `Debug` dump; the
//! invocation's own line already reports refused requests (at `WARN`: they are the caller's
//! fault), so that duplicate is dropped. Its line for a panicking handler is kept.
//!
//! Work shared between invocations (a batch holding several requests' chips, an image fetched
//! once for several) runs outside any one invocation's span: the batcher names the requests in
//! a `batch` span of its own (`span.requestIds`), and reads them from [`request_id`], which the
//! invocation's observer sets with [`for_request`]. A panic is logged as one JSON line in the
//! span it happened in, not as the standard library's plain text.
//!
//! The filter: Lambda's own log-level control (`AWS_LAMBDA_LOG_LEVEL`, set when the function's
//! application log level is configured) wins, as it does in AWS's own runtimes, because Lambda
//! drops lines below it anyway; else `RUST_LOG` (which may name targets); else `info`. Lines are
//! JSON whatever `AWS_LAMBDA_LOG_FORMAT` says: in `Text` mode Lambda passes them through as they
//! are, in `JSON` mode it reads their `level`.

use std::future::Future;
use std::sync::Arc;

use tracing::Metadata;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

tokio::task_local! {
    static REQUEST_ID: Arc<str>;
}

/// Runs `work` as invocation `request_id`: [`request_id`] answers it inside.
pub async fn for_request<F: Future>(request_id: &str, work: F) -> F::Output {
    REQUEST_ID.scope(Arc::from(request_id), work).await
}

/// The id of the invocation the current task works for; `None` outside one (tools, tests).
pub fn request_id() -> Option<Arc<str>> {
    REQUEST_ID.try_with(Arc::clone).ok()
}

/// Where lambda_runtime logs a handler's error (`{error:?}`) or panic (with an `error` field).
const RUNTIME_ERROR_TARGET: &str = "lambda_runtime::layers::panic";

/// Where the filter came from, for the start-up line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter {
    pub directives: String,
    pub source: &'static str,
}

/// The filter for `AWS_LAMBDA_LOG_LEVEL` and `RUST_LOG` (unset or empty → `None`). An unusable
/// value is skipped, so a typo never silences the function.
pub fn filter(lambda_level: Option<&str>, rust_log: Option<&str>) -> LogFilter {
    if let Some(level) = present(lambda_level).and_then(lambda_level_directive) {
        return LogFilter {
            directives: level.to_string(),
            source: "AWS_LAMBDA_LOG_LEVEL",
        };
    }
    if let Some(rust_log) = present(rust_log)
        && EnvFilter::try_new(rust_log).is_ok()
    {
        return LogFilter {
            directives: rust_log.to_string(),
            source: "RUST_LOG",
        };
    }
    LogFilter {
        directives: "info".into(),
        source: "default",
    }
}

fn present(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// Lambda's levels (`TRACE` … `FATAL`) as a `tracing` level; `FATAL` is `error`, the highest.
fn lambda_level_directive(level: &str) -> Option<&'static str> {
    match level.to_ascii_uppercase().as_str() {
        "TRACE" => Some("trace"),
        "DEBUG" => Some("debug"),
        "INFO" => Some("info"),
        "WARN" | "WARNING" => Some("warn"),
        "ERROR" | "FATAL" => Some("error"),
        _ => None,
    }
}

/// Installs the JSON subscriber for the process, from the real environment.
pub fn init() {
    init_with_default("info");
}

/// [`init`], with `default` as the level when the environment sets none (a local command
/// that talks to a person logs less than a function).
pub fn init_with_default(default: &str) {
    let var = |name: &str| std::env::var(name).ok();
    let mut chosen = filter(
        var("AWS_LAMBDA_LOG_LEVEL").as_deref(),
        var("RUST_LOG").as_deref(),
    );
    if chosen.source == "default" {
        chosen.directives = default.to_string();
    }
    let json = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(std::io::stderr);
    tracing_subscriber::registry()
        .with(EnvFilter::new(&chosen.directives))
        .with(filter_fn(|meta| !is_runtime_error_dump(meta)))
        .with(json)
        .init();
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic without a message");
        let location = info.location().map(ToString::to_string);
        tracing::error!(
            panic = message,
            location = location.as_deref(),
            "a thread panicked"
        );
    }));
    tracing::debug!(filter = %chosen.directives, source = chosen.source, "logging ready");
}

/// lambda_runtime's `ERROR` dump of a handler's error, as opposed to its panic report.
fn is_runtime_error_dump(meta: &Metadata<'_>) -> bool {
    meta.is_event()
        && meta.target() == RUNTIME_ERROR_TARGET
        && meta.fields().field("error").is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_id_is_known_inside_its_scope_only() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(request_id(), None);
        let inside = runtime.block_on(for_request("req-1", async { request_id() }));
        assert_eq!(inside.as_deref(), Some("req-1"));
        assert_eq!(request_id(), None);
    }

    #[test]
    fn lambda_level_wins_then_rust_log_then_info() {
        let f = filter(Some("DEBUG"), Some("tilepredict=trace"));
        assert_eq!(
            (f.directives.as_str(), f.source),
            ("debug", "AWS_LAMBDA_LOG_LEVEL")
        );
        let f = filter(None, Some("tilepredict=trace,warn"));
        assert_eq!(
            (f.directives.as_str(), f.source),
            ("tilepredict=trace,warn", "RUST_LOG")
        );
        let f = filter(Some(""), Some(" "));
        assert_eq!((f.directives.as_str(), f.source), ("info", "default"));
    }

    #[test]
    fn every_lambda_level_maps_and_unknown_ones_fall_through() {
        for (lambda, tracing) in [
            ("TRACE", "trace"),
            ("debug", "debug"),
            ("INFO", "info"),
            ("WARN", "warn"),
            ("ERROR", "error"),
            ("FATAL", "error"),
        ] {
            assert_eq!(filter(Some(lambda), None).directives, tracing, "{lambda}");
        }
        assert_eq!(filter(Some("LOUD"), Some("warn")).directives, "warn");
        assert_eq!(filter(None, Some("tilepredict=loud")).source, "default");
    }
}
