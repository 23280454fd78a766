//! The `kafka` section of the source's connector YAML, and its checks.

use std::collections::BTreeMap;
use std::path::Path;

use bytesize::ByteSize;
use fvision_connector_common::source_output::{LookbackBytes, LookbackIds};
use fvision_connector_common::{CheckSection, CheckedConfig, ConfigError, ConnectorConfig, MAX_EVENT_RECORD};
use fvision_records::{EnvelopeFieldCap, DEFAULT_ENVELOPE_FIELD_CAP};
use serde::Deserialize;

/// The name of this connector's own section in the YAML.
pub const SECTION: &str = "kafka";

/// Where a consumer group without committed offsets starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest record still in the topic (nothing already there is missed).
    #[default]
    Earliest,
    /// Only records written after the group first joined.
    Latest,
}

/// How the source gets its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Assignment {
    /// Every partition of `topics`, assigned by the source itself (partitions added later are picked up
    /// within a minute); offsets are still committed under `group-id`. A restarted source resumes at once:
    /// no group rebalance waits for the session of the process it replaces.
    #[default]
    All,
    /// Kafka's consumer-group protocol shares the partitions among the sources of `group-id` (several
    /// instances). After a SIGKILL the restarted member waits in a rebalance until the killed one's session
    /// times out (`client.session.timeout.ms`, 10 s here); librdkafka's mock cluster can keep a dead member in
    /// the group and stall the rebalance for minutes (docs/decisions.md).
    Group,
}

/// How a Kafka record value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValueFormat {
    /// Decide per record: a JSON object with `data` is an ImageEvent, one with `data-field` holds the base64
    /// there, base64 text is the image, anything else is raw image bytes.
    #[default]
    Auto,
    /// An ImageEvent JSON (id, source and event time are kept).
    Event,
    /// The value is the image as base64 text (or a `data:` URI).
    Base64,
    /// The value is the image file itself.
    Raw,
    /// A JSON object whose `data-field` holds the base64 image; its other scalar fields become attributes.
    JsonField,
}

/// `kafka:`: the cluster, the topics, the consumer group and how values are read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of brokers.
    pub bootstrap_servers: String,
    /// The Kafka topics read.
    pub topics: Vec<String>,
    /// The consumer group: offsets are committed under it, only after Fluvio acknowledged the records.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// `all` (this source reads every partition of `topics`) or `group` (the consumer-group protocol shares
    /// them among the sources of `group-id`).
    #[serde(default)]
    pub assignment: Assignment,
    /// `earliest` or `latest`, for a group without committed offsets.
    #[serde(default)]
    pub start: StartFrom,
    /// `auto`, `event`, `base64`, `raw` or `json-field`.
    #[serde(default)]
    pub value_format: ValueFormat,
    /// The JSON field that holds the base64 image (`json-field`, and tried by `auto`).
    #[serde(default = "default_data_field")]
    pub data_field: String,
    /// Fluvio topic for values that cannot become an ImageEvent.
    #[serde(default = "default_dlq_topic")]
    pub dlq_topic: String,
    /// Largest ImageEvent record written to Fluvio; a larger one goes to the dead-letter topic as
    /// `too_large` (the inference sink reads at most `meta.consumer.max-bytes`, 16 MiB by default).
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: ByteSize,
    /// Largest envelope field of an event (its `id`, `event_time`, `uri`, an attribute key or value: the Kafka
    /// key and headers are attributes); an event with a larger one goes to the dead-letter topic as
    /// `malformed_envelope`. Keep it equal to the `image-validate` param `max_envelope_field_bytes`.
    #[serde(default = "default_max_envelope_field_bytes")]
    pub max_envelope_field_bytes: ByteSize,
    /// Most Kafka records per Fluvio produce and offset commit: what a crash may replay.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Most bytes of Kafka values per batch (a batch ends at whichever of `max-batch` and this comes first;
    /// a single larger record is a batch on its own): what the source holds in memory at once.
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: ByteSize,
    /// Further librdkafka properties (`security.protocol`, `sasl.mechanism`, `sasl.username`,
    /// `sasl.password`, `ssl.ca.location`, `session.timeout.ms`, ...); put credentials in secrets.
    #[serde(default)]
    pub client: BTreeMap<String, String>,
    /// Serve Prometheus metrics on this port.
    #[serde(default)]
    pub metrics_port: Option<u16>,
    /// Ids per partition of the written topics remembered and read back at start-up (the replay guard; 0
    /// turns it off): [`LookbackIds`].
    #[serde(default)]
    pub replay_lookback: LookbackIds,
    /// The most bytes of records read back per topic at start-up for `replay-lookback`: [`LookbackBytes`].
    #[serde(default)]
    pub replay_lookback_bytes: LookbackBytes,
}

