//! Helpers shared by the end-to-end tests: where the repository's data and built artefacts are.
#![deny(missing_docs)]

pub mod browser;
pub mod cluster;
pub mod connector_yaml;
pub mod emulators;
pub mod exposition;
pub mod fixtures;
pub mod kafka;
pub mod metrics;
pub mod process;

use std::path::{Path, PathBuf};

use fvision_connector_common::{locate_smartmodule, SmartModuleRunner, WasmValidator};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A folder under the repository's `data/`.
pub fn data(name: &str) -> PathBuf {
    repo_root().join("data").join(name)
}

/// Every file of a data folder except its documentation, sorted, with its bytes.
pub fn data_files(name: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(data(name))
        .unwrap_or_else(|e| panic!("data/{name}: {e}"))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| !matches!(path.extension().and_then(|e| e.to_str()), Some("md" | "tsv")))
        .map(|path| {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name, bytes)
        })
        .collect();
    files.sort();
    files
}

/// The built `image-validate` WASM loaded with `params`. The README's test command builds it before
/// the tests; a missing artefact is a failure, not a skip.
pub fn wasm_validator(params: &[(&str, &str)]) -> WasmValidator {
    let path = locate_smartmodule().unwrap_or_else(|e| panic!("{e}"));
    let params = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    WasmValidator::load(&path, params).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// The built `image-validate` WASM as a bare engine runner, bypassing the host-side param checks.
pub fn wasm_runner(params: &[(&str, &str)]) -> Result<SmartModuleRunner, fvision_connector_common::EngineError> {
    let path = locate_smartmodule().unwrap_or_else(|e| panic!("{e}"));
    let params = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    SmartModuleRunner::builder(image_validate::SMARTMODULE_NAME).params(params).load(&path)
}

/// The cargo target directory holding the running test binary: `<target>/release/deps/<test>-<hash>`, or
/// `<target>/<host triple>/release/deps/...` when the build names its target, as scripts/lib.sh does.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("locating the test binary: {e}"));
    let kind = exe.ancestors().nth(3).unwrap_or_else(|| panic!("{} is not in a target directory", exe.display()));
    let is_triple = kind
        .file_name()
        .map(|n| n.to_string_lossy())
        .is_some_and(|name| name.starts_with(std::env::consts::ARCH) && name.contains(std::env::consts::OS));
    match kind.parent() {
        Some(parent) if is_triple => parent.to_path_buf(),
        _ => kind.to_path_buf(),
    }
}

/// A finished command's stdout and stderr, for failure messages.
pub fn output_text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The stock identity SmartModule (built by the README's commands), the reference for engine costs.
pub fn identity_wasm() -> PathBuf {
    built_wasm("identity_smartmodule.wasm")
}

/// Where cargo puts the SmartModules, relative to a target directory (the `release-lto` profile `smdk build`
/// uses).
pub const WASM_DIR_IN_TARGET: &str = "wasm32-unknown-unknown/release-lto";

/// A SmartModule built by the README's commands (`image_validate.wasm`, `trap_smartmodule.wasm`, ...), found
/// in the cargo target directory that holds the running test binary. Only tests look there: the binaries
/// find theirs by `fvision_records::resources`.
pub fn built_wasm(file_name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("locating the test binary: {e}"));
    exe.ancestors()
        .skip(1)
        .map(|dir| dir.join(WASM_DIR_IN_TARGET).join(file_name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{file_name} is not built in the target directory; run ./scripts/test.sh"))
}
