//! Models as users export them, through the real `bootstrap` under the Runtime API emulator:
//! every output head (one logit, one sigmoid, two logits, a softmax, multilabel), input layout
//! and type (NHWC, uint8, float16), channel order and pixel range, several outputs, fixed and
//! dynamic batches, and the models it must refuse.
//!
//! The fixture models (`scripts/make_fixture_models.py`, each named after the exporter it
//! mimics) all score the chip's mean pixel with known weights, and every chip here is one
//! solid colour, so each answer is checked against probabilities computed by hand — and models
//! that must be equivalent (a `[N,1]` logit `z` and `[N,2]` logits `[0, z]`, a softmax head and
//! its logits, NHWC and NCHW) against each other.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::function::{
    by_column, env, in_tile, json_lines, model, solid_png, spawn_on, xyz,
};
use crate::support::runtime::LambdaProcess;
use crate::support::tiles::{TileResponse, TileServer};

/// One solid colour per tile column, from column `FIRST` on.
const COLOURS: [[u8; 3]; 8] = [
    [255, 0, 0],
    [0, 255, 0],
    [0, 0, 255],
    [128, 128, 128],
    [200, 180, 40],
    [30, 60, 90],
    [255, 255, 255],
    [0, 0, 0],
];
const FIRST: u32 = 100;

/// The binary roof score's weights (scripts/make_fixture_models.py: ROOF_W, ROOF_B).
const ROOF_W: [f64; 3] = [4.0, -2.0, -2.0];
const ROOF_B: f64 = 0.5;
/// The multilabel model's weights (MULTI_W, MULTI_B) and labels.
const MULTI_W: [[f64; 3]; 4] = [
    [6.0, 0.0, 0.0],
    [0.0, 6.0, 0.0],
    [0.0, 0.0, 6.0],
    [3.0, 3.0, -6.0],
];
const MULTI_B: [f64; 4] = [-3.0, -3.0, -3.0, -1.0];
const MULTI_LABELS: [&str; 4] = ["red_roof", "green_roof", "blue_roof", "bright"];

fn tiles() -> TileServer {
    by_column(|x| match x.checked_sub(u64::from(FIRST)) {
        Some(i) if (i as usize) < COLOURS.len() => {
            TileResponse::png(solid_png(COLOURS[i as usize]))
        }
        _ => TileResponse::status(404),
    })
}

fn event() -> Value {
    let buildings: Vec<Value> = (0..COLOURS.len() as u32)
        .map(|i| in_tile(format!("c{i}"), FIRST + i))
        .collect();
    json!({ "buildings": buildings })
}

/// `bootstrap` with `model_name` (a fixture, or an absolute path) on `tiles` at `ZOOM`.
fn start(model_name: &str, tiles: &TileServer, extra: &[(&str, &str)]) -> LambdaProcess {
    if model_name.starts_with('/') {
        let zoom = crate::support::function::ZOOM.to_string();
        let mut vars = vec![("TILE_ZOOM", zoom.as_str())];
        vars.extend_from_slice(extra);
        LambdaProcess::spawn(&env(model_name, &xyz(&tiles.base_url()), &vars))
    } else {
        spawn_on(model_name, tiles, extra)
    }
}

/// The answer of `bootstrap` with `model_name` on every colour.
fn answer(model_name: &str, tiles: &TileServer, extra: &[(&str, &str)]) -> Value {
    let answer = start(model_name, tiles, extra)
        .invoke(&event(), 20_000)
        .unwrap_response();
    assert_eq!(answer["failed"], 0, "{model_name}: {answer}");
    answer
}

/// Each prediction's probabilities, in the answer's label order.
fn probabilities(answer: &Value) -> Vec<Vec<f64>> {
    answer["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["probabilities"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn labels_of(answer: &Value) -> Vec<String> {
    answer["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap().to_string())
        .collect()
}

fn same(a: &[Vec<f64>], b: &[Vec<f64>], tolerance: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.len(), y.len(), "{what}: chip {i}");
        for (p, q) in x.iter().zip(y) {
            assert!(
                (p - q).abs() <= tolerance,
                "{what}: chip {i}: {x:?} vs {y:?}"
            );
        }
    }
}

