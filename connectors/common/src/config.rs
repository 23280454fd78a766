//! Connector configuration in Fluvio's connector YAML format, as `cdk deploy start` hands it to a connector with
//! `--config FILE [--secrets FILE]`: a `meta` section every connector shares, the connector's own section
//! (named after it), and `transforms`.
//!
//! `fluvio-connector-common`, which provides this upstream, is not on crates.io, so the format is modelled
//! here with serde, accepting what upstream Fluvio 0.50.2 (`fluvio-connector-package`) accepts:
//! `apiVersion: 0.2.0` with `meta.topic` as a topic config object (`topic: {meta: {name: images}}`),
//! `apiVersion: 0.1.0` and no `apiVersion` (or `0.0.0`) with `meta.topic` as a name; `flush-period` as a serde
//! `Duration` (`{secs: 2, nanos: 0}`); `offset.strategy` required when `offset` is given. Unknown fields are
//! errors here where upstream ignores them (a misspelt key that silently does nothing is the worse outcome).
//! Every error names the file, the field path and what was expected.
//!
//! Secrets are declared in `meta.secrets` and referenced as `${{ secrets.NAME }}` inside YAML strings. Like
//! upstream, every declared secret is read up front, from the `--secrets` file (`NAME=value` lines, both sides
//! trimmed, the first line of a name wins) or, without one, from the environment variable of that name (its
//! value as is); a reference to an undeclared name is an error, and without `apiVersion` no secret is read.
//! Unlike upstream, which renders the text before parsing it, values are filled in after the YAML is parsed,
//! into string values only, and stay strings: a secret holding `:`, `#`, a line break or `0x1F2E` is a value,
//! never structure or a number. Config errors show the reference, never the value ([`crate::secret`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::secret::Secrets;

/// `apiVersion`, one of the versions upstream Fluvio reads: which form `meta.topic` takes and whether
/// secrets are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// No `apiVersion` (or `0.0.0`): the form before versioning; upstream reads no secrets for it.
    Unversioned,
    /// `0.1.0`: `meta.topic` is a topic name.
    V0_1_0,
    /// `0.2.0`: `meta.topic` is a topic config object (`{meta: {name: images}, partition: ...}`).
    V0_2_0,
}

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A field is missing, unknown, of the wrong type or out of range.
    #[error("{path}: field `{field}`: {expected}")]
    Field {
        /// The config file.
        path: PathBuf,
        /// The dotted field path (`meta.consumer.offset.strategy`), or `.` for the document.
        field: String,
        /// What was wrong and what was expected.
        expected: String,
    },
}

/// The whole file: shared `meta`, the connector's own section, transforms.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorConfig<C> {
    /// The version the file declared.
    pub api_version: ApiVersion,
    /// What every connector has.
    pub meta: MetaConfig,
    /// This connector's settings.
    pub custom: C,
    /// SmartModules applied to the records, in order.
    pub transforms: Vec<TransformStep>,
}

/// `meta`: identity, topic, consumer and producer settings, secrets: upstream's fields, and only those.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetaConfig {
    /// Connector instance name.
    pub name: String,
    /// Connector type, e.g. `inference-sink`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Connector package version.
    pub version: String,
    /// The Fluvio topic read (sinks) or written (sources).
    pub topic: TopicRef,
    /// Consumer settings (sinks).
    #[serde(default)]
    pub consumer: Option<ConsumerConfig>,
    /// Producer settings (sources, and sinks that write topics).
    #[serde(default)]
    pub producer: Option<ProducerConfig>,
    /// Secrets the config may reference.
    #[serde(default)]
    pub secrets: Vec<SecretRef>,
}

/// `meta.topic`: a name (`apiVersion` 0.1.0 and none) or a topic config object (0.2.0).
#[derive(Debug, Clone, PartialEq)]
pub enum TopicRef {
    /// `topic: images`.
    Name(String),
    /// `topic: {meta: {name: images}, partition: ..., ...}`.
    Config(Box<TopicConfig>),
}

