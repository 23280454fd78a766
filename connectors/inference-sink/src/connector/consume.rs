//! The consuming edge: the consumer settings the YAML describes, and the loop that feeds the pipeline and
//! commits offsets.
//!
//! Fluvio's client commits "the last record the stream yielded", not an arbitrary offset. So the loop
//! commits at a barrier: every commit interval (and whenever it has caught up with the topic) it stops
//! reading, waits until the pipeline has handed every record read so far to the outputs, waits for the
//! outputs' confirmations, then commits and flushes the offset. A crash between two barriers replays at
//! most one interval, never loses a record.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use fluvio::consumer::{ConsumerConfigExt, ConsumerStream, OffsetManagementStrategy};
use fluvio::dataplane::link::ErrorCode;
use fluvio::{Offset, SmartModuleInvocation};
use fluvio_future::timer::sleep;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use fvision_connector_common::config::{OffsetStart, PartitionSelection};
use fvision_connector_common::MetaConfig;

use crate::events;
use crate::outputs::{DeliveryError, OutputSet, SourcePosition};
use crate::pipeline::Item;

/// Records carry whole images; the client's 1 MiB default fetch silently stalls on a bigger one.
pub const DEFAULT_MAX_BYTES: ByteSize = ByteSize::mib(16);

/// How often offsets are committed when the YAML does not say (`meta.consumer.offset.flush-period`).
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(2);

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
}

impl ConsumeSettings {
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
        }
    }

    /// The config of a re-read: one partition from `offset`, no consumer id (it must not move the commit).
    pub fn reread_config(
        &self,
        partition: u32,
        offset: i64,
        smartmodule: Option<SmartModuleInvocation>,
    ) -> anyhow::Result<ConsumerConfigExt> {
        let mut builder = ConsumerConfigExt::builder();
        builder
            .topic(self.topic.clone())
            .partition(partition)
            .offset_start(Offset::absolute(offset)?)
            .disable_continuous(true)
            .max_bytes(self.max_bytes_i32())
            .smartmodule(smartmodule.into_iter().collect());
        builder.build()
    }

    fn max_bytes_i32(&self) -> i32 {
        i32::try_from(self.max_bytes.as_u64()).unwrap_or(i32::MAX)
    }

    /// The client's consumer config for these `partitions`, with the SPU-side SmartModule if any.
    pub fn consumer_config(
        &self,
        partitions: &[u32],
        smartmodule: Option<SmartModuleInvocation>,
    ) -> anyhow::Result<ConsumerConfigExt> {
        let start = match self.start {
            OffsetStart::Beginning => Offset::beginning(),
            OffsetStart::End => Offset::end(),
            OffsetStart::Absolute(offset) => Offset::absolute(offset)?,
            OffsetStart::FromBeginning(n) => Offset::from_beginning(n),
            OffsetStart::FromEnd(n) => Offset::from_end(n),
        };
        let mut builder = ConsumerConfigExt::builder();
        builder
            .topic(self.topic.clone())
            .offset_start(start)
            .offset_consumer(self.consumer_id.clone())
            .offset_strategy(OffsetManagementStrategy::Manual)
            .disable_continuous(true)
            .max_bytes(self.max_bytes_i32())
            .smartmodule(smartmodule.into_iter().collect());
        for &partition in partitions {
            builder.partition(partition);
        }
        builder.build()
    }
}

/// Why consuming stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// The stream reported an error.
    #[error("consuming `{topic}`: {detail}")]
    Stream {
        /// The topic.
        topic: String,
        /// The client's error.
        detail: String,
    },
    /// The offsets could not be committed.
    #[error("committing the offsets of consumer `{consumer_id}`: {detail}")]
    Commit {
        /// The consumer id.
        consumer_id: String,
        /// The client's error.
        detail: String,
    },
    /// The outputs did not confirm; nothing after the last commit is committed.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    /// Stopping, the connector waited in vain for the cluster (a fetch, a stream, a commit); what was delivered
    /// since the last commit is replayed at the next start.
    #[error(
        "stopping: the cluster did not answer on `{topic}` within {waited:?}; offsets were not committed, so \
         records delivered since the last commit will be processed again at the next start"
    )]
    Unresponsive {
        /// The topic.
        topic: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The pipeline stopped before handing over every record (its own error says why).
    #[error("the pipeline stopped with records in flight; their offsets were not committed")]
    PipelineStopped,
}

