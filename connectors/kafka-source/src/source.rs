//! The run loop: poll a batch from Kafka, convert, produce to Fluvio, wait for Fluvio's acknowledgement
//! of the whole batch, then commit the batch's offsets. SIGTERM/SIGINT stop between batches, after the
//! commit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fluvio::Fluvio;
use fluvio_future::task::run_block_on;
use fvision_connector_common::dead_letter::source_rejection;
use fvision_connector_common::{ConfigError, Sent, SourceOutput, SourceOutputError as OutputError};
use fvision_records::RejectReason;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::{Assignment, SourceConfig};
use crate::convert::{convert, Converted, KafkaRecord};
use crate::events;

/// A record ready for Fluvio: a serialised event within the size limit, or a dead letter.
enum Out {
    Event { id: String, value: Vec<u8> },
    Rejected(Box<fvision_records::RejectedImage>),
}

/// How long one poll waits for the first record of a batch.
const POLL: Duration = Duration::from_millis(200);

/// With `assignment: all`, how often the topics' partitions are looked up again (partitions added later).
const REFRESH: Duration = Duration::from_secs(60);

/// How long one partition lookup may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// With `assignment: all`, how often (at most) the offsets committed under `group-id` are read back to see
/// whether another process commits there too (each commit carries this process's tag as its metadata).
const CONFLICT_CHECK: Duration = Duration::from_secs(5);

/// Why the source stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The YAML is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Connecting to Fluvio failed.
    #[error("connecting to the Fluvio cluster: {0}")]
    Connect(String),
    /// Writing to Fluvio failed: the batch was not committed and will be read again.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The Kafka client could not be created or subscribed.
    #[error("{action}: {source}")]
    Kafka {
        /// What was being done.
        action: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The metrics endpoint could not be started.
    #[error("starting the metrics endpoint on port {port}: {detail}")]
    Metrics {
        /// The port.
        port: u16,
        /// Why.
        detail: String,
    },
}

/// What a run did, for the exit log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Kafka records read.
    pub read: u64,
    /// Events written to the events topic.
    pub produced: u64,
    /// Dead letters written.
    pub dead_letters: u64,
    /// Records not written again because their topic already held their id (a predecessor's replay).
    pub replays_skipped: u64,
    /// Offset commits.
    pub commits: u64,
}

