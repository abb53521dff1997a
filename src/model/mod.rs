//! The ONNX model: what it takes and answers, learnt once at init, and batches of chips in,
//! probabilities per label out.
//!
//! - [`runtime`]: ONNX Runtime's shared library and the process's one environment;
//! - [`graph`]: the file's own protobuf, for what ONNX Runtime does not show (the operator
//!   behind each output, the metadata), and the metadata tool's edit;
//! - [`settings`]: the settings, from the environment or the file's metadata, one parser;
//! - [`input`]: the input (layout, element type, channels, range, mean/std) and chips → tensor;
//! - [`output`]: the output (which one, what kind) and raw rows → probabilities → a decision;
//! - [`session`]: building sessions and running a batch (the one place that runs ONNX Runtime);
//! - [`npy`] and [`compare`]: input tensors to and from files, and two models side by side
//!   (calibration chips for `make quantize`, the int8 agreement check).
//!
//! [`Model::new`] resolves every setting (environment > metadata > shape/graph > default),
//! runs a grey chip through the whole path so a model that cannot work fails init with the
//! fix, and keeps what it applied for the answer's `model` block ([`Model::info`]).

pub mod compare;
pub mod graph;
pub mod input;
pub mod npy;
pub mod output;
mod pool;
pub mod runtime;
pub mod session;
pub mod settings;

use std::time::Duration;

use image::{Rgb, RgbImage};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::ValueType;
use serde_json::{Map, Value};

use crate::outcome::{DecisionInfo, InputInfo, ModelInfo, OutputInfo, decimal};
use graph::Graph;
use input::{Declared, InputBatch, InputSpec, shown, type_name};
use output::{Decision, DeclaredOutput, OutputSpec, Rule};
pub use runtime::{ORT_LIBRARY, ORT_LIBRARY_VERSIONED, onnx_runtime, ort_library_path};
use session::Runner;
use settings::{Key, ModelSettings, Source, pick};

/// Model settings from `Config`.
pub struct ModelOptions<'a> {
    /// ONNX Runtime intra-op threads of each session.
    pub threads: usize,
    /// How many sessions to build (at least one); batches run on whichever is free.
    pub sessions: usize,
    /// The environment's model settings (`CHIP_SIZE` included).
    pub settings: &'a ModelSettings,
}

/// What the file says about itself, for `bootstrap inspect`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct About {
    /// `producer_name producer_version` (e.g. `pytorch 2.5.1`), when given.
    pub producer: String,
    /// (domain, version) of each opset; `""` is the standard ONNX one.
    pub opsets: Vec<(String, i64)>,
    /// Every input and output: `"name" [N,3,224,224] float32`.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub metadata: Vec<(String, String)>,
    /// Why the graph could not be read, if it could not (the output kind then needs setting).
    pub graph_error: Option<String>,
}

/// A ready model: its sessions and everything learnt about it at init.
pub struct Model {
    runner: Runner,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub decision: Decision,
    pub labels: Vec<String>,
    pub labels_source: Source,
    pub about: About,
    /// Warnings from init (unread outputs, ignored settings, contradictions); logged by the
    /// caller, printed by `bootstrap inspect`.
    pub notes: Vec<String>,
    /// The probabilities the model gave a mid-grey chip at init.
    pub probe: Vec<f32>,
}

/// The probe chip's grey level: mid-range, every channel lit.
const GREY: u8 = 128;

