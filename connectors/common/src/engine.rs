//! Any SmartModule run in-process by `fluvio-smartengine` (wasmtime), as an SPU runs a consumer-side
//! transform: records are encoded with the SmartModule ABI, copied into WASM and back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fluvio_smartengine::{SmartEngine, SmartModuleChainBuilder, SmartModuleChainInstance, SmartModuleConfig};
use fluvio_smartmodule::dataplane::smartmodule::SmartModuleInput;
use fluvio_smartmodule::{Record, SMARTMODULE_TIMESTAMPS_VERSION};

/// The SPU's linear-memory limit per SmartModule instance (fluvio-smartengine's default).
pub const DEFAULT_MEMORY_LIMIT: usize = 1_000_000_000;

/// Why a SmartModule could not be loaded or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The `.wasm` file could not be read.
    #[error("cannot read the SmartModule {path}: {source}")]
    Read {
        /// The file that was tried.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// wasmtime refused the module, or its `init` failed.
    #[error("the SmartModule failed to start")]
    Init(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// How a [`SmartModuleRunner`] is set up; build one with [`SmartModuleRunner::builder`].
#[derive(Debug, Clone)]
pub struct RunnerBuilder {
    name: String,
    params: BTreeMap<String, String>,
    memory_limit: usize,
    recycle_after_output_bytes: Option<u64>,
}

impl RunnerBuilder {
    /// Params passed to the module's `init`.
    pub fn params(mut self, params: BTreeMap<String, String>) -> Self {
        self.params = params;
        self
    }

    /// The largest linear memory the instance may grow to (the SPU's default is 1 GB).
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// Re-instantiate the module after it has produced this many output bytes. Stock modules built
    /// with `#[smartmodule(...)]` never free their output buffers under fluvio-smartengine 0.50, so
    /// their memory grows by their output until the limit; recycling bounds it.
    pub fn recycle_after_output_bytes(mut self, bytes: u64) -> Self {
        self.recycle_after_output_bytes = Some(bytes);
        self
    }

    /// Reads the `.wasm` at `path` and starts it.
    pub fn load(self, path: &Path) -> Result<SmartModuleRunner, EngineError> {
        let wasm = std::fs::read(path).map_err(|source| EngineError::Read { path: path.to_owned(), source })?;
        self.start(wasm)
    }

    /// Instantiates the module from its bytes and runs its `init`.
    pub fn start(self, wasm: Vec<u8>) -> Result<SmartModuleRunner, EngineError> {
        let engine = SmartEngine::new();
        let chain = instantiate(&engine, &self, &wasm)?;
        Ok(SmartModuleRunner { config: self, engine, wasm, chain, output_bytes: 0 })
    }
}

/// One loaded and initialised SmartModule chain. Not `Sync`: give each worker its own.
pub struct SmartModuleRunner {
    config: RunnerBuilder,
    engine: SmartEngine,
    wasm: Vec<u8>,
    chain: SmartModuleChainInstance,
    output_bytes: u64,
}

impl SmartModuleRunner {
    /// A runner for the module `name`, with the SPU's defaults: no params, a 1 GB memory limit.
    pub fn builder(name: &str) -> RunnerBuilder {
        RunnerBuilder {
            name: name.to_string(),
            params: BTreeMap::new(),
            memory_limit: DEFAULT_MEMORY_LIMIT,
            recycle_after_output_bytes: None,
        }
    }

    /// Runs one batch and returns the output records unparsed; each input gets its index in the batch
    /// as its offset delta, so outputs can be matched to inputs.
    pub fn process(&mut self, values: &[&[u8]]) -> Result<Vec<Record>, String> {
        if self.config.recycle_after_output_bytes.is_some_and(|limit| self.output_bytes >= limit) {
            self.reset().map_err(|e| e.to_string())?;
        }
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, value)| {
                let mut record = Record::new(value.to_vec());
                record.preamble.set_offset_delta(i as i64);
                record
            })
            .collect();
        let mut raw = Vec::new();
        image_validate::wire::encode_records(&records, &mut raw, SMARTMODULE_TIMESTAMPS_VERSION)
            .map_err(|e| format!("encoding the input: {e}"))?;
        let input = SmartModuleInput::new(raw, 0, 0);
        let output = self.chain.process(input).map_err(|e| format!("{e:#}"))?;
        if let Some(error) = output.error {
            return Err(error.hint);
        }
        self.output_bytes += output.successes.iter().map(|r| r.value.len() as u64).sum::<u64>();
        Ok(output.successes)
    }

    /// Replaces the instance with a fresh one: after a trap its memory may be inconsistent.
    pub fn reset(&mut self) -> Result<(), EngineError> {
        self.chain = instantiate(&self.engine, &self.config, &self.wasm)?;
        self.output_bytes = 0;
        Ok(())
    }
}

fn instantiate(
    engine: &SmartEngine,
    config: &RunnerBuilder,
    wasm: &[u8],
) -> Result<SmartModuleChainInstance, EngineError> {
    let mut sm_config = SmartModuleConfig::builder();
    sm_config.smartmodule_names(vec![config.name.clone()]);
    for (key, value) in &config.params {
        sm_config.param(key.as_str(), value.as_str());
    }
    let sm_config = sm_config.build().map_err(|e| EngineError::Init(e.into()))?;
    let mut chain = SmartModuleChainBuilder::default();
    chain.set_store_memory_limit(config.memory_limit);
    chain.add_smart_module(sm_config, wasm.to_vec());
    chain.initialize(engine).map_err(|e| EngineError::Init(e.into()))
}
