//! The deployment file (`fluvio-config/deploy/*.yaml`): which Fluvio topics, SmartModule, external
//! resources and connectors make up one deployment of the pipeline. Read with serde
//! (`deny_unknown_fields`, kebab-case, every field documented), checked into [`Deployment`]; errors name the
//! file, the dotted field and what was expected, like the connectors' own config errors.
//!
//! Each connector runs from its own connector YAML; `deploy` writes an effective copy into the state
//! directory with the deployment's names filled in ([`render_connector`], a pure transform), so the topic
//! names, endpoints and ports live in one place: this file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use fluvio::metadata::smartmodule::SmartModuleMetadata;
use fvision_connector_common::config::ConfigError;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

/// The package `smdk load` loads (`smartmodule/SmartModule.toml`, compiled into this binary): the name a
/// deployment's SmartModule may have, and the metadata it is loaded with.
pub fn smartmodule_package() -> anyhow::Result<SmartModuleMetadata> {
    SmartModuleMetadata::from_bytes(image_validate::PACKAGE_METADATA.as_bytes())
        .map_err(|e| anyhow::anyhow!("the compiled-in SmartModule.toml: {e}"))
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeploymentConfig {
    /// Names the deployment: its state directory and its consumer ids (`<name>-<connector>`).
    pub name: String,
    /// Where pid, log and effective connector files go [default: `$FVISION_STATE_DIR/<name>`, else
    /// `~/.local/state/fluvio-vision/<name>`]. Relative to this file.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The three Fluvio topics of the pipeline.
    pub topics: TopicsConfig,
    /// The `image-validate` SmartModule, loaded as `smdk load` loads it.
    pub smartmodule: SmartModuleConfig,
    /// The Kafka broker and its topics (input of kafka-source, output of the sink).
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
    /// The BigQuery dataset and table the sink writes.
    #[serde(default)]
    pub bigquery: Option<BigQueryConfig>,
    /// The GCS bucket: uploads under `input-prefix` (gcs-source), predictions under `output-prefix` (sink).
    #[serde(default)]
    pub gcs: Option<GcsConfig>,
    /// The Pub/Sub topic the bucket notifies and the subscription gcs-source pulls.
    #[serde(default)]
    pub pubsub: Option<PubSubConfig>,
    /// The connectors, each a supervised background process.
    pub connectors: Vec<ConnectorEntry>,
}

/// `topics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TopicsConfig {
    /// ImageEvents from the sources and the simulator.
    pub images: TopicConfig,
    /// Predictions from the sink.
    pub predictions: TopicConfig,
    /// Dead letters from every stage.
    pub dlq: TopicConfig,
}

/// One Fluvio topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TopicConfig {
    /// Its name on the cluster.
    pub name: String,
    /// A Fluvio topic file (`fluvio-config/topics/*.yaml`: retention, segment size, compression), relative
    /// to this file; its `meta.name` is replaced by `name`.
    pub config: PathBuf,
    /// Overrides the file's `partition.count` (scale-out: one sink per partition set).
    #[serde(default)]
    pub partitions: Option<u32>,
}

/// `smartmodule`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SmartModuleConfig {
    /// Its name on the cluster: the package's `group/name@version` (`fluvio-vision/image-validate@<version>`,
    /// loaded with its package metadata as `smdk load` does), or a bare `image-validate` /
    /// `image-validate-<suffix>`.
    pub name: String,
    /// The `.wasm` [default: `$FVISION_SMARTMODULE_WASM`, else the installation's
    /// `share/fluvio-vision/smartmodule/image_validate.wasm`]. Relative to this file.
    #[serde(default)]
    pub wasm: Option<PathBuf>,
}

/// `kafka`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port]`.
    pub bootstrap_servers: String,
    /// The topic kafka-source reads (the seed job's `image-stream`).
    #[serde(default = "default_input_topic")]
    pub input_topic: String,
    /// The topic the sink's Kafka output writes (`image-stream-results`).
    #[serde(default = "default_results_topic")]
    pub results_topic: String,
    /// Partitions of the topics deploy creates.
    #[serde(default = "one")]
    pub partitions: u32,
}

