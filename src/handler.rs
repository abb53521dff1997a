//! One invocation, end to end: name the event's shape ([`events::detect`]), take the request
//! out of its envelope, run [`App::predict`], report it to [`telemetry`], and answer in the
//! caller's shape, within Lambda's response limit.
//!
//! What goes back where: direct invokes, GeoJSON and Step Functions batches get the answer as
//! the invocation's result, or a Lambda error with a readable `errorType` when the request is
//! refused. API Gateway events always get a proxy response (200, or the refusal's 4xx/500 with
//! a JSON error body), never a Lambda error. Our own panics become `InternalError` (a 500).

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use serde_json::Value;

use base64::Engine;

use crate::app::{App, Chips};
use crate::error::RequestError;
use crate::events::chips::{self, Options};
use crate::events::{self, Request, RequestKind, Shape, apigw};
use crate::{chip_jpeg, registry, telemetry};

/// Lambda's limit on a synchronous response payload (6 MB).
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

/// Handles one invocation. `deadline` is Lambda's (None when run locally).
pub async fn handle(
    app: &App,
    event: Value,
    deadline: Option<SystemTime>,
) -> Result<Value, RequestError> {
    let started = Instant::now();
    let cutoff = cutoff(deadline, app.config.deadline_margin);
    let answer = match events::detect(&event)? {
        Shape::ApiGateway(version) => http(app, version, event, cutoff, started).await,
        Shape::Request(request_kind) => {
            let options = match request_kind {
                RequestKind::StepFunctionsBatch => Options::default(),
                RequestKind::Direct | RequestKind::GeoJson => chips::options(&event)?,
            };
            let request_bytes = if options.include_chips {
                json_len(&event)
            } else {
                0
            };
            let request = events::parse(request_kind, event, app.config.max_buildings)?;
            chips_fit(app, &request, options, request_bytes)?;
            guarded(answer(app, request, options, cutoff, started)).await?
        }
    };
    within_response_limit(answer)
}

/// An API Gateway event: always a proxy response.
async fn http(
    app: &App,
    version: apigw::Version,
    event: Value,
    cutoff: tokio::time::Instant,
    started: Instant,
) -> Value {
    let request = apigw::body(version, event, app.config.max_body_bytes).and_then(|body| {
        let (request, options) = events::parse_body_with_options(&body, app.config.max_buildings)?;
        chips_fit(app, &request, options, body.len())?;
        Ok((request, options))
    });
    let answered = match request {
        Ok((request, options)) => {
            let content_type = request.content_type();
            guarded(answer(app, request, options, cutoff, started))
                .await
                .map(|body| (content_type, body))
        }
        Err(error) => Err(error),
    };
    match answered {
        Ok((content_type, body)) => apigw::response(version, 200, content_type, &body),
        Err(error) => {
            // Answered as a value, not an `Err`: tell the observer it was a refusal.
            telemetry::record_refused(&error);
            apigw::error(version, &error)
        }
    }
}

async fn answer(
    app: &App,
    request: Request,
    options: Options,
    cutoff: tokio::time::Instant,
    started: Instant,
) -> Value {
    let buildings = request.buildings();
    let (outcomes, timing, chips) = if options.include_chips {
        app.predict_with_chips(buildings, cutoff, started).await
    } else {
        let (outcomes, timing) = app.predict(buildings, cutoff, started).await;
        (outcomes, timing, Vec::new())
    };
    telemetry::record(&timing, &outcomes);
    let mut answer = request.answer(&app.model_info, &outcomes, &timing);
    // Every answer shape is a JSON object at the top: the register summary fits them all.
    if let Some(registry) = app.registry() {
        answer["registry"] = registry::answer::summary(registry, &outcomes);
    }
    if options.include_chips {
        chips::add(&mut answer, encoded(chips).await);
    }
    answer
}

/// Each chip as base64 JPEG, encoded on a blocking thread (CPU work).
async fn encoded(chips: Chips) -> Vec<Option<String>> {
    tokio::task::spawn_blocking(move || {
        chips
            .iter()
            .map(|chip| {
                chip.as_ref()
                    .map(|c| base64::engine::general_purpose::STANDARD.encode(chip_jpeg::encode(c)))
            })
            .collect()
    })
    .await
    .expect("encoding chips does not panic")
}