impl Model {
    /// Builds the session from memory and learns the model: one image input it can feed, one
    /// `[N,C]` output it can read, labels that fit, settings that parse. Runs a grey chip
    /// through the whole path, so a broken graph or a wrong output kind fails init and the
    /// first request does not pay ONNX Runtime's first-run allocations.
    pub fn new(
        env: &Environment,
        bytes: &[u8],
        options: &ModelOptions<'_>,
    ) -> Result<Self, String> {
        let given = options.settings;
        let graph = Graph::parse(bytes);
        let session = session::build(env, bytes, options.threads)?;
        let mut about = about(&session, &graph);
        let file = ModelSettings::from_metadata(&about.metadata).map_err(|e| {
            format!(
                "the model's metadata {}={:?}: {} (set {} to override it, or rewrite it with \
                 `bootstrap metadata`)",
                e.key.metadata(),
                e.value,
                e.reason,
                e.key.env()
            )
        })?;
        let mut notes = Vec::new();

        let declared = declared_input(&session, &about)?;
        let input = InputSpec::resolve(&declared, given, &file)?;

        let outputs: Vec<DeclaredOutput> = session
            .outputs()
            .iter()
            .map(|o| {
                let (element, shape) = tensor_type(o.dtype());
                DeclaredOutput {
                    name: o.name().to_string(),
                    element,
                    shape,
                }
            })
            .collect();
        let (index, output_source, warning) =
            output::choose(&outputs, pick(&given.output, &file.output))?;
        notes.extend(warning);
        let chosen = &outputs[index];
        let producer = graph.as_ref().ok().map(|g| g.producer_of(&chosen.name));
        let (kind, kind_source) = match (pick(&given.output_kind, &file.output_kind), &producer) {
            (Some((kind, source)), producer) => {
                notes.extend(
                    producer
                        .as_ref()
                        .and_then(|p| output::contradiction(kind, p, source)),
                );
                (kind, source)
            }
            (None, Some(producer)) => (output::kind_of(producer), Source::Graph),
            (None, None) => {
                return Err(format!(
                    "cannot read the model's graph to tell what its output is ({}): set \
                     OUTPUT_KIND (logits, probabilities, sigmoid or multilabel)",
                    about.graph_error.take().unwrap_or_default()
                ));
            }
        };
        // The first session is the one every check above read; the others are the same graph.
        let mut sessions = vec![session];
        for _ in 1..options.sessions.max(1) {
            sessions.push(session::build(env, bytes, options.threads)?);
        }
        let runner = Runner::new(sessions, &chosen.name)?;

        let grey = RgbImage::from_pixel(input.width as u32, input.height as u32, Rgb([GREY; 3]));
        let batch = input.batch(&[&grey]);
        let (raw, _) = runner.run(&batch).map_err(|e| {
            format!(
                "the model failed on a grey chip (input {}): {e}",
                shown(&input.shape)
            )
        })?;
        let classes = match raw.shape.as_slice() {
            [rows, c] if *rows as usize == batch.rows() && *c > 0 => *c as usize,
            other => {
                return Err(format!(
                    "output {:?} answered {other:?} for a batch of {}: expected [{}, C]",
                    chosen.name,
                    batch.rows(),
                    batch.rows()
                ));
            }
        };
        if chosen.shape[1] > 0 && chosen.shape[1] as usize != classes {
            return Err(format!(
                "output {:?} declares {} classes but answered {classes}",
                chosen.name, chosen.shape[1]
            ));
        }
        let output = OutputSpec {
            name: chosen.name.clone(),
            shape: chosen.shape.clone(),
            classes,
            kind,
            kind_source,
            output_source,
            producer,
        };
        output.check_probe(&raw.values[..classes], kind_source)?;
        let probe = output.probabilities(&raw.values[..classes]);
        let (labels, labels_source) = choose_labels(pick(&given.labels, &file.labels), &output)?;
        let (decision, note) = Decision::new(
            &output,
            pick(&given.positive_threshold, &file.positive_threshold),
        );
        notes.extend(note);
        Ok(Self {
            runner,
            input,
            output,
            decision,
            labels,
            labels_source,
            about,
            notes,
            probe,
        })
    }

    /// How many sessions run batches side by side.
    pub fn sessions(&self) -> usize {
        self.runner.sessions()
    }

    /// Runs `chips` (each the input's size; at most a fixed batch's worth) and returns their
    /// probabilities in label order, one row per chip, and the time inside ONNX Runtime.
    pub fn predict(&self, chips: &[&RgbImage]) -> Result<(Vec<Vec<f32>>, Duration), String> {
        self.run(&self.input.batch(chips), chips.len())
    }

