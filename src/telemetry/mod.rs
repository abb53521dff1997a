//! What the operator sees when an invocation ends: one JSON log line and one EMF metrics line
//! ([`emf`]), whatever the event shape and whether the request was answered or refused.
//!
//! The handler reports each prediction run through [`record`], which adds it to a task-local
//! tally of the invocation being observed: event shapes never thread a report through, and
//! invocations observed concurrently (in-process tests) never mix counts. A shape that answers
//! a refused request with a value (an API Gateway 4xx) rather than an `Err` reports the refusal
//! with [`record_refused`], so it is logged and counted as one.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub mod emf;

use serde_json::{Value, json};

use crate::app::App;
use crate::error::{ErrorCode, RequestError};
use crate::outcome::{Outcome, Timing, ms};
use emf::{Metric, document};

tokio::task_local! {
    static TALLY: Arc<Mutex<Tally>>;
}

/// What the invocation predicted, summed over its prediction runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Set by the first `predict`; `None` when the request was refused before predicting.
    pub cold_start: Option<bool>,
    pub predictions: usize,
    pub failed: usize,
    /// Failed buildings by error code.
    pub errors: BTreeMap<&'static str, usize>,
    pub predict_ms: f64,
    pub download_ms: f64,
    pub decode_ms: f64,
    pub inference_ms: f64,
    pub batches: usize,
    pub images_fetched: usize,
    pub cache_hits: usize,
    /// Other requests whose chips shared this invocation's batches (Managed Instances).
    pub batched_with: usize,
    /// A refusal answered as a value (see [`record_refused`]).
    pub refused: Option<RequestError>,
}

impl Tally {
    fn add(&mut self, timing: &Timing, outcomes: &[Outcome]) {
        self.cold_start = Some(self.cold_start.unwrap_or(false) || timing.cold_start);
        for outcome in outcomes {
            match outcome {
                Ok(_) => self.predictions += 1,
                Err(error) => {
                    self.failed += 1;
                    *self.errors.entry(error.code.as_str()).or_default() += 1;
                }
            }
        }
        self.predict_ms += timing.total_ms;
        self.download_ms += timing.download_ms;
        self.decode_ms += timing.decode_ms;
        self.inference_ms += timing.inference_ms;
        self.batches += timing.batches;
        self.images_fetched += timing.images_fetched;
        self.cache_hits += timing.cache_hits;
        self.batched_with += timing.batched_with;
    }

    fn count(&self, codes: &[ErrorCode]) -> usize {
        codes
            .iter()
            .map(|c| self.errors.get(c.as_str()).copied().unwrap_or(0))
            .sum()
    }

    /// `code=n` pairs, for the log line.
    fn errors_text(&self) -> String {
        let pairs: Vec<String> = self
            .errors
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        pairs.join(",")
    }
}

/// Adds one prediction run's outcomes to the invocation being observed; does nothing outside
/// one (tools, tests calling `App::predict` directly).
pub fn record(timing: &Timing, outcomes: &[Outcome]) {
    let _ = TALLY.try_with(|tally| {
        if let Ok(mut tally) = tally.lock() {
            tally.add(timing, outcomes);
        }
    });
}

/// Marks the invocation being observed as refused although its answer is a value (an API
/// Gateway 4xx response): it is then logged and measured as the refusal it is.
pub fn record_refused(error: &RequestError) {
    let _ = TALLY.try_with(|tally| {
        if let Ok(mut tally) = tally.lock() {
            tally.refused = Some(error.clone());
        }
    });
}

/// Where the EMF line goes: stdout on Lambda (CloudWatch reads it from the log stream), stderr
/// for `bootstrap invoke`, whose stdout is the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsSink {
    Stdout,
    Stderr,
}

/// Watches invocations; one per process.
#[derive(Debug, Clone)]
pub struct Observer {
    namespace: String,
    function_name: String,
    sink: MetricsSink,
}

/// One finished invocation, as logged and measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report<'a> {
    pub request_id: &'a str,
    pub cold_start: bool,
    /// Wall time of the whole invocation, parse and answer included.
    pub duration_ms: f64,
    /// Time left before Lambda's deadline when the answer was ready.
    pub remaining_ms: Option<f64>,
    /// Why the request was refused, if it was (an `Err`, or a recorded refusal).
    pub error: Option<RequestError>,
    pub tally: Tally,
}

