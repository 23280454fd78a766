//! The run loop: poll a batch from Kafka, convert, produce to Fluvio, wait for Fluvio's acknowledgement
//! of the whole batch, then commit the batch's offsets. SIGTERM/SIGINT stop between batches, after the
//! commit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fluvio_future::task::run_block_on;
use fvision_connector_common::dead_letter::source_rejection;
use fvision_connector_common::source_output::ReplayLookback;
use fvision_connector_common::{Sent, SourceOutput, SourceOutputError as OutputError};
use fvision_records::RejectReason;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::config::{Assignment, KafkaSettings, StartFrom};
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
    pub replay_skipped: u64,
    /// Offset commits.
    pub commits: u64,
}

/// A configured source, ready to run.
pub struct KafkaSource {
    config: KafkaSettings,
    stop: Arc<AtomicBool>,
}

impl KafkaSource {
    /// The source for a checked config.
    pub fn new(config: KafkaSettings) -> Self {
        Self { config, stop: Arc::default() }
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
            // Never a silent jump: every partition is assigned at an explicit offset the source chose
            // (`plan_starts`); should that offset go out of range while it reads, the partition stops with an
            // error and is planned again (`resume_out_of_range`), never reset by the client on its own.
            .set("auto.offset.reset", "error");
        client
    }

