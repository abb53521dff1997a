//! What the model answers, and its raw output → probabilities per label → a decision.
//!
//! The output is chosen (`MODEL_OUTPUT`, else the first `[N,C]` one), its kind set
//! (`OUTPUT_KIND`, else read from the operator that produced it), and each row becomes
//! probabilities in label order:
//!
//! | kind | C = 1 (binary) | C > 1 |
//! | --- | --- | --- |
//! | `logits` | `[σ(−z), σ(z)]` | softmax (exclusive classes) |
//! | `probabilities` | `[1 − p, p]` | as they are |
//! | `sigmoid` | `[1 − p, p]` | as they are (independent labels) |
//! | `multilabel` | `[σ(−z), σ(z)]` | σ of each (independent labels) |
//!
//! The decision: two labels (binary, or two exclusive classes) answer the second, positive one
//! when its probability is at least `POSITIVE_THRESHOLD`; independent labels answer every
//! label at or above it; more than two exclusive classes answer the most probable.

use ort::value::TensorElementType;
use serde::Serialize;

use super::graph::Producer;
use super::input::shown;
use super::settings::{OutputKind, Source};
use crate::outcome::Scored;

/// An output as ONNX Runtime declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredOutput {
    pub name: String,
    /// `None` for an output that is not a tensor (a sequence or a map).
    pub element: Option<TensorElementType>,
    pub shape: Vec<i64>,
}

impl DeclaredOutput {
    /// A float tensor `[N,C]`: one row of scores per chip.
    fn is_rows(&self) -> bool {
        matches!(
            self.element,
            Some(
                TensorElementType::Float32
                    | TensorElementType::Float16
                    | TensorElementType::Float64
            )
        ) && self.shape.len() == 2
    }

    fn describe(&self) -> String {
        let ty = self
            .element
            .map_or_else(|| "not a tensor".to_string(), super::input::type_name);
        format!("{:?} {} {ty}", self.name, shown(&self.shape))
    }
}

/// The output every run reads and how its rows are read.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSpec {
    pub name: String,
    pub shape: Vec<i64>,
    /// Scores per row (C), as the model answered the probe.
    pub classes: usize,
    pub kind: OutputKind,
    pub kind_source: Source,
    /// `Env`/`Metadata` when `MODEL_OUTPUT` named it, `Shape` when it was the first `[N,C]`.
    pub output_source: Source,
    /// The operator behind the output, when the graph could be read.
    pub producer: Option<Producer>,
}

/// Picks the output: `wanted` by name, else the first `[N,C]` float output. Returns its index
/// and, when other outputs are left unread, a warning naming them.
pub fn choose(
    outputs: &[DeclaredOutput],
    wanted: Option<(String, Source)>,
) -> Result<(usize, Source, Option<String>), String> {
    let listing = || {
        outputs
            .iter()
            .map(DeclaredOutput::describe)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (index, source) = match wanted {
        Some((name, source)) => {
            let Some(index) = outputs.iter().position(|o| o.name == name) else {
                return Err(format!(
                    "{}: the model has no output named {name:?}; its outputs are {}",
                    if source == Source::Env {
                        "MODEL_OUTPUT"
                    } else {
                        "the model's output metadata"
                    },
                    listing()
                ));
            };
            (index, source)
        }
        None => {
            let Some(index) = outputs.iter().position(DeclaredOutput::is_rows) else {
                return Err(format!(
                    "no output gives one row of class scores per chip ([N,C], float): the \
                     model's outputs are {}. A [N,C,H,W] output is a map (segmentation or \
                     features), not a classification: export the classifier's head, e.g. after \
                     GlobalAveragePool and Flatten",
                    listing()
                ));
            };
            (index, Source::Shape)
        }
    };
    let chosen = &outputs[index];
    if !chosen.is_rows() {
        return Err(format!(
            "output {} is not [N,C] float class scores: tilepredict reads one row per chip. \
             Set MODEL_OUTPUT to one of: {}",
            chosen.describe(),
            listing()
        ));
    }
    let others: Vec<String> = outputs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, o)| o.describe())
        .collect();
    let warning = (!others.is_empty()).then(|| {
        format!(
            "the model has {} outputs; reading {} ({}); not read: {}. Set MODEL_OUTPUT to read \
             another",
            outputs.len(),
            chosen.describe(),
            match source {
                Source::Shape => "the first [N,C] output",
                Source::Env => "MODEL_OUTPUT",
                _ => "the model's output metadata",
            },
            others.join(", ")
        )
    });
    Ok((index, source, warning))
}

/// The kind an operator implies (`OUTPUT_KIND=auto`).
pub fn kind_of(producer: &Producer) -> OutputKind {
    match producer.op.as_deref() {
        Some("Softmax" | "QLinearSoftmax") => OutputKind::Probabilities,
        Some("Sigmoid" | "QLinearSigmoid" | "HardSigmoid") => OutputKind::Sigmoid,
        // Log-probabilities are logits: their softmax gives the probabilities back exactly.
        _ => OutputKind::Logits,
    }
}

