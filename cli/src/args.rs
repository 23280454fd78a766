//! Argument groups shared by several subcommands (flattened into their `Args`): which model, which
//! validator, the pipeline's sizes. Commands import these, never each other.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use fvision_connector_common::{locate_smartmodule, WasmValidator, SMARTMODULE_ENV};
use fvision_models::{Classifier, ClassifierOptions, Registry, DEFAULT_MODEL};
use fvision_pipeline::PipelineSettings;

/// Which model to load and how; shared by the subcommands that classify.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A preset name (`fvision models list`) or the path of a custom manifest (.toml).
    #[arg(long, short = 'm', default_value = DEFAULT_MODEL, env = "FVISION_MODEL")]
    pub model: String,

    /// Threads ONNX Runtime uses inside an operator [default: every core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Decode JPEGs at least twice the model's resize target at 1/2, 1/4 or 1/8 scale: far faster on large
    /// photos, not Pillow's exact pixels (accuracy cost: docs/benchmarks.md).
    #[arg(long)]
    pub fast_decode: bool,
}

impl ModelArgs {
    /// Resolves and loads the model, reporting the load time on stderr.
    pub fn load(&self) -> Result<Classifier> {
        let spec = Registry::open_default()?.resolve(&self.model)?;
        let mut options = ClassifierOptions::default();
        if let Some(threads) = self.threads {
            options.intra_threads = threads;
        }
        options.fast_decode = self.fast_decode;
        let classifier = Classifier::load(spec, &options).with_context(|| format!("loading model {}", self.model))?;
        eprintln!(
            "model {} v{} loaded in {} ms (warm-up {} ms){}",
            classifier.spec().manifest.name,
            classifier.spec().manifest.version,
            classifier.load_time().as_millis(),
            classifier.warm_up_time().as_millis(),
            if classifier.spec().manifest.real_weights { "" } else { " - WEIGHT-FREE model: outputs are meaningless" },
        );
        Ok(classifier)
    }
}

/// How to load the validator; shared by every subcommand that validates.
#[derive(Debug, Args)]
pub struct ValidatorArgs {
    /// Also decode every pixel inside WASM, catching corrupt compressed data that checksums miss.
    #[arg(long)]
    pub full_decode: bool,

    /// A SmartModule param as NAME=VALUE (repeatable): max_encoded_bytes, max_pixels, max_side,
    /// max_aspect_ratio, allowed_formats, full_decode, on_invalid, dead_letter_payload_cap, max_envelope_field_bytes.
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,

    /// The SmartModule .wasm to run [default: the installation's share/fluvio-vision/smartmodule/image_validate.wasm]
    #[arg(long, env = SMARTMODULE_ENV, value_name = "FILE")]
    pub smartmodule: Option<PathBuf>,
}

impl ValidatorArgs {
    /// The params as the SmartModule receives them.
    pub fn param_map(&self) -> BTreeMap<String, String> {
        let mut map: BTreeMap<String, String> = self.params.iter().cloned().collect();
        if self.full_decode {
            map.insert("full_decode".into(), "true".into());
        }
        map
    }

    /// Finds, loads and initialises the SmartModule.
    pub fn load(&self) -> Result<WasmValidator> {
        self.load_with(self.param_map())
    }

    /// Like [`Self::load`], with params given by the caller.
    pub fn load_with(&self, params: BTreeMap<String, String>) -> Result<WasmValidator> {
        let path = match &self.smartmodule {
            Some(path) => path.clone(),
            None => locate_smartmodule()?,
        };
        WasmValidator::load(&path, params).with_context(|| format!("loading {}", path.display()))
    }
}

fn parse_param(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_string(), value.to_string())),
        _ => Err(format!("`{raw}` is not NAME=VALUE")),
    }
}

/// Pipeline sizes, shared by `run` and `bench pipeline`.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Predictions below this confidence are flagged (`above_threshold: false`), not dropped.
    #[arg(long, default_value_t = 0.0, value_parser = threshold)]
    pub confidence_threshold: f32,

    /// Largest inference batch (the micro-batcher closes a batch when it is full...).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_batch: u16,

    /// ...or, while more images are being decoded, when its first image has waited this long (an image
    /// arriving at an idle pipeline never waits).
    #[arg(long, default_value_t = 5)]
    pub max_wait_ms: u64,

    /// Decode/preprocess worker threads [default: every core].
    #[arg(long)]
    pub workers: Option<usize>,
}

impl PipelineArgs {
    /// The pipeline configuration these arguments describe.
    pub fn config(&self) -> PipelineSettings {
        let wait = Duration::from_millis(self.max_wait_ms);
        PipelineSettings::new(usize::from(self.max_batch), wait, self.confidence_threshold, self.workers)
    }
}

fn threshold(raw: &str) -> Result<f32, String> {
    raw.parse::<f32>()
        .ok()
        .filter(|t| (0.0..=1.0).contains(t))
        .ok_or_else(|| format!("`{raw}` is not a number from 0 to 1"))
}