fn default_group_id() -> String {
    "fluvio-vision-kafka-source".into()
}

fn default_data_field() -> String {
    "image_data".into()
}

fn default_dlq_topic() -> String {
    "images-dlq".into()
}

fn default_max_record_bytes() -> ByteSize {
    ByteSize::mib(15)
}

fn default_max_envelope_field_bytes() -> ByteSize {
    ByteSize::b(DEFAULT_ENVELOPE_FIELD_CAP as u64)
}

fn default_max_batch() -> usize {
    64
}

fn default_max_batch_bytes() -> ByteSize {
    ByteSize::mib(32)
}

/// Properties the connector sets itself: offsets must be committed by it, after Fluvio acknowledged.
const OWNED_PROPERTIES: [&str; 5] =
    ["enable.auto.commit", "enable.auto.offset.store", "group.id", "bootstrap.servers", "auto.offset.reset"];

impl CheckSection for KafkaConfig {
    const SECTION: &'static str = SECTION;

    /// What serde cannot check.
    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let field = |name: &str, expected: &str| ConfigError::Field {
            path: path.to_owned(),
            field: format!("{SECTION}.{name}"),
            expected: expected.into(),
        };
        if self.bootstrap_servers.trim().is_empty() {
            return Err(field("bootstrap-servers", "a comma-separated host:port list, found an empty string"));
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(field("topics", "a non-empty list of Kafka topic names"));
        }
        if self.group_id.trim().is_empty() {
            return Err(field("group-id", "a non-empty consumer group id"));
        }
        if self.data_field.is_empty() {
            return Err(field("data-field", "a JSON field name"));
        }
        if self.max_batch == 0 || self.max_batch > 10_000 {
            return Err(field("max-batch", "a count from 1 to 10000"));
        }
        if self.max_batch_bytes.as_u64() < 1024 {
            return Err(field("max-batch-bytes", "at least 1 KiB"));
        }
        if self.max_record_bytes.as_u64() < 1024 || self.max_record_bytes > MAX_EVENT_RECORD {
            return Err(field(
                "max-record-bytes",
                &format!("from 1 KiB to {MAX_EVENT_RECORD} (what the producer and the inference sink take)"),
            ));
        }
        if self.checked_envelope_field_cap().is_none() {
            return Err(field(
                "max-envelope-field-bytes",
                &format!("from {} B to {} KiB", EnvelopeFieldCap::MIN, EnvelopeFieldCap::MAX / 1024),
            ));
        }
        for key in self.client.keys() {
            if OWNED_PROPERTIES.contains(&key.as_str()) {
                return Err(field(
                    &format!("client.{key}"),
                    "set by the connector (offsets are committed only after Fluvio acknowledged); use the \
                     `kafka` fields instead",
                ));
            }
        }
        Ok(())
    }
}

impl KafkaConfig {
    fn checked_envelope_field_cap(&self) -> Option<EnvelopeFieldCap> {
        usize::try_from(self.max_envelope_field_bytes.as_u64()).ok().and_then(EnvelopeFieldCap::new)
    }

    /// `max-envelope-field-bytes` as checked by [`CheckSection::check`] (the default when out of range).
    pub fn envelope_field_cap(&self) -> EnvelopeFieldCap {
        self.checked_envelope_field_cap().unwrap_or_default()
    }
}

/// The connector config as serde reads it, with the `kafka` section.
pub type SourceConfig = ConnectorConfig<KafkaConfig>;

/// The connector config after the `kafka` section's checks ([`load`] runs them): what [`crate::KafkaSource`] takes.
pub type KafkaSettings = CheckedConfig<KafkaConfig>;

/// Reads and checks the YAML (and secrets file).
pub fn load(path: &Path, secrets: Option<&Path>) -> Result<KafkaSettings, ConfigError> {
    KafkaSettings::load(path, secrets)
}
