//! ONNX Runtime itself: where its shared library is, and the process's one environment.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;

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
