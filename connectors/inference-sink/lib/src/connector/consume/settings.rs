//! How the connector consumes: the consumer settings `meta` describes, with the defaults filled in, and the
//! client configs of its streams (the main stream, re-reads and probes).

use std::time::Duration;

use bytesize::ByteSize;
use fluvio::consumer::{ConsumerConfigExt, ConsumerConfigExtBuilder, OffsetManagementStrategy, RetryMode};
use fluvio::{Isolation, Offset, SmartModuleInvocation};
use fvision_connector_common::config::{OffsetStart, PartitionSelection};
use fvision_connector_common::MetaConfig;

use super::{ClientError, Position};

/// Records carry whole images; the client's 1 MiB default fetch silently stalls on a bigger one.
pub const DEFAULT_MAX_BYTES: ByteSize = ByteSize::mib(16);

/// How often offsets are committed when the YAML does not say (`meta.consumer.offset.flush-period`).
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(2);

/// Default of `inference.stop-timeout`: how long a stopping connector waits for the images it read.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Default of `inference.read-timeout`: how long a fetch may bring nothing while the partition is behind.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest fetch of a probe: reading one record that did not fit `max-bytes` alone, without the SmartModule,
/// to learn its size (at least twice `max-bytes`).
pub const PROBE_MAX_BYTES: ByteSize = ByteSize::mib(128);

/// How the connector consumes, resolved from `meta` with the defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumeSettings {
    /// The topic.
    pub topic: String,
    /// Partitions to read; `None` means all of them.
    pub partitions: Option<Vec<u32>>,
    /// Offsets are stored under this id (default: the connector name).
    pub consumer_id: String,
    /// Where a consumer without a stored offset starts.
    pub start: OffsetStart,
    /// Interval between commit barriers.
    pub commit_interval: Duration,
    /// Largest fetch, in bytes.
    pub max_bytes: ByteSize,
    /// Stop once caught up with the end of the topic (replaying a backlog, benchmarks).
    pub drain: bool,
    /// Stopping: how long the records already read may take to be delivered (`inference.stop-timeout`).
    pub stop_timeout: Duration,
    /// How long a fetch may bring nothing while the partition is behind (`inference.read-timeout`).
    pub read_timeout: Duration,
}

impl ConsumeSettings {
    /// How the sink consumes: `meta`, with the timeouts of its `inference` section.
    pub fn new(settings: &fvision_sink_config::SinkSettings, drain: bool) -> Self {
        let inference = &settings.inference;
        Self {
            stop_timeout: inference.stop_timeout,
            read_timeout: inference.read_timeout,
            drain,
            ..Self::from_meta(&settings.meta)
        }
    }