/// Answers hold probabilities rounded to 6 decimals from `f32` arithmetic: two answers of
/// equivalent models, or an answer and the exact value, agree to a few millionths.
const CLOSE: f64 = 3e-6;

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The mean pixel of colour `c`, scaled to 0–1.
fn unit(c: [u8; 3]) -> [f64; 3] {
    c.map(|v| f64::from(v) / 255.0)
}

fn dot(w: &[f64; 3], m: &[f64; 3]) -> f64 {
    w.iter().zip(m).map(|(a, b)| a * b).sum()
}

/// `[σ(−z), σ(z)]` of the binary roof score on each colour.
fn roof_expected() -> Vec<Vec<f64>> {
    COLOURS
        .iter()
        .map(|c| {
            let z = dot(&ROOF_W, &unit(*c)) + ROOF_B;
            vec![sigmoid(-z), sigmoid(z)]
        })
        .collect()
}

/// Asserts a warning log line's message holds `text`. Init writes its warnings before the
/// "model ready" line, which the child's log reader may not have reached yet.
fn warned(lambda: &LambdaProcess, text: &str) {
    let logs = lambda.logs_containing("\"model ready\"");
    let found = json_lines(&logs)
        .iter()
        .any(|l| l["level"] == "WARN" && l["message"].as_str().is_some_and(|m| m.contains(text)));
    assert!(found, "no warning with {text:?} in:\n{logs}");
}