/// A warning when a kind given by hand contradicts the graph in a way that spoils the scores.
pub fn contradiction(kind: OutputKind, producer: &Producer, source: Source) -> Option<String> {
    let op = producer.op.as_deref()?;
    let graph = kind_of(producer);
    let doubled = matches!(
        (kind, graph),
        (
            OutputKind::Logits | OutputKind::Multilabel,
            OutputKind::Probabilities | OutputKind::Sigmoid
        )
    );
    doubled.then(|| {
        format!(
            "{} says {}, but the output comes from {op}: the scores are already \
             probabilities, and a second {} squashes them toward the middle. Unset it \
             (auto reads {})",
            if source == Source::Env {
                "OUTPUT_KIND"
            } else {
                "the model's output_kind metadata"
            },
            name(kind),
            if kind == OutputKind::Logits {
                "softmax"
            } else {
                "sigmoid"
            },
            name(graph)
        )
    })
}

/// The kind's name as written in settings.
pub fn name(kind: OutputKind) -> &'static str {
    match kind {
        OutputKind::Logits => "logits",
        OutputKind::Probabilities => "probabilities",
        OutputKind::Sigmoid => "sigmoid",
        OutputKind::Multilabel => "multilabel",
    }
}

impl OutputSpec {
    /// Labels the answer has: 2 for a one-score (binary) output, else C.
    pub fn answers(&self) -> usize {
        if self.classes == 1 { 2 } else { self.classes }
    }

    /// True for independent labels (several, each with its own probability).
    pub fn independent(&self) -> bool {
        self.classes > 1 && matches!(self.kind, OutputKind::Sigmoid | OutputKind::Multilabel)
    }

    /// One raw row → probabilities in label order (see the module's table).
    pub fn probabilities(&self, row: &[f32]) -> Vec<f32> {
        match (self.kind, row) {
            (OutputKind::Logits | OutputKind::Multilabel, [z]) => vec![sigmoid(-z), sigmoid(*z)],
            (OutputKind::Probabilities | OutputKind::Sigmoid, [p]) => vec![1.0 - p, *p],
            (OutputKind::Logits, _) => softmax(row),
            (OutputKind::Multilabel, _) => row.iter().map(|z| sigmoid(*z)).collect(),
            (OutputKind::Probabilities | OutputKind::Sigmoid, _) => row.to_vec(),
        }
    }

    /// A problem with the probe's probabilities that means the kind is wrong: probabilities
    /// that do not sum to 1, or sigmoid outputs outside 0–1.
    pub fn check_probe(&self, row: &[f32], source: Source) -> Result<(), String> {
        let fix = |what: &str| {
            format!(
                "output {:?} is read as {} ({}), but on a grey chip it answered {row:?}, {what}: \
                 set OUTPUT_KIND to what the model gives (logits for raw scores)",
                self.name,
                name(self.kind),
                match source {
                    Source::Env => "OUTPUT_KIND",
                    Source::Metadata => "the model's output_kind metadata",
                    _ => "its graph",
                }
            )
        };
        let outside = row.iter().any(|p| !(-1e-3..=1.001).contains(p));
        match self.kind {
            OutputKind::Probabilities
                if outside || (row.len() > 1 && (row.iter().sum::<f32>() - 1.0).abs() > 1e-2) =>
            {
                Err(fix("which are not probabilities summing to 1"))
            }
            OutputKind::Sigmoid if outside => {
                Err(fix("which are not probabilities between 0 and 1"))
            }
            _ => Ok(()),
        }
    }
}

/// How a label is chosen from the probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    /// More than two exclusive classes: the most probable.
    Argmax,
    /// Two labels: the positive (second) one when its probability ≥ the threshold.
    Threshold,
    /// Independent labels: every label ≥ the threshold.
    Multilabel,
}

/// The rule, and the threshold it uses (with where it came from).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub rule: Rule,
    pub threshold: f32,
    pub threshold_source: Source,
}

/// `POSITIVE_THRESHOLD`'s default.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

impl Decision {
    /// The rule for `output`; a threshold given for a model that takes none is reported back.
    pub fn new(output: &OutputSpec, threshold: Option<(f32, Source)>) -> (Self, Option<String>) {
        let rule = if output.independent() {
            Rule::Multilabel
        } else if output.answers() == 2 {
            Rule::Threshold
        } else {
            Rule::Argmax
        };
        let note = match (rule, threshold) {
            (Rule::Argmax, Some((t, source))) => Some(format!(
                "{} = {t} is ignored: the model has {} exclusive classes, so the label is the \
                 most probable one (a threshold applies to two-class and multilabel models)",
                if source == Source::Env {
                    "POSITIVE_THRESHOLD"
                } else {
                    "the model's positive_threshold metadata"
                },
                output.classes
            )),
            _ => None,
        };
        let (threshold, threshold_source) =
            threshold.unwrap_or((DEFAULT_THRESHOLD, Source::Default));
        (
            Self {
                rule,
                threshold,
                threshold_source,
            },
            note,
        )
    }