    /// Connects to Fluvio and Kafka and runs until stopped (or an error).
    pub fn run(self) -> Result<RunReport, SourceError> {
        let settings = &self.config.custom;
        tracing::debug!(config = %self.config.path().display(), "connecting");
        if let Some(port) = settings.metrics_port {
            fvision_connector_common::source_metrics::serve(([127, 0, 0, 1], port).into())
                .map_err(|e| SourceError::Metrics { port, detail: e.to_string() })?;
        }
        let lookback = ReplayLookback::new(settings.replay_lookback, settings.replay_lookback_bytes);
        let mut output = run_block_on(SourceOutput::open(&self.config.meta, &settings.dlq_topic, lookback))?;
        let context = StartContext { start: settings.start, lost: Mutex::default() };
        let consumer: Client = self
            .client_config()
            .create_with_context(context)
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
        // Set when librdkafka stopped a partition whose offset went out of range while it was read; cleared once
        // the assignment was planned again.
        let mut offsets_lost = false;
        while !self.stop.load(Ordering::Relaxed) {
            if offsets_lost {
                match self.resume_out_of_range(&consumer) {
                    Ok(()) => offsets_lost = false,
                    Err(e) => {
                        tracing::warn!("resuming partitions without a usable offset (retried): {e}");
                        std::thread::sleep(POLL * 5);
                        continue;
                    }
                }
            }
            if settings.assignment == Assignment::All && refreshed.is_none_or(|at| at.elapsed() >= REFRESH) {
                refreshed = Some(std::time::Instant::now());
                if self.assign_new_partitions(&consumer) == 0 && consumer.assignment().map_or(0, |a| a.count()) == 0 {
                    // Nothing to read yet (the topics do not exist): look again soon.
                    refreshed = None;
                    std::thread::sleep(POLL * 5);
                    continue;
                }
            }
            let batch = self.batch(&consumer, &mut offsets_lost);
            // Ranges found lost when partitions were assigned (planned during the poll): reported before the batch's
            // records, and committed past together with them, so a crash in between reports them again.
            let lost = consumer.context().take_lost();
            if batch.is_empty() && lost.is_empty() {
                continue;
            }
            report.read += batch.len() as u64;
            let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
            let (mut produced, mut dead, mut replays) = (0u64, 0u64, 0u64);
            run_block_on(async {
                for (topic, partition, plan) in lost {
                    let Some((dead_letter, resume_at)) = report_lost(&topic, partition, plan) else { continue };
                    match output.send_dead_letter(dead_letter).await? {
                        Sent::Produced => dead += 1,
                        Sent::Replay => replays += 1,
                    }
                    next.insert((topic, partition), resume_at);
                }
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
            events::replay_skipped(replays);
            report.produced += produced;
            report.dead_letters += dead;
            report.replay_skipped += replays;
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
        consumer: &Client,
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

    /// `assignment: all`: adds the partitions of the topics not assigned yet, each at the offset [`plan_starts`]
    /// chose (the one committed under `group-id`, `start` without one; a lost range is reported); returns how many
    /// were added. A failed lookup is logged and retried at the next refresh.
    fn assign_new_partitions(&self, consumer: &Client) -> usize {
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
            let new = match plan_starts(consumer, &new, None, self.config.custom.start) {
                Ok((planned, lost)) => {
                    consumer.context().add_lost(lost);
                    planned
                }
                Err(e) => {
                    events::client_error("assign");
                    tracing::warn!("reading the committed offsets and watermarks of {count} partitions: {e}");
                    return 0;
                }
            };
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
    fn batch(&self, consumer: &Client, offsets_lost: &mut bool) -> Vec<((String, i32, i64), Out)> {
        let settings = &self.config.custom;
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        let mut wait = POLL;
        while batch.len() < settings.max_batch && bytes < settings.max_batch_bytes.as_u64() {
            match consumer.poll(wait) {
                None => break,
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    // A partition stopped: the offset it was reading went out of range (retention, truncation).
                    *offsets_lost = true;
                    break;
                }
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
                    let converted = match convert(&record, settings.value_format, &settings.data_field)
                        .capped(&record, settings.envelope_field_cap())
                    {
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

/// The Kafka consumer, with the context that plans the offsets of the partitions a group rebalance assigns.
type Client = BaseConsumer<StartContext>;

/// Chooses where each assigned partition reads ([`plan_starts`]) instead of librdkafka's `auto.offset.reset`,
/// and keeps the ranges found lost until the run loop reported them.
struct StartContext {
    start: StartFrom,
    lost: Mutex<Vec<Lost>>,
}

impl StartContext {
    fn add_lost(&self, lost: Vec<Lost>) {
        if let Ok(mut pending) = self.lost.lock() {
            pending.extend(lost);
        }
    }

    fn take_lost(&self) -> Vec<Lost> {
        self.lost.lock().map(|mut pending| std::mem::take(&mut *pending)).unwrap_or_default()
    }
}

impl ClientContext for StartContext {}

impl ConsumerContext for StartContext {
    /// `assignment: group`: the partitions given to this member are assigned at the offsets [`plan_starts`]
    /// chose. Should the lookup fail, they are assigned as they are: at the committed offset, and a partition
    /// without a usable one stops (`auto.offset.reset: error`) and is planned again by the run loop.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, list: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let done = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let planned = match plan_starts(consumer, list, None, self.start) {
                    Ok((planned, lost)) => {
                        self.add_lost(lost);
                        planned
                    }
                    Err(e) => {
                        events::client_error("assign");
                        tracing::warn!(
                            "planning the offsets of the assigned partitions (the committed ones used): {e}"
                        );
                        list.clone()
                    }
                };
                tracing::info!(partitions = ?planned.to_topic_map(), "assigned by the group");
                if cooperative {
                    consumer.incremental_assign(&planned)
                } else {
                    consumer.assign(&planned)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS if cooperative => consumer.incremental_unassign(list),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => consumer.unassign(),
            other => {
                tracing::warn!("group rebalance failed: {}", rdkafka::error::RDKafkaErrorCode::from(other));
                consumer.unassign()
            }
        };
        if let Err(e) = done {
            events::client_error("assign");
            tracing::warn!("applying the group's assignment: {e}");
        }
    }
}

/// A lost range of a partition, found when it was assigned: (topic, partition, what was lost).
type Lost = (String, i32, Resume);

/// Where a partition reads, from the offset it wanted (this process's position, else the committed offset) and
/// what the partition holds now (`low..high`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    /// The offset is within the partition: read on from it.
    At(i64),
    /// No offset yet (a group without commits): `kafka.start` decides.
    Start,
    /// The records `from..to` were deleted (retention) before they were read: reported, then read from `to`.
    Expired {
        /// The first offset lost.
        from: i64,
        /// The partition's first offset now.
        to: i64,
    },
    /// The offset is past the partition's end (the topic was recreated or truncated): whatever the old
    /// partition held from `from` on was never read; reported, then read from `low`, the new partition's start.
    PastEnd {
        /// The offset wanted.
        from: i64,
        /// The partition's first offset now.
        low: i64,
        /// The partition's end now.
        high: i64,
    },
}

fn resume(wanted: Option<i64>, low: i64, high: i64) -> Resume {
    match wanted {
        None => Resume::Start,
        Some(from) if from < low => Resume::Expired { from, to: low },
        Some(from) if from > high => Resume::PastEnd { from, low, high },
        Some(at) => Resume::At(at),
    }
}

/// The offset a partition is assigned at for `plan`.
fn start_offset(plan: Resume, start: StartFrom, low: i64, high: i64) -> i64 {
    match plan {
        Resume::At(at) => at,
        Resume::Start if start == StartFrom::Latest => high,
        Resume::Start => low,
        Resume::Expired { to, .. } => to,
        Resume::PastEnd { low, .. } => low,
    }
}

/// The partitions of `list`, each with the explicit offset it is to be assigned at, and the lost ranges found
/// (the `expired` dead letters to write). The offset wanted is the partition's position in `positions` (a
/// partition stopped while it was read), else the one committed under `group-id`; without either, `start`
/// (`earliest`: the partition's first offset, `latest`: its end). librdkafka is never left to pick one itself:
/// with `auto.offset.reset: error` a partition assigned without an offset would stop unread.
fn plan_starts<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    list: &TopicPartitionList,
    positions: Option<&TopicPartitionList>,
    start: StartFrom,
) -> Result<(TopicPartitionList, Vec<Lost>), KafkaError> {
    let committed = consumer.committed_offsets(list.clone(), METADATA_TIMEOUT)?;
    let offset_in = |list: &TopicPartitionList, topic: &str, partition: i32| {
        list.find_partition(topic, partition).and_then(|e| match e.offset() {
            Offset::Offset(n) => Some(n),
            _ => None,
        })
    };
    let mut planned = TopicPartitionList::new();
    let mut lost = Vec::new();
    for elem in list.elements() {
        let (topic, partition) = (elem.topic(), elem.partition());
        let wanted =
            positions.and_then(|p| offset_in(p, topic, partition)).or_else(|| offset_in(&committed, topic, partition));
        let (low, high) = consumer.fetch_watermarks(topic, partition, METADATA_TIMEOUT)?;
        let plan = resume(wanted, low, high);
        planned.add_partition_offset(topic, partition, Offset::Offset(start_offset(plan, start, low, high)))?;
        if matches!(plan, Resume::Expired { .. } | Resume::PastEnd { .. }) {
            lost.push((topic.to_string(), partition, plan));
        }
    }
    Ok((planned, lost))
}

/// The dead letter of a lost range of `topic/partition`: by reference (`kafka://topic/partition@from..to`), with
/// the range and its count in the detail and the attributes (`first_offset`, `end_offset`, `count`). Its text
/// depends only on the range, so reporting it again after a crash is skipped as a replay.
fn expired_dead_letter(topic: &str, partition: i32, lost: Resume) -> Option<fvision_records::RejectedImage> {
    use fvision_records::{EventMeta, RejectedImage, Source, Stage};
    let (from, to, count, detail) = match lost {
        Resume::Expired { from, to } => (
            from,
            Some(to),
            Some(to - from),
            format!(
                "{} records of Kafka {topic}/{partition} (offsets {from} to {}) were deleted by retention before \
                 kafka-source read them; it reads on from offset {to}",
                to - from,
                to - 1
            ),
        ),
        Resume::PastEnd { from, low, high } => (
            from,
            None,
            None,
            format!(
                "the offset to read, {from}, is past the end of Kafka {topic}/{partition} (offsets {low} to {high}): \
                 the topic was recreated or truncated, and whatever it held from offset {from} on was never read; \
                 kafka-source reads the partition from offset {low}"
            ),
        ),
        Resume::At(_) | Resume::Start => return None,
    };
    let record = format!("kafka://{topic}/{partition}@{from}..{}", to.map(|t| t.to_string()).unwrap_or_default());
    let mut attributes = serde_json::Map::new();
    attributes.insert("kafka_topic".into(), topic.into());
    attributes.insert("kafka_partition".into(), partition.into());
    attributes.insert("first_offset".into(), from.into());
    if let (Some(to), Some(count)) = (to, count) {
        attributes.insert("end_offset".into(), to.into());
        attributes.insert("count".into(), count.into());
    }
    let meta = EventMeta {
        id: record.clone(),
        source: Source::Kafka,
        uri: Some(record.clone()),
        attributes,
        ..Default::default()
    };
    Some(RejectedImage::by_reference(RejectReason::Expired, detail, Stage::Ingest, record, None).with_event(meta))
}

/// A lost range, announced: an error log line, `fvision_source_expired_records_total` and
/// `fvision_source_expired_ranges_total`; returns its `expired` dead letter and the offset the partition reads
/// on from (committed once Fluvio acknowledged the dead letter, so a restart does not report it again).
fn report_lost(topic: &str, partition: i32, plan: Resume) -> Option<(fvision_records::RejectedImage, i64)> {
    let resume_at = match plan {
        Resume::Expired { to, .. } => to,
        Resume::PastEnd { low, .. } => low,
        Resume::At(_) | Resume::Start => return None,
    };
    let dead_letter = expired_dead_letter(topic, partition, plan)?;
    let count = match plan {
        Resume::Expired { from, to } => u64::try_from(to - from).unwrap_or_default(),
        _ => 0,
    };
    events::expired(count);
    tracing::error!(
        %topic, partition, record = dead_letter.record.as_deref().unwrap_or_default(),
        "Kafka records lost before they were read: {}; written to the dead-letter topic as `expired` \
         (RUNBOOK section 7)",
        dead_letter.detail
    );
    Some((dead_letter, resume_at))
}

impl KafkaSource {
    /// After librdkafka stopped a partition whose offset went out of range while it was read (retention deleted
    /// it, the topic was truncated): the whole assignment is planned again from this process's positions
    /// ([`plan_starts`]) and re-assigned at explicit offsets (a stopped partition cannot be sought); the lost
    /// ranges are reported by the run loop with the next batch.
    fn resume_out_of_range(&self, consumer: &Client) -> Result<(), SourceError> {
        let kafka = |action: &str| {
            let action = action.to_string();
            move |source: KafkaError| SourceError::Kafka { action, source }
        };
        let assignment = consumer.assignment().map_err(kafka("reading the assignment"))?;
        let positions = consumer.position().map_err(kafka("reading the positions"))?;
        let (planned, lost) = plan_starts(consumer, &assignment, Some(&positions), self.config.custom.start)
            .map_err(kafka("reading the committed offsets and watermarks"))?;
        if matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative) {
            consumer.incremental_unassign(&assignment).map_err(kafka("unassigning the stopped partitions"))?;
            consumer.incremental_assign(&planned).map_err(kafka("assigning the partitions again"))?;
        } else {
            consumer.assign(&planned).map_err(kafka("assigning the partitions again"))?;
        }
        tracing::info!(partitions = ?planned.to_topic_map(), "partitions assigned again after an offset went out of range");
        consumer.context().add_lost(lost);
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_resumes_where_it_can_and_lost_ranges_are_named() {
        assert_eq!(resume(None, 5, 9), Resume::Start);
        assert_eq!(resume(Some(7), 5, 9), Resume::At(7));
        assert_eq!(resume(Some(9), 5, 9), Resume::At(9), "at the end: waits for the next record");
        assert_eq!(resume(Some(3), 5, 9), Resume::Expired { from: 3, to: 5 });
        assert_eq!(resume(Some(12), 0, 4), Resume::PastEnd { from: 12, low: 0, high: 4 });

        let expired = expired_dead_letter("t", 2, Resume::Expired { from: 3, to: 5 }).unwrap();
        assert_eq!((expired.reason, expired.stage), (RejectReason::Expired, fvision_records::Stage::Ingest));
        assert_eq!(expired.record.as_deref(), Some("kafka://t/2@3..5"));
        assert_eq!((expired.event.id.as_str(), &expired.event.attributes["count"]), ("kafka://t/2@3..5", &2.into()));
        assert!(expired.detail.starts_with("2 records of Kafka t/2 (offsets 3 to 4)"), "{}", expired.detail);
        assert!(expired.payload_truncated && expired.payload.to_bytes().unwrap().is_empty(), "by reference");
        let past = expired_dead_letter("t", 0, Resume::PastEnd { from: 12, low: 0, high: 4 }).unwrap();
        assert_eq!(past.record.as_deref(), Some("kafka://t/0@12.."));
        assert!(past.detail.contains("recreated"), "{}", past.detail);
        assert!(!past.event.attributes.contains_key("count"), "the count is unknown");
        // The same range gives the same dead letter: a report repeated after a crash is a replay.
        assert_eq!(expired_dead_letter("t", 2, Resume::Expired { from: 3, to: 5 }).unwrap(), expired);
        assert_eq!(expired_dead_letter("t", 2, Resume::At(4)), None);
    }
}