/// What the loop did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumeReport {
    /// Records read from Fluvio.
    pub consumed: u64,
    /// Commit barriers passed (offsets committed and flushed).
    pub commits: u64,
    /// Streams opened (one per catch-up with the end of the topic).
    pub streams: u64,
}

/// How long an idle connector waits before asking for new records again.
pub const IDLE_POLL: Duration = Duration::from_millis(200);

/// A consumer stream, boxed so the main stream and the re-reads share one type.
pub type BoxedStream = Pin<Box<dyn ConsumerStream + Send>>;

/// Which stream to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// The connector's stream: every configured partition, resuming after the committed offset.
    Committed,
    /// One partition from an absolute offset, without a consumer id: re-reads records the client skipped.
    At {
        /// The partition.
        partition: u32,
        /// The first offset to read.
        offset: i64,
    },
}

/// Reads the topic into `items` until `stop` is set, committing at barriers.
///
/// Each stream is opened by `open` and ends at the end of the topic (`disable_continuous`): the client's
/// retrying stream holds its lock while it waits for records, so an offset commit can only run between
/// records, never while the consumer waits on an idle topic. After the end, the loop commits, waits
/// [`IDLE_POLL`] and opens the next stream, which resumes after the committed offset.
///
/// Fluvio's 0.50 client skips the records of a batch that a fetch cut at `max-bytes` (fixed upstream
/// after 0.50.1: "do not assume all batches in stream fetch response are complete"). The loop sees that
/// as a gap in a partition's offsets and re-reads the missing records before it goes on, so they are
/// delivered before any commit covers them.
pub async fn consume<F, Fut>(
    mut open: F,
    items: async_channel::Sender<Item>,
    outputs: &OutputSet,
    settings: &ConsumeSettings,
    stop: &AtomicBool,
) -> Result<ConsumeReport, ConsumeError>
where
    F: FnMut(StreamStart) -> Fut,
    Fut: std::future::Future<Output = Result<BoxedStream, ConsumeError>>,
{
    let mut report = ConsumeReport::default();
    let mut checkpoint = Checkpoint { records: 0, at: Instant::now() };
    // The next offset expected per partition: the one after the last record read.
    let mut next_offsets: HashMap<u32, i64> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let mut stream =
            unless_stuck(open(StreamStart::Committed), stop).await.ok_or_else(|| unresponsive(settings))??;
        report.streams += 1;
        let before = report.consumed;
        while !stop.load(Ordering::Relaxed) {
            let next = unless_stuck(stream.next(), stop).await.ok_or_else(|| unresponsive(settings))?;
            let record = match next {
                Some(Ok(record)) => record,
                Some(Err(code)) => return Err(stream_error(settings, code)),
                None => break,
            };
            let (partition, offset) = (record.partition(), record.offset());
            if let Some(&expected) = next_offsets.get(&partition) {
                if offset > expected {
                    tracing::warn!(
                        partition,
                        from = expected,
                        to = offset,
                        "the Fluvio client skipped records; re-reading them"
                    );
                    events::records_reread((offset - expected) as u64);
                    reread(&mut open, partition, expected..offset, &items, settings, &mut report).await?;
                }
            }
            let next = next_offsets.entry(partition).or_insert(offset + 1);
            *next = (*next).max(offset + 1);
            forward(&items, settings, partition, offset, record.value(), &mut report).await?;
            events::in_flight(report.consumed.saturating_sub(outputs.delivered()), items.len());
            if checkpoint.at.elapsed() >= settings.commit_interval {
                commit(&mut stream, outputs, settings, report.consumed, &items, stop).await?;
                checkpoint.passed(&mut report);
            }
        }
        if report.consumed > checkpoint.records {
            commit(&mut stream, outputs, settings, report.consumed, &items, stop).await?;
            checkpoint.passed(&mut report);
        }
        events::in_flight(0, items.len());
        let caught_up = report.consumed == before;
        if caught_up && settings.drain {
            break;
        }
        if caught_up && !stop.load(Ordering::Relaxed) {
            sleep(IDLE_POLL).await;
        }
    }
    Ok(report)
}