    /// The label(s) for one row of finite probabilities in label order (`labels` as many).
    pub fn decide(&self, labels: &[String], probabilities: Vec<f32>) -> Scored {
        let top = argmax(&probabilities);
        let (best, chosen) = match self.rule {
            Rule::Argmax => (top, None),
            Rule::Threshold => (usize::from(probabilities[1] >= self.threshold), None),
            Rule::Multilabel => {
                let mut over: Vec<usize> = (0..probabilities.len())
                    .filter(|i| probabilities[*i] >= self.threshold)
                    .collect();
                over.sort_by(|a, b| probabilities[*b].total_cmp(&probabilities[*a]));
                (
                    top,
                    Some(over.into_iter().map(|i| labels[i].clone()).collect()),
                )
            }
        };
        Scored {
            label: labels[best].clone(),
            score: probabilities[best],
            probabilities,
            labels: chosen,
            registry: None,
        }
    }
}

/// The first index of the largest value.
fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |acc, (i, p)| {
            if *p > acc.1 { (i, *p) } else { acc }
        })
        .0
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Numerically stable softmax (subtracts the maximum first).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
impl OutputSpec {
    /// An output `"y"` of `classes` scores of `kind`, for unit tests.
    pub fn sample(kind: OutputKind, classes: usize) -> Self {
        OutputSpec {
            name: "y".into(),
            shape: vec![-1, classes as i64],
            classes,
            kind,
            kind_source: Source::Env,
            output_source: Source::Shape,
            producer: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(kind: OutputKind, classes: usize) -> OutputSpec {
        OutputSpec::sample(kind, classes)
    }

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("l{i}")).collect()
    }

    fn declared(name: &str, shape: &[i64]) -> DeclaredOutput {
        DeclaredOutput {
            name: name.into(),
            element: Some(TensorElementType::Float32),
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let p = softmax(&[1000.0, 1000.0, -1000.0]);
        assert!((p[0] - 0.5).abs() < 1e-6 && (p[1] - 0.5).abs() < 1e-6 && p[2] == 0.0);
        let p = softmax(&[8.0, 0.0, 0.0]);
        let e8 = 8f32.exp();
        assert!((p[0] - e8 / (e8 + 2.0)).abs() < 1e-6);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn one_logit_is_the_same_as_two_logits_zero_and_z() {
        let one = output(OutputKind::Logits, 1);
        let two = output(OutputKind::Logits, 2);
        for z in [-30.0, -2.5, -0.1, 0.0, 0.7, 3.0, 30.0] {
            let (a, b) = (one.probabilities(&[z]), two.probabilities(&[0.0, z]));
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-6, "z={z}: {a:?} vs {b:?}");
            }
            assert!((a[0] + a[1] - 1.0).abs() < 1e-6);
            // A multilabel output of one score is the same binary answer.
            assert_eq!(output(OutputKind::Multilabel, 1).probabilities(&[z]), a);
        }
    }

