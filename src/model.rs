//! The ONNX model in ONNX Runtime: load the shared library, build the sessions from the model's
//! bytes, check its input/output shapes, and run batches.
//!
//! `INFERENCE_SESSIONS` sessions share `INFERENCE_THREADS` (each gets threads / sessions as its
//! `intra_threads`), lent out one batch at a time by a [`pool::Pool`] (`Session::run` takes
//! `&mut self`). On Lambda's vCPU counts one session with every thread is as fast as a pool of
//! one-thread sessions, with less memory (docs/PERFORMANCE.md, "INFERENCE_THREADS = the vCPUs,
//! in one session"); on larger Managed Instances, where one session's threads stop scaling,
//! several sessions run batches side by side (docs/PERFORMANCE.md, "Sessions").

mod pool;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ndarray::ArrayView4;
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::preprocess::softmax;

/// The library file name ONNX Runtime is looked up under beside the executable.
pub const ORT_LIBRARY: &str = "libonnxruntime.so";
/// The versioned name inside the PyPI wheel (`make ort` links both).
pub const ORT_LIBRARY_VERSIONED: &str = "libonnxruntime.so.1.31.1";

/// Where ONNX Runtime is loaded from: `ORT_DYLIB_PATH`, else beside the executable.
pub fn ort_library_path(configured: Option<&Path>) -> PathBuf {
    if let Some(path) = configured {
        if path.is_relative()
            && let Some(beside) = beside_executable(path)
            && beside.exists()
        {
            return beside;
        }
        return path.to_path_buf();
    }
    [ORT_LIBRARY, ORT_LIBRARY_VERSIONED]
        .iter()
        .filter_map(|name| beside_executable(Path::new(name)))
        .find(|p| p.exists())
        .or_else(|| beside_executable(Path::new(ORT_LIBRARY)))
        .unwrap_or_else(|| PathBuf::from(ORT_LIBRARY))
}

fn beside_executable(name: &Path) -> Option<PathBuf> {
    Some(std::env::current_exe().ok()?.parent()?.join(name))
}

/// Loads the library and creates the process's one ONNX Runtime environment.
///
/// ONNX Runtime allows one environment per process (a second fails even after the first is
/// dropped), so it is created once and shared; later calls return it whatever `library` says.
/// Checks the file first: `ort` panics on some bad paths, and a missing library should say
/// where it was looked for and how to get it.
pub fn onnx_runtime(library: &Path) -> Result<&'static Environment, String> {
    static ENVIRONMENT: Mutex<Option<&'static Environment>> = Mutex::new(None);
    let mut slot = ENVIRONMENT
        .lock()
        .map_err(|_| "the ONNX Runtime environment lock is poisoned")?;
    if let Some(environment) = *slot {
        return Ok(environment);
    }
    if !library.is_file() {
        return Err(format!(
            "ONNX Runtime library not found at {} (set ORT_DYLIB_PATH, or run `make ort` to fetch \
             onnxruntime 1.31.1 from PyPI into .ort/, and package it beside bootstrap)",
            library.display()
        ));
    }
    let environment = ort::init_from(library)
        .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", library.display()))?
        .with_name("tilepredict")
        .with_telemetry(false)
        .build()
        .map_err(|e| format!("cannot create the ONNX Runtime environment: {e}"))?;
    let environment: &'static Environment = Box::leak(Box::new(environment));
    *slot = Some(environment);
    Ok(environment)
}

/// What the model expects and answers, read from the model itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelShape {
    /// A fixed batch dimension, if the model has one.
    pub fixed_batch: Option<usize>,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
}

/// Model settings from `Config`.
pub struct ModelOptions<'a> {
    /// ONNX Runtime intra-op threads of each session.
    pub threads: usize,
    /// How many sessions to build (at least one); batches run on whichever is free.
    pub sessions: usize,
    pub labels: Option<&'a [String]>,
    /// `CHIP_SIZE`, used as the input size when the model's spatial dimensions are dynamic.
    pub chip_size: Option<u32>,
}

/// A ready model: its sessions and what we learnt about it at init.
pub struct Model {
    sessions: pool::Pool<Session>,
    pub shape: ModelShape,
    pub labels: Vec<String>,
}