fn init_error(mut lambda: LambdaProcess) -> (String, String) {
    let error = lambda
        .wait_init_error(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no init error; logs:\n{}", lambda.logs()));
    assert!(
        lambda
            .wait_exit(Duration::from_secs(10))
            .is_some_and(|s| !s.success())
    );
    error
}

/// A copy of fixture `name` in `dir` with metadata set by `bootstrap metadata`, as a user would.
fn with_metadata(dir: &tempfile::TempDir, name: &str, pairs: &[&str]) -> String {
    let out = dir.path().join(name).to_string_lossy().into_owned();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .arg("metadata")
        .arg(model(name))
        .arg(&out)
        .args(pairs)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    out
}

#[test]
fn a_binary_head_answers_the_same_whether_it_ends_in_a_logit_a_sigmoid_two_logits_or_a_softmax() {
    let tiles = tiles();
    let labels = [("MODEL_LABELS", "other,asbestos")];
    let want = roof_expected();
    let mut kinds = Vec::new();
    for (name, kind, operator) in [
        ("binary_logit.onnx", "logits", "Gemm"),
        ("binary_sigmoid.onnx", "sigmoid", "Sigmoid"),
        ("two_logits.onnx", "logits", "Gemm"),
        ("two_softmax.onnx", "probabilities", "Softmax"),
    ] {
        let answer = answer(name, &tiles, &labels);
        same(&probabilities(&answer), &want, CLOSE, name);
        let model = &answer["model"];
        assert_eq!(model["labels"], json!(["other", "asbestos"]), "{name}");
        assert_eq!(model["output"]["kind"], kind, "{name}: {model}");
        assert_eq!(model["output"]["operator"], operator, "{name}: {model}");
        assert_eq!(model["sources"]["output_kind"], "graph", "{name}");
        assert_eq!(
            model["decision"],
            json!({"rule": "threshold", "positive_threshold": 0.5}),
            "{name}"
        );
        // The positive label exactly where its probability reaches 0.5; the score is the
        // probability of the label given.
        for (p, w) in answer["predictions"].as_array().unwrap().iter().zip(&want) {
            let positive = w[1] >= 0.5;
            assert_eq!(
                p["label"],
                if positive { "asbestos" } else { "other" },
                "{name}: {p}"
            );
            let score = if positive { w[1] } else { w[0] };
            assert!(
                (p["score"].as_f64().unwrap() - score).abs() < CLOSE,
                "{name}: {p}"
            );
        }
        kinds.push(labels_of(&answer));
    }
    assert!(kinds.windows(2).all(|w| w[0] == w[1]), "{kinds:?}");
    assert!(
        kinds[0].contains(&"asbestos".to_string()) && kinds[0].contains(&"other".to_string()),
        "the colours give both answers: {kinds:?}"
    );
}

#[test]
fn one_label_for_a_one_score_model_fails_init_saying_to_name_two() {
    let tiles = tiles();
    for name in ["binary_sigmoid.onnx", "binary_logit.onnx"] {
        let (error_type, message) =
            init_error(spawn_on(name, &tiles, &[("MODEL_LABELS", "asbestos")]));
        assert_eq!(error_type, "ModelError");
        assert!(
            message.contains("the model is binary")
                && message.contains("negative first, e.g. MODEL_LABELS=other,asbestos"),
            "{message}"
        );
    }
}

#[test]
fn the_threshold_moves_binary_decisions_and_the_environment_overrides_the_metadata() {
    let tiles = tiles();
    let dir = tempfile::tempdir().unwrap();
    let described = with_metadata(
        &dir,
        "binary_logit.onnx",
        &["labels=other,asbestos", "positive_threshold=0.9"],
    );
    let want = roof_expected();
    let pick = |threshold: f64| -> Vec<String> {
        want.iter()
            .map(|p| {
                if p[1] >= threshold {
                    "asbestos"
                } else {
                    "other"
                }
                .to_string()
            })
            .collect()
    };
    assert_ne!(
        pick(0.9),
        pick(0.5),
        "the colours must tell the thresholds apart"
    );

    let from_file = answer(&described, &tiles, &[]);
    assert_eq!(labels_of(&from_file), pick(0.9));
    assert_eq!(from_file["model"]["decision"]["positive_threshold"], 0.9);
    assert_eq!(
        from_file["model"]["sources"]["positive_threshold"],
        "metadata"
    );
    assert_eq!(from_file["model"]["sources"]["labels"], "metadata");
    same(
        &probabilities(&from_file),
        &want,
        CLOSE,
        "threshold leaves probabilities alone",
    );

    let overridden = answer(&described, &tiles, &[("POSITIVE_THRESHOLD", "0.2")]);
    assert_eq!(labels_of(&overridden), pick(0.2));
    assert_eq!(overridden["model"]["decision"]["positive_threshold"], 0.2);
    assert_eq!(overridden["model"]["sources"]["positive_threshold"], "env");
}

#[test]
fn a_logits_setting_on_a_softmax_head_is_applied_but_warned_about() {
    let tiles = tiles();
    let lambda = spawn_on("two_softmax.onnx", &tiles, &[("OUTPUT_KIND", "logits")]);
    let answer = lambda.invoke(&event(), 20_000).unwrap_response();
    // A second softmax squashes the probabilities toward one half: what the warning says.
    for (got, want) in probabilities(&answer).iter().zip(roof_expected()) {
        assert!(
            (got[1] - 0.5).abs() <= (want[1] - 0.5).abs() + 1e-9,
            "{got:?} vs {want:?}"
        );
    }
    assert_eq!(answer["model"]["sources"]["output_kind"], "env");
    warned(
        &lambda,
        "OUTPUT_KIND says logits, but the output comes from Softmax",
    );
}

#[test]
fn multilabel_models_answer_every_label_at_or_over_the_threshold() {
    let tiles = tiles();
    let want: Vec<Vec<f64>> = COLOURS
        .iter()
        .map(|c| {
            let m = unit(*c);
            MULTI_W
                .iter()
                .zip(MULTI_B)
                .map(|(w, b)| sigmoid(dot(w, &m) + b))
                .collect()
        })
        .collect();
    let threshold = 0.6;
    let t = threshold.to_string();
    for (name, extra) in [
        (
            "multilabel_sigmoid.onnx",
            vec![("POSITIVE_THRESHOLD", t.as_str())],
        ),
        (
            "multilabel_logits.onnx",
            vec![
                ("POSITIVE_THRESHOLD", t.as_str()),
                ("OUTPUT_KIND", "multilabel"),
            ],
        ),
    ] {
        let answer = answer(name, &tiles, &extra);
        same(&probabilities(&answer), &want, CLOSE, name);
        assert_eq!(answer["model"]["decision"]["rule"], "multilabel", "{name}");
        assert_eq!(answer["model"]["labels"], json!(MULTI_LABELS), "{name}");
        for (p, w) in answer["predictions"].as_array().unwrap().iter().zip(&want) {
            let mut over: Vec<usize> = (0..4).filter(|i| w[*i] >= threshold).collect();
            over.sort_by(|a, b| w[*b].total_cmp(&w[*a]));
            let expected: Vec<&str> = over.iter().map(|i| MULTI_LABELS[*i]).collect();
            assert_eq!(p["labels"], json!(expected), "{name}: {p}");
            // The first most probable label (the grey chip ties three).
            let top = (0..4).fold(0, |best, i| if w[i] > w[best] { i } else { best });
            assert_eq!(p["label"], MULTI_LABELS[top], "{name}: {p}");
        }
    }
}

#[test]
fn the_register_flags_what_the_decision_says_multilabel_and_thresholded_alike() {
    let tiles = tiles();
    let dir = tempfile::tempdir().unwrap();
    let register = dir.path().join("register.csv");
    let listed = in_tile("listed", FIRST + 2); // the blue chip
    std::fs::write(
        &register,
        format!("id,lat,lon\nr1,{},{}\n", listed["lat"], listed["lon"]),
    )
    .unwrap();
    let register = register.to_string_lossy().into_owned();
    for (name, extra, positive) in [
        (
            "multilabel_sigmoid.onnx",
            vec![("REGISTRY_POSITIVE_LABEL", "blue_roof")],
            "blue_roof",
        ),
        (
            "binary_logit.onnx",
            vec![
                ("REGISTRY_POSITIVE_LABEL", "asbestos"),
                ("MODEL_LABELS", "other,asbestos"),
                ("POSITIVE_THRESHOLD", "0.9"),
            ],
            "asbestos",
        ),
    ] {
        let mut extra = extra;
        extra.push(("REGISTRY_URI", register.as_str()));
        let answer = answer(name, &tiles, &extra);
        let says: Vec<bool> = answer["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| match p.get("labels") {
                Some(labels) => labels.as_array().unwrap().iter().any(|l| l == positive),
                None => p["label"] == positive,
            })
            .collect();
        let summary = &answer["registry"];
        assert_eq!(
            summary["flagged"],
            says.iter().filter(|s| **s).count(),
            "{name}: {summary}"
        );
        assert_eq!(summary["listed"], 1, "{name}: {summary}");
        assert_eq!(
            summary["listed_not_flagged"],
            usize::from(!says[2]),
            "{name}: {summary}"
        );
    }
}