/// The last commit barrier passed: records read up to it, and when.
struct Checkpoint {
    records: u64,
    at: Instant,
}

impl Checkpoint {
    /// A barrier was just passed with everything read so far.
    fn passed(&mut self, report: &mut ConsumeReport) {
        (self.records, self.at) = (report.consumed, Instant::now());
        report.commits += 1;
    }
}

/// How long a stopping connector still waits for a fetch in progress.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Awaits `future`, but once `stop` is set for at most [`STOP_GRACE`] more: `None` means the cluster did not
/// answer a stopping connector. A fetch in progress when the stop comes is still awaited, so its record is
/// delivered and committed like the others (it holds the stream's lock, so no commit could run before it).
async fn unless_stuck<T>(future: impl std::future::Future<Output = T>, stop: &AtomicBool) -> Option<T> {
    let mut future = std::pin::pin!(future);
    let mut stopping_since: Option<Instant> = None;
    loop {
        match select(future.as_mut(), Box::pin(sleep(Duration::from_millis(200)))).await {
            Either::Left((output, _)) => return Some(output),
            Either::Right(_) if stop.load(Ordering::Relaxed) => {
                if stopping_since.get_or_insert_with(Instant::now).elapsed() >= STOP_GRACE {
                    return None;
                }
            }
            Either::Right(_) => {}
        }
    }
}

/// Hands one record to the pipeline.
async fn forward(
    items: &async_channel::Sender<Item>,
    settings: &ConsumeSettings,
    partition: u32,
    offset: i64,
    value: &[u8],
    report: &mut ConsumeReport,
) -> Result<(), ConsumeError> {
    let name = format!("{}/{partition}@{offset}", settings.topic);
    report.consumed += 1;
    events::record_consumed();
    let position = Some(SourcePosition { partition, offset });
    items.send(Item { name, value: value.to_vec(), position }).await.map_err(|_| ConsumeError::PipelineStopped)
}

/// Reads `range` of `partition` with fresh streams that start exactly at the first missing offset, so the
/// first batch of each response is whole; a stream that skips again is replaced by one starting at the
/// next missing offset.
async fn reread<F, Fut>(
    open: &mut F,
    partition: u32,
    range: std::ops::Range<i64>,
    items: &async_channel::Sender<Item>,
    settings: &ConsumeSettings,
    report: &mut ConsumeReport,
) -> Result<(), ConsumeError>
where
    F: FnMut(StreamStart) -> Fut,
    Fut: std::future::Future<Output = Result<BoxedStream, ConsumeError>>,
{
    let mut next = range.start;
    while next < range.end {
        let mut stream = open(StreamStart::At { partition, offset: next }).await?;
        let first = next;
        while let Some(record) = stream.next().await {
            let record = record.map_err(|code| stream_error(settings, code))?;
            match record.offset() {
                offset if offset < next => continue,
                offset if offset > next => break,
                offset => {
                    forward(items, settings, partition, offset, record.value(), report).await?;
                    next += 1;
                    if next >= range.end {
                        break;
                    }
                }
            }
        }
        if next == first {
            return Err(ConsumeError::Stream {
                topic: settings.topic.clone(),
                detail: format!(
                    "cannot read offset {next} of partition {partition}: is a record batch larger than \
                     meta.consumer.max-bytes ({})?",
                    settings.max_bytes
                ),
            });
        }
    }
    Ok(())
}

