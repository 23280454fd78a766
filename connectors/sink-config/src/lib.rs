//! The inference sink's connector YAML: what serde reads (`*Config`: the `inference` section,
//! [`SinkConfig`]) and what it is checked into once, before anything connects ([`SinkSettings`]). Its own
//! crate because three readers share it: the connector, `fvision run --config` (which runs the same
//! pipeline and outputs in one process, without the connector) and `fvision deploy`.
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use fvision_connector_common::config::OffsetStrategy;
use fvision_connector_common::validator::check_params;
use fvision_connector_common::{ConfigError, ConnectorConfig, MetaConfig};
use fvision_records::{PayloadCap, MIN_PAYLOAD_CAP};
use serde::Deserialize;

use fvision_outputs::bigquery::BigQueryConfig;
use fvision_outputs::gcs::GcsConfig;
use fvision_outputs::kafka::KafkaConfig;
use fvision_outputs::ExternalConfigs;
use fvision_pipeline::PipelineSettings;

pub use fvision_outputs::BelowThreshold;
/// The name of this connector's own section in the YAML (the outputs name their sections under it).
pub use fvision_outputs::SECTION;

/// Where the `image-validate` SmartModule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValidateAt {
    /// On the SPU when the cluster has the SmartModule loaded (`fluvio smartmodule create`), else in the
    /// connector.
    #[default]
    Auto,
    /// On the SPU; the connector fails to start if the cluster does not have the SmartModule.
    Cluster,
    /// In the connector, with `fluvio-smartengine` and the local `.wasm`.
    Connector,
}

/// `inference:`: the model, the threshold, batching and outputs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InferenceConfig {
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
    /// How long the first image of a batch may wait for more, and only while another image is being decoded
    /// (an image reaching an idle inference stage runs at once).
    #[serde(default = "default_max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
    /// Decode workers [default: every core].
    #[serde(default)]
    pub workers: Option<usize>,
    /// Decode JPEGs at least twice the model's resize target at 1/2, 1/4 or 1/8 scale: far less CPU for
    /// large photos, not Pillow's exact pixels (its accuracy cost is in docs/benchmarks.md).
    #[serde(default)]
    pub fast_decode: bool,
    /// Topic for predictions.
    #[serde(default = "default_predictions_topic")]
    pub predictions_topic: String,
    /// Dead-letter topic for rejected and failed images.
    #[serde(default = "default_dlq_topic")]
    pub dlq_topic: String,
    /// Also print predictions on the console.
    #[serde(default)]
    pub console: bool,
    /// Also append every outcome to this file, one JSON line each (the shape of docs/records.md, the same as
    /// `fvision run --output`).
    #[serde(default)]
    pub jsonl: Option<PathBuf>,
    /// Port of the Prometheus `/metrics` endpoint.
    #[serde(default)]
    pub metrics_port: Option<u16>,
    /// Address the metrics endpoint (and the status page) binds [default: 127.0.0.1, this host only];
    /// `0.0.0.0` exposes it to the network, for a scraper on another host.
    #[serde(default = "default_metrics_address")]
    pub metrics_address: std::net::IpAddr,
    /// Also serve the live status page (the images with their labels, rates, latencies, lag) on the
    /// metrics port. It shows the images: bind it wider than 127.0.0.1 only on purpose.
    #[serde(default)]
    pub dashboard: bool,
    /// Host names, besides `localhost` and IP addresses, that the status page answers to (the names
    /// operators reach it by); a page under any other name in `Host` is refused, so that a web site the
    /// operator visits cannot read it through DNS rebinding.
    #[serde(default)]
    pub status_hosts: Vec<String>,
    /// Where the `image-validate` transform runs: `auto`, `cluster` or `connector`.
    #[serde(default)]
    pub validate_at: ValidateAt,
    /// How often the connector logs its one-line summary (images/s, success rate, latency).
    #[serde(default = "default_summary_interval", with = "humantime_serde")]
    pub summary_interval: Duration,
    /// On SIGTERM, how long the images already read may take to be delivered and committed before the
    /// connector gives up (exit 1, they are processed again at the next start). Separate from the 5 s a
    /// stopping connector waits for a cluster that does not answer.
    #[serde(default = "default_stop_timeout", with = "humantime_serde")]
    pub stop_timeout: Duration,
    /// How long a fetch may bring nothing while the partition's end offset is ahead (a record larger than
    /// `max-bytes`, a SmartModule or SPU failure) before the connector re-reads the partition to find out
    /// which offset blocks it. Re-reads are under the same timeout.
    #[serde(default = "default_read_timeout", with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Largest serialised payload a dead letter carries [default: 1 MiB]; above it the dead letter keeps the
    /// record's first bytes, its size and SHA-256. Also passed to `image-validate` as its
    /// `dead_letter_payload_cap` param, so both validation paths cap alike.
    #[serde(default)]
    pub dead_letter_payload_cap: Option<ByteSize>,
    /// Also stream predictions into a BigQuery table (`outputs/src/bigquery/`).
    #[serde(default)]
    pub bigquery: Option<BigQueryConfig>,
    /// Also produce predictions to a Kafka topic (`outputs/src/kafka/`).
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
    /// Also write predictions to GCS as NDJSON objects (`outputs/src/gcs/`).
    #[serde(default)]
    pub gcs: Option<GcsConfig>,
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
fn default_summary_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_stop_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_metrics_address() -> std::net::IpAddr {
    std::net::Ipv4Addr::LOCALHOST.into()
}
fn default_predictions_topic() -> String {
    "predictions".into()
}
fn default_dlq_topic() -> String {
    "images-dlq".into()
}

