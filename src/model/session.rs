//! ONNX Runtime sessions: how they are built from the model's bytes, and how one batch runs.
//! Everything that touches `ort::Session` lives here, so the way sessions are pooled can change
//! without touching what goes in (`input`) or what comes out (`output`).
//!
//! `INFERENCE_SESSIONS` sessions share `INFERENCE_THREADS` (each gets threads / sessions as its
//! `intra_threads`), lent out one batch at a time by a [`Pool`] (`Session::run` takes
//! `&mut self`). On Lambda's vCPU counts one session with every thread is as fast as a pool of
//! one-thread sessions, with less memory (docs/PERFORMANCE.md, "INFERENCE_THREADS = the vCPUs,
//! in one session"); on larger Managed Instances, where one session's threads stop scaling,
//! several sessions run batches side by side (docs/PERFORMANCE.md, "Sessions").

use std::time::{Duration, Instant};

use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session, SessionInputValue};
use ort::value::{TensorElementType, TensorRef};

use super::input::InputBatch;
use super::pool::Pool;

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

/// The sessions that run batches, and the one output they read.
pub struct Runner {
    /// Each session with its own run options (which select the one output, so ONNX Runtime
    /// neither copies out nor keeps the others, e.g. a feature map). They are lent together:
    /// run options that select outputs may not be shared between threads.
    sessions: Pool<(Session, RunOptions<HasSelectedOutputs>)>,
}

impl Runner {
    /// `sessions` (at least one) are the same graph; `output` is the name of the output every
    /// run reads.
    pub fn new(sessions: Vec<Session>, output: &str) -> Result<Self, String> {
        let mut lent = Vec::with_capacity(sessions.len());
        for session in sessions {
            let options = RunOptions::new()
                .map_err(|e| format!("cannot create ONNX Runtime run options: {e}"))?
                .with_outputs(OutputSelector::no_default().with(output));
            lent.push((session, options));
        }
        if lent.is_empty() {
            return Err("no ONNX Runtime session to run batches on".to_string());
        }
        Ok(Self {
            sessions: Pool::new(lent),
        })
    }

    /// How many sessions run batches side by side.
    pub fn sessions(&self) -> usize {
        self.sessions.size()
    }

    /// Runs one batch on whichever session is free and returns the selected output, and the
    /// time ONNX Runtime spent on it. The clock starts once a session is free: with every
    /// session busy and the next batch waiting for one, the wait is queueing, not inference,
    /// and `inference_ms` must not count it twice.
    pub fn run(&self, batch: &InputBatch) -> Result<(RawOutput, Duration), String> {
        let input: SessionInputValue<'_> = match batch {
            InputBatch::Float32(a) => TensorRef::from_array_view(a.view()).map(Into::into),
            InputBatch::Float16(a) => TensorRef::from_array_view(a.view()).map(Into::into),
            InputBatch::Uint8(a) => TensorRef::from_array_view(a.view()).map(Into::into),
        }
        .map_err(|e| e.to_string())?;
        self.sessions.with(|(session, options)| {
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
        })
    }
}

/// The output's numbers as `f32` (float16 and float64 outputs converted), copied out of the
/// session's memory before the session goes back to the pool.
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
