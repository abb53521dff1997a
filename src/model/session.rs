//! ONNX Runtime sessions: how they are built from the model's bytes, and how one batch runs.
//! Everything that touches `ort::Session` lives here, so the way sessions are pooled can change
//! without touching what goes in (`input`) or what comes out (`output`).
//!
//! One session with `intra_threads` = the function's vCPUs, runs one at a time behind a mutex
//! (`Session::run` takes `&mut self`): as fast as a pool of one-thread sessions on Lambda's
//! vCPU counts, with less memory (docs/PERFORMANCE.md, "INFERENCE_THREADS = the vCPUs, in one
//! session").

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session, SessionInputValue};
use ort::value::{TensorElementType, TensorRef};

use super::input::InputBatch;

/// Builds a session from the model's bytes in memory, with `threads` intra-op threads.
pub fn build(env: &Environment, bytes: &[u8], threads: usize) -> Result<Session, String> {
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

/// One output's values as `f32`, row-major, with the shape ONNX Runtime gave.
#[derive(Debug, Clone, PartialEq)]
pub struct RawOutput {
    pub shape: Vec<i64>,
    pub values: Vec<f32>,
}

/// The session that runs batches, and the one output it reads.
pub struct Runner {
    /// The session and its run options (which select the one output, so ONNX Runtime neither
    /// copies out nor keeps the others, e.g. a feature map). Both live behind the lock:
    /// run options that select outputs may not be shared between threads.
    session: Mutex<(Session, RunOptions<HasSelectedOutputs>)>,
}

impl Runner {
    /// `output` is the name of the output every run reads.
    pub fn new(session: Session, output: &str) -> Result<Self, String> {
        let options = RunOptions::new()
            .map_err(|e| format!("cannot create ONNX Runtime run options: {e}"))?
            .with_outputs(OutputSelector::no_default().with(output));
        Ok(Self {
            session: Mutex::new((session, options)),
        })
    }

    /// Runs one batch and returns the selected output, and the time ONNX Runtime spent on it.
    /// The clock starts once the session lock is held: with one batch running and the next
    /// waiting for the session, the wait is queueing, not inference, and `inference_ms` must
    /// not count it twice.
    pub fn run(&self, batch: &InputBatch) -> Result<(RawOutput, Duration), String> {
        let input: SessionInputValue<'_> = match batch {
            InputBatch::Float32(a) => TensorRef::from_array_view(a.view()).map(Into::into),
            InputBatch::Float16(a) => TensorRef::from_array_view(a.view()).map(Into::into),
            InputBatch::Uint8(a) => TensorRef::from_array_view(a.view()).map(Into::into),
        }
        .map_err(|e| e.to_string())?;
        let mut guard = self
            .session
            .lock()
            .map_err(|_| "the session lock is poisoned".to_string())?;
        let (session, options) = &mut *guard;
        let started = Instant::now();
        let outputs = session
            .run_with_options(ort::inputs![input], options)
            .map_err(|e| e.to_string())?;
        let ran = started.elapsed();
        let value = outputs
            .values()
            .next()
            .ok_or("the model produced no output")?;
        let raw = copy_out(&value)?;
        Ok((raw, ran))
    }
}

/// The output's numbers as `f32` (float16 and float64 outputs converted), copied out of the
/// session's memory before the lock is released.
fn copy_out(value: &ort::value::DynValueRef<'_>) -> Result<RawOutput, String> {
    let ty = match value.dtype() {
        ort::value::ValueType::Tensor { ty, .. } => *ty,
        other => return Err(format!("the output is not a tensor but {other:?}")),
    };
    let (shape, values) = match ty {
        TensorElementType::Float32 => {
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| e.to_string())?;
            (shape.to_vec(), data.to_vec())
        }
        TensorElementType::Float16 => {
            let (shape, data) = value
                .try_extract_tensor::<half::f16>()
                .map_err(|e| e.to_string())?;
            (shape.to_vec(), data.iter().map(|v| v.to_f32()).collect())
        }
        TensorElementType::Float64 => {
            let (shape, data) = value
                .try_extract_tensor::<f64>()
                .map_err(|e| e.to_string())?;
            (shape.to_vec(), data.iter().map(|v| *v as f32).collect())
        }
        other => {
            return Err(format!(
                "the output is {other:?}, not float32/float16/float64"
            ));
        }
    };
    Ok(RawOutput { shape, values })
}
