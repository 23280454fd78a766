//! What a source writes to Fluvio: ImageEvents to its topic (keyed by id) and dead letters to the
//! dead-letter topic, with an acknowledgement barrier: [`SourceOutput::acknowledge`] returns only once
//! Fluvio confirmed every record sent since the last call, and only then may a source commit its input
//! (Kafka offset, Pub/Sub ack).
//!
//! A source killed between that acknowledgement and its commit reads the same input again after its restart.
//! [`SourceOutput`] remembers the records its topics received most recently ([`RecentKeys`] of
//! [`replay_key`]s: id and a hash of the value; seeded at [`SourceOutput::connect`] from the end of each topic,
//! extended by every send) and does not write the same record again: the replay is skipped ([`Sent::Replay`])
//! and the source commits its input as usual. A different record under an id already held is written.

use bytesize::ByteSize;
use fluvio::consumer::ConsumerConfigExtBuilder;
use fluvio::metadata::topic::TopicSpec;
use fluvio::{Fluvio, Isolation, Offset, ProduceOutput, RecordKey, TopicProducerPool};
use futures_util::StreamExt;
use fvision_records::{ImageEvent, RejectedImage};

use crate::config::MetaConfig;
use crate::dead_letter;
use crate::producer::{image_producer_config, MAX_IMAGE_RECORD};
use crate::replay::{id_key, replay_key, RecentKeys, Sent};

/// Default `replay-lookback` of a source's section: ids remembered per partition of each written topic, and read back at
/// start-up. It must cover what the sources sharing the topic write between a source's last acknowledged
/// batch and its restart (a few batches of each), and what a source writes before Pub/Sub redelivers the
/// messages of a batch it did not ack (its ack deadline); ids are small, so it is generous.
pub const DEFAULT_REPLAY_LOOKBACK: usize = 4096;

/// Default `replay-lookback-bytes` of a source's section: the most bytes of records read back per topic at start-up (image
/// records are 100 KB to MBs, so this, not the count, usually bounds the read-back: about 600 records of 200 KB).
pub const DEFAULT_REPLAY_LOOKBACK_BYTES: ByteSize = ByteSize::mib(128);

/// How much of each topic a source writes it reads back at start-up, so that what a crashed predecessor
/// wrote but did not commit is not written again ([`crate::replay`]): the sources' `replay-lookback` (ids per
/// partition, 0 turns the guard off) and `replay-lookback-bytes` (the newest records first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayLookback {
    /// Ids remembered per partition.
    pub ids: usize,
    /// The most bytes of records read back per topic.
    pub bytes: u64,
}

impl Default for ReplayLookback {
    fn default() -> Self {
        Self { ids: DEFAULT_REPLAY_LOOKBACK, bytes: DEFAULT_REPLAY_LOOKBACK_BYTES.as_u64() }
    }
}

impl ReplayLookback {
    /// The read-back of a source's section (`kafka`, `gcs`): its `replay-lookback` and `replay-lookback-bytes`.
    pub fn new(ids: LookbackIds, bytes: LookbackBytes) -> Self {
        Self { ids: ids.0, bytes: bytes.0.as_u64() }
    }
}

/// `replay-lookback` of a source's section: ids per partition of the written topics (events, dead letters)
/// remembered, and read back from the end of each partition at start-up, so that what a crashed predecessor
/// wrote but did not commit is not written again; 0 turns the guard off. A field of each section of its own,
/// not a `serde(flatten)`ed struct: the sections deny unknown fields, and through `flatten` serde reports an
/// unknown or mistyped field without its path (`gcs` instead of `gcs.bucket`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct LookbackIds(pub usize);

impl Default for LookbackIds {
    fn default() -> Self {
        Self(DEFAULT_REPLAY_LOOKBACK)
    }
}

/// `replay-lookback-bytes` of a source's section: the most bytes of records read back per topic at start-up
/// for `replay-lookback` (the newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct LookbackBytes(pub ByteSize);

impl Default for LookbackBytes {
    fn default() -> Self {
        Self(DEFAULT_REPLAY_LOOKBACK_BYTES)
    }
}

/// Most records per read of the read-back, which walks back from the end of a partition in windows of at most
/// this size.
const READ_BACK_WINDOW: usize = 256;

/// Records of the first (newest) window of a partition's read-back (one: record sizes are unknown yet); later
/// windows are sized from the bytes per record read so far, so that records of MBs overrun
/// `replay-lookback-bytes` by about one record, not a window.
const FIRST_READ_BACK_WINDOW: usize = 1;