impl TopicRef {
    /// The topic name.
    pub fn name(&self) -> &str {
        match self {
            Self::Name(name) => name,
            Self::Config(config) => &config.meta.name,
        }
    }
}

impl<'de> Deserialize<'de> for TopicRef {
    /// A string is a name; a mapping a [`TopicConfig`] (read in place, so errors name the field inside it).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Form;
        impl<'de> serde::de::Visitor<'de> for Form {
            type Value = TopicRef;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a topic name or a topic config `{meta: {name: TOPIC}}`")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<TopicRef, E> {
                Ok(TopicRef::Name(name.to_string()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<TopicRef, A::Error> {
                TopicConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|config| TopicRef::Config(Box::new(config)))
            }
        }
        deserializer.deserialize_any(Form)
    }
}

fn kind_of(value: &serde_yaml::Value) -> &'static str {
    use serde_yaml::Value;
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A Fluvio topic config, as `fluvio topic create --config` reads it and as `meta.topic` holds it under
/// `apiVersion: 0.2.0`: Fluvio 0.50.2's `TopicConfig`, with its kebab-case keys. Unknown keys are refused
/// (Fluvio ignores them, so a misspelt `segment_size` would silently do nothing).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TopicConfig {
    /// Format version; Fluvio's default `0.1.0`.
    #[serde(default = "default_topic_config_version")]
    pub version: String,
    /// `meta.name`.
    pub meta: TopicMeta,
    /// Partitions and replicas.
    #[serde(default)]
    pub partition: TopicPartitionConfig,
    /// How long and in what segments records are kept.
    #[serde(default)]
    pub retention: TopicRetentionConfig,
    /// The compression the topic stores.
    #[serde(default)]
    pub compression: TopicCompressionConfig,
    /// Fluvio's de-duplication settings, passed through.
    #[serde(default)]
    pub deduplication: Option<serde_yaml::Value>,
}

fn default_topic_config_version() -> String {
    "0.1.0".into()
}

/// `meta` of a topic config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicMeta {
    /// Topic name.
    pub name: String,
}

/// `partition` of a topic config.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TopicPartitionConfig {
    /// Partitions (Fluvio's default 1).
    #[serde(default)]
    pub count: Option<u32>,
    /// Largest size of one partition.
    #[serde(default)]
    pub max_size: Option<ByteSize>,
    /// Replicas of each partition (default 1).
    #[serde(default)]
    pub replication: Option<u32>,
    /// Whether replicas ignore the SPUs' racks.
    #[serde(default)]
    pub ignore_rack_assignment: Option<bool>,
    /// Explicit partition-to-SPU maps, passed through.
    #[serde(default)]
    pub maps: Option<Vec<serde_yaml::Value>>,
}

/// `retention` of a topic config.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TopicRetentionConfig {
    /// How long a segment is kept (humantime, `2 days`).
    #[serde(default, with = "humantime_serde")]
    pub time: Option<Duration>,
    /// Size of one log segment: retention deletes whole segments.
    #[serde(default)]
    pub segment_size: Option<ByteSize>,
}

/// `compression` of a topic config.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicCompressionConfig {
    /// `Any` (what producers send), `None`, `Gzip`, `Snappy`, `Lz4` or `Zstd`.
    #[serde(default, rename = "type")]
    pub kind: TopicCompression,
}

/// `compression.type`, spelt as Fluvio spells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TopicCompression {
    /// Whatever the producer sent.
    #[default]
    Any,
    /// Stored uncompressed.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl TopicConfig {
    /// Reads a topic config file (`fluvio-config/topics/*.yaml`); errors name the file and the field.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read(path)?;
        let field =
            |field: &str, expected: String| ConfigError::Field { path: path.to_owned(), field: field.into(), expected };
        serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(&text))
            .map_err(|e| path_error(&e, "", &field))
    }
}