impl Observer {
    /// `namespace` is `METRICS_NAMESPACE`; `function_name` becomes the `FunctionName` dimension.
    pub fn new(
        namespace: impl Into<String>,
        function_name: impl Into<String>,
        sink: MetricsSink,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            function_name: function_name.into(),
            sink,
        }
    }

    /// Runs one invocation's `work` and writes the invocation's log line and metrics line.
    pub async fn observe<F>(
        &self,
        app: &App,
        request_id: &str,
        deadline: Option<SystemTime>,
        work: F,
    ) -> Result<Value, RequestError>
    where
        F: Future<Output = Result<Value, RequestError>>,
    {
        let started = Instant::now();
        let tally = Arc::new(Mutex::new(Tally::default()));
        let work = TALLY.scope(Arc::clone(&tally), work);
        let result = crate::logging::for_request(request_id, work).await;
        let tally = tally.lock().map(|t| t.clone()).unwrap_or_default();
        let report = Report {
            request_id,
            // A refused first request is still the cold one: the next must not claim it.
            cold_start: tally.cold_start.unwrap_or_else(|| app.take_cold_start()),
            duration_ms: ms(started.elapsed()),
            remaining_ms: deadline.map(|d| match d.duration_since(SystemTime::now()) {
                Ok(left) => ms(left),
                Err(past) => -ms(past.duration()),
            }),
            error: result.as_ref().err().or(tally.refused.as_ref()).cloned(),
            tally,
        };
        report.log();
        self.write(&self.metrics_line(&report, epoch_ms()));
        result
    }

    /// The invocation's EMF document. Pipeline timings are left out of refused requests, so
    /// they do not drag the averages towards zero.
    pub fn metrics_line(&self, report: &Report<'_>, timestamp_ms: u64) -> String {
        let t = &report.tally;
        let mut metrics = vec![
            Metric::ms("TotalMs", report.duration_ms),
            Metric::count("Predictions", t.predictions),
            Metric::count("Failed", t.failed),
            Metric::count("DeadlineExceeded", t.count(&[ErrorCode::DeadlineExceeded])),
            Metric::count("InferenceFailed", t.count(&[ErrorCode::InferenceFailed])),
            Metric::count(
                "ImageFailed",
                t.count(&[ErrorCode::ImageUnavailable, ErrorCode::ImageInvalid]),
            ),
            Metric::count(
                "InvalidInput",
                t.count(&[
                    ErrorCode::InvalidBuilding,
                    ErrorCode::InvalidCoordinates,
                    ErrorCode::InvalidGeometry,
                ]),
            ),
            Metric::count("RequestErrors", usize::from(report.error.is_some())),
            Metric::count("ColdStart", usize::from(report.cold_start)),
        ];
        if t.cold_start.is_some() {
            metrics.extend([
                Metric::ms("DownloadMs", t.download_ms),
                Metric::ms("InferenceMs", t.inference_ms),
                Metric::count("ImagesFetched", t.images_fetched),
                Metric::count("CacheHits", t.cache_hits),
                Metric::count("BatchedWith", t.batched_with),
            ]);
        }
        document(
            &self.namespace,
            &[("FunctionName", &self.function_name)],
            &metrics,
            &[
                ("requestId", json!(report.request_id)),
                ("outcome", json!(report.outcome())),
            ],
            timestamp_ms,
        )
    }

    fn write(&self, line: &str) {
        let written = match self.sink {
            MetricsSink::Stdout => writeln!(std::io::stdout().lock(), "{line}"),
            MetricsSink::Stderr => writeln!(std::io::stderr().lock(), "{line}"),
        };
        if let Err(e) = written {
            tracing::warn!("could not write the metrics line: {e}");
        }
    }
}

