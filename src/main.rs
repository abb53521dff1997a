//! The `bootstrap` executable: reads the configuration, builds the sandbox's state once
//! (ONNX Runtime, the model, the HTTP client), then serves Lambda invocations.
//!
//! `bootstrap invoke EVENT.json` runs one event locally and prints the answer (used by
//! `make run`); with no arguments it is the Lambda function.

use std::process::ExitCode;

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use tilepredict::app::{App, InitError};
use tilepredict::config::Config;
use tilepredict::handler;
use tilepredict::invocation::{MetricsSink, Observer, Payload};

/// The allocator is set up before tokio starts its threads (see `allocator`), so the runtime
/// is built by hand rather than by `#[tokio::main]`.
fn main() -> ExitCode {
    tilepredict::allocator::limit_arenas();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    tilepredict::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let local_event = match args.as_slice() {
        [] => None,
        [cmd, path] if cmd == "invoke" => Some(path.clone()),
        _ => {
            eprintln!(
                "usage: bootstrap              (as an AWS Lambda function)\n       bootstrap invoke EVENT.json   (run one event locally, print the answer)"
            );
            return ExitCode::from(2);
        }
    };
    let app = match init().await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(
                error_type = error.error_type,
                "init failed: {}",
                error.message
            );
            if local_event.is_none() {
                report_init_error(&error).await;
            } else {
                eprintln!("init failed ({}): {}", error.error_type, error.message);
            }
            return ExitCode::FAILURE;
        }
    };
    match local_event {
        Some(path) => invoke_local(&app, &path).await,
        None => serve(&app).await,
    }
}

async fn init() -> Result<App, InitError> {
    let config = Config::from_env().map_err(|e| InitError {
        error_type: "ConfigError",
        message: e.to_string(),
    })?;
    App::init(config).await
}

/// Watches each invocation: one log line and one EMF metrics line, `FunctionName` as dimension.
fn observer(app: &App, sink: MetricsSink) -> Observer {
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".into());
    Observer::new(app.config.metrics_namespace.clone(), function, sink)
}

async fn serve(app: &App) -> ExitCode {
    let observer = &observer(app, MetricsSink::Stdout);
    let handler = service_fn(|event: LambdaEvent<Payload>| async move {
        let deadline = event.context.deadline();
        let request_id = &event.context.request_id;
        let work =
            async { handler::handle(app, event.payload.into_event()?, Some(deadline)).await };
        observer
            .observe(app, request_id, Some(deadline), work)
            .await
    });
    match lambda_runtime::run(handler).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("the Lambda runtime stopped: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn invoke_local(app: &App, path: &str) -> ExitCode {
    let event = match std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()))
    {
        Ok(event) => event,
        Err(error) => {
            eprintln!("cannot read event {path}: {error}");
            return ExitCode::from(2);
        }
    };
    let observer = observer(app, MetricsSink::Stderr);
    let work = handler::handle(app, event, None);
    match observer.observe(app, "local", None, work).await {
        Ok(answer) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&answer).expect("JSON values serialise")
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&error.to_json()).expect("JSON values serialise")
            );
            ExitCode::FAILURE
        }
    }
}

/// Tells Lambda why init failed (`/runtime/init/error`), so the error shows as a readable
/// `errorType` rather than "Runtime exited".
async fn report_init_error(error: &InitError) {
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let body = serde_json::json!({"errorType": error.error_type, "errorMessage": error.message});
    let sent = reqwest::Client::new()
        .post(format!("http://{api}/2018-06-01/runtime/init/error"))
        .header(
            "Lambda-Runtime-Function-Error-Type",
            format!("Runtime.{}", error.error_type),
        )
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await;
    if let Err(e) = sent {
        tracing::error!("could not report the init error to the Runtime API: {e}");
    }
}
