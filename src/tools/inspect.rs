//! `bootstrap inspect`: the first thing to run with a new model. Loads `MODEL_URI` exactly as
//! init does (same settings from the environment, same checks) and prints what the file holds,
//! what the function will do with it and why, and its answer on a mid-grey chip. A model the
//! function cannot use prints the init error (which names the variable to set) and exits 1.

use std::fmt::Write as _;
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::answer;
use crate::app::{LoadedModel, load_model};
use crate::error::StartupError;
use crate::model::Model;
use crate::model::output::{self, Rule};
use crate::model::settings::OutputKind;
use crate::outcome::ModelInfo;

/// Prints the report (text, or JSON with `--json`) on stdout.
pub async fn run(json: bool) -> ExitCode {
    let loaded = match load().await {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!(
                "bootstrap inspect: the function cannot use this model\n{}: {error}",
                error.error_type()
            );
            return ExitCode::FAILURE;
        }
    };
    let report = if json {
        serde_json::to_string_pretty(&as_json(&loaded.0, &loaded.1)).expect("JSON serialises")
    } else {
        as_text(&loaded.0, &loaded.1)
    };
    println!("{report}");
    ExitCode::SUCCESS
}

async fn load() -> Result<(LoadedModel, ModelInfo), StartupError> {
    let config = super::model_config()?;
    let loaded = load_model(&config, &config.model_uri).await?;
    let info = loaded
        .model
        .info(&config.model_uri.to_string(), &loaded.version);
    Ok((loaded, info))
}

/// `{"model": <the answer's model block>, "file": {…}, "warnings": […], "probe": {…}}`.
pub fn as_json(loaded: &LoadedModel, info: &ModelInfo) -> Value {
    let model = &loaded.model;
    let about = &model.about;
    let metadata: serde_json::Map<String, Value> = about
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "model": info,
        "file": {
            "bytes": loaded.bytes,
            "producer": about.producer,
            "opsets": about.opsets.iter().map(|(d, v)| json!({"domain": d, "version": v})).collect::<Vec<_>>(),
            "inputs": about.inputs,
            "outputs": about.outputs,
            "metadata": metadata,
            "graph_error": about.graph_error,
        },
        "warnings": model.notes,
        "probe": probe(model, info),
    })
}

/// The grey chip's answer, as a prediction would show it.
fn probe(model: &Model, info: &ModelInfo) -> Value {
    let scored = model.decision.decide(&model.labels, model.probe.clone());
    Value::Object(answer::scored(info, &scored))
}

