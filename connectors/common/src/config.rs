//! Connector configuration in Fluvio's connector YAML format (`apiVersion: 0.2.0`), as `cdk deploy start`
//! hands it to a connector with `--config FILE [--secrets FILE]`: a `meta` section every connector shares,
//! the connector's own section (named after it), and `transforms`.
//!
//! `fluvio-connector-common`, which provides this upstream, is not on crates.io, so the format is modelled
//! here with serde. Unknown fields are errors; every error names the file, the field path and what was
//! expected. Secrets are referenced as `${{ secrets.NAME }}` inside YAML strings and filled from the secrets
//! file (`NAME=value` lines) after the YAML is parsed, into the string values only: a secret holding `:`, `#`
//! or a line break is a value, never structure. Config errors show the reference, never the value
//! ([`crate::secret`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::secret::Secrets;

/// The only connector config version this crate reads.
pub const API_VERSION: &str = "0.2.0";

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
    /// What every connector has.
    pub meta: MetaConfig,
    /// This connector's settings.
    pub custom: C,
    /// SmartModules applied to the records, in order.
    pub transforms: Vec<TransformStep>,
}

/// `meta`: identity, topic, consumer and producer settings, secrets.
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
    /// Whether the connector may create the topic.
    #[serde(default, alias = "create_topic")]
    pub create_topic: bool,
    /// Consumer settings (sinks).
    #[serde(default)]
    pub consumer: Option<ConsumerConfig>,
    /// Producer settings (sources, and sinks that write topics).
    #[serde(default)]
    pub producer: Option<ProducerConfig>,
    /// Sources: how many recent ids of each written topic (events, dead letters) are remembered, and read
    /// back from the end of each partition at start-up, so that what a crashed predecessor wrote but did not
    /// commit is not written again ([`crate::replay`]); 0 turns the guard off. Default
    /// [`crate::source_output::DEFAULT_REPLAY_LOOKBACK`].
    #[serde(default)]
    pub replay_lookback: Option<usize>,
    /// Sources: the most bytes of records read back per topic at start-up for `replay-lookback` (the newest
    /// first). Default [`crate::source_output::DEFAULT_REPLAY_LOOKBACK_BYTES`].
    #[serde(default)]
    pub replay_lookback_bytes: Option<ByteSize>,
    /// Secrets the config may reference.
    #[serde(default)]
    pub secrets: Vec<SecretRef>,
}

/// The topic, by name or in the object form of a topic config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TopicRef {
    /// `topic: images`.
    Name(String),
    /// `topic: { meta: { name: images }, partition: ..., ... }`; only the name is used here.
    Spec {
        /// `meta.name`.
        meta: TopicMeta,
        /// The rest of the topic spec (partitions, retention, ...), kept for topic creation.
        #[serde(flatten)]
        rest: BTreeMap<String, serde_yaml::Value>,
    },
}

impl TopicRef {
    /// The topic name.
    pub fn name(&self) -> &str {
        match self {
            Self::Name(name) => name,
            Self::Spec { meta, .. } => &meta.name,
        }
    }
}

/// `meta` of the object form of a topic.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TopicMeta {
    /// Topic name.
    pub name: String,
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
    /// `none`, `manual` (commit after the sinks acknowledged: what this project uses) or `auto`.
    #[serde(default)]
    pub strategy: Option<OffsetStrategy>,
    /// How often `auto` commits.
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

/// `meta.consumer.offset.flush-period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlushPeriod {
    /// Seconds.
    pub secs: u64,
    /// Nanoseconds.
    #[serde(default)]
    pub nanos: u32,
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
    pub with: BTreeMap<String, serde_yaml::Value>,
    /// Lookback settings, passed through.
    #[serde(default)]
    pub lookback: Option<serde_yaml::Value>,
}

impl TransformStep {
    /// The params as SmartModules receive them: strings (structured values as their YAML text).
    pub fn params(&self) -> BTreeMap<String, String> {
        self.with
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    serde_yaml::Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).unwrap_or_default().trim_end().to_string(),
                };
                (k.clone(), text)
            })
            .collect()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    api_version: String,
    meta: MetaConfig,
    #[serde(default)]
    transforms: Vec<TransformStep>,
    #[serde(flatten)]
    sections: BTreeMap<String, serde_yaml::Value>,
}