/// What an answer holds whatever the buildings: `failed`, `timing`, `model`, a register
/// summary and the envelope (generous).
const ANSWER_FIXED_BYTES: usize = 4096;

/// Refuses, before any work, a request asking for chips that could not fit Lambda's response
/// limit. Each chip's base64 JPEG has a known bound ([`chip_jpeg::max_base64_len`]); the rest of
/// a building's answer is its echo (the request's own bytes, shared out) and its prediction.
/// The answer's real size is still checked afterwards ([`within_response_limit`]).
fn chips_fit(
    app: &App,
    request: &Request,
    options: Options,
    request_bytes: usize,
) -> Result<(), RequestError> {
    if !options.include_chips {
        return Ok(());
    }
    let buildings = request.buildings();
    let with_chip = buildings.iter().filter(|b| b.position.is_ok()).count();
    chip_room(
        buildings.len(),
        with_chip,
        request_bytes,
        app.chip_dimensions(),
        &app.model_info.labels,
    )
}

/// `,"chip":""` around each chip's base64 text.
const CHIP_FIELD_BYTES: usize = 10;

/// [`chips_fit`]'s arithmetic.
fn chip_room(
    buildings: usize,
    with_chip: usize,
    request_bytes: usize,
    (width, height): (u32, u32),
    labels: &[String],
) -> Result<(), RequestError> {
    let chip = chip_jpeg::max_base64_len(width, height) + CHIP_FIELD_BYTES;
    // `"label":"…","score":0.123456,"probabilities":{"…":0.123456,…}` and the entry's braces.
    let longest = labels.iter().map(String::len).max().unwrap_or(0);
    let prediction = 64 + longest + labels.iter().map(|l| l.len() + 14).sum::<usize>();
    let size = ANSWER_FIXED_BYTES + request_bytes + buildings * prediction + with_chip * chip;
    if size <= MAX_RESPONSE_BYTES {
        return Ok(());
    }
    let each = request_bytes.div_ceil(buildings.max(1)) + prediction + chip;
    Err(RequestError::ChipsTooLarge {
        buildings,
        size,
        fit: (MAX_RESPONSE_BYTES - ANSWER_FIXED_BYTES) / each,
        limit: MAX_RESPONSE_BYTES,
    })
}

/// A JSON value's serialised length, without keeping the text.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// The answer, or `ResponseTooLarge` when Lambda would refuse to return it.
fn within_response_limit(answer: Value) -> Result<Value, RequestError> {
    let size = serde_json::to_vec(&answer).map_or(0, |bytes| bytes.len());
    if size > MAX_RESPONSE_BYTES {
        return Err(RequestError::ResponseTooLarge {
            size,
            limit: MAX_RESPONSE_BYTES,
        });
    }
    Ok(answer)
}

/// Runs `work`, turning a panic (our fault, never the input's) into `InternalError`, so API
/// Gateway callers get a JSON 500 rather than a bare gateway error.
pub async fn guarded(work: impl Future<Output = Value>) -> Result<Value, RequestError> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|panic| RequestError::Internal(panic_message(panic.as_ref())))
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    format!("the function panicked: {text}")
}

/// How long a run without a usable deadline may take: Lambda's longest timeout.
const LOCAL_BUDGET: Duration = Duration::from_secs(900);

/// A "deadline" this far in the past is no Lambda deadline: `cargo lambda watch` sends the
/// function's timeout (e.g. 600000 ms, a date in 1970) where Lambda sends an epoch time.
const IMPLAUSIBLY_PAST: Duration = Duration::from_secs(24 * 3600);