/// The sink's whole config, as serde reads it.
pub type SinkConfig = ConnectorConfig<InferenceConfig>;

/// The sink's config once checked: everything the connector and `fvision run` need, with the defaults
/// filled in. Only [`SinkSettings::new`] makes one, so holding one means the YAML was valid.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// The file it was read from (named in errors).
    pub path: PathBuf,
    /// `meta`: the connector's name, topic, consumer and producer options.
    pub meta: MetaConfig,
    /// `inference`, range-checked.
    pub inference: InferenceConfig,
    /// The `image-validate` step.
    pub validation: ValidationSettings,
}

/// The `image-validate` transform: which SmartModule, its params, and where it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationSettings {
    /// The SmartModule's name on the cluster (`transforms[0].uses`, default `image-validate`).
    pub smartmodule: String,
    /// Its params, checked by the SmartModule's own rules.
    pub params: BTreeMap<String, String>,
    /// On the SPU, in the connector, or wherever possible.
    pub at: ValidateAt,
    /// The largest payload a dead letter carries, the same in the SmartModule's params and in the sink.
    pub dead_letter_payload_cap: PayloadCap,
}

impl SinkSettings {
    /// Checks a config read from `path`: ranges, the delivery strategy, the transform and its params.
    pub fn new(config: SinkConfig, path: &Path) -> Result<Self, ConfigError> {
        config.custom.check(path)?;
        check_delivery(&config, path)?;
        let params = validation_params(&config, path)?;
        let smartmodule = config
            .transforms
            .first()
            .map(|s| s.uses.clone())
            .unwrap_or_else(|| image_validate::SMARTMODULE_NAME.into());
        let validation = ValidationSettings {
            smartmodule,
            params,
            at: config.custom.validate_at,
            dead_letter_payload_cap: dead_letter_payload_cap(&config),
        };
        Ok(Self { path: path.to_owned(), meta: config.meta, inference: config.custom, validation })
    }
}

/// Reads and checks a sink config (`--config FILE [--secrets FILE]`).
pub fn load(path: &Path, secrets: Option<&Path>) -> Result<SinkSettings, ConfigError> {
    SinkSettings::new(SinkConfig::load(path, secrets, SECTION)?, path)
}

/// The params of the `image-validate` step in `transforms` (none: its defaults). The sink runs exactly that
/// SmartModule, so any other step is refused, and its params are checked by the SmartModule's own rules.
/// `on_invalid: drop` is refused: the sink must see one record per consumed record to know when every
/// record up to an offset was delivered (a dropped record would also renumber the SPU's offsets).
pub fn validation_params(config: &SinkConfig, path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let field = |field: String, expected: String| ConfigError::Field { path: path.to_owned(), field, expected };
    if config.transforms.len() > 1 {
        return Err(field("transforms".into(), "at most one step: `uses: image-validate`".into()));
    }
    let cap = config.custom.dead_letter_payload_cap.map(|c| c.as_u64().to_string());
    let Some(step) = config.transforms.first() else { return Ok(cap.map(cap_param).into_iter().collect()) };
    if !is_image_validate(&step.uses) {
        return Err(field(
            "transforms[0].uses".into(),
            format!(
                "`image-validate`, a copy loaded as `image-validate-<suffix>`, or `group/image-validate@version`; \
                 not `{}`",
                step.uses
            ),
        ));
    }
    let mut params = step.params();
    if let Err(e) = check_params(params.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        return Err(field(format!("transforms[0].with.{}", e.name), format!("{} (got `{}`)", e.expected, e.value)));
    }
    if params.get("on_invalid").map(String::as_str) == Some("drop") {
        return Err(field(
            "transforms[0].with.on_invalid".into(),
            "`reject`: the sink routes rejected images to the dead-letter topic and counts every record before \
             committing its offset"
                .into(),
        ));
    }
    match (cap, params.get(CAP_PARAM)) {
        (Some(cap), Some(param)) if param.replace('_', "") != cap => {
            return Err(field(
                format!("{SECTION}.dead-letter-payload-cap"),
                format!("the same as transforms[0].with.{CAP_PARAM} (`{param}`), or only one of them (got `{cap}`)"),
            ))
        }
        (Some(cap), None) => {
            params.insert(CAP_PARAM.into(), cap);
        }
        _ => {}
    }
    Ok(params)
}