/// A configured source, ready to run.
pub struct KafkaSource {
    config: SourceConfig,
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl KafkaSource {
    /// The source for the config read from `path` (named in errors); checks what the YAML alone can tell.
    pub fn new(config: SourceConfig, path: impl Into<PathBuf>) -> Result<Self, SourceError> {
        let path = path.into();
        config.custom.check(&path)?;
        Ok(Self { config, path, stop: Arc::default() })
    }

    /// The flag that stops the source between batches (set by the signal handlers).
    pub fn stop_flag(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = stop;
        self
    }

    /// The librdkafka settings: the `client` pass-through, then what the connector owns.
    pub fn client_config(&self) -> ClientConfig {
        let settings = &self.config.custom;
        let mut client = ClientConfig::new();
        // Defaults for `assignment: group` that `client` may override: a killed member's partitions wait for its
        // session to time out (librdkafka's default is 45 s).
        client.set("session.timeout.ms", "10000").set("heartbeat.interval.ms", "3000");
        for (key, value) in &settings.client {
            client.set(key, value);
        }
        client
            .set("bootstrap.servers", &settings.bootstrap_servers)
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", settings.start.as_str());
        client
    }

    /// Connects to Fluvio and Kafka and runs until stopped (or an error).
    pub fn run(self) -> Result<RunReport, SourceError> {
        let settings = &self.config.custom;
        tracing::debug!(config = %self.path.display(), "connecting");
        if let Some(port) = settings.metrics_port {
            fvision_connector_common::source_metrics::serve(([127, 0, 0, 1], port).into())
                .map_err(|e| SourceError::Metrics { port, detail: e.to_string() })?;
        }
        let fluvio = run_block_on(Fluvio::connect()).map_err(|e| SourceError::Connect(format!("{e:#}")))?;
        let mut output = run_block_on(SourceOutput::connect(
            &fluvio,
            &self.config.meta,
            &settings.dlq_topic,
            settings.replay_lookback(),
        ))?;
        let consumer: BaseConsumer = self
            .client_config()
            .create()
            .map_err(|source| SourceError::Kafka { action: "creating the Kafka consumer".into(), source })?;
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        if settings.assignment == Assignment::Group {
            consumer
                .subscribe(&topics)
                .map_err(|source| SourceError::Kafka { action: format!("subscribing to {topics:?}"), source })?;
        }
        tracing::info!(
            kafka_topics = ?settings.topics, group_id = %settings.group_id, assignment = ?settings.assignment,
            fluvio_topic = output.topic(), dlq_topic = %settings.dlq_topic, "consuming"
        );

        let mut report = RunReport::default();
        let mut refreshed: Option<std::time::Instant> = None;
        // The metadata of this process's commits, and when committed offsets were last checked for another's.
        let tag = commit_tag();
        let mut checked = std::time::Instant::now();
        let mut ours: std::collections::BTreeSet<(String, i32)> = std::collections::BTreeSet::new();
        while !self.stop.load(Ordering::Relaxed) {
            if settings.assignment == Assignment::All && refreshed.is_none_or(|at| at.elapsed() >= REFRESH) {
                refreshed = Some(std::time::Instant::now());
                if self.assign_new_partitions(&consumer) == 0 && consumer.assignment().map_or(0, |a| a.count()) == 0 {
                    // Nothing to read yet (the topics do not exist): look again soon.
                    refreshed = None;
                    std::thread::sleep(POLL * 5);
                    continue;
                }
            }
            let batch = self.batch(&consumer);
            if batch.is_empty() {
                continue;
            }
            report.read += batch.len() as u64;
            let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
            let (mut produced, mut dead, mut replays) = (0u64, 0u64, 0u64);
            run_block_on(async {
                for (position, out) in batch {
                    next.insert((position.0, position.1), position.2 + 1);
                    let sent = match out {
                        Out::Event { id, value } => (output.send_event_bytes(&id, value).await?, &mut produced),
                        Out::Rejected(rejected) => {
                            tracing::warn!(id = %rejected.event.id, reason = %rejected.reason, "dead letter");
                            (output.send_dead_letter(*rejected).await?, &mut dead)
                        }
                    };
                    match sent {
                        (Sent::Produced, count) => *count += 1,
                        (Sent::Replay, _) => replays += 1,
                    }
                }
                output.acknowledge().await
            })?;
            events::records("produced", produced);
            events::records("dead_letter", dead);
            events::replays_skipped(replays);
            report.produced += produced;
            report.dead_letters += dead;
            report.replays_skipped += replays;
            // Fluvio confirmed every record of the batch: only now are the offsets committed.
            fvision_connector_common::source_output::crash_before_commit_if_asked("Fluvio");
            let mut list = TopicPartitionList::new();
            for ((topic, partition), offset) in &next {
                if let Err(e) = list.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                    tracing::warn!(%topic, partition, "cannot commit: {e}");
                }
                if let Some(mut elem) = list.find_partition(topic, *partition) {
                    elem.set_metadata(&tag);
                }
            }
            if settings.assignment == Assignment::All && !ours.is_empty() && checked.elapsed() >= CONFLICT_CHECK {
                checked = std::time::Instant::now();
                self.check_other_committers(&consumer, &list, &tag, &ours);
            }
            match consumer.commit(&list, CommitMode::Sync) {
                Ok(()) => {
                    report.commits += 1;
                    events::committed();
                    tracing::debug!(records = produced + dead + replays, replays, ?next, "committed");
                    ours.extend(next.into_keys());
                }
                // Not fatal: the records were delivered; a consumer that takes over the partitions reads
                // them again (at least once).
                Err(e) => {
                    events::client_error("commit");
                    tracing::warn!("committing offsets {next:?}: {e}");
                }
            }
        }
        if settings.assignment == Assignment::Group {
            consumer.unsubscribe();
        }
        Ok(report)
    }

    /// `assignment: all`, before committing `list`: reads its partitions' commits back; one of a partition this
    /// process committed before (`ours`) whose metadata is not this process's `tag` was made since by another
    /// process under `group-id`, which then reads the same partitions and writes every image a second time:
    /// logged as an error and counted (`fvision_source_group_conflicts_total`). A failed check is only logged.
    fn check_other_committers(
        &self,
        consumer: &BaseConsumer,
        list: &TopicPartitionList,
        tag: &str,
        ours: &std::collections::BTreeSet<(String, i32)>,
    ) {
        let committed = match consumer.committed_offsets(list.clone(), METADATA_TIMEOUT) {
            Ok(committed) => committed,
            Err(e) => {
                tracing::debug!("reading back the committed offsets: {e}");
                return;
            }
        };
        for (topic, partition, offset, metadata) in commits_with_metadata(&committed) {
            if metadata != tag && ours.contains(&(topic.clone(), partition)) {
                events::group_conflict();
                tracing::error!(
                    %topic, partition, ?offset, other = %metadata, group_id = %self.config.custom.group_id,
                    "another process commits offsets under this group-id: with `kafka.assignment: all` every \
                     source reads every partition, so each image is written once per source; give each source \
                     its own group-id, or run them all with `assignment: group` (RUNBOOK section 11)"
                );
            }
        }
    }