/// `bigquery`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BigQueryConfig {
    /// Project id.
    pub project: String,
    /// Dataset (created by deploy, deleted with its tables by cleanup).
    #[serde(default = "default_dataset")]
    pub dataset: String,
    /// Table (the job's columns and the documented extras; docs/records.md).
    #[serde(default = "default_table")]
    pub table: String,
    /// An emulator's root URL; absent = Google Cloud.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// A service-account key file (Google Cloud); absent = application default credentials.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

/// `gcs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct GcsConfig {
    /// Project id (the bucket's owner).
    pub project: String,
    /// Bucket.
    pub bucket: String,
    /// An emulator's URL; absent = `https://storage.googleapis.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// A key file (service account, or gcloud's user credentials) for the bucket on Google Cloud; absent =
    /// application default credentials. Not used with an emulator (`endpoint` or `STORAGE_EMULATOR_HOST`).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Where uploads are announced from (gcs-source's `prefix`).
    #[serde(default = "default_input_prefix")]
    pub input_prefix: String,
    /// Where the sink writes its NDJSON objects.
    #[serde(default = "default_output_prefix")]
    pub output_prefix: String,
    /// Create the bucket's OBJECT_FINALIZE notification to the Pub/Sub topic (Google Cloud; the GCS
    /// emulator has none, the simulator's `--notify` stands in for it).
    #[serde(default)]
    pub notify: bool,
}

/// `pubsub`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PubSubConfig {
    /// Project id.
    pub project: String,
    /// The topic the bucket's notifications go to.
    #[serde(default = "default_pubsub_topic")]
    pub topic: String,
    /// The subscription gcs-source pulls.
    #[serde(default = "default_subscription")]
    pub subscription: String,
    /// The subscription's ack deadline in seconds.
    #[serde(default = "default_ack_deadline")]
    pub ack_deadline_seconds: i32,
    /// An emulator's gRPC `host:port` (`PUBSUB_EMULATOR_HOST`); absent = Google Cloud.
    #[serde(default)]
    pub emulator_host: Option<String>,
    /// A service-account key file for Pub/Sub and gcs-source's GCS reads on Google Cloud; absent =
    /// application default credentials. Not used with an emulator.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

/// One connector process.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConnectorEntry {
    /// Unique in the deployment: names its files and its consumer id.
    pub name: String,
    /// `inference-sink`, `kafka-source` or `gcs-source`.
    #[serde(rename = "type")]
    pub kind: ConnectorKind,
    /// Its connector YAML (apiVersion 0.2.0), relative to this file.
    pub config: PathBuf,
    /// A secrets file (`NAME=value` lines) passed with `--secrets`.
    #[serde(default)]
    pub secrets: Option<PathBuf>,
    /// The binary [default: next to `fvision`, else on PATH].
    #[serde(default)]
    pub binary: Option<PathBuf>,
    /// The `images` partition this sink consumes [default: the config's, usually all] (scale-out).
    #[serde(default)]
    pub partition: Option<u32>,
    /// Its `/metrics` port [default: the config's], read by `fvision status`.
    #[serde(default)]
    pub metrics_port: Option<u16>,
    /// Extra arguments after `--config`/`--secrets`.
    #[serde(default)]
    pub args: Vec<String>,
}

/// The connectors deploy knows how to configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectorKind {
    /// `images` → predictions, BigQuery, Kafka, GCS, `images-dlq`.
    InferenceSink,
    /// Kafka → `images`.
    KafkaSource,
    /// GCS via Pub/Sub → `images`.
    GcsSource,
}

impl ConnectorKind {
    /// The binary's name, and the `meta.type` of its config.
    pub fn binary(self) -> &'static str {
        match self {
            Self::InferenceSink => "inference-sink",
            Self::KafkaSource => "kafka-source",
            Self::GcsSource => "gcs-source",
        }
    }

    /// The connector YAML section it reads.
    pub fn section(self) -> &'static str {
        match self {
            Self::InferenceSink => "inference",
            Self::KafkaSource => "kafka",
            Self::GcsSource => "gcs",
        }
    }
}