/// The SmartModule param that caps its dead letters' payload.
const CAP_PARAM: &str = "dead_letter_payload_cap";

fn cap_param(cap: String) -> (String, String) {
    (CAP_PARAM.to_string(), cap)
}

/// The dead letters' payload cap: `inference.dead-letter-payload-cap`, else the SmartModule param, else the
/// default (both are checked to agree by [`validation_params`]).
pub fn dead_letter_payload_cap(config: &SinkConfig) -> PayloadCap {
    let from_param = || {
        let step = config.transforms.first()?;
        let value = step.params().get(CAP_PARAM)?.replace('_', "");
        value.parse::<usize>().ok()
    };
    let bytes = config.custom.dead_letter_payload_cap.map(|c| c.as_u64() as usize).or_else(from_param);
    bytes.map(PayloadCap::new).unwrap_or_default()
}

/// Whether a `uses` names this project's SmartModule: `image-validate`, `image-validate-<suffix>` (a copy
/// loaded under another name, e.g. a second version side by side) or a hub reference
/// `group/image-validate@version`.
pub fn is_image_validate(uses: &str) -> bool {
    let name = uses.rsplit('/').next().unwrap_or(uses);
    let name = name.split('@').next().unwrap_or(name);
    let base = image_validate::SMARTMODULE_NAME;
    name == base || name.strip_prefix(base).is_some_and(|rest| rest.starts_with('-') && rest.len() > 1)
}

/// Offsets are committed by the connector after its outputs acknowledged; the client's own periodic commit
/// (`auto`) would commit records still in flight and lose them on a crash, and without offsets (`none`) a
/// restarted sink could not resume.
fn check_delivery(config: &SinkConfig, path: &Path) -> Result<(), ConfigError> {
    let strategy = config.meta.consumer.as_ref().and_then(|c| c.offset.as_ref()).and_then(|o| o.strategy);
    if matches!(strategy, Some(OffsetStrategy::Auto | OffsetStrategy::None)) {
        return Err(ConfigError::Field {
            path: path.to_owned(),
            field: "meta.consumer.offset.strategy".into(),
            expected: "`manual`: the sink commits after every output acknowledged (`auto` would commit images \
                       still in flight, `none` could not resume after a restart)"
                .into(),
        });
    }
    Ok(())
}

impl InferenceConfig {
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
        if self.dashboard && self.metrics_port.is_none() {
            return Err(field("dashboard", "`false`, or a `metrics-port` to serve the status page on"));
        }
        if self.summary_interval < Duration::from_secs(1) {
            return Err(field("summary-interval", "at least 1s"));
        }
        if self.stop_timeout.is_zero() || self.stop_timeout > Duration::from_secs(3600) {
            return Err(field("stop-timeout", "a duration from 1ms to 1h (e.g. `30s`)"));
        }
        if self.read_timeout < Duration::from_millis(100) || self.read_timeout > Duration::from_secs(3600) {
            return Err(field("read-timeout", "a duration from 100ms to 1h (e.g. `10s`)"));
        }
        if self.dead_letter_payload_cap.is_some_and(|c| c.as_u64() < MIN_PAYLOAD_CAP as u64) {
            return Err(field("dead-letter-payload-cap", "at least 16 KiB (the kept head of a truncated payload)"));
        }
        self.external().check(path)
    }

    /// The external sinks' sections, for [`fvision_outputs::OutputSet::build`].
    pub fn external(&self) -> ExternalConfigs<'_> {
        ExternalConfigs { bigquery: self.bigquery.as_ref(), kafka: self.kafka.as_ref(), gcs: self.gcs.as_ref() }
    }

    /// The pipeline this section describes.
    pub fn pipeline(&self) -> PipelineSettings {
        PipelineSettings::new(self.max_batch, self.max_wait, self.confidence_threshold, self.workers)
    }
}