/// Why a source's records could not be written to its Fluvio topics (the sink's outputs have
/// `fvision_outputs::OutputError`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceOutputError {
    /// A Fluvio call failed.
    #[error("{action}")]
    Fluvio {
        /// What was being done.
        action: String,
        /// The client's error, with its causes.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A topic the source writes does not exist.
    #[error(
        "topic `{0}` does not exist; create it first (fluvio-config/topics/ has its config: \
         `fluvio topic create --config fluvio-config/topics/<name>.yaml`)"
    )]
    MissingTopic(String),
    /// A record could not be serialised.
    #[error("serialising a record: {0}")]
    Serialize(#[from] serde_json::Error),
}

fn fluvio_error<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    action: impl Into<String>,
) -> impl FnOnce(E) -> SourceOutputError {
    let action = action.into();
    move |e| SourceOutputError::Fluvio { action, source: e.into() }
}

/// Producers for the events topic and the dead-letter topic, the sends not yet acknowledged, and the ids each
/// topic received recently.
pub struct SourceOutput {
    events: (String, TopicProducerPool),
    dead_letters: (String, TopicProducerPool),
    pending: Vec<(String, ProduceOutput)>,
    recent_events: RecentKeys,
    recent_event_ids: RecentKeys,
    recent_dead_letters: RecentKeys,
}

impl SourceOutput {
    /// Connects to the Fluvio cluster of the active profile, then [`SourceOutput::connect`].
    pub async fn open(meta: &MetaConfig, dlq_topic: &str, lookback: ReplayLookback) -> Result<Self, SourceOutputError> {
        let fluvio = Fluvio::connect().await.map_err(fluvio_error("connecting to the Fluvio cluster"))?;
        Self::connect(&fluvio, meta, dlq_topic, lookback).await
    }

    /// Checks that the topics exist (they carry settings: fluvio-config/topics/) and opens the producers,
    /// sized for whole images from `meta.producer`.
    pub async fn connect(
        fluvio: &Fluvio,
        meta: &MetaConfig,
        dlq_topic: &str,
        lookback: ReplayLookback,
    ) -> Result<Self, SourceOutputError> {
        let admin = fluvio.admin().await;
        let topic = meta.topic.name().to_string();
        for name in [topic.as_str(), dlq_topic] {
            let found =
                admin.list::<TopicSpec, _>(vec![name.to_string()]).await.map_err(fluvio_error("listing topics"))?;
            if found.is_empty() {
                return Err(SourceOutputError::MissingTopic(name.to_string()));
            }
        }
        let config = image_producer_config(&meta.producer.clone().unwrap_or_default())
            .map_err(fluvio_error("configuring the producers"))?;
        let open = |name: String| {
            let config = config.clone();
            async move {
                let producer = fluvio
                    .topic_producer_with_config(name.clone(), config)
                    .await
                    .map_err(fluvio_error(format!("opening a producer for `{name}`")))?;
                Ok::<_, SourceOutputError>((name, producer))
            }
        };
        let ReplayLookback { ids: lookback, bytes } = lookback;
        let (recent_events, recent_event_ids) = read_back(fluvio, &topic, lookback, bytes).await?;
        let (recent_dead_letters, _) = read_back(fluvio, dlq_topic, lookback, bytes).await?;
        Ok(Self {
            events: open(topic).await?,
            dead_letters: open(dlq_topic.to_string()).await?,
            pending: Vec::new(),
            recent_events,
            recent_event_ids,
            recent_dead_letters,
        })
    }

    /// The events topic.
    pub fn topic(&self) -> &str {
        &self.events.0
    }

    /// Whether the events topic received an ImageEvent with this id recently, whatever its value. Only for ids
    /// that name one immutable image (gcs-source's `gs://bucket/object#generation`), which a source may then skip
    /// building; [`SourceOutput::send_event_bytes`] skips only the same record.
    pub fn is_replayed_event(&self, id: &str) -> bool {
        self.recent_event_ids.contains(id_key(id))
    }

    /// Sends an already serialised ImageEvent keyed by its id, unless the events topic received that same
    /// record (id and value) recently ([`Sent::Replay`]).
    pub async fn send_event_bytes(&mut self, id: &str, value: Vec<u8>) -> Result<Sent, SourceOutputError> {
        let key = replay_key(id, &value);
        if self.recent_events.contains(key) {
            tracing::debug!(id, "not sent again: a replay");
            return Ok(Sent::Replay);
        }
        let (topic, producer) = &self.events;
        let sent = producer
            .send(RecordKey::from(id.to_string()), value)
            .await
            .map_err(fluvio_error(format!("producing to `{topic}`")))?;
        self.pending.push((topic.clone(), sent));
        self.recent_events.insert(key);
        self.recent_event_ids.insert(id_key(id));
        Ok(Sent::Produced)
    }