/// `meta.consumer`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConsumerConfig {
    /// Consumer id: offsets are stored in Fluvio under it.
    #[serde(default)]
    pub id: Option<String>,
    /// One partition, a list, or `all`.
    #[serde(default)]
    pub partition: Option<PartitionSelection>,
    /// Largest fetch; must exceed the largest record (whole images are large).
    #[serde(default, alias = "max_bytes")]
    pub max_bytes: Option<ByteSize>,
    /// Where to start and how offsets are committed.
    #[serde(default)]
    pub offset: Option<OffsetConfig>,
}

/// `meta.consumer.partition`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PartitionSelection {
    /// One partition.
    One(u32),
    /// Several partitions.
    Many(Vec<u32>),
    /// `all`.
    All(AllPartitions),
}

/// The word `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllPartitions {
    /// Every partition of the topic.
    All,
}

/// `meta.consumer.offset`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OffsetConfig {
    /// Where a consumer without a stored offset starts: `beginning`, `end`, or `{absolute: N}`,
    /// `{from-beginning: N}`, `{from-end: N}`.
    #[serde(default, with = "serde_yaml::with::singleton_map")]
    pub start: Option<OffsetStart>,
    /// `none`, `manual` (commit after the sinks acknowledged: what this project uses) or `auto`. Required
    /// whenever `offset` is given, as upstream requires it; `None` only in configs built in code.
    #[serde(default)]
    pub strategy: Option<OffsetStrategy>,
    /// How often offsets are committed: a serde `Duration`, `{secs: 2, nanos: 0}`.
    #[serde(default)]
    pub flush_period: Option<FlushPeriod>,
}

/// `meta.consumer.offset.start`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OffsetStart {
    /// The first record.
    Beginning,
    /// After the last record.
    End,
    /// An absolute offset.
    Absolute(i64),
    /// N records after the first.
    FromBeginning(u32),
    /// N records before the end.
    FromEnd(u32),
}

/// `meta.consumer.offset.strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetStrategy {
    /// No offset management.
    None,
    /// Commits by the connector.
    Manual,
    /// Periodic commits by the client.
    Auto,
}

/// `meta.consumer.offset.flush-period`: what serde reads as a `Duration` from YAML, `{secs: 2, nanos: 0}`
/// (both parts required), as upstream reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPeriod {
    /// Seconds.
    pub secs: u64,
    /// Nanoseconds.
    pub nanos: u32,
}

impl<'de> Deserialize<'de> for FlushPeriod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let period = Duration::deserialize(deserializer)?;
        Ok(Self { secs: period.as_secs(), nanos: period.subsec_nanos() })
    }
}

/// `meta.producer`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProducerConfig {
    /// How long a batch may wait to fill.
    #[serde(default, with = "humantime_serde")]
    pub linger: Option<Duration>,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    #[serde(default)]
    pub compression: Option<Compression>,
    /// Largest batch.
    #[serde(default, alias = "batch_size")]
    pub batch_size: Option<ByteSize>,
}

/// `meta.producer.compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

/// `meta.secrets[]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// ASCII letters, digits and underscores, not starting with a digit.
    pub name: String,
}

/// `transforms[]`: one SmartModule invocation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformStep {
    /// The SmartModule (`image-validate`, or `group/name@version`).
    pub uses: String,
    /// Its params.
    #[serde(default)]
    pub with: BTreeMap<String, TransformParam>,
    /// Lookback settings, passed through.
    #[serde(default)]
    pub lookback: Option<serde_yaml::Value>,
}

impl TransformStep {
    /// The params as SmartModules receive them.
    pub fn params(&self) -> BTreeMap<String, String> {
        self.with.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect()
    }
}

/// One `transforms[].with` value, read as upstream's `JsonString` reads it: a string as it is, a list or a
/// mapping as its JSON text. A bare number or boolean is refused, as upstream refuses it (`"50000000"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformParam(pub String);