    /// `assignment: all`: adds the partitions of the topics not assigned yet, each from the offset committed
    /// under `group-id` (or `start` without one); returns how many were added. A failed lookup is logged and
    /// retried at the next refresh.
    fn assign_new_partitions(&self, consumer: &BaseConsumer) -> usize {
        let assigned = consumer.assignment().unwrap_or_default();
        let mut new = TopicPartitionList::new();
        for topic in &self.config.custom.topics {
            let metadata = match consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT) {
                Ok(metadata) => metadata,
                Err(e) => {
                    events::client_error("metadata");
                    tracing::warn!(%topic, "looking up the partitions: {e}");
                    continue;
                }
            };
            for found in metadata.topics().iter().filter(|t| t.name() == topic && t.error().is_none()) {
                for partition in found.partitions() {
                    if assigned.find_partition(topic, partition.id()).is_none() {
                        if let Err(e) = new.add_partition_offset(topic, partition.id(), Offset::Stored) {
                            tracing::warn!(%topic, partition = partition.id(), "cannot assign: {e}");
                        }
                    }
                }
            }
        }
        let count = new.count();
        if count > 0 {
            match consumer.incremental_assign(&new) {
                Ok(()) => tracing::info!(partitions = ?new.to_topic_map().keys().collect::<Vec<_>>(), "assigned"),
                Err(e) => {
                    events::client_error("assign");
                    tracing::warn!("assigning {count} partitions: {e}");
                    return 0;
                }
            }
        }
        count
    }

    /// Up to `max-batch` converted records (and about `max-batch-bytes` of values): waits [`POLL`] for the
    /// first, then takes what is ready.
    fn batch(&self, consumer: &BaseConsumer) -> Vec<((String, i32, i64), Out)> {
        let settings = &self.config.custom;
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        let mut wait = POLL;
        while batch.len() < settings.max_batch && bytes < settings.max_batch_bytes.as_u64() {
            match consumer.poll(wait) {
                None => break,
                Some(Err(e)) => {
                    events::client_error("poll");
                    tracing::warn!("kafka: {e}");
                    break;
                }
                Some(Ok(message)) => {
                    let headers = message
                        .headers()
                        .map(|h| h.iter().map(|header| (header.key, header.value)).collect())
                        .unwrap_or_default();
                    let record = KafkaRecord {
                        topic: message.topic(),
                        partition: message.partition(),
                        offset: message.offset(),
                        timestamp_ms: message.timestamp().to_millis(),
                        key: message.key(),
                        headers,
                        value: message.payload(),
                    };
                    bytes += record.value.map_or(0, |v| v.len() as u64);
                    let converted = match convert(&record, settings.value_format, &settings.data_field) {
                        Converted::Event(event) => match serde_json::to_vec(&event) {
                            Ok(value) if value.len() as u64 <= settings.max_record_bytes.as_u64() => {
                                Out::Event { id: event.meta.id, value }
                            }
                            Ok(value) => {
                                let detail = format!(
                                    "{}: the event is {} bytes, over kafka.max-record-bytes ({})",
                                    record.uri(),
                                    value.len(),
                                    settings.max_record_bytes
                                );
                                let original = record.value.unwrap_or_default();
                                Out::Rejected(Box::new(source_rejection(
                                    RejectReason::TooLarge,
                                    detail,
                                    event.meta,
                                    original,
                                )))
                            }
                            Err(e) => {
                                let detail = format!("{}: the event cannot be serialised: {e}", record.uri());
                                let original = record.value.unwrap_or_default();
                                Out::Rejected(Box::new(source_rejection(
                                    RejectReason::MalformedEnvelope,
                                    detail,
                                    event.meta,
                                    original,
                                )))
                            }
                        },
                        Converted::Rejected(rejected) => Out::Rejected(rejected),
                    };
                    batch.push(((message.topic().to_string(), message.partition(), message.offset()), converted));
                }
            }
            wait = Duration::ZERO;
        }
        batch
    }
}

/// The metadata this process commits its offsets with: unique per process (pid and start time), so that
/// [`KafkaSource::check_other_committers`] recognises commits it did not make.
fn commit_tag() -> String {
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("fvision kafka-source pid {} started {}", std::process::id(), started.as_micros())
}

/// (topic, partition, offset, metadata) of every element of `list`, the metadata read as lossy UTF-8: the
/// client's own accessor panics on metadata that is not UTF-8, which any other client may commit.
fn commits_with_metadata(list: &TopicPartitionList) -> Vec<(String, i32, Offset, String)> {
    let raw = list.ptr();
    list.elements()
        .iter()
        .enumerate()
        .map(|(index, elem)| {
            // SAFETY: `raw` is `list`'s own partition list, alive while `list` is borrowed; `index` is below its
            // count (one element each), and librdkafka keeps `metadata_size` bytes at `metadata` (or null).
            let metadata = unsafe {
                let entry = &*(*raw).elems.add(index);
                if entry.metadata.is_null() || entry.metadata_size == 0 {
                    String::new()
                } else {
                    let bytes = std::slice::from_raw_parts(entry.metadata as *const u8, entry.metadata_size);
                    String::from_utf8_lossy(bytes).into_owned()
                }
            };
            (elem.topic().to_string(), elem.partition(), elem.offset(), metadata)
        })
        .collect()
}