/// The report a person reads.
pub fn as_text(loaded: &LoadedModel, info: &ModelInfo) -> String {
    let model = &loaded.model;
    let about = &model.about;
    let src = |key: &str| {
        info.sources
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    let mut report = String::new();
    let w = &mut report;
    let _ = writeln!(w, "model {}", info.uri);
    let opsets: Vec<String> = about
        .opsets
        .iter()
        .map(|(d, v)| format!("{} {v}", if d.is_empty() { "ai.onnx" } else { d }))
        .collect();
    let _ = writeln!(
        w,
        "  file      {} bytes, version {}{}{}",
        loaded.bytes,
        info.version,
        if about.producer.is_empty() {
            String::new()
        } else {
            format!(", made by {}", about.producer)
        },
        if opsets.is_empty() {
            String::new()
        } else {
            format!(", opsets {}", opsets.join(", "))
        }
    );
    let _ = writeln!(w, "  inputs    {}", about.inputs.join("; "));
    let _ = writeln!(w, "  outputs   {}", about.outputs.join("; "));
    if about.metadata.is_empty() {
        let _ = writeln!(w, "  metadata  none");
    } else {
        for (i, (k, v)) in about.metadata.iter().enumerate() {
            let head = if i == 0 { "metadata" } else { "" };
            let _ = writeln!(w, "  {head:<9} {k} = {v}");
        }
    }
    if let Some(e) = &about.graph_error {
        let _ = writeln!(w, "  graph     unreadable: {e}");
    }

    let input = &info.input;
    let _ = writeln!(
        w,
        "\nWhat the function does with it ([where each setting came from]: env, metadata, \
         graph, shape or default):"
    );
    let _ = writeln!(
        w,
        "  input     {:?} {} {}: layout {} [{}], channels {} [{}]",
        input.name,
        input.shape,
        input.element_type,
        input.layout,
        src("input_layout"),
        input.channels,
        src("input_channels")
    );
    if input.element_type == "uint8" {
        let _ = writeln!(
            w,
            "            raw 0–255 pixels (the model normalises them)"
        );
    } else {
        let _ = writeln!(
            w,
            "            pixels {} [{}], then (x − mean) / std, mean {} [{}], std {} [{}]",
            if input.range == "unit" {
                "0–1"
            } else {
                "0–255"
            },
            src("input_range"),
            triple(&input.mean),
            src("input_mean"),
            triple(&input.std),
            src("input_std")
        );
    }
    let _ = writeln!(
        w,
        "  chips     {} px a side at TILE_ZOOM [{}], fed at {}×{}",
        input.chip_size,
        src("chip_size"),
        model.input.width,
        model.input.height
    );
    let out = &model.output;
    let _ = writeln!(
        w,
        "  output    {:?} {} [{}]{}: {} [{}] → {}",
        out.name,
        info.output.shape,
        match src("output").as_str() {
            "shape" => "the first [N,C] output".to_string(),
            other => other.to_string(),
        },
        info.output
            .operator
            .as_ref()
            .map_or(String::new(), |op| format!(", made by {op}")),
        info.output.kind,
        src("output_kind"),
        reading(out)
    );
    let _ = writeln!(
        w,
        "  labels    {} [{}]",
        model.labels.join(", "),
        src("labels")
    );
    let threshold = format!(
        "{} [{}]",
        model.decision.threshold,
        src("positive_threshold")
    );
    let decision = match model.decision.rule {
        Rule::Threshold => format!(
            "{} when p({}) ≥ {threshold}, else {}",
            model.labels[1], model.labels[1], model.labels[0]
        ),
        Rule::Argmax => format!("the most probable of {} classes", model.labels.len()),
        Rule::Multilabel => format!(
            "every label with p ≥ {threshold}, listed in `labels`; `label` is the most \
             probable"
        ),
    };
    let _ = writeln!(w, "  decision  {decision}");

    if !model.notes.is_empty() {
        let _ = writeln!(w, "\nWarnings:");
        for note in &model.notes {
            let _ = writeln!(w, "  - {note}");
        }
    }
    let answer = probe(model, info);
    let probabilities: Vec<String> = answer["probabilities"]
        .as_object()
        .map(|p| p.iter().map(|(l, v)| format!("{l} {v}")).collect())
        .unwrap_or_default();
    let _ = write!(
        w,
        "\nOn a mid-grey chip: {} (score {}){}\n  {}",
        answer["label"].as_str().unwrap_or(""),
        answer["score"],
        answer
            .get("labels")
            .map_or(String::new(), |l| format!(", labels {l}")),
        probabilities.join(", ")
    );
    report
}

/// How a row becomes probabilities, in words.
fn reading(output: &output::OutputSpec) -> String {
    let c = output.classes;
    match (output.kind, c) {
        (OutputKind::Logits | OutputKind::Multilabel, 1) => {
            "one logit z: binary, [σ(−z), σ(z)]".into()
        }
        (OutputKind::Probabilities | OutputKind::Sigmoid, 1) => {
            "one probability p: binary, [1 − p, p]".into()
        }
        (OutputKind::Logits, _) => format!("softmax over {c} classes"),
        (OutputKind::Probabilities, _) => format!("{c} class probabilities, used as they are"),
        (OutputKind::Sigmoid, _) => {
            format!("{c} independent label probabilities, used as they are")
        }
        (OutputKind::Multilabel, _) => format!("σ of each of {c} independent label logits"),
    }
}

fn triple(v: &[f64; 3]) -> String {
    if v[0] == v[1] && v[1] == v[2] {
        v[0].to_string()
    } else {
        format!("{},{},{}", v[0], v[1], v[2])
    }
}