impl<'de> Deserialize<'de> for TransformParam {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_yaml::Value::deserialize(deserializer)? {
            serde_yaml::Value::String(text) => Ok(Self(text)),
            value @ (serde_yaml::Value::Sequence(_) | serde_yaml::Value::Mapping(_)) => {
                serde_json::to_string(&value).map(Self).map_err(|e| D::Error::custom(format!("a JSON-able value: {e}")))
            }
            other => Err(D::Error::custom(format!(
                "a string, a list or a mapping, as Fluvio reads SmartModule params (got {}: quote it)",
                kind_of(&other)
            ))),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    /// Read by [`api_version`] before this parse; named here so that it is not taken for a section.
    #[serde(default, rename = "apiVersion")]
    _api_version: Option<serde::de::IgnoredAny>,
    meta: MetaConfig,
    #[serde(default)]
    transforms: Vec<TransformStep>,
    #[serde(flatten)]
    sections: BTreeMap<String, serde_yaml::Value>,
}

/// Where the declared secrets' values come from.
enum SecretSource<'a> {
    /// A `--secrets` file, already read (no path: secrets given in code).
    File(Option<&'a Path>, &'a Secrets),
    /// The process environment (no `--secrets`), like upstream's `EnvSecretStore`.
    Env,
}

impl SecretSource<'_> {
    fn read(&self, name: &str) -> Result<String, String> {
        match self {
            Self::File(path, secrets) => secrets.get(name).map(|s| s.expose().to_string()).ok_or_else(|| match path {
                Some(path) => format!("`{name}` is not in the secrets file {}", path.display()),
                None => format!("`{name}` is not among the given secrets"),
            }),
            Self::Env => std::env::var(name)
                .map_err(|_| format!("`{name}` is not set: without --secrets, secrets are read from the environment")),
        }
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })
}

/// What a connector's own section checks beyond serde (ranges, names, combinations of fields).
pub trait CheckSection {
    /// The section's name in the YAML (`kafka`, `gcs`).
    const SECTION: &'static str;

    /// Checks the section of the config read from `path` (named in the error with the field).
    fn check(&self, path: &Path) -> Result<(), ConfigError>;
}

/// A connector config after its section's [`CheckSection::check`] passed: the only form a source takes, so it
/// never starts on an unchecked section (`*Config` is what serde reads, `*Settings` what it is checked into).
/// Reads as the [`ConnectorConfig`] it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedConfig<C> {
    config: ConnectorConfig<C>,
    path: PathBuf,
}

impl<C: CheckSection + DeserializeOwned> CheckedConfig<C> {
    /// Reads `path` (and the secrets, as [`ConnectorConfig::load`]) and checks its section.
    pub fn load(path: &Path, secrets: Option<&Path>) -> Result<Self, ConfigError> {
        Self::check(ConnectorConfig::load(path, secrets, C::SECTION)?, path)
    }

    /// Checks `config`, read from `path`.
    pub fn check(config: ConnectorConfig<C>, path: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        let path = path.into();
        config.custom.check(&path)?;
        Ok(Self { config, path })
    }

    /// The file the config was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl<C> std::ops::Deref for CheckedConfig<C> {
    type Target = ConnectorConfig<C>;

    fn deref(&self) -> &ConnectorConfig<C> {
        &self.config
    }
}

impl<C: DeserializeOwned> ConnectorConfig<C> {
    /// Reads `path`, with the connector's own settings under `section`; the declared secrets from the
    /// `secrets` file, or from the environment without one. The secrets are registered for redaction
    /// ([`Secrets::register`]) before anything can fail on them.
    pub fn load(path: &Path, secrets: Option<&Path>, section: &str) -> Result<Self, ConfigError> {
        let text = read(path)?;
        match secrets {
            Some(file) => {
                let secrets = parse_secrets(&read(file)?, file)?;
                secrets.register();
                Self::parse_from(&text, path, &SecretSource::File(Some(file), &secrets), section)
            }
            None => Self::parse_from(&text, path, &SecretSource::Env, section),
        }
    }

    /// Parses config text with the declared secrets taken from `secrets`; `path` only names the file in
    /// errors. Every error message has the secret values redacted.
    pub fn parse(text: &str, path: &Path, secrets: &Secrets, section: &str) -> Result<Self, ConfigError> {
        Self::parse_from(text, path, &SecretSource::File(None, secrets), section)
    }