    /// Sends an ImageEvent keyed by its id, unless it is a replay.
    pub async fn send_event(&mut self, event: &ImageEvent) -> Result<Sent, SourceOutputError> {
        let value = serde_json::to_vec(event)?;
        self.send_event_bytes(&event.meta.id, value).await
    }

    /// Sends a dead letter keyed by the id of what it rejects, unless the dead-letter topic received that same
    /// dead letter (id and value) recently ([`Sent::Replay`]).
    pub async fn send_dead_letter(&mut self, rejected: RejectedImage) -> Result<Sent, SourceOutputError> {
        let id = rejected.event.id.clone();
        let value = dead_letter::encode(rejected)?;
        let key = replay_key(&id, &value);
        if self.recent_dead_letters.contains(key) {
            tracing::debug!(%id, "dead letter not sent again: a replay");
            return Ok(Sent::Replay);
        }
        let (topic, producer) = &self.dead_letters;
        let sent =
            producer.send(RecordKey::from(id), value).await.map_err(fluvio_error(format!("producing to `{topic}`")))?;
        self.pending.push((topic.clone(), sent));
        self.recent_dead_letters.insert(key);
        Ok(Sent::Produced)
    }

    /// Records sent and not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Flushes both producers and waits for Fluvio's confirmation of every record sent so far.
    pub async fn acknowledge(&mut self) -> Result<(), SourceOutputError> {
        for (topic, producer) in [&self.events, &self.dead_letters] {
            producer.flush().await.map_err(fluvio_error(format!("flushing `{topic}`")))?;
        }
        for (topic, sent) in std::mem::take(&mut self.pending) {
            sent.wait().await.map_err(fluvio_error(format!("confirming a record on `{topic}`")))?;
        }
        Ok(())
    }
}

/// The [`replay_key`]s and the ids of the newest records of every partition of `topic`: up to `lookback` per
/// partition and about `max_bytes` of records in all (split evenly over the partitions), read back from the end
/// in windows so the newest are kept when the bytes run out; in sets that hold `lookback` per partition. Only
/// keys are kept: each value is hashed and dropped as it is read.
async fn read_back(
    fluvio: &Fluvio,
    topic: &str,
    lookback: usize,
    max_bytes: u64,
) -> Result<(RecentKeys, RecentKeys), SourceOutputError> {
    if lookback == 0 {
        return Ok((RecentKeys::new(0), RecentKeys::new(0)));
    }
    let admin = fluvio.admin().await;
    let found = admin.list::<TopicSpec, _>(vec![topic.to_string()]).await.map_err(fluvio_error("listing topics"))?;
    let partitions = found.first().map(|t| t.spec.partitions()).unwrap_or(1).max(1);
    let per_partition_bytes = max_bytes / u64::from(partitions);
    let mut keys = RecentKeys::new(lookback.saturating_mul(partitions as usize));
    let mut ids = RecentKeys::new(lookback.saturating_mul(partitions as usize));
    let (mut total, mut bytes_read) = (0usize, 0u64);
    for partition in 0..partitions {
        // Windows newest first, each its keys in offset order.
        let mut windows: Vec<Vec<(Option<u128>, Option<u128>)>> = Vec::new();
        let (mut taken, mut bytes) = (0usize, 0u64);
        let mut before: Option<i64> = None;
        while taken < lookback && bytes < per_partition_bytes && before != Some(0) {
            // Sized from the bytes per record so far, so that the budget is overrun by about one record.
            let size = if taken == 0 {
                FIRST_READ_BACK_WINDOW
            } else {
                let per_record = (bytes / taken as u64).max(1);
                usize::try_from((per_partition_bytes - bytes).div_ceil(per_record)).unwrap_or(usize::MAX)
            };
            let size = size.clamp(1, READ_BACK_WINDOW).min(lookback - taken);
            let (start, end) = match before {
                None => (None, None),
                Some(end) => (Some((end - size as i64).max(0)), Some(end)),
            };
            let (first, window, window_bytes) = match read_range(fluvio, topic, partition, size, start, end).await {
                Ok(read) => read,
                // The newest window is needed; an older one may be gone (retention): keep what was read.
                Err(e) if before.is_some() => {
                    tracing::warn!(topic, partition, "reading back older records for the replay guard: {e}");
                    break;
                }
                Err(e) => return Err(e),
            };
            let Some(first) = first else { break };
            taken += window.len();
            bytes += window_bytes;
            windows.push(window);
            before = Some(first);
        }
        total += taken;
        bytes_read += bytes;
        for &(id, key) in windows.iter().rev().flatten() {
            keys.insert(key);
            ids.insert(id);
        }
    }
    tracing::info!(topic, records = total, bytes = bytes_read, ids = keys.len(), "read back for the replay guard");
    Ok((keys, ids))
}

