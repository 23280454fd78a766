//! The `image-validate` SmartModule run in-process, with its outputs parsed into records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fvision_records::{PayloadCap, RejectReason, RejectedImage, Stage, ValidationRecord};
use image_validate::{ParamError, ValidationParams, SMARTMODULE_NAME};

use crate::engine::{find_in_target_dir, EngineError, SmartModuleRunner, DEFAULT_MEMORY_LIMIT};

/// Environment variable naming the `.wasm` file, for deployments that keep it elsewhere.
pub const SMARTMODULE_ENV: &str = "FVISION_SMARTMODULE_WASM";

/// The artefact's file name.
const WASM_FILE: &str = "image_validate.wasm";

/// Why the validator could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValidatorError {
    /// No `.wasm` file was found in the usual places.
    #[error(
        "the image-validate SmartModule ({WASM_FILE}) was not found; build it with \
         `cargo build --profile release-wasm --target wasm32-unknown-unknown -p image-validate` \
         or point {SMARTMODULE_ENV} at it"
    )]
    NotFound,
    /// A SmartModule param is unknown or has a bad value.
    #[error(transparent)]
    Param(#[from] ParamError),
    /// The module could not be read or started.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A loaded, initialised `image-validate` instance. Not `Sync`: give each worker its own.
pub struct WasmValidator {
    runner: SmartModuleRunner,
    cap: PayloadCap,
}

impl WasmValidator {
    /// Loads the `.wasm` at `path` with `params` (checked against the SmartModule's known params first,
    /// so a typo fails here instead of being ignored by the module).
    pub fn load(path: &Path, params: BTreeMap<String, String>) -> Result<Self, ValidatorError> {
        Self::load_with_memory_limit(path, params, DEFAULT_MEMORY_LIMIT)
    }

    /// [`Self::load`] with a linear-memory limit other than the SPU's 1 GB. `image-validate` frees
    /// its output buffers, so its memory does not grow with the bytes it processes.
    pub fn load_with_memory_limit(
        path: &Path,
        params: BTreeMap<String, String>,
        memory_limit: usize,
    ) -> Result<Self, ValidatorError> {
        let parsed = ValidationParams::from_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let runner =
            SmartModuleRunner::builder(SMARTMODULE_NAME).params(params).memory_limit(memory_limit).load(path)?;
        Ok(Self { runner, cap: parsed.dead_letter_payload_cap })
    }

    /// Validates a batch of record values in one call into WASM. Returns exactly one output per input,
    /// in order: `None` where the module dropped the input (`on_invalid=drop`). If the module fails (a trap, a resource limit), the batch is retried one record at a
    /// time and a record that still fails becomes a `validator_error` rejection: nothing is lost.
    pub fn validate_batch(&mut self, values: &[&[u8]]) -> Vec<Option<ValidationRecord>> {
        match self.run(values) {
            Ok(outputs) => outputs,
            Err(err) => {
                tracing::warn!(error = %err, batch = values.len(), "SmartModule failed on a batch; retrying one by one");
                values.iter().map(|value| self.validate_one_isolated(value)).collect()
            }
        }
    }

    /// The engine underneath, for benchmarks that measure the SPU's share of the work alone.
    pub fn runner(&mut self) -> &mut SmartModuleRunner {
        &mut self.runner
    }

    fn validate_one_isolated(&mut self, value: &[u8]) -> Option<ValidationRecord> {
        match self.run(&[value]) {
            Ok(mut outputs) => outputs.pop().flatten(),
            Err(err) => {
                if let Err(reset) = self.runner.reset() {
                    tracing::error!(error = %reset, "cannot re-instantiate the SmartModule");
                }
                Some(ValidationRecord::Rejected(RejectedImage::capped(
                    RejectReason::ValidatorError,
                    format!("the SmartModule failed on this record: {err}"),
                    Stage::Validate,
                    value,
                    self.cap,
                )))
            }
        }
    }

    fn run(&mut self, values: &[&[u8]]) -> Result<Vec<Option<ValidationRecord>>, String> {
        let mut outputs = vec![None; values.len()];
        for record in self.runner.process(values)? {
            let delta = record.preamble.offset_delta();
            let index = usize::try_from(delta)
                .ok()
                .filter(|i| *i < values.len())
                .ok_or_else(|| format!("output offset {delta} matches no input"))?;
            let parsed = serde_json::from_slice::<ValidationRecord>(record.value.as_ref())
                .map_err(|e| format!("the SmartModule wrote an unreadable record: {e}"))?;
            outputs[index] = Some(parsed);
        }
        Ok(outputs)
    }
}

/// Checks SmartModule params by name and value, as [`WasmValidator::load`] does, without loading anything:
/// for config files that name `image-validate` in their `transforms`.
pub fn check_params<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)> + Clone) -> Result<(), ParamError> {
    ValidationParams::from_pairs(params).map(drop)
}

/// Finds `image_validate.wasm`: `$FVISION_SMARTMODULE_WASM`, else in the cargo target directory of
/// the running binary.
pub fn locate_smartmodule() -> Result<PathBuf, ValidatorError> {
    match std::env::var_os(SMARTMODULE_ENV) {
        Some(path) => Ok(PathBuf::from(path)),
        None => find_in_target_dir(WASM_FILE).ok_or(ValidatorError::NotFound),
    }
}