impl Model {
    /// Builds the session from memory and checks the model: input `[N,3,H,W]` float32,
    /// output `[N,C]`, labels matching `C`. Runs once on zeros so the first request does
    /// not pay ONNX Runtime's first-run allocations, and so a broken graph fails init.
    pub fn new(
        env: &Environment,
        bytes: &[u8],
        options: &ModelOptions<'_>,
    ) -> Result<Self, String> {
        let mut session = build_session(env, bytes, options.threads)?;
        let mut shape = read_shape(&session, options.chip_size)?;
        let metadata_labels = session.metadata().ok().and_then(|m| m.custom("labels"));

        let probe = ndarray::Array4::<f32>::zeros((
            shape.fixed_batch.unwrap_or(1),
            3,
            shape.height,
            shape.width,
        ));
        let classes = run_session(&mut session, probe.view())
            .map_err(|e| {
                format!(
                    "the model failed on a zero input of shape {:?}: {e}",
                    probe.shape()
                )
            })?
            .first()
            .map_or(0, Vec::len);
        if shape.classes != 0 && shape.classes != classes {
            return Err(format!(
                "the model declares {} classes but answered {classes}",
                shape.classes
            ));
        }
        shape.classes = classes;
        let labels = choose_labels(options.labels, metadata_labels.as_deref(), classes)?;
        // The first session passed every check; the others are the same graph.
        let mut sessions = vec![session];
        for _ in 1..options.sessions.max(1) {
            sessions.push(build_session(env, bytes, options.threads)?);
        }
        Ok(Self {
            sessions: pool::Pool::new(sessions),
            shape,
            labels,
        })
    }

    /// How many sessions run batches side by side.
    pub fn sessions(&self) -> usize {
        self.sessions.size()
    }

    /// Runs one batch `[n, 3, H, W]` and returns the softmax probabilities, one row per image.
    pub fn predict(&self, batch: ArrayView4<'_, f32>) -> Result<Vec<Vec<f32>>, String> {
        self.predict_timed(batch).map(|(rows, _)| rows)
    }

    /// [`Model::predict`], and the time ONNX Runtime spent on it. The clock starts once a
    /// session is free: with every session busy and the next batch waiting for one, the wait
    /// is queueing, not inference, and `inference_ms` must not count it twice.
    pub fn predict_timed(
        &self,
        batch: ArrayView4<'_, f32>,
    ) -> Result<(Vec<Vec<f32>>, Duration), String> {
        let (logits, ran) = self.sessions.with(|session| {
            let started = Instant::now();
            let logits = run_session(session, batch);
            (logits, started.elapsed())
        });
        Ok((logits?.iter().map(|row| softmax(row)).collect(), ran))
    }
}

/// One session from the model's bytes with `threads` intra-op threads.
fn build_session(env: &Environment, bytes: &[u8], threads: usize) -> Result<Session, String> {
    let configure =
        |e: ort::Error<SessionBuilder>| format!("cannot configure the ONNX Runtime session: {e}");
    Session::builder(env)
        .map_err(|e| format!("cannot create an ONNX Runtime session: {e}"))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(configure)?
        .with_intra_threads(threads)
        .map_err(configure)?
        .with_inter_threads(1)
        .map_err(configure)?
        // Idle intra-op threads must not spin: decoding shares these vCPUs between batches.
        .with_config_entry("session.intra_op.allow_spinning", "0")
        .map_err(configure)?
        .commit_from_memory(bytes)
        .map_err(|e| format!("not a usable ONNX model ({} bytes): {e}", bytes.len()))
}

fn run_session(session: &mut Session, batch: ArrayView4<'_, f32>) -> Result<Vec<Vec<f32>>, String> {
    let n = batch.shape()[0];
    let input = TensorRef::from_array_view(batch).map_err(|e| e.to_string())?;
    let outputs = session
        .run(ort::inputs![input])
        .map_err(|e| e.to_string())?;
    let first = outputs
        .values()
        .next()
        .ok_or("the model produced no output")?;
    let (shape, data) = first
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    if shape.len() != 2 || shape[0] as usize != n {
        return Err(format!("expected output [{n}, C], got {:?}", &shape[..]));
    }
    let classes = shape[1] as usize;
    Ok(data
        .chunks_exact(classes.max(1))
        .map(<[f32]>::to_vec)
        .collect())
}

