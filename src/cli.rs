//! The executable's local commands, for running the function without Lambda:
//! `bootstrap invoke EVENT.json` handles one event exactly as Lambda would and prints the answer
//! on stdout (logs and the metrics line go to stderr, so stdout is the answer alone);
//! `bootstrap predict INPUT …` runs a whole file of buildings ([`predict`]). The model tools
//! (`inspect`, `metadata`, `chips`, `compare`) live in `tools`.

pub mod predict;
pub mod predict_args;
mod progress;
mod summary;

use std::process::ExitCode;

use serde_json::Value;

use crate::app::App;
use crate::handler;
use crate::telemetry::{MetricsSink, Observer};

/// What the executable was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// No arguments: be the Lambda function.
    Serve,
    /// `invoke EVENT.json`: handle one event locally.
    Invoke(String),
    /// `predict INPUT [-o OUTPUT] [--review PAGE.html] …`: a whole file of buildings.
    Predict(predict_args::Args),
    /// The model tools (`inspect`, `metadata`, `chips`, `compare`): see [`crate::tools`].
    Tool(crate::tools::Tool),
}

pub const USAGE: &str = "usage: bootstrap                      (as an AWS Lambda function)
       bootstrap invoke EVENT.json   (run one event locally, print the answer)
       bootstrap predict BUILDINGS [-o OUTPUT] [--review PAGE.html] [--review-limit N] [--resume]
           BUILDINGS: .csv (id,lat,lon,…), .geojson/.json (FeatureCollection or {\"buildings\": […]}),
           .jsonl; OUTPUT: .csv, .geojson or .jsonl (stdout, JSON Lines, when left out)
       bootstrap inspect [--json]    (what the function makes of MODEL_URI's model)
       bootstrap metadata MODEL.onnx [OUT.onnx KEY=VALUE...]   (show or write model settings)
       bootstrap chips EVENT.json OUT.npy        (the model's input tensors for buildings)
       bootstrap compare OTHER.onnx CHIPS.npy    (MODEL_URI's model against another)";

impl Command {
    /// The command named by the arguments (program name excluded), or what is wrong with them.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        match args {
            [] => Ok(Self::Serve),
            [cmd, path] if cmd == "invoke" => Ok(Self::Invoke(path.clone())),
            [cmd, rest @ ..] if cmd == "predict" => {
                predict_args::Args::parse(rest).map(Self::Predict)
            }
            _ => crate::tools::Tool::parse(args)
                .map(Self::Tool)
                .ok_or_else(|| format!("unknown command: {}", args.join(" "))),
        }
    }

    /// The log level when neither `AWS_LAMBDA_LOG_LEVEL` nor `RUST_LOG` says: a local batch
    /// run talks to a person through its progress and summary, so only warnings are logged.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Self::Predict(_) => "warn",
            Self::Serve | Self::Invoke(_) | Self::Tool(_) => "info",
        }
    }
}

/// Runs one event from a file and prints the answer; a refused request prints its error JSON
/// and exits non-zero.
pub async fn invoke(app: &App, path: &str) -> ExitCode {
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
    let observer = Observer::new(
        app.config.metrics_namespace.clone(),
        app.config.function_name.clone(),
        MetricsSink::Stderr,
    );
    let work = handler::handle(app, event, None);
    let (answer, code) = match observer.observe(app, "local", None, work).await {
        Ok(answer) => (answer, ExitCode::SUCCESS),
        Err(error) => (error.to_json(), ExitCode::FAILURE),
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&answer).expect("JSON values serialise")
    );
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn commands_and_usage_errors() {
        assert_eq!(Command::parse(&[]), Ok(Command::Serve));
        assert_eq!(
            Command::parse(&args(&["invoke", "e.json"])),
            Ok(Command::Invoke("e.json".into()))
        );
        assert!(Command::parse(&args(&["invoke"])).is_err());
        assert!(Command::parse(&args(&["predict", "x", "y"])).is_err());
        assert!(matches!(
            Command::parse(&args(&["predict", "b.csv"])),
            Ok(Command::Predict(_))
        ));
        assert!(matches!(
            Command::parse(&args(&["inspect"])),
            Ok(Command::Tool(_))
        ));
        assert!(Command::parse(&args(&["inspect", "--bad"])).is_err());
    }
}
