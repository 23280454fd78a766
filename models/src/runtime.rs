//! Loading the ONNX Runtime shared library once per process (ort's `load-dynamic`).

use std::path::PathBuf;
use std::sync::OnceLock;

use ort::environment::Environment;

use crate::error::ModelError;

/// Environment variable naming `libonnxruntime.so` (ort's own convention).
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";

static RUNTIME: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Loads ONNX Runtime, once: `$ORT_DYLIB_PATH`, else the copy the README's commands put in the cache
/// (`$FLUVIO_VISION_CACHE` or `~/.cache/fluvio-vision`, `onnxruntime-*/libonnxruntime.so.*`).
/// Returns the process-wide environment sessions are created in.
pub fn init_runtime() -> Result<&'static Environment, ModelError> {
    RUNTIME
        .get_or_init(|| {
            let path = locate().ok_or_else(|| {
                format!(
                    "libonnxruntime.so not found: set {ORT_DYLIB_ENV}, or run ./scripts/run-demo.sh once, which \
                     fetches it from the onnxruntime wheel on PyPI into ~/.cache/fluvio-vision"
                )
            })?;
            let builder = ort::init_from(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            builder.with_name("fvision").build().map_err(|e| format!("{}: {e}", path.display()))
        })
        .as_ref()
        .map_err(|e| ModelError::Runtime(e.clone()))
}

fn locate() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(ORT_DYLIB_ENV) {
        return Some(PathBuf::from(path));
    }
    let cache = std::env::var_os("FLUVIO_VISION_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/fluvio-vision")))?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(&cache)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("onnxruntime-"))
        .flat_map(|dir| std::fs::read_dir(dir.path()).into_iter().flatten().filter_map(Result::ok))
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so")))
        .collect();
    found.sort();
    found.pop()
}
