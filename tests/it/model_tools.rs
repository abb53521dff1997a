//! The model tools through the real `bootstrap`, run as a user runs them (a command with its
//! environment, no Lambda runtime): `inspect` (text and JSON), `metadata`, `chips` and
//! `compare`. Chips come from a loopback tile server of solid colours, so the tensors written
//! and the agreement counted are checked against values computed by hand.

use std::process::{Command, Output};

use serde_json::{Value, json};
use tilepredict::model::input::InputBatch;
use tilepredict::model::npy;

use crate::support::function::{ZOOM, by_column, in_tile, model, ort_library, solid_png, xyz};
use crate::support::tiles::{TileResponse, TileServer};

/// `bootstrap ARGS` with a clean environment plus `vars`.
fn bootstrap(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bootstrap"));
    command
        .args(args)
        .env_clear()
        .env("ORT_DYLIB_PATH", ort_library())
        .env("RUST_LOG", "warn");
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    command
        .envs(vars.iter().copied())
        .output()
        .expect("bootstrap runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

#[test]
fn inspect_says_what_was_detected_and_where_each_setting_came_from() {
    let caffe = model("caffe_bgr.onnx");
    let text = bootstrap(
        &["inspect"],
        &[("MODEL_URI", &caffe), ("POSITIVE_THRESHOLD", "0.4")],
    );
    assert!(text.status.success(), "{}", stderr(&text));
    let out = stdout(&text);
    for says in [
        "metadata  labels = other,asbestos",
        "input_channels = bgr",
        "\"image\" [N,3,16,16] float32: layout nchw [shape], channels bgr [metadata]",
        "pixels 0–255 [metadata], then (x − mean) / std, mean 103.939,116.779,123.68 [metadata], std 1 [default]",
        "16 px a side at TILE_ZOOM [shape]",
        "made by Gemm: logits [graph] → softmax over 2 classes",
        "labels    other, asbestos [metadata]",
        "asbestos when p(asbestos) ≥ 0.4 [env], else other",
        "On a mid-grey chip: ",
    ] {
        assert!(out.contains(says), "{says:?} not in:\n{out}");
    }

    let json = bootstrap(&["inspect", "--json"], &[("MODEL_URI", &caffe)]);
    assert!(json.status.success(), "{}", stderr(&json));
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    let model = &report["model"];
    assert_eq!(model["input"]["channels"], "bgr");
    assert_eq!(model["sources"]["input_range"], "metadata");
    assert_eq!(model["sources"]["positive_threshold"], "default");
    assert_eq!(
        model["decision"],
        json!({"rule": "threshold", "positive_threshold": 0.5})
    );
    assert_eq!(
        report["file"]["metadata"]["input_mean"],
        "103.939,116.779,123.68"
    );
    assert_eq!(
        report["file"]["outputs"],
        json!(["\"logits\" [N,2] float32"])
    );
    assert_eq!(report["warnings"], json!([]));
    // The grey chip (128 in every channel) through BGR, 0–255, minus the means: by hand.
    let w_bgr = [-2.0 / 255.0, -2.0 / 255.0, 4.0 / 255.0];
    let mean = [103.939, 116.779, 123.68];
    let z: f64 = (0..3).map(|k| w_bgr[k] * (128.0 - mean[k])).sum::<f64>() + 0.5;
    let p = report["probe"]["probabilities"]["asbestos"]
        .as_f64()
        .unwrap();
    assert!((p - sigmoid(z)).abs() < 3e-6, "{p} vs {}", sigmoid(z));
    assert_eq!(
        report["probe"]["label"],
        if sigmoid(z) >= 0.5 {
            "asbestos"
        } else {
            "other"
        }
    );
}

#[test]
fn inspect_lists_unread_outputs_and_contradictions_as_warnings() {
    let out = bootstrap(
        &["inspect", "--json"],
        &[("MODEL_URI", &model("two_outputs.onnx"))],
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = report["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].as_str().unwrap().contains("Set MODEL_OUTPUT"),
        "{warnings:?}"
    );
    let out = bootstrap(
        &["inspect"],
        &[
            ("MODEL_URI", &model("two_softmax.onnx")),
            ("OUTPUT_KIND", "logits"),
        ],
    );
    assert!(
        stdout(&out)
            .contains("Warnings:\n  - OUTPUT_KIND says logits, but the output comes from Softmax"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn inspect_needs_no_tile_url_and_exits_with_the_init_error() {
    for (vars, error_type, says) in [
        (
            vec![("MODEL_URI", model("two_inputs.onnx"))],
            "ModelError",
            "2 inputs",
        ),
        (
            vec![
                ("MODEL_URI", model("binary_sigmoid.onnx")),
                ("MODEL_LABELS", "asbestos".into()),
            ],
            "ModelError",
            "MODEL_LABELS=other,asbestos",
        ),
        (
            vec![
                ("MODEL_URI", model("two_logits.onnx")),
                ("POSITIVE_THRESHOLD", "2".into()),
            ],
            "ConfigError",
            "POSITIVE_THRESHOLD=\"2\"",
        ),
        (vec![], "ConfigError", "MODEL_URI"),
        (
            vec![("MODEL_URI", "/nonexistent/roof.onnx".into())],
            "ModelLoadError",
            "/nonexistent/roof.onnx",
        ),
    ] {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = bootstrap(&["inspect"], &vars);
        assert_eq!(out.status.code(), Some(1), "{vars:?}");
        let err = stderr(&out);
        assert!(
            err.contains("the function cannot use this model")
                && err.contains(&format!("{error_type}: "))
                && err.contains(says),
            "{vars:?}: {err}"
        );
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn the_metadata_tool_writes_settings_that_init_reads_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("described.onnx");
    let out = out.to_str().unwrap();
    let source = model("binary_logit.onnx");
    let written = bootstrap(
        &[
            "metadata",
            &source,
            out,
            "labels=other,asbestos",
            "positive_threshold=0.3",
            "input_channels=bgr",
        ],
        &[],
    );
    assert!(written.status.success(), "{}", stderr(&written));
    assert!(
        stdout(&written).contains("check it with: MODEL_URI="),
        "{}",
        stdout(&written)
    );
    let shown = stdout(&bootstrap(&["metadata", out], &[]));
    assert_eq!(
        shown.trim(),
        "labels = other,asbestos\npositive_threshold = 0.3\ninput_channels = bgr"
    );
    let report: Value =
        serde_json::from_slice(&bootstrap(&["inspect", "--json"], &[("MODEL_URI", out)]).stdout)
            .unwrap();
    assert_eq!(report["model"]["labels"], json!(["other", "asbestos"]));
    assert_eq!(report["model"]["decision"]["positive_threshold"], 0.3);
    assert_eq!(report["model"]["sources"]["input_channels"], "metadata");

    // `key=` removes a key; the rest stays.
    let again = dir.path().join("again.onnx");
    let again = again.to_str().unwrap();
    assert!(
        bootstrap(&["metadata", out, again, "input_channels="], &[])
            .status
            .success()
    );
    assert_eq!(
        stdout(&bootstrap(&["metadata", again], &[])).trim(),
        "labels = other,asbestos\npositive_threshold = 0.3"
    );

    for (pair, says) in [
        (
            "input_rnage=byte",
            "\"input_rnage\" is not a model setting; the settings are labels, output, output_kind",
        ),
        (
            "positive_threshold=1.2",
            "positive_threshold=\"1.2\": must be between 0 and 1",
        ),
        (
            "output_kind=softmax",
            "expected auto, logits, probabilities, sigmoid or multilabel",
        ),
    ] {
        let bad = dir.path().join("bad.onnx");
        let refused = bootstrap(&["metadata", &source, bad.to_str().unwrap(), pair], &[]);
        assert_eq!(refused.status.code(), Some(1), "{pair}");
        assert!(
            stderr(&refused).contains(says),
            "{pair}: {}",
            stderr(&refused)
        );
        assert!(!bad.exists(), "{pair}: nothing is written");
    }
    let not_onnx = bootstrap(&["metadata", "/etc/hostname"], &[]);
    assert_eq!(not_onnx.status.code(), Some(1));
    assert!(
        stderr(&not_onnx).contains("not a readable ONNX protobuf"),
        "{}",
        stderr(&not_onnx)
    );
}

/// Solid colours by tile column, from column 200 on.
const COLOURS: [[u8; 3]; 6] = [
    [255, 0, 0],
    [0, 255, 0],
    [128, 128, 128],
    [200, 180, 40],
    [30, 60, 90],
    [250, 250, 250],
];

fn colour_tiles() -> TileServer {
    by_column(|x| match x.checked_sub(200) {
        Some(i) if (i as usize) < COLOURS.len() => {
            TileResponse::png(solid_png(COLOURS[i as usize]))
        }
        _ => TileResponse::status(404),
    })
}

fn buildings_file(dir: &tempfile::TempDir) -> String {
    let mut buildings: Vec<Value> = (0..COLOURS.len() as u32)
        .map(|i| in_tile(format!("c{i}"), 200 + i))
        .collect();
    buildings.push(json!({"id": "bad", "lat": 95.0, "lon": 0.0}));
    buildings.push(in_tile("no tile", 300));
    let path = dir.path().join("buildings.json");
    std::fs::write(&path, json!({ "buildings": buildings }).to_string()).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn chips_writes_exactly_what_the_model_is_fed() {
    let tiles = colour_tiles();
    let dir = tempfile::tempdir().unwrap();
    let event = buildings_file(&dir);
    let out = dir.path().join("chips.npy");
    let zoom = ZOOM.to_string();
    let written = bootstrap(
        &["chips", &event, out.to_str().unwrap()],
        &[
            ("MODEL_URI", &model("caffe_bgr.onnx")),
            ("TILE_URL", &xyz(&tiles.base_url())),
            ("TILE_ZOOM", &zoom),
            ("DOWNLOAD_RETRIES", "0"),
        ],
    );
    assert!(written.status.success(), "{}", stderr(&written));
    let summary = stderr(&written);
    assert!(
        summary.contains("wrote 6 chips of 8 buildings")
            && summary.contains("\"image_unavailable\": 1")
            && summary.contains("\"invalid position\": 1"),
        "{summary}"
    );
    let InputBatch::Float32(tensor) = npy::read(&std::fs::read(&out).unwrap()).unwrap() else {
        panic!("float32 chips expected");
    };
    assert_eq!(tensor.shape(), &[6, 3, 16, 16]);
    // Channel k holds pixel channel 2 − k (BGR), 0–255, minus the model's means.
    let mean = [103.939f32, 116.779, 123.68];
    for (i, colour) in COLOURS.iter().enumerate() {
        for k in 0..3 {
            let want = f32::from(colour[2 - k]) - mean[k];
            for v in tensor.slice(ndarray::s![i, k, .., ..]).iter() {
                assert!(
                    (v - want).abs() < 1e-4,
                    "chip {i} channel {k}: {v} vs {want}"
                );
            }
        }
    }
}

#[test]
fn compare_counts_the_same_answers_by_the_functions_own_decision() {
    let tiles = colour_tiles();
    let dir = tempfile::tempdir().unwrap();
    let event = buildings_file(&dir);
    let chips = dir.path().join("chips.npy");
    let chips = chips.to_str().unwrap();
    let reference = model("two_logits.onnx");
    let zoom = ZOOM.to_string();
    let labels = ("MODEL_LABELS", "other,asbestos");
    assert!(
        bootstrap(
            &["chips", &event, chips],
            &[
                ("MODEL_URI", &reference),
                ("TILE_URL", &xyz(&tiles.base_url())),
                ("TILE_ZOOM", &zoom),
                labels
            ],
        )
        .status
        .success()
    );
    // The same probabilities from a one-logit model: every answer the same, Δp ≈ 0.
    let same = bootstrap(
        &["compare", &model("binary_logit.onnx"), chips],
        &[("MODEL_URI", &reference), labels],
    );
    assert!(same.status.success(), "{}", stderr(&same));
    let report = stdout(&same);
    assert!(
        report.contains("same answer          6 of 6 (100.00 %)"),
        "{report}"
    );
    assert!(report.contains("largest |Δp|         0.0000"), "{report}");

    // The same model with a threshold of 0.9 in its metadata: answers differ exactly where the
    // positive probability is in [0.5, 0.9).
    let strict = dir.path().join("strict.onnx");
    let strict = strict.to_str().unwrap();
    assert!(
        bootstrap(
            &["metadata", &reference, strict, "positive_threshold=0.9"],
            &[]
        )
        .status
        .success()
    );
    let differ = COLOURS
        .iter()
        .filter(|c| {
            let m = c.map(|v| f64::from(v) / 255.0);
            let p = sigmoid(4.0 * m[0] - 2.0 * m[1] - 2.0 * m[2] + 0.5);
            (0.5..0.9).contains(&p)
        })
        .count();
    assert!(
        differ > 0 && differ < COLOURS.len(),
        "the colours must split: {differ}"
    );
    let out = bootstrap(
        &["compare", strict, chips],
        &[("MODEL_URI", &reference), labels],
    );
    let report = stdout(&out);
    let want = COLOURS.len() - differ;
    assert!(
        report.contains(&format!("same answer          {want} of 6")),
        "{want}: {report}"
    );
    assert!(report.contains("largest |Δp|         0.0000"), "{report}");

    // Chips another model cannot take are refused, naming both shapes.
    let refused = bootstrap(
        &["compare", &model("rgb_tiny.onnx"), chips],
        &[("MODEL_URI", &reference)],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("[3, 32, 32]") && stderr(&refused).contains("[3, 16, 16]"),
        "{}",
        stderr(&refused)
    );
}