    fn parse_from(text: &str, path: &Path, source: &SecretSource<'_>, section: &str) -> Result<Self, ConfigError> {
        let mut read = Secrets::default();
        Self::parse_unredacted(text, path, source, &mut read, section).map_err(|e| match e {
            ConfigError::Field { path, field, expected } => {
                ConfigError::Field { path, field: read.redact(&field), expected: read.redact(&expected) }
            }
            other => other,
        })
    }

    fn parse_unredacted(
        text: &str,
        path: &Path,
        source: &SecretSource<'_>,
        secrets: &mut Secrets,
        section: &str,
    ) -> Result<Self, ConfigError> {
        let field =
            |field: &str, expected: String| ConfigError::Field { path: path.to_owned(), field: field.into(), expected };
        let de = serde_yaml::Deserializer::from_str(text);
        let mut document: serde_yaml::Value =
            serde_path_to_error::deserialize(de).map_err(|e| path_error(&e, "", &field))?;
        let api_version = api_version(&document).map_err(|expected| field("apiVersion", expected))?;
        if api_version != ApiVersion::Unversioned {
            *secrets = read_declared_secrets(&document, source).map_err(|(f, expected)| field(&f, expected))?;
            secrets.register();
        }
        substitute_secrets(&mut document, secrets)
            .map_err(|(name, why)| field("meta.secrets", format!("`{name}`: {why}")))?;
        let doc: Document = serde_path_to_error::deserialize(document).map_err(|e| path_error(&e, "", &field))?;
        check_meta(&doc.meta, api_version).map_err(|(f, expected)| field(&f, expected))?;
        let mut sections = doc.sections;
        let custom_value = sections.remove(section).unwrap_or(serde_yaml::Value::Mapping(Default::default()));
        if let Some(unknown) = sections.keys().next() {
            return Err(field(unknown, format!("unknown section; expected apiVersion, meta, transforms or {section}")));
        }
        let custom: C = serde_path_to_error::deserialize(custom_value).map_err(|e| path_error(&e, section, &field))?;
        Ok(Self { api_version, meta: doc.meta, custom, transforms: doc.transforms })
    }
}

/// `apiVersion`: absent, `0.0.0`, `0.1.0` or `0.2.0`.
fn api_version(document: &serde_yaml::Value) -> Result<ApiVersion, String> {
    match document.get("apiVersion") {
        None => Ok(ApiVersion::Unversioned),
        Some(serde_yaml::Value::String(v)) if v == "0.0.0" => Ok(ApiVersion::Unversioned),
        Some(serde_yaml::Value::String(v)) if v == "0.1.0" => Ok(ApiVersion::V0_1_0),
        Some(serde_yaml::Value::String(v)) if v == "0.2.0" => Ok(ApiVersion::V0_2_0),
        Some(other) => {
            let found = match other {
                serde_yaml::Value::String(v) => format!("`{v}`"),
                other => kind_of(other).to_string(),
            };
            Err(format!("expected `0.2.0` or `0.1.0` (or no apiVersion), found {found}"))
        }
    }
}

/// What serde cannot check in `meta`: the topic's form for the version, the offset strategy, secret names.
fn check_meta(meta: &MetaConfig, version: ApiVersion) -> Result<(), (String, String)> {
    match (&meta.topic, version) {
        (TopicRef::Name(name), ApiVersion::V0_2_0) => {
            return Err((
                "meta.topic".into(),
                format!(
                    "under apiVersion 0.2.0 a topic config object, `topic: {{meta: {{name: {name}}}}}` (the bare \
                     name is the apiVersion 0.1.0 form)"
                ),
            ))
        }
        (TopicRef::Config(config), ApiVersion::V0_1_0 | ApiVersion::Unversioned) => {
            return Err((
                "meta.topic".into(),
                format!("a topic name, `topic: {}` (the object form needs apiVersion 0.2.0)", config.meta.name),
            ))
        }
        _ => {}
    }
    if let Some(offset) = meta.consumer.as_ref().and_then(|c| c.offset.as_ref()) {
        if offset.strategy.is_none() {
            return Err((
                "meta.consumer.offset.strategy".into(),
                "missing: `none`, `manual` or `auto` (Fluvio requires it whenever `offset` is given)".into(),
            ));
        }
    }
    Ok(())
}