fn dims(value: &ValueType) -> Option<(TensorElementType, Vec<i64>)> {
    match value {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.to_vec())),
        _ => None,
    }
}

fn read_shape(session: &Session, chip_size: Option<u32>) -> Result<ModelShape, String> {
    let [input] = session.inputs() else {
        return Err(format!(
            "expected exactly one model input, found {}",
            session.inputs().len()
        ));
    };
    let Some(output) = session.outputs().first() else {
        return Err("the model has no output".into());
    };
    let (ty, input_dims) = dims(input.dtype()).ok_or("the model input is not a tensor")?;
    let shown = |d: &[i64]| {
        let parts: Vec<String> = d
            .iter()
            .map(|v| if *v < 0 { "?".into() } else { v.to_string() })
            .collect();
        format!("[{}]", parts.join(","))
    };
    if ty != TensorElementType::Float32 || input_dims.len() != 4 || input_dims[1] != 3 {
        return Err(format!(
            "model input {:?} is {ty:?} {}; tilepredict feeds float32 [N,3,H,W] (RGB, NCHW)",
            input.name(),
            shown(&input_dims)
        ));
    }
    let spatial = |d: i64| -> Result<usize, String> {
        match (d, chip_size) {
            (d, _) if d > 0 => Ok(d as usize),
            (_, Some(size)) => Ok(size as usize),
            _ => Err(format!(
                "model input {} has dynamic height/width: set CHIP_SIZE to the size to feed",
                shown(&input_dims)
            )),
        }
    };
    let (height, width) = (spatial(input_dims[2])?, spatial(input_dims[3])?);
    let (out_ty, output_dims) = dims(output.dtype()).ok_or("the model output is not a tensor")?;
    if out_ty != TensorElementType::Float32 || output_dims.len() != 2 {
        return Err(format!(
            "model output {:?} is {out_ty:?} {}; tilepredict expects float32 [N,C] logits (model input {})",
            output.name(),
            shown(&output_dims),
            shown(&input_dims)
        ));
    }
    Ok(ModelShape {
        fixed_batch: (input_dims[0] > 0).then_some(input_dims[0] as usize),
        height,
        width,
        classes: output_dims[1].max(0) as usize,
    })
}

/// `MODEL_LABELS`, else the model's `labels` metadata (comma-separated or a JSON array),
/// else `class_0…`. The count must match the model's classes.
pub fn choose_labels(
    configured: Option<&[String]>,
    metadata: Option<&str>,
    classes: usize,
) -> Result<Vec<String>, String> {
    let (labels, source) = if let Some(labels) = configured {
        (labels.to_vec(), "MODEL_LABELS")
    } else if let Some(raw) = metadata.map(str::trim).filter(|r| !r.is_empty()) {
        let parsed = serde_json::from_str::<Vec<String>>(raw)
            .unwrap_or_else(|_| raw.split(',').map(|l| l.trim().to_string()).collect());
        (parsed, "the model's labels metadata")
    } else {
        return Ok((0..classes).map(|i| format!("class_{i}")).collect());
    };
    if labels.len() != classes {
        return Err(format!(
            "{source} names {} labels ({}) but the model outputs [N,{classes}]",
            labels.len(),
            labels.join(",")
        ));
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_config_then_metadata_then_defaults() {
        let configured = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            choose_labels(Some(&configured), Some("x,y"), 2).unwrap(),
            configured
        );
        assert_eq!(
            choose_labels(None, Some("x, y"), 2).unwrap(),
            vec!["x", "y"]
        );
        assert_eq!(
            choose_labels(None, Some(r#"["x","y"]"#), 2).unwrap(),
            vec!["x", "y"]
        );
        assert_eq!(
            choose_labels(None, None, 3).unwrap(),
            vec!["class_0", "class_1", "class_2"]
        );
    }

    #[test]
    fn a_label_count_mismatch_names_both_sides() {
        let err = choose_labels(Some(&["a".to_string()]), None, 2).unwrap_err();
        assert!(
            err.contains("MODEL_LABELS names 1 labels") && err.contains("[N,2]"),
            "{err}"
        );
    }
}
