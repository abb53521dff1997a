//! `bootstrap metadata`: a model's settings metadata, shown or written.
//!
//! `bootstrap metadata MODEL.onnx` prints the `metadata_props`. `bootstrap metadata IN.onnx
//! OUT.onnx labels=other,asbestos output_kind=sigmoid …` writes a copy of `IN` with those keys
//! set (`key=` removes one) and everything else byte for byte as it was. Only the settings keys
//! are accepted, and the result is checked with the parser init uses, so a model this writes
//! does not fail init on its metadata. (The same can be done in Python with `onnx`:
//! `onnx.helper.set_model_props`, without these checks.)

use std::process::ExitCode;

use crate::model::graph::{Graph, with_metadata};
use crate::model::settings::{Key, ModelSettings};

/// Shows (`write` = `None`) or writes the metadata; errors go to stderr with exit code 1.
pub fn run(model: &str, write: Option<&(String, Vec<(String, String)>)>) -> ExitCode {
    let result = match write {
        None => show(model),
        Some((out, pairs)) => set(model, out, pairs),
    };
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bootstrap metadata: {error}");
            ExitCode::FAILURE
        }
    }
}

fn read(path: &str) -> Result<(Vec<u8>, Graph), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let graph = Graph::parse(&bytes).map_err(|e| format!("{path}: {e}"))?;
    Ok((bytes, graph))
}

fn show(path: &str) -> Result<String, String> {
    let (_, graph) = read(path)?;
    if graph.metadata.is_empty() {
        return Ok(format!("{path}: no metadata"));
    }
    let lines: Vec<String> = graph
        .metadata
        .iter()
        .map(|(k, v)| {
            let note = if Key::from_metadata(k).is_some() {
                ""
            } else {
                "   (not a tilepredict setting)"
            };
            format!("{k} = {v}{note}")
        })
        .collect();
    Ok(lines.join("\n"))
}

/// Writes `out`: `input` with `pairs` set, after checking keys and values.
pub fn set(input: &str, out: &str, pairs: &[(String, String)]) -> Result<String, String> {
    let (bytes, graph) = read(input)?;
    if let Some((key, _)) = pairs.iter().find(|(k, _)| Key::from_metadata(k).is_none()) {
        let known: Vec<&str> = Key::ALL.iter().map(|k| k.metadata()).collect();
        return Err(format!(
            "{key:?} is not a model setting; the settings are {}",
            known.join(", ")
        ));
    }
    let mut merged: Vec<(String, String)> = graph
        .metadata
        .iter()
        .filter(|(k, _)| !pairs.iter().any(|(p, _)| p == k))
        .cloned()
        .collect();
    merged.extend(pairs.iter().filter(|(_, v)| !v.is_empty()).cloned());
    ModelSettings::from_metadata(&merged)
        .map_err(|e| format!("{}={:?}: {}", e.key.metadata(), e.value, e.reason))?;
    let written = with_metadata(&bytes, pairs).map_err(|e| format!("{input}: {e}"))?;
    std::fs::write(out, &written).map_err(|e| format!("cannot write {out}: {e}"))?;
    Ok(format!(
        "wrote {out} ({} bytes) with {}; check it with: MODEL_URI={out} bootstrap inspect",
        written.len(),
        pairs
            .iter()
            .map(|(k, v)| if v.is_empty() {
                format!("{k} removed")
            } else {
                format!("{k}={v}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