/// The ([`id_key`], [`replay_key`]) of the records of `partition` from `start` (`None`: the last `size` records) up to `end`
/// (exclusive; `None`: the current end), with the first offset read and the bytes read. A record past the
/// next expected offset (the client skips the rest of a batch that a fetch cut at `max-bytes`) starts a new
/// read from the first one missing.
async fn read_range(
    fluvio: &Fluvio,
    topic: &str,
    partition: u32,
    size: usize,
    start: Option<i64>,
    end: Option<i64>,
) -> Result<(Option<i64>, Vec<(Option<u128>, Option<u128>)>, u64), SourceOutputError> {
    let (mut first, mut keys, mut bytes) = (None::<i64>, Vec::new(), 0u64);
    let mut next = start;
    loop {
        let offset = match next {
            Some(offset) => Offset::absolute(offset).map_err(fluvio_error(format!("reading back `{topic}`")))?,
            None => Offset::from_end(size as u32),
        };
        let config = ConsumerConfigExtBuilder::default()
            .topic(topic.to_string())
            .partition(partition)
            .offset_start(offset)
            .disable_continuous(true)
            .max_bytes(MAX_IMAGE_RECORD.as_u64() as i32)
            // Everything the leader holds, committed or not: a send that timed out waiting for a replica is
            // written there and will be committed when the replica is back, so it must not be sent again.
            .isolation(Isolation::ReadUncommitted)
            .build()
            .map_err(fluvio_error(format!("reading back `{topic}`")))?;
        let mut stream =
            fluvio.consumer_with_config(config).await.map_err(fluvio_error(format!("reading back `{topic}`")))?;
        let mut progressed = false;
        let mut gap = false;
        while let Some(record) = stream.next().await {
            let record = record.map_err(fluvio_error(format!("reading back `{topic}`")))?;
            let offset = record.offset();
            if end.is_some_and(|end| offset >= end) {
                break;
            }
            match next {
                Some(expected) if offset < expected => continue,
                Some(expected) if offset > expected && first.is_some() => {
                    gap = true;
                    break;
                }
                _ => {}
            }
            first.get_or_insert(offset);
            let id = record.key().map(|k| String::from_utf8_lossy(k)).unwrap_or_default();
            keys.push((id_key(&id), replay_key(&id, record.value())));
            bytes += record.value().len() as u64;
            next = Some(offset + 1);
            progressed = true;
        }
        if !gap || !progressed {
            return Ok((first, keys, bytes));
        }
    }
}

/// Environment variable of the connectors' crash test hook: with `FVISION_CRASH_BEFORE_COMMIT=N` a connector
/// aborts (no clean-up, like SIGKILL) at its N-th commit point, after what it wrote was acknowledged and before
/// it commits its input (a source's Kafka offsets or Pub/Sub acks, the sink's Fluvio offsets): the worst
/// moment, where a crash replays what the other side already holds. Tests only.
pub const CRASH_BEFORE_COMMIT: &str = "FVISION_CRASH_BEFORE_COMMIT";

/// Aborts the process at the commit point [`CRASH_BEFORE_COMMIT`] names; call it between the acknowledgement
/// (by `acknowledged_by`, named in the log line) and the commit.
pub fn crash_before_commit_if_asked(acknowledged_by: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static BATCHES: AtomicU64 = AtomicU64::new(0);
    let Some(at) = std::env::var(CRASH_BEFORE_COMMIT).ok().and_then(|v| v.parse::<u64>().ok()) else { return };
    if BATCHES.fetch_add(1, Ordering::SeqCst) + 1 >= at {
        eprintln!("{CRASH_BEFORE_COMMIT}={at}: aborting after {acknowledged_by} acknowledged, before the commit");
        std::process::abort();
    }
}