    #[test]
    fn probabilities_and_sigmoid_are_taken_as_they_are() {
        assert_eq!(
            output(OutputKind::Sigmoid, 1).probabilities(&[0.25]),
            vec![0.75, 0.25]
        );
        assert_eq!(
            output(OutputKind::Probabilities, 3).probabilities(&[0.2, 0.3, 0.5]),
            vec![0.2, 0.3, 0.5]
        );
        assert_eq!(
            output(OutputKind::Sigmoid, 2).probabilities(&[0.9, 0.8]),
            vec![0.9, 0.8]
        );
        let m = output(OutputKind::Multilabel, 2).probabilities(&[0.0, 2.0]);
        assert!((m[0] - 0.5).abs() < 1e-6 && (m[1] - 1.0 / (1.0 + (-2f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn two_labels_follow_the_threshold_and_more_take_the_most_probable() {
        let two = output(OutputKind::Logits, 1);
        let (d, note) = Decision::new(&two, Some((0.3, Source::Env)));
        assert_eq!((d.rule, note), (Rule::Threshold, None));
        let s = d.decide(&labels(2), vec![0.65, 0.35]);
        assert_eq!((s.label.as_str(), s.score), ("l1", 0.35));
        let s = d.decide(&labels(2), vec![0.75, 0.25]);
        assert_eq!((s.label.as_str(), s.score, s.labels), ("l0", 0.75, None));
        // Exactly at the threshold counts as positive.
        assert_eq!(d.decide(&labels(2), vec![0.7, 0.3]).label, "l1");

        let (d, note) = Decision::new(&output(OutputKind::Logits, 3), Some((0.3, Source::Env)));
        assert_eq!(d.rule, Rule::Argmax);
        assert!(
            note.unwrap()
                .contains("POSITIVE_THRESHOLD = 0.3 is ignored")
        );
        assert_eq!(d.decide(&labels(3), vec![0.2, 0.5, 0.3]).label, "l1");
        let (d, _) = Decision::new(&output(OutputKind::Probabilities, 2), None);
        assert_eq!(
            (d.rule, d.threshold, d.threshold_source),
            (Rule::Threshold, 0.5, Source::Default)
        );
    }

    #[test]
    fn multilabel_answers_every_label_at_or_over_the_threshold_most_probable_first() {
        let (d, _) = Decision::new(
            &output(OutputKind::Sigmoid, 4),
            Some((0.5, Source::Metadata)),
        );
        assert_eq!(d.rule, Rule::Multilabel);
        let s = d.decide(&labels(4), vec![0.6, 0.1, 0.9, 0.5]);
        assert_eq!(s.labels, Some(vec!["l2".into(), "l0".into(), "l3".into()]));
        assert_eq!((s.label.as_str(), s.score), ("l2", 0.9));
        let s = d.decide(&labels(4), vec![0.1, 0.2, 0.3, 0.4]);
        assert_eq!(s.labels, Some(vec![]));
        assert_eq!(
            s.label, "l3",
            "label stays the most probable, for single-label readers"
        );
    }

    #[test]
    fn the_first_rows_output_is_read_unless_one_is_named() {
        let outputs = [
            declared("features", &[-1, 512, 4, 4]),
            declared("logits", &[-1, 2]),
            declared("aux", &[-1, 2]),
        ];
        let (i, source, warning) = choose(&outputs, None).unwrap();
        assert_eq!((i, source), (1, Source::Shape));
        let warning = warning.unwrap();
        assert!(
            warning.contains("\"features\" [N,512,4,4]")
                && warning.contains("\"aux\" [N,2]")
                && warning.contains("MODEL_OUTPUT"),
            "{warning}"
        );
        let (i, _, _) = choose(&outputs, Some(("aux".into(), Source::Env))).unwrap();
        assert_eq!(i, 2);
        let err = choose(&outputs, Some(("prob".into(), Source::Env))).unwrap_err();
        assert!(
            err.contains("no output named \"prob\"") && err.contains("\"logits\" [N,2] float32"),
            "{err}"
        );
        let err = choose(&outputs, Some(("features".into(), Source::Env))).unwrap_err();
        assert!(err.contains("not [N,C]"), "{err}");
        let err = choose(&outputs[..1], None).unwrap_err();
        assert!(err.contains("[N,C,H,W] output is a map"), "{err}");
        assert_eq!(choose(&outputs[1..2], None).unwrap().2, None);
    }

    #[test]
    fn auto_reads_the_operator_and_a_contradiction_is_named() {
        let by = |op: &str| Producer {
            op: Some(op.into()),
            through: vec![],
        };
        assert_eq!(kind_of(&by("Softmax")), OutputKind::Probabilities);
        assert_eq!(kind_of(&by("Sigmoid")), OutputKind::Sigmoid);
        assert_eq!(kind_of(&by("Gemm")), OutputKind::Logits);
        assert_eq!(kind_of(&by("LogSoftmax")), OutputKind::Logits);
        let warning = contradiction(OutputKind::Logits, &by("Softmax"), Source::Env).unwrap();
        assert!(
            warning.contains("OUTPUT_KIND says logits") && warning.contains("second softmax"),
            "{warning}"
        );
        assert_eq!(
            contradiction(OutputKind::Probabilities, &by("Gemm"), Source::Env),
            None
        );
    }

    #[test]
    fn a_probe_that_is_not_probabilities_refutes_the_kind() {
        let p = output(OutputKind::Probabilities, 2);
        assert!(p.check_probe(&[0.3, 0.7], Source::Graph).is_ok());
        let err = p.check_probe(&[2.0, -1.0], Source::Env).unwrap_err();
        assert!(
            err.contains("not probabilities summing to 1") && err.contains("OUTPUT_KIND"),
            "{err}"
        );
        assert!(
            output(OutputKind::Sigmoid, 4)
                .check_probe(&[0.1, 0.9, 0.9, 0.9], Source::Graph)
                .is_ok()
        );
        assert!(
            output(OutputKind::Sigmoid, 1)
                .check_probe(&[3.0], Source::Env)
                .is_err()
        );
        assert!(
            output(OutputKind::Logits, 2)
                .check_probe(&[30.0, -4.0], Source::Env)
                .is_ok()
        );
    }
}