fn default_input_topic() -> String {
    "image-stream".into()
}
fn default_results_topic() -> String {
    "image-stream-results".into()
}
fn one() -> u32 {
    1
}
fn default_dataset() -> String {
    "ml_streaming".into()
}
fn default_table() -> String {
    "image_predictions".into()
}
fn default_input_prefix() -> String {
    "input-images/".into()
}
fn default_output_prefix() -> String {
    "outputs/predictions/".into()
}
fn default_pubsub_topic() -> String {
    "gcs-image-notifications".into()
}
fn default_subscription() -> String {
    "image-stream-sub".into()
}
fn default_ack_deadline() -> i32 {
    60
}

/// A checked deployment: paths resolved against the file's folder.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The file it came from.
    pub path: PathBuf,
    /// What it says, with relative paths made absolute.
    pub config: DeploymentConfig,
}

impl Deployment {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// Parses and checks `text`; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let field =
            |field: &str, expected: String| ConfigError::Field { path: path.into(), field: field.into(), expected };
        let de = serde_yaml::Deserializer::from_str(text);
        let mut config: DeploymentConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            let message = e.inner().to_string();
            let message = message.strip_prefix(&format!("{at}: ")).unwrap_or(&message).to_string();
            field(&at, message)
        })?;
        if !valid_name(&config.name) {
            return Err(field("name", format!("letters, digits, `-` and `_`, not `{}`", config.name)));
        }
        for (key, topic) in [
            ("images", &config.topics.images),
            ("predictions", &config.topics.predictions),
            ("dlq", &config.topics.dlq),
        ] {
            if !valid_name(&topic.name) || topic.name.len() > 63 || topic.name.contains('_') {
                return Err(field(
                    &format!("topics.{key}.name"),
                    format!("a Fluvio topic name (lowercase letters, digits, `-`), not `{}`", topic.name),
                ));
            }
            if topic.partitions == Some(0) {
                return Err(field(&format!("topics.{key}.partitions"), "at least 1".into()));
            }
        }
        let packaged = smartmodule_package().map(|p| p.package.fqdn()).unwrap_or_default();
        if config.smartmodule.name != packaged && !fvision_is_image_validate(&config.smartmodule.name) {
            return Err(field(
                "smartmodule.name",
                format!(
                    "`{packaged}` (the package), `image-validate` or `image-validate-<suffix>`, not `{}`",
                    config.smartmodule.name
                ),
            ));
        }
        if config.connectors.is_empty() {
            return Err(field("connectors", "at least one connector".into()));
        }
        let mut names = BTreeSet::new();
        for (i, entry) in config.connectors.iter().enumerate() {
            if !valid_name(&entry.name) {
                return Err(field(
                    &format!("connectors[{i}].name"),
                    format!("letters, digits, `-` and `_`, not `{}`", entry.name),
                ));
            }
            if !names.insert(entry.name.clone()) {
                return Err(field(
                    &format!("connectors[{i}].name"),
                    format!("a unique name; `{}` is used twice", entry.name),
                ));
            }
            if entry.partition.is_some() && entry.kind != ConnectorKind::InferenceSink {
                return Err(field(&format!("connectors[{i}].partition"), "only for an inference-sink".into()));
            }
            let needs = match entry.kind {
                ConnectorKind::KafkaSource => config.kafka.is_none().then_some("kafka"),
                ConnectorKind::GcsSource => {
                    if config.gcs.is_none() {
                        Some("gcs")
                    } else {
                        config.pubsub.is_none().then_some("pubsub")
                    }
                }
                ConnectorKind::InferenceSink => None,
            };
            if let Some(section) = needs {
                return Err(field(
                    &format!("connectors[{i}].type"),
                    format!("a `{section}` section for a {}", entry.kind.binary()),
                ));
            }
        }
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for topic in [&mut config.topics.images, &mut config.topics.predictions, &mut config.topics.dlq] {
            resolve(&mut topic.config);
        }
        config.state_dir.as_mut().map(resolve);
        config.smartmodule.wasm.as_mut().map(resolve);
        if let Some(bq) = config.bigquery.as_mut() {
            bq.credentials_file.as_mut().map(resolve);
        }
        if let Some(gcs) = config.gcs.as_mut() {
            gcs.credentials_file.as_mut().map(resolve);
        }
        if let Some(pubsub) = &mut config.pubsub {
            pubsub.credentials_file.as_mut().map(resolve);
        }
        for entry in &mut config.connectors {
            resolve(&mut entry.config);
            entry.secrets.as_mut().map(resolve);
            if entry.binary.as_ref().is_some_and(|b| b.components().count() > 1) {
                entry.binary.as_mut().map(resolve);
            }
        }
        Ok(Self { path: path.to_path_buf(), config })
    }

    /// The consumer id (sink) of a connector: `<deployment>-<connector>`.
    pub fn consumer_id(&self, entry: &ConnectorEntry) -> String {
        format!("{}-{}", self.config.name, entry.name)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn fvision_is_image_validate(name: &str) -> bool {
    fvision_sink_config::is_image_validate(name) && !name.contains('/') && !name.contains('@')
}

/// What `render_connector` could not do.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {what}")]
pub struct RenderError {
    /// The connector YAML.
    pub path: PathBuf,
    /// What is wrong with it.
    pub what: String,
}

/// The effective connector YAML of `entry`: its own file (`text`) with the deployment's names filled in.
/// Sets `meta.name`, the name in `meta.topic` (images) and, by type:
/// - inference-sink: `meta.consumer.id` (`<deployment>-<name>`), `meta.consumer.partition` (when given),
///   `inference.predictions-topic`, `inference.dlq-topic`, `inference.metrics-port`, `transforms[0].uses`
///   (the SmartModule), and the `bigquery`, `kafka` and `gcs` outputs' project/dataset/table/endpoint,
///   brokers/topic and bucket/prefix/endpoint when the deployment has those resources (a section is added
///   when the connector YAML lacks it);
/// - kafka-source: `kafka.bootstrap-servers`, `kafka.topics`, `kafka.dlq-topic`, `kafka.metrics-port`;
/// - gcs-source: `gcs.project`, `gcs.subscription`, `gcs.pubsub-emulator-host`, `gcs.gcs-endpoint`,
///   `gcs.prefix`, `gcs.buckets` (the deployment's bucket), `gcs.dlq-topic`, `gcs.metrics-port`.
///
/// Everything else (model, batching, limits, secrets) stays as the connector YAML says.
pub fn render_connector(deployment: &Deployment, entry: &ConnectorEntry, text: &str) -> Result<String, RenderError> {
    let err = |what: String| RenderError { path: entry.config.clone(), what };
    let mut doc: Value = serde_yaml::from_str(text).map_err(|e| err(format!("not YAML: {e}")))?;
    let config = &deployment.config;
    let topics = &config.topics;
    set(&mut doc, &["meta", "name"], entry.name.as_str().into()).map_err(err)?;
    // `apiVersion: 0.2.0` names the topic inside a topic config object; 0.1.0 and older by the name alone.
    let topic_name: &[&str] =
        if doc["meta"]["topic"].is_mapping() { &["meta", "topic", "meta", "name"] } else { &["meta", "topic"] };
    set(&mut doc, topic_name, topics.images.name.as_str().into()).map_err(err)?;
    let section = entry.kind.section();
    match entry.kind {
        ConnectorKind::InferenceSink => {
            set(&mut doc, &["meta", "consumer", "id"], deployment.consumer_id(entry).into()).map_err(err)?;
            if let Some(partition) = entry.partition {
                set(&mut doc, &["meta", "consumer", "partition"], Value::from(partition)).map_err(err)?;
            }
            set(&mut doc, &[section, "predictions-topic"], topics.predictions.name.as_str().into()).map_err(err)?;
            set(&mut doc, &[section, "dlq-topic"], topics.dlq.name.as_str().into()).map_err(err)?;
            let mut step = Mapping::new();
            step.insert("uses".into(), config.smartmodule.name.as_str().into());
            let transforms = doc.get("transforms").and_then(Value::as_sequence).cloned().unwrap_or_default();
            let mut first = transforms.first().and_then(Value::as_mapping).cloned().unwrap_or_default();
            first.insert("uses".into(), config.smartmodule.name.as_str().into());
            set(&mut doc, &["transforms"], Value::Sequence(vec![Value::Mapping(first)])).map_err(err)?;
            if let Some(bq) = &config.bigquery {
                set(&mut doc, &[section, "bigquery", "project"], bq.project.as_str().into()).map_err(err)?;
                set(&mut doc, &[section, "bigquery", "dataset"], bq.dataset.as_str().into()).map_err(err)?;
                set(&mut doc, &[section, "bigquery", "table"], bq.table.as_str().into()).map_err(err)?;
                if let Some(endpoint) = &bq.endpoint {
                    set(&mut doc, &[section, "bigquery", "endpoint"], endpoint.as_str().into()).map_err(err)?;
                    remove(&mut doc, &[section, "bigquery", "credentials-file"]);
                } else if let Some(file) = &bq.credentials_file {
                    set(&mut doc, &[section, "bigquery", "credentials-file"], file.display().to_string().into())
                        .map_err(err)?;
                }
            }
            if let Some(kafka) = &config.kafka {
                set(&mut doc, &[section, "kafka", "brokers"], kafka.bootstrap_servers.as_str().into()).map_err(err)?;
                set(&mut doc, &[section, "kafka", "topic"], kafka.results_topic.as_str().into()).map_err(err)?;
            }
            if let Some(gcs) = &config.gcs {
                set(&mut doc, &[section, "gcs", "bucket"], gcs.bucket.as_str().into()).map_err(err)?;
                set(&mut doc, &[section, "gcs", "prefix"], gcs.output_prefix.as_str().into()).map_err(err)?;
                if let Some(endpoint) = &gcs.endpoint {
                    set(&mut doc, &[section, "gcs", "endpoint"], endpoint.as_str().into()).map_err(err)?;
                    remove(&mut doc, &[section, "gcs", "credentials-file"]);
                }
            }
        }
        ConnectorKind::KafkaSource => {
            let kafka = config.kafka.as_ref().ok_or_else(|| err("the deployment has no `kafka` section".into()))?;
            set(&mut doc, &[section, "bootstrap-servers"], kafka.bootstrap_servers.as_str().into()).map_err(err)?;
            set(&mut doc, &[section, "topics"], Value::Sequence(vec![kafka.input_topic.as_str().into()]))
                .map_err(err)?;
            set(&mut doc, &[section, "dlq-topic"], topics.dlq.name.as_str().into()).map_err(err)?;
        }
        ConnectorKind::GcsSource => {
            let (Some(gcs), Some(pubsub)) = (&config.gcs, &config.pubsub) else {
                return Err(err("the deployment needs `gcs` and `pubsub` sections".into()));
            };
            set(&mut doc, &[section, "project"], pubsub.project.as_str().into()).map_err(err)?;
            set(&mut doc, &[section, "subscription"], pubsub.subscription.as_str().into()).map_err(err)?;
            set(&mut doc, &[section, "prefix"], gcs.input_prefix.as_str().into()).map_err(err)?;
            set(&mut doc, &[section, "buckets"], Value::Sequence(vec![gcs.bucket.as_str().into()])).map_err(err)?;
            set(&mut doc, &[section, "dlq-topic"], topics.dlq.name.as_str().into()).map_err(err)?;
            if let Some(host) = &pubsub.emulator_host {
                set(&mut doc, &[section, "pubsub-emulator-host"], host.as_str().into()).map_err(err)?;
            } else if let Some(file) = &pubsub.credentials_file {
                set(&mut doc, &[section, "credentials-file"], file.display().to_string().into()).map_err(err)?;
            }
            if let Some(endpoint) = &gcs.endpoint {
                set(&mut doc, &[section, "gcs-endpoint"], endpoint.as_str().into()).map_err(err)?;
            }
        }
    }
    if let Some(port) = entry.metrics_port {
        set(&mut doc, &[section, "metrics-port"], Value::from(port)).map_err(err)?;
    }
    serde_yaml::to_string(&doc).map_err(|e| err(format!("cannot write YAML: {e}")))
}

/// The `/metrics` port of a rendered connector YAML (`<section>.metrics-port`), if any.
pub fn metrics_port(kind: ConnectorKind, rendered: &str) -> Option<u16> {
    let doc: Value = serde_yaml::from_str(rendered).ok()?;
    doc.get(kind.section())?.get("metrics-port")?.as_u64().and_then(|p| u16::try_from(p).ok())
}

/// Sets `doc.path = value`, creating mappings on the way; a non-mapping on the way is an error.
fn set(doc: &mut Value, path: &[&str], value: Value) -> Result<(), String> {
    let mut node = doc;
    for (i, key) in path.iter().enumerate() {
        if node.is_null() {
            *node = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(map) = node else {
            return Err(format!("`{}` is not a mapping", path[..i].join(".")));
        };
        if i + 1 == path.len() {
            map.insert((*key).into(), value);
            return Ok(());
        }
        node = map.entry((*key).into()).or_insert(Value::Null);
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &[&str]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = doc;
    for key in parents {
        let Some(next) = node.get_mut(*key) else { return };
        node = next;
    }
    if let Value::Mapping(map) = node {
        map.remove(*last);
    }
}

/// The topic file `config` as `fluvio topic create --config` takes it, with `meta.name` = `name` and, when
/// given, `partition.count` = `partitions`.
pub fn render_topic(text: &str, name: &str, partitions: Option<u32>) -> Result<String, String> {
    let mut doc: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    set(&mut doc, &["meta", "name"], name.into())?;
    if let Some(count) = partitions {
        set(&mut doc, &["partition", "count"], Value::from(count))?;
    }
    serde_yaml::to_string(&doc).map_err(|e| e.to_string())
}

/// The partition count a (rendered) topic file asks for.
pub fn topic_partitions(text: &str) -> u32 {
    serde_yaml::from_str::<Value>(text)
        .ok()
        .and_then(|doc| doc.get("partition")?.get("count")?.as_u64())
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn the_shipped_deployment_files_parse_and_name_existing_files() {
        for file in ["local.yaml", "gcp.yaml"] {
            let path = repo().join("fluvio-config/deploy").join(file);
            let deployment = Deployment::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let config = &deployment.config;
            let packaged = smartmodule_package().unwrap().package.fqdn();
            assert_eq!(config.smartmodule.name, packaged, "{file}: the SmartModule under its package name");
            for topic in [&config.topics.images, &config.topics.predictions, &config.topics.dlq] {
                assert!(topic.config.is_file(), "{file}: {}", topic.config.display());
                // What `fluvio topic create --config` reads, every key one Fluvio knows.
                let text = std::fs::read_to_string(&topic.config).unwrap();
                let rendered = render_topic(&text, &topic.name, topic.partitions).unwrap();
                let dir = tempfile::tempdir().unwrap();
                let copy = dir.path().join("topic.yaml");
                std::fs::write(&copy, rendered).unwrap();
                fvision_connector_common::config::TopicConfig::load(&copy).unwrap_or_else(|e| panic!("{file}: {e}"));
            }
            for entry in &config.connectors {
                assert!(entry.config.is_file(), "{file}: {}", entry.config.display());
                let text = std::fs::read_to_string(&entry.config).unwrap();
                let rendered = render_connector(&deployment, entry, &text).unwrap();
                let doc: Value = serde_yaml::from_str(&rendered).unwrap();
                assert_eq!(doc["meta"]["topic"]["meta"]["name"].as_str(), Some(config.topics.images.name.as_str()));
                assert_eq!(doc["meta"]["type"].as_str(), Some(entry.kind.binary()), "{file}: {}", entry.name);
                if entry.kind == ConnectorKind::InferenceSink {
                    assert_eq!(
                        doc["transforms"][0]["uses"].as_str(),
                        Some(packaged.as_str()),
                        "{file}: {}",
                        entry.name
                    );
                }
            }
        }
    }

    #[test]
    fn unknown_and_bad_fields_name_the_file_and_the_field() {
        let good = std::fs::read_to_string(repo().join("fluvio-config/deploy/local.yaml")).unwrap();
        let path = Path::new("/x/deploy.yaml");
        let cases = [
            (good.replace("topics:", "topicz: {}\ntopics:"), "field `topicz`: unknown field `topicz`"),
            (good.replace("name: fluvio-vision/image-validate@0.1.0", "name: jolt"), "field `smartmodule.name`"),
            (good.replace("type: kafka-source", "type: kafka-sauce"), "field `connectors[1].type`"),
            (good.replace("name: fvision-local", "name: a/b"), "field `name`"),
        ];
        for (text, expected) in cases {
            let e = Deployment::parse(&text, path).expect_err(expected).to_string();
            assert!(e.starts_with("/x/deploy.yaml: "), "{e}");
            assert!(e.contains(expected), "{e} should contain {expected}");
        }
    }

    #[test]
    fn a_sink_gets_the_deployments_names_and_keeps_its_own_settings() {
        let text = std::fs::read_to_string(repo().join("fluvio-config/deploy/local.yaml")).unwrap();
        let mut deployment = Deployment::parse(&text, &repo().join("fluvio-config/deploy/local.yaml")).unwrap();
        deployment.config.topics.images.name = "img-7".into();
        let mut entry =
            deployment.config.connectors.iter().find(|c| c.kind == ConnectorKind::InferenceSink).unwrap().clone();
        entry.partition = Some(1);
        entry.metrics_port = Some(40001);
        let sink = "apiVersion: 0.2.0\nmeta: {version: 0.1.0, name: x, type: inference-sink, topic: {meta: {name: images}}}\n\
                    inference: {model: mobilenet-v2, max-batch: 3}\ntransforms:\n  - uses: image-validate\n    with: {max_pixels: \"5\"}\n";
        let rendered = render_connector(&deployment, &entry, sink).unwrap();
        let doc: Value = serde_yaml::from_str(&rendered).unwrap();
        assert_eq!(doc["meta"]["topic"]["meta"]["name"].as_str(), Some("img-7"));
        assert_eq!(doc["meta"]["consumer"]["partition"].as_u64(), Some(1));
        assert_eq!(doc["meta"]["consumer"]["id"].as_str().map(str::to_string), Some(deployment.consumer_id(&entry)));
        assert_eq!(doc["inference"]["model"].as_str(), Some("mobilenet-v2"));
        assert_eq!(doc["inference"]["max-batch"].as_u64(), Some(3));
        assert_eq!(doc["transforms"][0]["with"]["max_pixels"].as_str(), Some("5"));
        assert_eq!(metrics_port(ConnectorKind::InferenceSink, &rendered), Some(40001));
        let bq = deployment.config.bigquery.as_ref().unwrap();
        assert_eq!(doc["inference"]["bigquery"]["endpoint"].as_str(), bq.endpoint.as_deref());
        // The sink reads what deploy wrote.
        let parsed = fvision_connector_common::config::ConnectorConfig::<fvision_sink_config::InferenceConfig>::parse(
            &rendered,
            Path::new("rendered.yaml"),
            &Default::default(),
            "inference",
        );
        assert!(parsed.is_ok(), "{:?}", parsed.err());
    }

    #[test]
    fn a_topic_file_gets_its_name_and_partitions() {
        let text = std::fs::read_to_string(repo().join("fluvio-config/topics/images.yaml")).unwrap();
        let rendered = render_topic(&text, "images-x", Some(2)).unwrap();
        assert_eq!(topic_partitions(&rendered), 2);
        let doc: Value = serde_yaml::from_str(&rendered).unwrap();
        assert_eq!(doc["meta"]["name"].as_str(), Some("images-x"));
        assert_eq!(doc["retention"]["time"].as_str(), Some("2 days"));
    }
}