/// When work must stop: the deadline less the margin; [`LOCAL_BUDGET`] away when there is no
/// deadline (a local run) or it cannot be a real one (an emulator's quirk, logged).
pub fn cutoff(deadline: Option<SystemTime>, margin: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    let left = match deadline.map(|d| d.duration_since(SystemTime::now())) {
        None => LOCAL_BUDGET,
        Some(Ok(left)) => left.saturating_sub(margin),
        Some(Err(past)) if past.duration() < IMPLAUSIBLY_PAST => Duration::ZERO,
        Some(Err(past)) => {
            tracing::warn!(
                past_s = past.duration().as_secs(),
                "the invocation's deadline is long past, so it is not an epoch time (an emulator?); \
                 allowing {} s",
                LOCAL_BUDGET.as_secs()
            );
            LOCAL_BUDGET
        }
    };
    now + left
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seconds_left(deadline: Option<SystemTime>, margin_ms: u64) -> f64 {
        let cutoff = cutoff(deadline, Duration::from_millis(margin_ms));
        cutoff
            .saturating_duration_since(tokio::time::Instant::now())
            .as_secs_f64()
    }

    #[test]
    fn the_cutoff_is_the_deadline_less_the_margin() {
        let in_ten = SystemTime::now() + Duration::from_secs(10);
        let left = seconds_left(Some(in_ten), 500);
        assert!((9.0..=9.5).contains(&left), "{left}");
        // A deadline just passed (a slow start) leaves nothing.
        let just_passed = SystemTime::now() - Duration::from_secs(2);
        assert_eq!(seconds_left(Some(just_passed), 500), 0.0);
    }

    #[test]
    fn no_deadline_or_an_emulators_timeout_leaves_the_local_budget() {
        assert!(seconds_left(None, 500) > 899.0);
        // What `cargo lambda watch` sends: 600000 ms, read as an epoch time.
        let cargo_lambda = SystemTime::UNIX_EPOCH + Duration::from_millis(600_000);
        assert!(seconds_left(Some(cargo_lambda), 500) > 899.0);
    }

    #[tokio::test]
    async fn panics_become_internal_errors_with_their_message() {
        let err = guarded(async { panic!("index out of bounds") })
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), "InternalError");
        assert_eq!(err.http_status(), 500);
        assert!(err.to_string().contains("index out of bounds"), "{err}");
        let n = 3;
        let err = guarded(async move { panic!("batch {n} failed") })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("batch 3 failed"), "{err}");
        let ok = guarded(async { Value::from(1) }).await;
        assert_eq!(ok, Ok(Value::from(1)));
    }

    #[test]
    fn chips_that_cannot_fit_are_refused_with_how_many_would() {
        let labels = ["other".to_string(), "asbestos".to_string()];
        // 64-px chips: at most 4,096 base64 characters each.
        assert!(chip_room(1000, 1000, 80_000, (64, 64), &labels).is_ok());
        match chip_room(2000, 1990, 160_000, (64, 64), &labels) {
            Err(RequestError::ChipsTooLarge {
                buildings,
                size,
                fit,
                limit,
            }) => {
                assert_eq!((buildings, limit), (2000, MAX_RESPONSE_BYTES));
                assert!(size > MAX_RESPONSE_BYTES, "{size}");
                // 80 echoed + 113 prediction + 4,106 chip bytes a building.
                let each = 80 + 113 + 4106;
                assert_eq!(fit, (MAX_RESPONSE_BYTES - 4096) / each);
                assert!(4096 + fit * each <= MAX_RESPONSE_BYTES);
                assert!(4096 + (fit + 1) * each > MAX_RESPONSE_BYTES);
            }
            other => panic!("expected ChipsTooLarge, got {other:?}"),
        }
        let err = chip_room(2000, 2000, 0, (224, 224), &labels).unwrap_err();
        assert_eq!(err.error_type(), "ResponseTooLarge");
        assert!(
            err.to_string()
                .contains("at most 179 of these buildings fit"),
            "{err}"
        );
    }

    #[test]
    fn answers_over_lambdas_limit_are_refused_with_their_size() {
        let small = json!({"predictions": ["x"]});
        assert_eq!(within_response_limit(small.clone()).unwrap(), small);
        let big = json!({"properties": "x".repeat(MAX_RESPONSE_BYTES)});
        match within_response_limit(big) {
            Err(RequestError::ResponseTooLarge { size, limit }) => {
                assert_eq!((size, limit), (MAX_RESPONSE_BYTES + 17, MAX_RESPONSE_BYTES));
            }
            other => panic!("expected ResponseTooLarge, got {other:?}"),
        }
    }
}