/// The values of the secrets `meta.secrets` declares, read from `source` (each must be there, as upstream
/// reads them all before rendering); names are checked first. Errors: (field, what was expected).
fn read_declared_secrets(document: &serde_yaml::Value, source: &SecretSource<'_>) -> Result<Secrets, (String, String)> {
    let declared = match document.get("meta").and_then(|m| m.get("secrets")) {
        Some(serde_yaml::Value::Sequence(items)) => items.as_slice(),
        // Absent, or not a list: the typed parse reports that.
        _ => &[],
    };
    let mut values = Vec::new();
    for (i, item) in declared.iter().enumerate() {
        let Some(name) = item.get("name").and_then(serde_yaml::Value::as_str) else { continue };
        if !valid_secret_name(name) {
            return Err((
                format!("meta.secrets[{i}].name"),
                format!("`{name}`: expected ASCII letters, digits and underscores, not starting with a digit"),
            ));
        }
        let value = source.read(name).map_err(|why| (format!("meta.secrets[{i}]"), why))?;
        values.push((name.to_string(), value));
    }
    Ok(Secrets::new(values))
}

/// A deserialisation error as "field `a.b`: message", without the parser repeating the path.
fn path_error<E: std::fmt::Display>(
    e: &serde_path_to_error::Error<E>,
    section: &str,
    field: &dyn Fn(&str, String) -> ConfigError,
) -> ConfigError {
    let inner = e.path().to_string();
    let path = match (section.is_empty(), inner.as_str()) {
        (true, _) => inner.clone(),
        (false, ".") => section.to_string(),
        (false, _) => format!("{section}.{inner}"),
    };
    let message = e.inner().to_string();
    let message = message.strip_prefix(&format!("{inner}: ")).unwrap_or(&message).to_string();
    field(&path, message)
}

fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `NAME=value` per line, both sides trimmed as upstream's `FileSecretStore` trims them, the first line of a
/// name winning as upstream's lookup does; blank lines and `#` comments skipped. Errors name the line, never
/// its text.
fn parse_secrets(text: &str, path: &Path) -> Result<Secrets, ConfigError> {
    let mut secrets: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) =
            line.split_once('=').filter(|(n, _)| valid_secret_name(n.trim())).ok_or_else(|| ConfigError::Field {
                path: path.to_owned(),
                field: format!("line {}", i + 1),
                expected: "NAME=value".into(),
            })?;
        if !secrets.iter().any(|(n, _)| n == name.trim()) {
            secrets.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    Ok(Secrets::new(secrets))
}

/// Replaces every `${{ secrets.NAME }}` inside the string values of the parsed document with the declared
/// secret's value (an undeclared name is an error, not an empty string). The result stays a string, whatever
/// it looks like.
fn substitute_secrets(value: &mut serde_yaml::Value, secrets: &Secrets) -> Result<(), (String, &'static str)> {
    use serde_yaml::Value;
    match value {
        Value::String(text) if text.contains("${{") => *text = substitute_in(text, secrets)?,
        Value::Sequence(items) => items.iter_mut().try_for_each(|item| substitute_secrets(item, secrets))?,
        Value::Mapping(map) => map.iter_mut().try_for_each(|(_, item)| substitute_secrets(item, secrets))?,
        Value::Tagged(tagged) => substitute_secrets(&mut tagged.value, secrets)?,
        _ => {}
    }
    Ok(())
}

