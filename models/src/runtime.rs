//! Loading the ONNX Runtime shared library once per process (ort's `load-dynamic`).

use std::sync::OnceLock;

use fvision_records::resources;
use ort::environment::Environment;

use crate::error::ModelError;

static RUNTIME: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Loads ONNX Runtime, once, from where the binaries' one lookup order finds it
/// ([`fvision_records::resources`]): `$ORT_DYLIB_PATH`, else the installation's `lib/libonnxruntime.so`.
/// Returns the process-wide environment sessions are created in.
pub fn init_runtime() -> Result<&'static Environment, ModelError> {
    RUNTIME
        .get_or_init(|| {
            let path = resources::ONNX_RUNTIME.locate(None).map_err(|e| {
                format!(
                    "{e} (./scripts/run-demo.sh fetches it from the onnxruntime wheel on PyPI; the release archive \
                     ships it)"
                )
            })?;
            let builder = ort::init_from(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            builder.with_name("fvision").build().map_err(|e| format!("{}: {e}", path.display()))
        })
        .as_ref()
        .map_err(|e| ModelError::Runtime(e.clone()))
}
