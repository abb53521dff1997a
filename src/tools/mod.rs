//! The model tools: local commands for bringing a model to the function.
//!
//! - `bootstrap inspect [--json]` ([`inspect`]): what the function makes of `MODEL_URI`'s model
//!   with the settings in the environment — inputs, outputs, what was detected, every applied
//!   setting and where it came from, warnings, and one answer on a grey chip; exits non-zero
//!   with the init error when the model cannot be used. Needs no `TILE_URL`.
//! - `bootstrap metadata MODEL.onnx [OUT.onnx KEY=VALUE…]` ([`metadata`]): shows the model's
//!   settings metadata, or writes a copy with settings set (`KEY=` removes one), checked by the
//!   parser init uses.
//! - `bootstrap chips EVENT.json OUT.npy` and `bootstrap compare OTHER.onnx CHIPS.npy`
//!   ([`calibrate`]): the model's input tensors for a file of buildings, cut by the function's
//!   own imagery code (what `make quantize` calibrates on), and two models compared on them.

pub mod calibrate;
pub mod inspect;
pub mod metadata;

use std::process::ExitCode;

use crate::app::App;
use crate::config::Config;
use crate::error::ConfigError;

/// A model tool and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tool {
    Inspect {
        json: bool,
    },
    Metadata {
        model: String,
        /// The copy to write and the settings to set; `None` shows the metadata.
        write: Option<(String, Vec<(String, String)>)>,
    },
    Chips {
        event: String,
        out: String,
    },
    Compare {
        other: String,
        chips: String,
    },
}

impl Tool {
    /// The tool named by the arguments, or `None` for a usage error.
    pub fn parse(args: &[String]) -> Option<Self> {
        let (name, rest) = args.split_first()?;
        match (name.as_str(), rest) {
            ("inspect", []) => Some(Self::Inspect { json: false }),
            ("inspect", [flag]) if flag == "--json" => Some(Self::Inspect { json: true }),
            ("metadata", [model]) => Some(Self::Metadata {
                model: model.clone(),
                write: None,
            }),
            ("metadata", [model, out, pairs @ ..]) if !pairs.is_empty() => {
                let pairs = pairs
                    .iter()
                    .map(|p| {
                        p.split_once('=')
                            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    })
                    .collect::<Option<Vec<_>>>()?;
                Some(Self::Metadata {
                    model: model.clone(),
                    write: Some((out.clone(), pairs)),
                })
            }
            ("chips", [event, out]) => Some(Self::Chips {
                event: event.clone(),
                out: out.clone(),
            }),
            ("compare", [other, chips]) => Some(Self::Compare {
                other: other.clone(),
                chips: chips.clone(),
            }),
            _ => None,
        }
    }

    /// True for tools that need the whole sandbox (imagery included): `chips`.
    pub fn needs_app(&self) -> bool {
        matches!(self, Self::Chips { .. })
    }

    /// Runs a tool that needs no sandbox.
    pub async fn run_alone(&self) -> ExitCode {
        match self {
            Self::Inspect { json } => inspect::run(*json).await,
            Self::Metadata { model, write } => metadata::run(model, write.as_ref()),
            Self::Compare { other, chips } => calibrate::compare(other, chips).await,
            Self::Chips { .. } => unreachable!("chips needs the sandbox"),
        }
    }

    /// Runs a tool with the sandbox built.
    pub async fn run_with(&self, app: &App) -> ExitCode {
        match self {
            Self::Chips { event, out } => calibrate::chips(app, event, out).await,
            other => other.run_alone().await,
        }
    }
}

/// The function's configuration for tools that look at the model only: `TILE_URL` may be
/// unset (they fetch no imagery), so a placeholder stands in for it; every other variable is
/// read and checked as init would.
pub fn model_config() -> Result<Config, ConfigError> {
    const NO_IMAGERY: &str = "file:///tilepredict-model-tools-fetch-no-imagery/{z}/{x}/{y}.png";
    Config::from_lookup(|name| {
        let value = std::env::var(name).ok();
        if name == "TILE_URL" && value.as_deref().is_none_or(|v| v.trim().is_empty()) {
            return Some(NO_IMAGERY.to_string());
        }
        value
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tools_and_their_arguments() {
        assert_eq!(
            Tool::parse(&args(&["inspect", "--json"])),
            Some(Tool::Inspect { json: true })
        );
        assert_eq!(
            Tool::parse(&args(&[
                "metadata",
                "in.onnx",
                "out.onnx",
                "labels=a,b",
                "input_mean="
            ])),
            Some(Tool::Metadata {
                model: "in.onnx".into(),
                write: Some((
                    "out.onnx".into(),
                    vec![
                        ("labels".into(), "a,b".into()),
                        ("input_mean".into(), String::new())
                    ]
                )),
            })
        );
        for bad in [
            &["inspect", "x"][..],
            &["metadata"],
            &["metadata", "in.onnx", "out.onnx"],
            &["metadata", "in.onnx", "out.onnx", "labels"],
            &["chips", "e.json"],
            &["compare", "a.onnx"],
        ] {
            assert_eq!(Tool::parse(&args(bad)), None, "{bad:?}");
        }
        assert!(
            Tool::parse(&args(&["chips", "e.json", "c.npy"]))
                .unwrap()
                .needs_app()
        );
        assert!(
            !Tool::parse(&args(&["compare", "a.onnx", "c.npy"]))
                .unwrap()
                .needs_app()
        );
    }
}
