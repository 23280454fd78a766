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

/// The version of the ONNX Runtime library the binaries load, read from its file name
/// (`libonnxruntime.so.1.32.0`, after following symbolic links), for the `fvision_build_info` series.
/// `None` when the library is not found or its name carries no version.
pub fn runtime_version() -> Option<String> {
    let path = resources::ONNX_RUNTIME.locate(None).ok()?;
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    version_in_file_name(path.file_name()?.to_str()?)
}

/// `1.32.0` of `libonnxruntime.so.1.32.0` (or `libonnxruntime.1.32.0.dylib`).
fn version_in_file_name(name: &str) -> Option<String> {
    let rest = name.strip_prefix("libonnxruntime.")?;
    let rest = rest.strip_prefix("so.").unwrap_or(rest);
    let version = rest.strip_suffix(".dylib").unwrap_or(rest);
    let numeric =
        !version.is_empty() && version.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    numeric.then(|| version.to_string())
}

#[cfg(test)]
mod tests {
    use super::version_in_file_name;

    #[test]
    fn the_runtime_version_is_read_from_the_library_file_name() {
        assert_eq!(version_in_file_name("libonnxruntime.so.1.32.0").as_deref(), Some("1.32.0"));
        assert_eq!(version_in_file_name("libonnxruntime.1.19.2.dylib").as_deref(), Some("1.19.2"));
        assert_eq!(version_in_file_name("libonnxruntime.so"), None);
        assert_eq!(version_in_file_name("libonnxruntime.so.1.x"), None);
        assert_eq!(version_in_file_name("libother.so.1.2"), None);
    }
}