#[test]
fn keras_nhwc_uint8_and_float16_inputs_answer_as_the_nchw_float32_model() {
    let tiles = tiles();
    let reference = probabilities(&answer("two_logits.onnx", &tiles, &[]));
    same(&reference, &roof_expected(), CLOSE, "reference");
    for (name, layout, element_type, tolerance) in [
        ("keras_nhwc.onnx", "nhwc", "float32", CLOSE),
        ("uint8_input.onnx", "nhwc", "uint8", CLOSE),
        // float16 holds 3 significant digits: the logits, and so the probabilities, to ~1e-3.
        ("float16_io.onnx", "nchw", "float16", 2e-3),
    ] {
        let answer = answer(name, &tiles, &[]);
        same(&probabilities(&answer), &reference, tolerance, name);
        let input = &answer["model"]["input"];
        assert_eq!(
            (input["layout"].as_str(), input["element_type"].as_str()),
            (Some(layout), Some(element_type)),
            "{name}: {input}"
        );
        assert_eq!(answer["model"]["sources"]["input_layout"], "shape");
    }
}

#[test]
fn a_caffe_style_model_describes_its_bgr_byte_range_and_means_itself() {
    let tiles = tiles();
    // The model's weights act on (B, G, R) − mean (mean in B, G, R order), over 255.
    let mean_bgr = [103.939, 116.779, 123.68];
    let w_bgr = [ROOF_W[2] / 255.0, ROOF_W[1] / 255.0, ROOF_W[0] / 255.0];
    let expected = |source: [usize; 3]| -> Vec<Vec<f64>> {
        COLOURS
            .iter()
            .map(|c| {
                let z: f64 = (0..3)
                    .map(|k| w_bgr[k] * (f64::from(c[source[k]]) - mean_bgr[k]))
                    .sum::<f64>()
                    + ROOF_B;
                vec![sigmoid(-z), sigmoid(z)]
            })
            .collect()
    };
    let described = answer("caffe_bgr.onnx", &tiles, &[]);
    same(
        &probabilities(&described),
        &expected([2, 1, 0]),
        CLOSE,
        "bgr from the metadata",
    );
    let model = &described["model"];
    assert_eq!(model["input"]["channels"], "bgr");
    assert_eq!(model["input"]["range"], "byte");
    assert_eq!(model["input"]["mean"], json!(mean_bgr));
    for key in ["input_channels", "input_range", "input_mean", "labels"] {
        assert_eq!(model["sources"][key], "metadata", "{key}: {model}");
    }
    assert_eq!(model["sources"]["input_std"], "default");
    // The environment overrides the file: fed as RGB, the same model answers otherwise.
    let overridden = answer("caffe_bgr.onnx", &tiles, &[("INPUT_CHANNELS", "rgb")]);
    same(
        &probabilities(&overridden),
        &expected([0, 1, 2]),
        CLOSE,
        "rgb from the environment",
    );
    assert_eq!(overridden["model"]["sources"]["input_channels"], "env");
}