    /// Runs a prepared batch (`input.batch`, or a tensor read back from a file) and returns the
    /// probabilities of its first `chips` rows.
    pub fn run(
        &self,
        batch: &InputBatch,
        chips: usize,
    ) -> Result<(Vec<Vec<f32>>, Duration), String> {
        let (raw, ran) = self.runner.run(batch)?;
        let classes = self.output.classes;
        if raw.shape.len() != 2 || raw.shape[1] as usize != classes {
            return Err(format!(
                "expected output [{}, {classes}], got {:?}",
                batch.rows(),
                raw.shape
            ));
        }
        let rows: Vec<Vec<f32>> = raw
            .values
            .chunks_exact(classes)
            .take(chips)
            .map(|row| self.output.probabilities(row))
            .collect();
        Ok((rows, ran))
    }

    /// The answer's `model` block for this model at `uri` (`version`: ETag or file stamp).
    pub fn info(&self, uri: &str, version: &str) -> ModelInfo {
        let (input, output, decision) = (&self.input, &self.output, &self.decision);
        let mut sources = Map::new();
        let mut put = |key: Key, source: Source| {
            sources.insert(
                key.metadata().into(),
                serde_json::to_value(source).expect("a source serialises"),
            );
        };
        put(Key::Labels, self.labels_source);
        put(Key::Output, output.output_source);
        put(Key::OutputKind, output.kind_source);
        put(Key::PositiveThreshold, decision.threshold_source);
        for (key, source) in &input.sources {
            put(*key, *source);
        }
        ModelInfo {
            uri: uri.to_string(),
            version: version.to_string(),
            labels: self.labels.clone(),
            output: OutputInfo {
                name: output.name.clone(),
                shape: shown(&output.shape),
                kind: output::name(output.kind).into(),
                operator: output.producer.as_ref().and_then(|p| p.op.clone()),
            },
            decision: DecisionInfo {
                rule: word(&decision.rule),
                positive_threshold: (decision.rule != Rule::Argmax)
                    .then_some(decimal(decision.threshold)),
            },
            input: InputInfo {
                name: input.name.clone(),
                shape: shown(&input.shape),
                layout: word(&input.layout),
                element_type: word(&input.element),
                channels: word(&input.channels),
                range: word(&input.range),
                mean: input.mean.map(decimal),
                std: input.std.map(decimal),
                chip_size: input.chip_size,
            },
            sources,
        }
    }
}

/// A setting's value as written in settings and answers (`nchw`, `float32`, `threshold`).
fn word<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

/// The labels from `MODEL_LABELS` or the metadata (`given`), else `class_0…`; as many as the
/// output answers (two for a one-score binary output, negative first).
pub fn choose_labels(
    given: Option<(Vec<String>, Source)>,
    output: &OutputSpec,
) -> Result<(Vec<String>, Source), String> {
    let wanted = output.answers();
    let Some((labels, source)) = given else {
        return Ok((
            (0..wanted).map(|i| format!("class_{i}")).collect(),
            Source::Default,
        ));
    };
    if labels.len() == wanted {
        return Ok((labels, source));
    }
    let name = match source {
        Source::Env => "MODEL_LABELS",
        _ => "the model's labels metadata",
    };
    let listed = labels.join(",");
    let count = labels.len();
    let fix = if source == Source::Env {
        String::new()
    } else {
        " (set MODEL_LABELS to override it)".to_string()
    };
    Err(if output.classes == 1 {
        format!(
            "{name} names {count} label(s) ({listed}) but the model is binary (one score per \
             chip, {} {}): name two labels, negative first, e.g. MODEL_LABELS=other,{}{fix}",
            shown(&output.shape),
            output::name(output.kind),
            labels.last().map_or("positive", String::as_str),
        )
    } else {
        format!(
            "{name} names {count} label(s) ({listed}) but the model outputs [N,{}]: name \
             {wanted}, in the model's order{fix}",
            output.classes
        )
    })
}