impl Report<'_> {
    /// `answered`, or the refusal's `errorType`.
    pub fn outcome(&self) -> &'static str {
        self.error
            .as_ref()
            .map_or("answered", RequestError::error_type)
    }

    /// The invocation's one log line: `info` when answered, `warn` when the caller's request
    /// was refused, `error` for our own faults.
    fn log(&self) {
        let t = &self.tally;
        let error = self.error.as_ref().map(ToString::to_string);
        macro_rules! line {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    requestId = self.request_id,
                    outcome = self.outcome(),
                    error = error.as_deref(),
                    cold_start = self.cold_start,
                    buildings = t.predictions + t.failed,
                    predictions = t.predictions,
                    failed = t.failed,
                    errors = %t.errors_text(),
                    duration_ms = self.duration_ms,
                    remaining_ms = self.remaining_ms,
                    total_ms = t.predict_ms,
                    download_ms = t.download_ms,
                    decode_ms = t.decode_ms,
                    inference_ms = t.inference_ms,
                    batches = t.batches,
                    images_fetched = t.images_fetched,
                    cache_hits = t.cache_hits,
                    batched_with = t.batched_with,
                    "invocation done"
                )
            };
        }
        match &self.error {
            None => line!(tracing::Level::INFO),
            Some(RequestError::Internal(_)) => line!(tracing::Level::ERROR),
            Some(_) => line!(tracing::Level::WARN),
        }
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::BuildingError;

    fn report(error: Option<RequestError>, tally: Tally) -> Report<'static> {
        Report {
            request_id: "req-7",
            cold_start: true,
            duration_ms: 42.5,
            remaining_ms: Some(1000.0),
            error,
            tally,
        }
    }

    #[test]
    fn the_tally_counts_outcomes_by_code_and_sums_timings() {
        let mut tally = Tally::default();
        let timing = Timing {
            total_ms: 10.0,
            download_ms: 4.0,
            inference_ms: 3.0,
            cold_start: true,
            images_fetched: 5,
            cache_hits: 1,
            batches: 2,
            ..Timing::default()
        };
        let deadline = BuildingError::new(ErrorCode::DeadlineExceeded, "late");
        let outcomes: Vec<Outcome> = vec![Err(deadline.clone()), Err(deadline)];
        tally.add(&timing, &outcomes);
        tally.add(
            &Timing {
                cold_start: false,
                ..timing.clone()
            },
            &[],
        );
        assert_eq!(tally.cold_start, Some(true));
        assert_eq!((tally.predictions, tally.failed), (0, 2));
        assert_eq!(tally.errors_text(), "deadline_exceeded=2");
        assert_eq!((tally.predict_ms, tally.images_fetched), (20.0, 10));
    }

    #[test]
    fn metrics_of_an_answered_and_a_refused_invocation() {
        let observer = Observer::new("ns", "fn", MetricsSink::Stderr);
        let mut tally = Tally {
            cold_start: Some(true),
            predictions: 3,
            failed: 2,
            download_ms: 7.0,
            images_fetched: 4,
            ..Tally::default()
        };
        tally.errors.insert("image_unavailable", 1);
        tally.errors.insert("image_invalid", 1);
        let answered: Value =
            serde_json::from_str(&observer.metrics_line(&report(None, tally), 5)).unwrap();
        let names: Vec<&str> = answered["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        for name in [
            "TotalMs",
            "DownloadMs",
            "InferenceMs",
            "ImagesFetched",
            "CacheHits",
            "BatchedWith",
        ] {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
        assert_eq!(
            (
                &answered["Predictions"],
                &answered["Failed"],
                &answered["ImageFailed"]
            ),
            (&json!(3.0), &json!(2.0), &json!(2.0))
        );
        assert_eq!(
            (&answered["ColdStart"], &answered["RequestErrors"]),
            (&json!(1.0), &json!(0.0))
        );
        assert_eq!(
            (&answered["outcome"], &answered["requestId"]),
            (&json!("answered"), &json!("req-7"))
        );

        let refused = RequestError::TooManyBuildings { count: 5, limit: 2 };
        let line: Value = serde_json::from_str(
            &observer.metrics_line(&report(Some(refused), Tally::default()), 5),
        )
        .unwrap();
        assert_eq!(line["RequestErrors"], 1.0);
        assert_eq!(line["outcome"], "TooManyBuildings");
        assert!(line.get("DownloadMs").is_none(), "{line}");
    }

    #[test]
    fn a_refusal_answered_as_a_value_is_recorded_and_nothing_leaks_outside_a_scope() {
        record_refused(&RequestError::Invalid("outside any invocation".into()));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(TALLY.scope(Arc::clone(&tally), async {
            record_refused(&RequestError::TooManyBuildings { count: 9, limit: 2 });
        }));
        let refused = tally.lock().unwrap().refused.clone();
        assert_eq!(
            refused,
            Some(RequestError::TooManyBuildings { count: 9, limit: 2 })
        );
        let report = report(refused, Tally::default());
        assert_eq!(report.outcome(), "TooManyBuildings");
    }
}