/// One string's references substituted.
fn substitute_in(text: &str, secrets: &Secrets) -> Result<String, (String, &'static str)> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let end = after.find("}}").ok_or_else(|| (after.trim().to_string(), "unclosed `${{`"))?;
        let reference = after[..end].trim();
        let name =
            reference.strip_prefix("secrets.").ok_or_else(|| (reference.to_string(), "expected `secrets.NAME`"))?;
        let value = secrets.get(name.trim()).ok_or_else(|| {
            (name.to_string(), "not declared in meta.secrets (with apiVersion 0.1.0 or 0.2.0), so it has no value")
        })?;
        out.push_str(value.expose());
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Config = ConnectorConfig<serde_yaml::Value>;

    fn parse(text: &str, secrets: &Secrets) -> Result<Config, String> {
        Config::parse(text, Path::new("c.yaml"), secrets, "own").map_err(|e| e.to_string())
    }

    const META: &str = "version: 0.1.0\n  name: c\n  type: x-source";

    #[test]
    fn every_version_fluvio_reads_is_read_with_its_topic_form() {
        for (version, topic, expected) in [
            ("apiVersion: 0.1.0\n", "images", ApiVersion::V0_1_0),
            ("", "images", ApiVersion::Unversioned),
            ("apiVersion: 0.0.0\n", "images", ApiVersion::Unversioned),
            ("apiVersion: 0.2.0\n", "{meta: {name: images}}", ApiVersion::V0_2_0),
        ] {
            let config = parse(&format!("{version}meta:\n  {META}\n  topic: {topic}\n"), &Secrets::default())
                .unwrap_or_else(|e| panic!("{version}: {e}"));
            assert_eq!((config.api_version, config.meta.topic.name()), (expected, "images"));
        }
        let err = parse(&format!("apiVersion: 2\nmeta:\n  {META}\n  topic: images\n"), &Secrets::default());
        assert!(err
            .unwrap_err()
            .contains("field `apiVersion`: expected `0.2.0` or `0.1.0` (or no apiVersion), found a number"));
    }

    #[test]
    fn a_topic_config_object_carries_fluvios_topic_settings() {
        let text = format!(
            "apiVersion: 0.2.0\nmeta:\n  {META}\n  topic:\n    meta: {{name: images}}\n    partition: {{count: 3, replication: 1, \
             max-size: 1 GiB}}\n    retention: {{time: 2 days, segment-size: 64 MiB}}\n    compression: {{type: Lz4}}\n"
        );
        let config = parse(&text, &Secrets::default()).unwrap();
        let TopicRef::Config(topic) = &config.meta.topic else { panic!("{:?}", config.meta.topic) };
        assert_eq!(
            (topic.version.as_str(), topic.partition.count, topic.partition.replication),
            ("0.1.0", Some(3), Some(1))
        );
        assert_eq!(topic.partition.max_size, Some(ByteSize::gib(1)));
        assert_eq!(topic.retention.time, Some(Duration::from_secs(2 * 86400)));
        assert_eq!(topic.retention.segment_size, Some(ByteSize::mib(64)));
        assert_eq!(topic.compression.kind, TopicCompression::Lz4);
        // Fluvio's spelling of the compression, and its kebab-case keys.
        let err = parse(&text.replace("Lz4", "lz4"), &Secrets::default()).unwrap_err();
        assert!(err.contains("field `meta.topic.compression.type`: unknown variant `lz4`"), "{err}");
    }

    #[test]
    fn smartmodule_params_are_read_as_fluvio_reads_them_strings_lists_and_mappings_as_json() {
        let text = |with: &str| {
            format!("apiVersion: 0.2.0\nmeta:\n  {META}\n  topic: {{meta: {{name: images}}}}\ntransforms:\n  - uses: m\n    with: {with}\n")
        };
        let config = parse(&text("{a: \"5\", b: [jpeg, png], c: {k: 1}}"), &Secrets::default()).unwrap();
        let params = config.transforms[0].params();
        assert_eq!(params["a"], "5");
        assert_eq!(params["b"], r#"["jpeg","png"]"#);
        assert_eq!(params["c"], r#"{"k":1}"#);
        for (value, kind) in [("5", "a number"), ("false", "a boolean")] {
            let err = parse(&text(&format!("{{a: {value}}}")), &Secrets::default()).unwrap_err();
            assert!(err.starts_with("c.yaml: field `transforms[0].with.a`: a string, a list or a mapping"), "{err}");
            assert!(err.contains(&format!("got {kind}: quote it")), "{err}");
        }
    }

    #[test]
    fn flush_period_is_a_serde_duration_with_both_parts() {
        let text = |form: &str| {
            format!(
                "apiVersion: 0.2.0\nmeta:\n  {META}\n  topic: {{meta: {{name: i}}}}\n  consumer:\n    offset: \
                 {{strategy: manual, flush-period: {form}}}\n"
            )
        };
        let config = parse(&text("{secs: 2, nanos: 500}"), &Secrets::default()).unwrap();
        let period = config.meta.consumer.and_then(|c| c.offset).and_then(|o| o.flush_period).unwrap();
        assert_eq!((period.secs, period.nanos), (2, 500));
        // What Fluvio refuses, reading the YAML through a `serde_yaml::Value` as `cdk` and the connectors do.
        for (form, error) in [
            ("{secs: 2}", "missing field `nanos`"),
            ("[2, 0]", "invalid type: sequence, expected struct Duration"),
            ("2s", "expected struct Duration"),
        ] {
            let err = parse(&text(form), &Secrets::default()).unwrap_err();
            assert!(
                err.contains("field `meta.consumer.offset.flush-period`: ") && err.contains(error),
                "{form}: {err}"
            );
        }
    }

    fn with_secret(value_line: &str, reference: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let (config, secrets) = (dir.path().join("c.yaml"), dir.path().join("s.env"));
        std::fs::write(
            &config,
            format!(
                "apiVersion: 0.1.0\nmeta:\n  {META}\n  topic: images\n  secrets: [{{name: PASS}}]\nown: {{pass: \
                 {reference}}}\n"
            ),
        )
        .unwrap();
        std::fs::write(&secrets, value_line).unwrap();
        Config::load(&config, Some(&secrets), "own").map_err(|e| e.to_string())
    }

    #[test]
    fn secrets_file_values_are_trimmed_and_the_first_line_of_a_name_wins() {
        let config = with_secret("  PASS =  0x1F2E  \nPASS=second\n", "\"${{ secrets.PASS }}\"").unwrap();
        assert_eq!(config.custom["pass"], serde_yaml::Value::String("0x1F2E".into()), "a string, never 7982");
        let config = with_secret("PASS=u\n", "\"user ${{ secrets.PASS }}!\"").unwrap();
        assert_eq!(config.custom["pass"].as_str(), Some("user u!"));
        let err = with_secret("OTHER=x\n", "\"${{ secrets.PASS }}\"").unwrap_err();
        assert!(err.contains("field `meta.secrets[0]`: `PASS` is not in the secrets file"), "{err}");
    }

    #[test]
    fn without_a_secrets_file_declared_secrets_come_from_the_environment_as_they_are() {
        let name = format!("FVISION_CONFIG_TEST_{}", std::process::id());
        std::env::set_var(&name, " 4711 ");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        let text = format!(
            "apiVersion: 0.2.0\nmeta:\n  {META}\n  topic: {{meta: {{name: i}}}}\n  secrets: [{{name: {name}}}]\nown: \
             {{pin: \"${{{{ secrets.{name} }}}}\"}}\n"
        );
        std::fs::write(&path, &text).unwrap();
        let config = Config::load(&path, None, "own").unwrap();
        assert_eq!(config.custom["pin"].as_str(), Some(" 4711 "), "upstream's EnvSecretStore does not trim");
        std::env::remove_var(&name);
        let err = Config::load(&path, None, "own").unwrap_err().to_string();
        assert!(err.contains(&format!("`{name}` is not set: without --secrets")), "{err}");
    }

    #[test]
    fn every_shipped_topic_file_is_a_fluvio_topic_config() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fluvio-config/topics");
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let topic = TopicConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(topic.retention.segment_size.is_some() && topic.retention.time.is_some(), "{}", path.display());
            files += 1;
        }
        assert_eq!(files, 3);
        let bad = dir.join("../connectors/test-data/error-topic-config-key.yaml");
        let text = std::fs::read_to_string(bad).unwrap();
        assert!(parse(&text, &Secrets::default()).unwrap_err().contains("unknown field `segment_size`"));
    }
}