#[test]
fn with_several_outputs_the_first_rows_output_is_read_with_a_warning_unless_one_is_named() {
    let tiles = tiles();
    let softmax8 = |w: [[f64; 3]; 3]| -> Vec<Vec<f64>> {
        COLOURS
            .iter()
            .map(|c| {
                let m = unit(*c);
                let z: Vec<f64> = w.iter().map(|r| dot(r, &m)).collect();
                let max = z.iter().copied().fold(f64::MIN, f64::max);
                let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                e.iter().map(|v| v / sum).collect()
            })
            .collect()
    };
    let main = [[8.0, 0.0, 0.0], [0.0, 8.0, 0.0], [0.0, 0.0, 8.0]];
    let aux = [[0.0, 0.0, 8.0], [0.0, 8.0, 0.0], [8.0, 0.0, 0.0]];

    let lambda = spawn_on("two_outputs.onnx", &tiles, &[]);
    let first = lambda.invoke(&event(), 20_000).unwrap_response();
    same(&probabilities(&first), &softmax8(main), CLOSE, "logits");
    assert_eq!(first["model"]["output"]["name"], "logits");
    warned(
        &lambda,
        "not read: \"features\" [N,3,1,1] float32, \"aux\" [N,3] float32. Set MODEL_OUTPUT",
    );

    let named = answer("two_outputs.onnx", &tiles, &[("MODEL_OUTPUT", "aux")]);
    same(&probabilities(&named), &softmax8(aux), CLOSE, "aux");
    assert_eq!(named["model"]["output"]["name"], "aux");
    assert_eq!(named["model"]["sources"]["output"], "env");
}