fn unresponsive(settings: &ConsumeSettings) -> ConsumeError {
    ConsumeError::Unresponsive { topic: settings.topic.clone(), waited: STOP_GRACE }
}

fn stream_error(settings: &ConsumeSettings, code: ErrorCode) -> ConsumeError {
    ConsumeError::Stream { topic: settings.topic.clone(), detail: code.to_string() }
}

/// Environment variable of the crash test hook: with `FVISION_CRASH_BEFORE_COMMIT=N`, the connector aborts
/// (no clean-up, like SIGKILL) at its N-th commit barrier, after every output acknowledged and before the
/// offset is committed: the point where a crash replays rows the outputs already hold. Tests only.
pub const CRASH_BEFORE_COMMIT: &str = "FVISION_CRASH_BEFORE_COMMIT";

fn crash_before_commit_if_asked() {
    static BARRIERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let Some(at) = std::env::var(CRASH_BEFORE_COMMIT).ok().and_then(|v| v.parse::<u64>().ok()) else { return };
    if BARRIERS.fetch_add(1, Ordering::SeqCst) + 1 >= at {
        eprintln!("{CRASH_BEFORE_COMMIT}={at}: aborting after the outputs acknowledged, before the commit");
        std::process::abort();
    }
}

/// The barrier: every record read has been delivered and confirmed; then the offset is committed. A
/// stopping connector gives up after [`STOP_GRACE`] without committing (the next start replays).
async fn commit(
    stream: &mut BoxedStream,
    outputs: &OutputSet,
    settings: &ConsumeSettings,
    consumed: u64,
    items: &async_channel::Sender<Item>,
    stop: &AtomicBool,
) -> Result<(), ConsumeError> {
    let barrier = async {
        while outputs.delivered() < consumed {
            if items.is_closed() {
                return Err(ConsumeError::PipelineStopped);
            }
            sleep(Duration::from_millis(2)).await;
        }
        outputs.acknowledge().await?;
        crash_before_commit_if_asked();
        let failed =
            |e: ErrorCode| ConsumeError::Commit { consumer_id: settings.consumer_id.clone(), detail: e.to_string() };
        stream.offset_commit().await.map_err(failed)?;
        stream.offset_flush().await.map_err(failed)
    };
    unless_stuck(barrier, stop).await.ok_or_else(|| unresponsive(settings))??;
    events::offsets_committed();
    tracing::debug!(consumed, "committed: every record read so far was delivered and confirmed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fvision_connector_common::ConnectorConfig;

    fn meta(yaml: &str) -> MetaConfig {
        let text = format!("apiVersion: 0.2.0\nmeta:\n{yaml}\nsink: {{}}\n");
        let config: ConnectorConfig<serde_yaml::Value> =
            ConnectorConfig::parse(&text, std::path::Path::new("t.yaml"), &Default::default(), "sink").unwrap();
        config.meta
    }

    #[test]
    fn defaults_commit_after_delivery_under_the_connector_name() {
        let settings = ConsumeSettings::from_meta(&meta("  {version: 0.1.0, name: sink-a, type: t, topic: images}"));
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
            }
        );
        let config = settings.consumer_config(&[0, 1], None).unwrap();
        assert_eq!(config.partition, vec![0, 1]);
        assert_eq!(config.offset_consumer.as_deref(), Some("sink-a"));
        assert_eq!(config.offset_strategy, OffsetManagementStrategy::Manual);
        assert_eq!(config.max_bytes, 16 * 1024 * 1024);
    }

    #[test]
    fn the_yaml_overrides_every_default() {
        let settings = ConsumeSettings::from_meta(&meta(
            "  version: 0.1.0\n  name: s\n  type: t\n  topic: {meta: {name: raw}}\n  consumer:\n    id: c7\n    \
             partition: [2, 3]\n    max-bytes: 4 MiB\n    offset: {start: {absolute: 42}, strategy: manual, \
             flush-period: {secs: 5}}",
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
