//! The `inference` section of the sink's connector YAML, and its checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fvision_connector_common::{ConfigError, ConnectorConfig};
use serde::Deserialize;

use crate::pipeline::PipelineConfig;

/// The name of this connector's own section in the YAML.
pub const SECTION: &str = "inference";

/// What happens to predictions below the confidence threshold (the job this replaces dropped them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BelowThreshold {
    /// Keep them, with `above_threshold: false` (default: nothing is lost).
    #[default]
    Flag,
    /// Drop them (counted in metrics).
    Drop,
    /// Send them to `review-topic` instead of `predictions`.
    Review,
}

/// `inference:`: the model, the threshold, batching and outputs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InferenceSettings {
    /// A preset name or a manifest path.
    #[serde(default = "default_model")]
    pub model: String,
    /// Predictions below this confidence are handled by `below-threshold` (0 to 1).
    #[serde(default)]
    pub confidence_threshold: f32,
    /// `flag`, `drop` or `review`.
    #[serde(default)]
    pub below_threshold: BelowThreshold,
    /// Where `review` sends low-confidence predictions.
    #[serde(default)]
    pub review_topic: Option<String>,
    /// Largest inference batch.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long the first image of a batch waits for more.
    #[serde(default = "default_max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
    /// Decode workers [default: every core].
    #[serde(default)]
    pub workers: Option<usize>,
    /// Topic for predictions.
    #[serde(default = "default_predictions_topic")]
    pub predictions_topic: String,
    /// Dead-letter topic for rejected and failed images.
    #[serde(default = "default_dlq_topic")]
    pub dlq_topic: String,
    /// Also print predictions on the console.
    #[serde(default)]
    pub console: bool,
    /// Also append predictions to this JSONL file.
    #[serde(default)]
    pub jsonl: Option<PathBuf>,
    /// Port of the Prometheus `/metrics` endpoint.
    #[serde(default)]
    pub metrics_port: Option<u16>,
}

fn default_model() -> String {
    fvision_models::DEFAULT_MODEL.to_string()
}
fn default_max_batch() -> usize {
    4
}
fn default_max_wait() -> Duration {
    Duration::from_millis(5)
}
fn default_predictions_topic() -> String {
    "predictions".into()
}
fn default_dlq_topic() -> String {
    "images-dlq".into()
}

/// The sink's whole config.
pub type SinkConfig = ConnectorConfig<InferenceSettings>;

/// Reads and checks a sink config (`--config FILE [--secrets FILE]`).
pub fn load(path: &Path, secrets: Option<&Path>) -> Result<SinkConfig, ConfigError> {
    let config = SinkConfig::load(path, secrets, SECTION)?;
    config.custom.check(path)?;
    Ok(config)
}

impl InferenceSettings {
    /// Range and consistency checks that serde cannot express.
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let field = |name: &str, expected: &str| ConfigError::Field {
            path: path.to_owned(),
            field: format!("{SECTION}.{name}"),
            expected: expected.into(),
        };
        if !(0.0..=1.0).contains(&self.confidence_threshold) {
            return Err(field("confidence-threshold", "a number from 0 to 1"));
        }
        if self.below_threshold == BelowThreshold::Review && self.review_topic.is_none() {
            return Err(field("review-topic", "a topic name, because below-threshold is `review`"));
        }
        if !(1..=1024).contains(&self.max_batch) {
            return Err(field("max-batch", "an integer from 1 to 1024"));
        }
        if self.max_wait > Duration::from_secs(10) {
            return Err(field("max-wait", "at most 10s (it delays every batch that does not fill)"));
        }
        if self.workers == Some(0) {
            return Err(field("workers", "at least 1"));
        }
        Ok(())
    }

    /// The pipeline these settings describe.
    pub fn pipeline(&self) -> PipelineConfig {
        PipelineConfig::new(self.max_batch, self.max_wait, self.confidence_threshold, self.workers)
    }
}
