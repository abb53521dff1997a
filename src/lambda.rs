//! The executable's Lambda side: serve invocations through the Runtime API, and tell Lambda why
//! init failed when it does.
//!
//! Classic Lambda hands a sandbox one invocation at a time. Lambda Managed Instances set
//! `AWS_LAMBDA_MAX_CONCURRENCY`, and lambda_runtime's `run_concurrent` then keeps that many
//! `/next` long polls open, so that many invocations run at once in this process, sharing the
//! one [`App`] (model sessions, tile cache, batcher). Unset or ≤ 1, `run_concurrent` is the
//! sequential loop `run` is, so one binary serves both.
//!
//! Each invocation's payload is taken as a value (see [`Payload`]), handled by
//! [`handler::handle`] under the invocation [`Observer`], and answered; lambda_runtime does the
//! Runtime API's HTTP and wraps each invocation in a span carrying its request id, which every
//! log line written for it inherits.

use std::process::ExitCode;
use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::app::App;
use crate::error::{RequestError, StartupError};
use crate::handler;
use crate::telemetry::{MetricsSink, Observer};

/// The event as JSON, or why it is not. lambda_runtime answers a payload it cannot parse (not
/// JSON, nested deeper than serde_json's 128 levels, a number beyond f64) with a Rust type path
/// as `errorType`; taking the failure as a value lets the caller get `InvalidRequest`.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload(Result<Value, String>);

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self(
            Value::deserialize(deserializer).map_err(|e| e.to_string()),
        ))
    }
}

impl Payload {
    pub fn into_event(self) -> Result<Value, RequestError> {
        self.0.map_err(|why| {
            RequestError::Invalid(format!("the event is not usable JSON: {}", why.trim()))
        })
    }
}

/// Serves invocations until the runtime stops, as many at once as `AWS_LAMBDA_MAX_CONCURRENCY`
/// says (one when unset). The EMF line goes to stdout, where CloudWatch reads it from the log
/// stream.
pub async fn serve(app: Arc<App>) -> ExitCode {
    let observer = Arc::new(Observer::new(
        app.config.metrics_namespace.clone(),
        app.config.function_name.clone(),
        MetricsSink::Stdout,
    ));
    let handler = service_fn(move |event: LambdaEvent<Payload>| {
        let (app, observer) = (Arc::clone(&app), Arc::clone(&observer));
        async move {
            let deadline = event.context.deadline();
            let request_id = &event.context.request_id;
            let work =
                async { handler::handle(&app, event.payload.into_event()?, Some(deadline)).await };
            observer
                .observe(&app, request_id, Some(deadline), work)
                .await
        }
    });
    match lambda_runtime::run_concurrent(handler).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("the Lambda runtime stopped: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Tells Lambda why init failed (`/runtime/init/error`), so the error shows as a readable
/// `errorType` rather than "Runtime exited". Does nothing outside Lambda.
pub async fn report_init_error(error: &StartupError) {
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let body =
        serde_json::json!({"errorType": error.error_type(), "errorMessage": error.to_string()});
    let sent = reqwest::Client::new()
        .post(format!("http://{api}/2018-06-01/runtime/init/error"))
        .header(
            "Lambda-Runtime-Function-Error-Type",
            format!("Runtime.{}", error.error_type()),
        )
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await;
    if let Err(e) = sent {
        tracing::error!("could not report the init error to the Runtime API: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_that_are_not_json_become_invalid_request() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for (text, needle) in [
            (deep.as_str(), "recursion limit"),
            ("{\"lat\": 1e400}", "number out of range"),
            ("{\"buildings\": [", "EOF"),
        ] {
            // As lambda_runtime reads it: `T::deserialize`, no check for trailing input.
            let payload = Payload::deserialize(&mut serde_json::Deserializer::from_str(text))
                .expect("never fails");
            let err = payload.into_event().unwrap_err();
            assert_eq!(err.error_type(), "InvalidRequest");
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
        let ok: Payload = serde_json::from_str("{\"buildings\": []}").unwrap();
        assert_eq!(ok.into_event().unwrap(), json!({"buildings": []}));
    }
}