    /// The settings `meta` describes.
    pub fn from_meta(meta: &MetaConfig) -> Self {
        let consumer = meta.consumer.clone().unwrap_or_default();
        let offset = consumer.offset.unwrap_or_default();
        let partitions = match consumer.partition {
            None | Some(PartitionSelection::All(_)) => None,
            Some(PartitionSelection::One(p)) => Some(vec![p]),
            Some(PartitionSelection::Many(list)) => Some(list),
        };
        Self {
            topic: meta.topic.name().to_string(),
            partitions,
            consumer_id: consumer.id.unwrap_or_else(|| meta.name.clone()),
            start: offset.start.unwrap_or(OffsetStart::Beginning),
            commit_interval: offset
                .flush_period
                .map(|p| Duration::new(p.secs, p.nanos))
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_COMMIT_INTERVAL),
            max_bytes: consumer.max_bytes.unwrap_or(DEFAULT_MAX_BYTES),
            drain: false,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
        }
    }

    /// What every read of the topic shares: a stream that ends when caught up, the client's retries off (a
    /// stream error reaches the loop instead of ending the stream as if caught up), and only replicated
    /// records: one that only a failed leader held may vanish with it, and its source sends it again; a probe
    /// that saw it would take a commit wait for a record too large for the fetch (docs/decisions.md).
    fn reader(&self, start: Offset, max_bytes: i32) -> ConsumerConfigExtBuilder {
        let mut builder = ConsumerConfigExt::builder();
        builder
            .topic(self.topic.clone())
            .offset_start(start)
            .disable_continuous(true)
            .retry_mode(RetryMode::Disabled)
            .max_bytes(max_bytes)
            .isolation(Isolation::ReadCommitted);
        builder
    }

    /// The config of a re-read: one partition from `offset`, no consumer id (it must not move the commit).
    pub fn reread_config(
        &self,
        partition: u32,
        offset: i64,
        smartmodule: Option<SmartModuleInvocation>,
    ) -> Result<ConsumerConfigExt, ClientError> {
        let mut builder = self.reader(Offset::absolute(offset)?, self.max_bytes_i32());
        builder.partition(partition).smartmodule(smartmodule.into_iter().collect());
        Ok(builder.build()?)
    }

    /// The config of a probe: the record at `offset` alone, raw (no SmartModule), with a fetch large enough
    /// to learn the size of a record that does not fit `max-bytes`.
    pub fn probe_config(&self, partition: u32, offset: i64) -> Result<ConsumerConfigExt, ClientError> {
        let max_bytes = i32::try_from(self.probe_max_bytes()).unwrap_or(i32::MAX);
        let mut builder = self.reader(Offset::absolute(offset)?, max_bytes);
        builder.partition(partition);
        Ok(builder.build()?)
    }

    /// The fetch size of a probe.
    pub fn probe_max_bytes(&self) -> u64 {
        PROBE_MAX_BYTES.as_u64().max(self.max_bytes.as_u64().saturating_mul(2))
    }

    fn max_bytes_i32(&self) -> i32 {
        i32::try_from(self.max_bytes.as_u64()).unwrap_or(i32::MAX)
    }

    /// The client's consumer config for these `partitions`, with the SPU-side SmartModule if any, committing
    /// under the connector's consumer id.
    pub fn consumer_config(
        &self,
        partitions: &[u32],
        smartmodule: Option<SmartModuleInvocation>,
    ) -> Result<ConsumerConfigExt, ClientError> {
        let start = match self.start {
            OffsetStart::Beginning => Offset::beginning(),
            OffsetStart::End => Offset::end(),
            OffsetStart::Absolute(offset) => Offset::absolute(offset)?,
            OffsetStart::FromBeginning(n) => Offset::from_beginning(n),
            OffsetStart::FromEnd(n) => Offset::from_end(n),
        };
        let mut builder = self.reader(start, self.max_bytes_i32());
        builder
            .offset_consumer(self.consumer_id.clone())
            .offset_strategy(OffsetManagementStrategy::Manual)
            .smartmodule(smartmodule.into_iter().collect());
        for &partition in partitions {
            builder.partition(partition);
        }
        Ok(builder.build()?)
    }

    /// The first offset the connector must deliver in a partition, when it can be known before reading: after
    /// the committed offset, else where `start` points. `None` for starts relative to the end.
    pub fn first_offset(&self, position: &Position) -> Option<i64> {
        if let Some(committed) = position.committed {
            return Some(committed + 1);
        }
        match self.start {
            OffsetStart::Beginning => Some(position.start),
            OffsetStart::Absolute(offset) => Some(offset.max(0)),
            OffsetStart::FromBeginning(n) => Some(position.start.saturating_add(i64::from(n))),
            OffsetStart::End | OffsetStart::FromEnd(_) => None,
        }
    }

    pub(super) fn name(&self, partition: u32, offset: i64) -> String {
        format!("{}/{partition}@{offset}", self.topic)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use fvision_connector_common::ConnectorConfig;

    /// `meta` from a YAML fragment, parsed as the connector parses its config.
    pub(in crate::connector::consume) fn meta(yaml: &str) -> MetaConfig {
        let text = format!("apiVersion: 0.2.0\nmeta:\n{yaml}\nsink: {{}}\n");
        let config: ConnectorConfig<serde_yaml::Value> =
            ConnectorConfig::parse(&text, std::path::Path::new("t.yaml"), &Default::default(), "sink").unwrap();
        config.meta
    }

    #[test]
    fn the_first_offset_comes_from_the_commit_else_from_the_start() {
        let mut settings =
            ConsumeSettings::from_meta(&meta("  {version: 0.1.0, name: s, type: t, topic: {meta: {name: images}}}"));
        let position = Position { start: 5, end: 9, committed: None };
        assert_eq!(settings.first_offset(&position), Some(5), "beginning: the first offset still stored");
        assert_eq!(settings.first_offset(&Position { committed: Some(6), ..position }), Some(7));
        settings.start = OffsetStart::FromBeginning(2);
        assert_eq!(settings.first_offset(&position), Some(7));
        settings.start = OffsetStart::End;
        assert_eq!(settings.first_offset(&position), None, "unknown before the first record");
    }

    #[test]
    fn defaults_commit_after_delivery_under_the_connector_name() {
        let settings = ConsumeSettings::from_meta(&meta(
            "  {version: 0.1.0, name: sink-a, type: t, topic: {meta: {name: images}}}",
        ));
        assert_eq!(
            settings,
            ConsumeSettings {
                topic: "images".into(),
                partitions: None,
                consumer_id: "sink-a".into(),
                start: OffsetStart::Beginning,
                commit_interval: DEFAULT_COMMIT_INTERVAL,
                max_bytes: DEFAULT_MAX_BYTES,
                drain: false,
                stop_timeout: DEFAULT_STOP_TIMEOUT,
                read_timeout: DEFAULT_READ_TIMEOUT,
            }
        );
        let config = settings.consumer_config(&[0, 1], None).unwrap();
        assert_eq!(config.partition, vec![0, 1]);
        assert_eq!(config.offset_consumer.as_deref(), Some("sink-a"));
        assert_eq!(config.offset_strategy, OffsetManagementStrategy::Manual);
        assert_eq!(config.max_bytes, 16 * 1024 * 1024);
        assert_eq!(config.isolation, Isolation::ReadCommitted);
        assert_eq!(settings.probe_config(0, 7).unwrap().isolation, Isolation::ReadCommitted);
        assert_eq!(settings.reread_config(0, 7, None).unwrap().isolation, Isolation::ReadCommitted);
    }

    #[test]
    fn the_yaml_overrides_every_default() {
        let settings = ConsumeSettings::from_meta(&meta(
            "  version: 0.1.0\n  name: s\n  type: t\n  topic: {meta: {name: raw}}\n  consumer:\n    id: c7\n    \
             partition: [2, 3]\n    max-bytes: 4 MiB\n    offset: {start: {absolute: 42}, strategy: manual, \
             flush-period: {secs: 5, nanos: 0}}",
        ));
        assert_eq!(settings.topic, "raw");
        assert_eq!(settings.partitions, Some(vec![2, 3]));
        assert_eq!((settings.consumer_id.as_str(), settings.start.clone()), ("c7", OffsetStart::Absolute(42)));
        assert_eq!(settings.commit_interval, Duration::from_secs(5));
        let config = settings.consumer_config(&[2, 3], None).unwrap();
        assert!(config.disable_continuous, "streams end at the end of the topic, so commits never wait");
        assert_eq!(config.max_bytes, 4 * 1024 * 1024);
    }
}