#[test]
fn fixed_dynamic_batch_and_dynamic_size_models_answer_alike() {
    let tiles = tiles();
    let dynamic = probabilities(&answer("rgb_tiny.onnx", &tiles, &[]));
    let fixed = answer("rgb_tiny_batch1.onnx", &tiles, &[]);
    same(&probabilities(&fixed), &dynamic, CLOSE, "fixed batch of 1");
    assert_eq!(fixed["timing"]["batch_size"], 1);
    // Dynamic height and width: CHIP_SIZE, or the chip_size metadata, says what to feed.
    let sized = answer("dynamic_size.onnx", &tiles, &[("CHIP_SIZE", "24")]);
    same(&probabilities(&sized), &dynamic, CLOSE, "dynamic size");
    assert_eq!(sized["model"]["input"]["chip_size"], 24);
    let dir = tempfile::tempdir().unwrap();
    let described = with_metadata(&dir, "dynamic_size.onnx", &["chip_size=20"]);
    let from_file = answer(&described, &tiles, &[]);
    assert_eq!(from_file["model"]["input"]["chip_size"], 20);
    assert_eq!(from_file["model"]["sources"]["chip_size"], "metadata");
    let (error_type, message) = init_error(spawn_on("dynamic_size.onnx", &tiles, &[]));
    assert_eq!(error_type, "ModelError");
    assert!(
        message.contains("[N,3,?,?] has a dynamic height or width: set CHIP_SIZE"),
        "{message}"
    );
}

#[test]
fn models_the_function_cannot_use_fail_init_naming_the_shapes_and_the_fix() {
    let tiles = tiles();
    let dir = tempfile::tempdir().unwrap();
    // A threshold outside 0–1 in the file: written past the metadata tool's checks.
    let bytes = std::fs::read(model("two_logits.onnx")).unwrap();
    let bad = tilepredict::model::graph::with_metadata(
        &bytes,
        &[("positive_threshold".into(), "2".into())],
    )
    .unwrap();
    let bad_threshold = dir.path().join("bad_threshold.onnx");
    std::fs::write(&bad_threshold, bad).unwrap();
    let bad_threshold = bad_threshold.to_string_lossy().into_owned();

    // (model, settings, errorType, what the message must say)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "two_inputs.onnx",
            vec![],
            "ModelError",
            vec!["2 inputs", "\"scale\" [N,1] float32", "only input"],
        ),
        (
            "segmentation.onnx",
            vec![],
            "ModelError",
            vec!["\"mask\" [N,2,16,16]", "[N,C,H,W] output is a map"],
        ),
        (
            "rgb_tiny.onnx",
            vec![("MODEL_LABELS", "a,b")],
            "ModelError",
            vec!["MODEL_LABELS names 2 label(s) (a,b)", "[N,3]"],
        ),
        (
            "two_logits.onnx",
            vec![("POSITIVE_THRESHOLD", "1.5")],
            "ConfigError",
            vec!["POSITIVE_THRESHOLD=\"1.5\"", "between 0 and 1"],
        ),
        (
            bad_threshold.as_str(),
            vec![],
            "ModelError",
            vec![
                "metadata positive_threshold=\"2\"",
                "set POSITIVE_THRESHOLD to override",
            ],
        ),
        (
            "two_logits.onnx",
            vec![("OUTPUT_KIND", "probabilities")],
            "ModelError",
            vec!["not probabilities summing to 1", "OUTPUT_KIND"],
        ),
        (
            "keras_nhwc.onnx",
            vec![("INPUT_LAYOUT", "nchw")],
            "ModelError",
            vec!["INPUT_LAYOUT says nchw", "not 3"],
        ),
        (
            "uint8_input.onnx",
            vec![("INPUT_MEAN", "0.5")],
            "ModelError",
            vec!["is uint8", "unset INPUT_MEAN"],
        ),
        (
            "two_outputs.onnx",
            vec![("MODEL_OUTPUT", "probs")],
            "ModelError",
            vec!["no output named \"probs\"", "\"aux\" [N,3]"],
        ),
    ];
    for (name, extra, want_type, says) in cases {
        let (error_type, message) = init_error(start(name, &tiles, &extra));
        assert_eq!(error_type, want_type, "{name} {extra:?}: {message}");
        for s in says {
            assert!(
                message.contains(s),
                "{name} {extra:?}: {s:?} not in {message}"
            );
        }
    }
}