impl<C: DeserializeOwned> ConnectorConfig<C> {
    /// Reads `path` (and `secrets`, if given), with the connector's own settings under `section`. The
    /// secrets are registered for redaction ([`Secrets::register`]) before anything can fail on them.
    pub fn load(path: &Path, secrets: Option<&Path>, section: &str) -> Result<Self, ConfigError> {
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.to_owned(), source });
        let text = read(path)?;
        let secrets = match secrets {
            Some(file) => parse_secrets(&read(file)?, file)?,
            None => Secrets::default(),
        };
        secrets.register();
        Self::parse(&text, path, &secrets, section)
    }

    /// Parses config text; `path` only names the file in errors. Secret references are substituted in the
    /// parsed document; every error message has the secret values redacted.
    pub fn parse(text: &str, path: &Path, secrets: &Secrets, section: &str) -> Result<Self, ConfigError> {
        Self::parse_unredacted(text, path, secrets, section).map_err(|e| match e {
            ConfigError::Field { path, field, expected } => {
                ConfigError::Field { path, field: secrets.redact(&field), expected: secrets.redact(&expected) }
            }
            other => other,
        })
    }

    fn parse_unredacted(text: &str, path: &Path, secrets: &Secrets, section: &str) -> Result<Self, ConfigError> {
        let field =
            |field: &str, expected: String| ConfigError::Field { path: path.to_owned(), field: field.into(), expected };
        let de = serde_yaml::Deserializer::from_str(text);
        let mut document: serde_yaml::Value =
            serde_path_to_error::deserialize(de).map_err(|e| path_error(&e, "", &field))?;
        substitute_secrets(&mut document, secrets)
            .map_err(|(name, why)| field("meta.secrets", format!("`{name}`: {why}")))?;
        let doc: Document = serde_path_to_error::deserialize(document).map_err(|e| path_error(&e, "", &field))?;
        if doc.api_version != API_VERSION {
            return Err(field("apiVersion", format!("expected `{API_VERSION}`, found `{}`", doc.api_version)));
        }
        for (i, secret) in doc.meta.secrets.iter().enumerate() {
            if !valid_secret_name(&secret.name) {
                return Err(field(
                    &format!("meta.secrets[{i}].name"),
                    format!(
                        "`{}`: expected ASCII letters, digits and underscores, not starting with a digit",
                        secret.name
                    ),
                ));
            }
        }
        let mut sections = doc.sections;
        let custom_value = sections.remove(section).unwrap_or(serde_yaml::Value::Mapping(Default::default()));
        if let Some(unknown) = sections.keys().next() {
            return Err(field(unknown, format!("unknown section; expected apiVersion, meta, transforms or {section}")));
        }
        let custom: C = serde_path_to_error::deserialize(custom_value).map_err(|e| path_error(&e, section, &field))?;
        Ok(Self { meta: doc.meta, custom, transforms: doc.transforms })
    }
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

/// `NAME=value` per line; blank lines and `#` comments skipped. Errors name the line, never its text.
fn parse_secrets(text: &str, path: &Path) -> Result<Secrets, ConfigError> {
    let mut secrets = Vec::new();
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
        secrets.push((name.trim().to_string(), value.to_string()));
    }
    Ok(Secrets::new(secrets))
}

/// Replaces every `${{ secrets.NAME }}` inside the string values of the parsed document (an unknown name is an
/// error, not an empty string). A string that is exactly one reference to a number or a boolean becomes that
/// number or boolean, so numeric settings can be secrets too; any other value stays a string.
fn substitute_secrets(value: &mut serde_yaml::Value, secrets: &Secrets) -> Result<(), (String, &'static str)> {
    use serde_yaml::Value;
    match value {
        Value::String(text) if text.contains("${{") => {
            let (substituted, whole) = substitute_in(text, secrets)?;
            *value = match whole.then(|| serde_yaml::from_str::<Value>(&substituted).ok()).flatten() {
                Some(scalar @ (Value::Number(_) | Value::Bool(_))) => scalar,
                _ => Value::String(substituted),
            };
        }
        Value::Sequence(items) => items.iter_mut().try_for_each(|item| substitute_secrets(item, secrets))?,
        Value::Mapping(map) => map.iter_mut().try_for_each(|(_, item)| substitute_secrets(item, secrets))?,
        Value::Tagged(tagged) => substitute_secrets(&mut tagged.value, secrets)?,
        _ => {}
    }
    Ok(())
}

/// One string's references substituted; also whether the string was nothing but one reference.
fn substitute_in(text: &str, secrets: &Secrets) -> Result<(String, bool), (String, &'static str)> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut references = 0;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let end = after.find("}}").ok_or_else(|| (after.trim().to_string(), "unclosed `${{`"))?;
        let reference = after[..end].trim();
        let name =
            reference.strip_prefix("secrets.").ok_or_else(|| (reference.to_string(), "expected `secrets.NAME`"))?;
        let value = secrets.get(name.trim()).ok_or_else(|| (name.to_string(), "not in the secrets file"))?;
        out.push_str(value.expose());
        references += 1;
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    let whole = references == 1 && text.trim().starts_with("${{") && text.trim().ends_with("}}");
    Ok((out, whole))
}