/// The one input, or an error listing them all.
fn declared_input(session: &Session, about: &About) -> Result<Declared, String> {
    let [input] = session.inputs() else {
        return Err(format!(
            "the model has {} inputs ({}); tilepredict feeds one image batch: export the model \
             with the image as its only input (fold the others into constants)",
            session.inputs().len(),
            about.inputs.join(", ")
        ));
    };
    let (element, shape) = tensor_type(input.dtype());
    let element =
        element.ok_or_else(|| format!("model input {:?} is not a tensor", input.name()))?;
    Ok(Declared {
        name: input.name().to_string(),
        element,
        shape,
    })
}

fn tensor_type(value: &ValueType) -> (Option<ort::value::TensorElementType>, Vec<i64>) {
    match value {
        ValueType::Tensor { ty, shape, .. } => (Some(*ty), shape.to_vec()),
        _ => (None, Vec::new()),
    }
}

fn describe(name: &str, value: &ValueType) -> String {
    match tensor_type(value) {
        (Some(ty), shape) => format!("{name:?} {} {}", shown(&shape), type_name(ty)),
        (None, _) => format!("{name:?} (not a tensor)"),
    }
}

/// The file's description: from the graph when it could be read, else ONNX Runtime's view of
/// the metadata.
fn about(session: &Session, graph: &Result<Graph, graph::GraphError>) -> About {
    let inputs = session
        .inputs()
        .iter()
        .map(|i| describe(i.name(), i.dtype()))
        .collect();
    let outputs = session
        .outputs()
        .iter()
        .map(|o| describe(o.name(), o.dtype()))
        .collect();
    match graph {
        Ok(g) => About {
            producer: g.producer.clone(),
            opsets: g.opsets.clone(),
            inputs,
            outputs,
            metadata: g.metadata.clone(),
            graph_error: None,
        },
        Err(e) => {
            let metadata = session
                .metadata()
                .ok()
                .map(|m| {
                    m.custom_keys()
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|k| m.custom(&k).map(|v| (k, v)))
                        .collect()
                })
                .unwrap_or_default();
            About {
                inputs,
                outputs,
                metadata,
                graph_error: Some(e.to_string()),
                ..About::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use settings::OutputKind;

    fn output(kind: OutputKind, classes: usize) -> OutputSpec {
        OutputSpec::sample(kind, classes)
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn labels_come_from_what_was_given_else_defaults() {
        let three = output(OutputKind::Logits, 3);
        assert_eq!(
            choose_labels(Some((names(&["a", "b", "c"]), Source::Env)), &three).unwrap(),
            (names(&["a", "b", "c"]), Source::Env)
        );
        assert_eq!(
            choose_labels(None, &three).unwrap(),
            (names(&["class_0", "class_1", "class_2"]), Source::Default)
        );
        // A one-score binary model answers two labels.
        assert_eq!(
            choose_labels(None, &output(OutputKind::Sigmoid, 1))
                .unwrap()
                .0,
            names(&["class_0", "class_1"])
        );
    }

    #[test]
    fn labels_that_do_not_fit_name_the_fix() {
        let err = choose_labels(
            Some((names(&["asbestos"]), Source::Env)),
            &output(OutputKind::Sigmoid, 1),
        )
        .unwrap_err();
        assert!(
            err.contains("MODEL_LABELS names 1 label(s) (asbestos) but the model is binary")
                && err.contains("MODEL_LABELS=other,asbestos"),
            "{err}"
        );
        let err = choose_labels(
            Some((names(&["a", "b"]), Source::Metadata)),
            &output(OutputKind::Logits, 3),
        )
        .unwrap_err();
        assert!(
            err.contains("the model's labels metadata names 2 label(s)")
                && err.contains("[N,3]")
                && err.contains("set MODEL_LABELS to override"),
            "{err}"
        );
    }
}
