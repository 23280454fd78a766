//! The `image-validate` SmartModule run in-process, with its outputs parsed into records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fvision_records::{PayloadCap, RejectReason, RejectedImage, Stage, ValidationRecord};
use image_validate::{ParamError, ValidationParams, SMARTMODULE_NAME};

use fvision_records::resources::{self, NotFound};

use crate::engine::{EngineError, SmartModuleRunner, DEFAULT_MEMORY_LIMIT};

/// Environment variable naming the `.wasm` file, for deployments that keep it elsewhere.
pub const SMARTMODULE_ENV: &str = resources::SMARTMODULE.env();

/// Why the validator could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValidatorError {
    /// No `.wasm` file was found in the installation's places.
    #[error(
        "{0} (to build it: `smdk build --nowasi` in smartmodule/, or \
         `cargo build --profile release-lto --target wasm32-unknown-unknown -p image-validate`)"
    )]
    NotFound(#[from] NotFound),
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

/// Finds `image_validate.wasm` by the binaries' one lookup order ([`fvision_records::resources`]):
/// `$FVISION_SMARTMODULE_WASM`, else the installation's `share/fluvio-vision/smartmodule/image_validate.wasm`.
pub fn locate_smartmodule() -> Result<PathBuf, ValidatorError> {
    Ok(resources::SMARTMODULE.locate(None)?)
}

/// Another SmartModule of the project (`identity_smartmodule.wasm`, ...): in the folder `image_validate.wasm`
/// is found in (`explicit`, else [`locate_smartmodule`]), where the build and the release archive put both.
pub fn locate_beside_smartmodule(explicit: Option<&Path>, file_name: &str) -> Result<PathBuf, ValidatorError> {
    let validate = resources::SMARTMODULE.locate(explicit)?;
    Ok(validate.with_file_name(file_name))
}
