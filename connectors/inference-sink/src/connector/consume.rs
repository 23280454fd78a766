//! The consuming edge: the consumer settings the YAML describes, and the loop that feeds the pipeline and
//! commits offsets.
//!
//! Fluvio's client commits "the last record the stream yielded", not an arbitrary offset. So the loop
//! commits at a barrier: every commit interval (and whenever it has caught up with the topic) it stops
//! reading, waits until the pipeline has handed every record read so far to the outputs, waits for the
//! outputs' confirmations, then commits and flushes the offset. A crash between two barriers replays at
//! most one interval, never loses a record.
//!
//! Every offset is accounted for: the loop knows the next offset it expects in each partition (from the
//! committed offset or the configured start, then from the records it read) and compares it with what the
//! stream yields and with the partition's end offset. A gap, a stream that ends or waits while the
//! partition is behind, is re-read from the first missing offset; a record that cannot be read within
//! `max-bytes` goes to the dead-letter topic by reference (`too_large`); anything else stops the connector
//! with an error naming the offset. Nothing is committed past an offset that was not delivered.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use fluvio::consumer::{
    ConsumerConfigExt, ConsumerConfigExtBuilder, ConsumerStream, OffsetManagementStrategy, Record, RetryMode,
};
use fluvio::dataplane::link::ErrorCode;
use fluvio::{Fluvio, FluvioAdmin, Isolation, Offset, SmartModuleInvocation};
use fluvio_future::timer::sleep;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use fvision_connector_common::config::{OffsetStart, PartitionSelection};
use fvision_connector_common::offsets::{partition_offsets, OffsetsQuery};
use fvision_connector_common::MetaConfig;
use fvision_records::{RejectReason, RejectedImage, Stage};

use fvision_outputs::DeliveryError;
use fvision_pipeline::{Item, SourcePosition};

use super::metrics as events;

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
    ) -> anyhow::Result<ConsumerConfigExt> {
        let mut builder = self.reader(Offset::absolute(offset)?, self.max_bytes_i32());
        builder.partition(partition).smartmodule(smartmodule.into_iter().collect());
        builder.build()
    }

    /// The config of a probe: the record at `offset` alone, raw (no SmartModule), with a fetch large enough
    /// to learn the size of a record that does not fit `max-bytes`.
    pub fn probe_config(&self, partition: u32, offset: i64) -> anyhow::Result<ConsumerConfigExt> {
        let max_bytes = i32::try_from(self.probe_max_bytes()).unwrap_or(i32::MAX);
        let mut builder = self.reader(Offset::absolute(offset)?, max_bytes);
        builder.partition(partition);
        builder.build()
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
    ) -> anyhow::Result<ConsumerConfigExt> {
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
        builder.build()
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

    fn name(&self, partition: u32, offset: i64) -> String {
        format!("{}/{partition}@{offset}", self.topic)
    }
}

/// Why consuming stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// The stream reported an error (a SmartModule failing on the SPU, an evicted offset, a lost SPU).
    #[error("consuming `{topic}`: {detail}")]
    Stream {
        /// The topic.
        topic: String,
        /// The client's error.
        detail: String,
    },
    /// An offset could not be read and was not delivered; nothing was committed past it.
    #[error(
        "offset {offset} of `{topic}` partition {partition} cannot be read (the partition ends at {end}): \
         {detail}; nothing was committed past it"
    )]
    Unreadable {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The first offset not delivered.
        offset: i64,
        /// The partition's end offset.
        end: i64,
        /// What the connector found.
        detail: String,
    },
    /// A partition the connector reads no longer exists.
    #[error("partition {partition} of topic `{topic}` no longer exists (was the topic deleted?)")]
    PartitionGone {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
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
    /// Stopping, the images already read were not all delivered within `inference.stop-timeout`.
    #[error(
        "stopping: {undelivered} records read were not delivered within inference.stop-timeout ({waited:?}); \
         offsets were not committed past them, so they will be processed again at the next start"
    )]
    StopTimeout {
        /// Records read but not delivered.
        undelivered: u64,
        /// How long it waited.
        waited: Duration,
    },
    /// The pipeline stopped before handing over every record (its own error says why).
    #[error("the pipeline stopped with records in flight; their offsets were not committed")]
    PipelineStopped,
    /// The consumer thread panicked (a bug); nothing after the last commit is committed.
    #[error("the consumer thread panicked: {0}; offsets were not committed past the last commit")]
    Panicked(String),
}

/// What the loop did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumeReport {
    /// Records read from Fluvio (dead letters by reference included).
    pub consumed: u64,
    /// Commit barriers passed (offsets committed and flushed).
    pub commits: u64,
    /// Streams opened (one per catch-up with the end of the topic).
    pub streams: u64,
    /// Records that did not fit `max-bytes`, sent to the dead-letter topic by reference.
    pub too_large: u64,
}

/// How long an idle connector waits before asking for new records again.
pub const IDLE_POLL: Duration = Duration::from_millis(200);

/// How often an idle connector checks its partitions against their end offsets (a stream that ends silently
/// while records wait is found within this).
pub const POSITIONS_POLL: Duration = Duration::from_secs(1);

/// A consumer stream, boxed so the main stream, the re-reads and the probes share one type.
pub type BoxedStream = Pin<Box<dyn ConsumerStream + Send>>;

/// Which stream to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// The connector's stream: every configured partition, resuming after the committed offset.
    Committed,
    /// One partition from an absolute offset, without a consumer id: re-reads records the stream did not
    /// yield.
    At {
        /// The partition.
        partition: u32,
        /// The first offset to read.
        offset: i64,
    },
    /// One record, raw (no SmartModule) and with a large fetch: what a record that could not be read is.
    Probe {
        /// The partition.
        partition: u32,
        /// The offset.
        offset: i64,
    },
}

/// Where a partition stands on the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The first offset still stored.
    pub start: i64,
    /// The end offset: the offset the next record produced will get.
    pub end: i64,
    /// The last offset committed under the consumer id, if any.
    pub committed: Option<i64>,
}

/// Where the loop reads from: the cluster, or fakes in the tests.
pub trait Source {
    /// Opens a stream.
    fn open(&mut self, start: StreamStart) -> impl Future<Output = Result<BoxedStream, ConsumeError>>;
    /// Where each configured partition stands now (with the committed offsets when `committed`); a partition
    /// that no longer exists is an error.
    fn positions(&mut self, committed: bool) -> impl Future<Output = Result<BTreeMap<u32, Position>, ConsumeError>>;
}

/// What the loop needs from the outputs: the commit barrier, and a way to send the dead letters it makes
/// itself (records it could not read).
pub trait Barrier {
    /// Outcomes handed to the outputs so far.
    fn delivered(&self) -> u64;
    /// Waits until everything handed over so far is confirmed.
    fn acknowledge(&self) -> impl Future<Output = Result<(), DeliveryError>>;
    /// Sends a dead letter made by the consumer (counted in [`Barrier::delivered`]) for the record at `position`.
    fn dead_letter(&self, name: &str, position: SourcePosition, rejected: RejectedImage) -> Result<(), DeliveryError>;
}

/// Reads the topic into `items` until `stop` is set, committing at barriers.
///
/// Each stream is opened by `source` and ends at the end of the topic (`disable_continuous`): the client's
/// stream holds its lock while it waits for records, so an offset commit can only run between records, never
/// while the consumer waits on an idle topic. After the end, the loop commits, checks every partition
/// against its end offset (a stream that ended early is an error, or a gap to re-read), waits [`IDLE_POLL`]
/// and opens the next stream, which resumes after the committed offset.
///
/// Fluvio's 0.50 client skips the records of a batch that a fetch cut at `max-bytes` (fixed upstream
/// after 0.50.1: "do not assume all batches in stream fetch response are complete"), and the SPU skips a
/// record batch larger than `max-bytes`. The loop sees both as a gap in a partition's offsets and re-reads
/// the missing records before it goes on, so they are delivered before any commit covers them; a record
/// that does not fit becomes a `too_large` dead letter by reference.
pub async fn consume(
    source: &mut impl Source,
    items: async_channel::Sender<Item>,
    outputs: &impl Barrier,
    settings: &ConsumeSettings,
    stop: &AtomicBool,
) -> Result<ConsumeReport, ConsumeError> {
    let mut run =
        Run { settings, items: &items, outputs, stop, report: ConsumeReport::default(), next: HashMap::new() };
    let mut checkpoint = Checkpoint { records: 0, at: Instant::now() };
    let positions = run.cluster(source.positions(true)).await??;
    for (&partition, position) in &positions {
        if let Some(first) = settings.first_offset(position) {
            run.next.insert(partition, first);
        }
    }
    let mut checked = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut stream = run.cluster(source.open(StreamStart::Committed)).await??;
        run.report.streams += 1;
        // The stream yielded records since the last commit (some may have been delivered by a re-read).
        let mut uncommitted = false;
        let mut yielded = false;
        let mut progressed = false;
        while !stop.load(Ordering::Relaxed) {
            let record = match run.read(stream.next()).await? {
                Read::Record(record) => record,
                Read::Ended => break,
                Read::Waited(waited) => {
                    tracing::debug!(?waited, "the stream brought nothing; checking the partitions");
                    break;
                }
            };
            let (partition, offset) = (record.partition(), record.offset());
            (uncommitted, yielded) = (true, true);
            match run.next.get(&partition).copied() {
                // Delivered by a re-read already.
                Some(expected) if offset < expected => continue,
                Some(expected) if offset > expected => {
                    tracing::warn!(
                        partition,
                        from = expected,
                        to = offset,
                        "the stream skipped records; re-reading them"
                    );
                    events::records_reread((offset - expected) as u64);
                    run.fill(source, partition, expected..offset, offset + 1).await?;
                }
                _ => {}
            }
            run.forward(partition, offset, record.value()).await?;
            progressed = true;
            fvision_pipeline::metrics::in_flight(run.report.consumed.saturating_sub(outputs.delivered()), items.len());
            if checkpoint.at.elapsed() >= settings.commit_interval {
                run.commit(&mut stream).await?;
                checkpoint.passed(&mut run.report);
                uncommitted = false;
            }
        }
        if uncommitted || run.report.consumed > checkpoint.records {
            run.commit(&mut stream).await?;
            checkpoint.passed(&mut run.report);
        }
        drop(stream);
        fvision_pipeline::metrics::in_flight(0, items.len());
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // A stream also ends (or waits) when something blocks the partition: check where each one stands. An
        // idle connector checks at most every POSITIONS_POLL; a draining one always checks before it exits.
        let idle = !progressed && !yielded;
        if idle && !settings.drain && checked.elapsed() < POSITIONS_POLL {
            sleep(IDLE_POLL).await;
            continue;
        }
        checked = Instant::now();
        let positions = run.cluster(source.positions(false)).await??;
        for (&partition, position) in &positions {
            let Some(next) = run.next.get(&partition).copied() else { continue };
            if next < position.end {
                tracing::warn!(
                    partition,
                    next,
                    end = position.end,
                    "the stream ended before the end of the partition; re-reading from the first offset not delivered"
                );
                run.fill(source, partition, next..position.end, position.end).await?;
                progressed = true;
            }
        }
        if !progressed && settings.drain {
            break;
        }
        if !progressed && !stop.load(Ordering::Relaxed) {
            sleep(IDLE_POLL).await;
        }
    }
    Ok(run.report)
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

/// How long a stopping connector still waits for a cluster call in progress.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How many times a re-read that brought nothing is tried again when the record is there and fits.
const STALL_RETRIES: u32 = 3;

/// What a raw read of one offset found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// The record, of this many bytes.
    Found(u64),
    /// A later record: this one is larger than even the probe's fetch.
    Larger,
    /// Nothing within the read timeout.
    Nothing,
}

/// What a read from a stream gave.
enum Read {
    Record(Record),
    Ended,
    /// Nothing came within the read timeout.
    Waited(Duration),
}

/// One run of the loop: its settings, its channels and what it knows about each partition.
struct Run<'a, B> {
    settings: &'a ConsumeSettings,
    items: &'a async_channel::Sender<Item>,
    outputs: &'a B,
    stop: &'a AtomicBool,
    report: ConsumeReport,
    /// The next offset to deliver per partition: the one after the last record delivered.
    next: HashMap<u32, i64>,
}

impl<B: Barrier> Run<'_, B> {
    /// Awaits a cluster call; once stopping, for at most [`STOP_GRACE`] more.
    async fn cluster<T>(&self, future: impl Future<Output = T>) -> Result<T, ConsumeError> {
        wait_for(future, self.stop, None, STOP_GRACE).await.map_err(|_| self.unresponsive())
    }

    /// Awaits the next record of a stream, for at most the read timeout (and [`STOP_GRACE`] once stopping).
    async fn read(&self, next: impl Future<Output = Option<Result<Record, ErrorCode>>>) -> Result<Read, ConsumeError> {
        match wait_for(next, self.stop, Some(self.settings.read_timeout), STOP_GRACE).await {
            Ok(Some(Ok(record))) => Ok(Read::Record(record)),
            Ok(Some(Err(code))) => Err(self.stream_error(code)),
            Ok(None) => Ok(Read::Ended),
            Err(Waited::Timeout) => Ok(Read::Waited(self.settings.read_timeout)),
            Err(Waited::Stopping) => Err(self.unresponsive()),
        }
    }

    /// Hands one record to the pipeline.
    async fn forward(&mut self, partition: u32, offset: i64, value: &[u8]) -> Result<(), ConsumeError> {
        let position = Some(SourcePosition { partition, offset });
        let item = Item { name: self.settings.name(partition, offset), value: value.to_vec(), position };
        self.report.consumed += 1;
        events::record_consumed();
        let sent = wait_for(self.items.send(item), self.stop, None, self.settings.stop_timeout).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(ConsumeError::PipelineStopped),
            Err(_) => return Err(self.stop_timeout()),
        }
        self.next.insert(partition, offset + 1);
        Ok(())
    }

    /// Delivers `range` of `partition` with fresh streams that start exactly at the first missing offset, so
    /// the first batch of each response is whole. An offset that a re-read skips or cannot bring is probed
    /// (read raw with a large fetch): a record larger than `max-bytes` becomes a `too_large` dead letter by
    /// reference; anything else is an error naming the offset.
    async fn fill(
        &mut self,
        source: &mut impl Source,
        partition: u32,
        range: std::ops::Range<i64>,
        end: i64,
    ) -> Result<(), ConsumeError> {
        let mut next = range.start;
        let mut stalls = 0;
        while next < range.end {
            let mut stream = self.cluster(source.open(StreamStart::At { partition, offset: next })).await??;
            let first = next;
            let mut beyond = None;
            loop {
                match self.read(stream.next()).await? {
                    Read::Record(record) if record.offset() < next => continue,
                    Read::Record(record) if record.offset() > next => {
                        beyond = Some(record.offset());
                        break;
                    }
                    Read::Record(record) => {
                        self.forward(partition, next, record.value()).await?;
                        next += 1;
                        if next >= range.end {
                            break;
                        }
                    }
                    Read::Ended | Read::Waited(_) => break,
                }
            }
            if next > first {
                stalls = 0;
                continue;
            }
            let Some(beyond) = beyond else {
                // Nothing came at all: a record whose fetch cannot fit looks like this, and so does an SPU too
                // busy to answer within read-timeout. A record that fits is read again before it is given up.
                let probe = self.probe(source, partition, next).await?;
                let fits = matches!(probe, Probe::Found(size) if size <= self.settings.max_bytes.as_u64());
                if (fits || probe == Probe::Nothing) && stalls < STALL_RETRIES {
                    stalls += 1;
                    tracing::warn!(
                        partition,
                        offset = next,
                        attempt = stalls,
                        "nothing came within read-timeout though the record is there: reading it again"
                    );
                    continue;
                }
                self.too_large(partition, next, end.max(range.end), probe)?;
                next += 1;
                stalls = 0;
                continue;
            };
            // The stream skipped `next`: its record batch does not fit a fetch.
            let skipped = beyond.min(range.end);
            for offset in next..skipped {
                let probe = self.probe(source, partition, offset).await?;
                self.too_large(partition, offset, end.max(range.end), probe)?;
            }
            next = skipped;
            stalls = 0;
        }
        Ok(())
    }

    /// Reads the record at `offset` raw, with a fetch large enough for any record the cluster takes.
    async fn probe(&mut self, source: &mut impl Source, partition: u32, offset: i64) -> Result<Probe, ConsumeError> {
        let mut stream = self.cluster(source.open(StreamStart::Probe { partition, offset })).await??;
        Ok(match self.read(stream.next()).await? {
            Read::Record(record) if record.offset() == offset => Probe::Found(record.value().len() as u64),
            // The probe's larger fetch skipped it too.
            Read::Record(_) => Probe::Larger,
            Read::Ended | Read::Waited(_) => Probe::Nothing,
        })
    }

    /// Sends the record at `offset`, which no fetch could bring, to the dead-letter topic by reference; an
    /// error naming the offset when even the probe found nothing there.
    fn too_large(&mut self, partition: u32, offset: i64, end: i64, probe: Probe) -> Result<(), ConsumeError> {
        let settings = self.settings;
        let max = settings.max_bytes;
        let (detail, size) = match probe {
            Probe::Nothing => {
                return Err(ConsumeError::Unreadable {
                    topic: settings.topic.clone(),
                    partition,
                    offset,
                    end,
                    detail: format!(
                        "the stream stopped there and the record itself cannot be fetched either (a SmartModule \
                         or SPU failure, or a record larger than {}; meta.consumer.max-bytes is {max})",
                        ByteSize::b(settings.probe_max_bytes())
                    ),
                })
            }
            Probe::Found(size) if size > max.as_u64() => (
                format!(
                    "the record is {} ({size} bytes), larger than meta.consumer.max-bytes ({max})",
                    ByteSize::b(size)
                ),
                Some(size),
            ),
            Probe::Found(size) => (
                format!(
                    "the record ({size} bytes) fits meta.consumer.max-bytes ({max}) but its record batch, or the \
                     SmartModule's output for it, does not"
                ),
                Some(size),
            ),
            Probe::Larger => (format!("the record is larger than {}", ByteSize::b(settings.probe_max_bytes())), None),
        };
        let name = settings.name(partition, offset);
        tracing::warn!(record = %name, %detail, "a record does not fit meta.consumer.max-bytes: dead letter by reference");
        let rejected = RejectedImage::by_reference(RejectReason::TooLarge, detail, Stage::Ingest, name.clone(), size);
        fvision_pipeline::metrics::image_rejected(&rejected);
        self.report.consumed += 1;
        self.report.too_large += 1;
        events::record_consumed();
        self.outputs.dead_letter(&name, SourcePosition { partition, offset }, rejected)?;
        self.next.insert(partition, offset + 1);
        Ok(())
    }

    /// The barrier: every record read has been delivered (within `stop-timeout` once stopping) and confirmed;
    /// then the offset is committed. A stopping connector gives up on the cluster after [`STOP_GRACE`]
    /// without committing (the next start replays).
    async fn commit(&self, stream: &mut BoxedStream) -> Result<(), ConsumeError> {
        let consumed = self.report.consumed;
        let delivered = async {
            while self.outputs.delivered() < consumed {
                if self.items.is_closed() {
                    return Err(ConsumeError::PipelineStopped);
                }
                sleep(Duration::from_millis(2)).await;
            }
            Ok(())
        };
        wait_for(delivered, self.stop, None, self.settings.stop_timeout).await.map_err(|_| self.stop_timeout())??;
        let settings = self.settings;
        let confirmed = async {
            self.outputs.acknowledge().await?;
            fvision_connector_common::source_output::crash_before_commit_if_asked("the outputs");
            let failed = |e: ErrorCode| ConsumeError::Commit {
                consumer_id: settings.consumer_id.clone(),
                detail: e.to_string(),
            };
            stream.offset_commit().await.map_err(failed)?;
            stream.offset_flush().await.map_err(failed)
        };
        self.cluster(confirmed).await??;
        events::offsets_committed();
        tracing::debug!(consumed, "committed: every record read so far was delivered and confirmed");
        Ok(())
    }

    fn unresponsive(&self) -> ConsumeError {
        ConsumeError::Unresponsive { topic: self.settings.topic.clone(), waited: STOP_GRACE }
    }

    fn stop_timeout(&self) -> ConsumeError {
        ConsumeError::StopTimeout {
            undelivered: self.report.consumed.saturating_sub(self.outputs.delivered()),
            waited: self.settings.stop_timeout,
        }
    }

    fn stream_error(&self, code: ErrorCode) -> ConsumeError {
        ConsumeError::Stream { topic: self.settings.topic.clone(), detail: code.to_string() }
    }
}

/// Why [`wait_for`] gave up.
enum Waited {
    /// The timeout passed.
    Timeout,
    /// Stopping, and the grace passed.
    Stopping,
}

/// Awaits `future` for at most `timeout` (if any), and once `stop` is set for at most `grace` more. A fetch in
/// progress when the stop comes is still awaited, so its record is delivered and committed like the others
/// (it holds the stream's lock, so no commit could run before it).
async fn wait_for<T>(
    future: impl Future<Output = T>,
    stop: &AtomicBool,
    timeout: Option<Duration>,
    grace: Duration,
) -> Result<T, Waited> {
    let mut future = std::pin::pin!(future);
    let started = Instant::now();
    let mut stopping_since: Option<Instant> = None;
    loop {
        match select(future.as_mut(), Box::pin(sleep(Duration::from_millis(20)))).await {
            Either::Left((output, _)) => return Ok(output),
            Either::Right(_) => {
                if stop.load(Ordering::Relaxed) && stopping_since.get_or_insert_with(Instant::now).elapsed() >= grace {
                    return Err(Waited::Stopping);
                }
                if timeout.is_some_and(|t| started.elapsed() >= t) {
                    return Err(Waited::Timeout);
                }
            }
        }
    }
}

/// The Fluvio cluster as a [`Source`]: the connector's consumer stream, re-reads, probes, and partition
/// positions from the SC's partition status (end and first offsets) and the SPU's consumer offsets.
pub struct FluvioSource<'a> {
    /// The client.
    pub fluvio: &'a Fluvio,
    /// The settings.
    pub settings: &'a ConsumeSettings,
    /// The partitions read.
    pub partitions: Vec<u32>,
    /// The SPU-side SmartModule, if validation runs there.
    pub smartmodule: Option<SmartModuleInvocation>,
    admin: Option<FluvioAdmin>,
}

impl<'a> FluvioSource<'a> {
    /// A source for `partitions` of the settings' topic.
    pub fn new(
        fluvio: &'a Fluvio,
        settings: &'a ConsumeSettings,
        partitions: Vec<u32>,
        smartmodule: Option<SmartModuleInvocation>,
    ) -> Self {
        Self { fluvio, settings, partitions, smartmodule, admin: None }
    }

    fn failed<E: Into<anyhow::Error>>(&self, action: &str) -> impl Fn(E) -> ConsumeError + '_ {
        let action = action.to_string();
        move |e| {
            let e: anyhow::Error = e.into();
            ConsumeError::Stream { topic: self.settings.topic.clone(), detail: format!("{action}: {e:#}") }
        }
    }
}

impl Source for FluvioSource<'_> {
    async fn open(&mut self, start: StreamStart) -> Result<BoxedStream, ConsumeError> {
        let settings = self.settings;
        let config = match start {
            StreamStart::Committed => settings.consumer_config(&self.partitions, self.smartmodule.clone()),
            StreamStart::At { partition, offset } => {
                settings.reread_config(partition, offset, self.smartmodule.clone())
            }
            StreamStart::Probe { partition, offset } => settings.probe_config(partition, offset),
        };
        let config = config.map_err(self.failed("configuring a consumer"))?;
        let stream = self.fluvio.consumer_with_config(config).await.map_err(self.failed("opening a consumer"))?;
        Ok(Box::pin(stream))
    }

    async fn positions(&mut self, committed: bool) -> Result<BTreeMap<u32, Position>, ConsumeError> {
        if self.admin.is_none() {
            self.admin = Some(self.fluvio.admin().await);
        }
        let Some(admin) = &self.admin else { return Ok(BTreeMap::new()) };
        let topic = &self.settings.topic;
        let consumer_id = committed.then_some(self.settings.consumer_id.as_str());
        let query = OffsetsQuery { topic, partitions: None, consumer_id };
        let listed = partition_offsets(self.fluvio, admin, query)
            .await
            .map_err(self.failed("reading the partitions' offsets"))?;
        let mut positions = BTreeMap::new();
        for &partition in &self.partitions {
            let Some(found) = listed.get(&partition) else {
                return Err(ConsumeError::PartitionGone { topic: topic.clone(), partition });
            };
            positions.insert(partition, Position { start: found.start, end: found.end, committed: found.committed });
        }
        Ok(positions)
    }
}

pub use fvision_connector_common::source_output::CRASH_BEFORE_COMMIT;

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

    // The consume loop against fake streams: a scripted partition log that behaves like the SPU and the 0.50
    // client (records larger than max-bytes skipped, a stream that waits for the records it skipped, silent
    // ends, SmartModule errors), and outputs that check every commit against what was delivered.

    use std::collections::VecDeque;
    use std::sync::atomic::AtomicU64;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use fluvio::consumer::ConsumerBoxFuture;
    use fluvio::dataplane::record::{Batch, Record as DataRecord};

    /// One stored record.
    #[derive(Debug, Clone)]
    enum Entry {
        /// A record that fits, with its value.
        Fits(&'static str),
        /// A record of this many bytes (more than the fake max-bytes).
        Big(usize),
        /// The SmartModule fails on it (the SPU reports an error).
        Trap,
        /// Nothing comes back for it, raw or not (a lost SPU).
        Lost,
        /// The main stream ends before it and re-reads bring nothing `Log::slow_rereads` times (a busy SPU);
        /// a probe reads it.
        Slow(&'static str),
    }

    const MAX_BYTES: usize = 1024;

    #[derive(Default)]
    struct Log {
        partitions: Vec<Vec<Entry>>,
        committed: HashMap<u32, i64>,
        /// The main stream skips these offsets once, as the 0.50 client does at a cut fetch.
        skip_once: Vec<(u32, i64)>,
        /// The main stream ends silently before this offset once.
        end_once: Option<(u32, i64)>,
        opened: Vec<StreamStart>,
        /// Set `stop` when a re-read opens.
        stop_on_reread: Option<Arc<AtomicBool>>,
        /// A commit that covered an offset not delivered (partition, committed offset, missing offset).
        violations: Vec<(u32, i64, i64)>,
        commits: Vec<HashMap<u32, i64>>,
        /// Re-reads of a `Slow` entry that still bring nothing.
        slow_rereads: u32,
    }

    /// What the outputs got: records through the pipeline and dead letters by reference.
    #[derive(Default)]
    struct FakeOutputs {
        names: Mutex<Vec<String>>,
        dead: Mutex<Vec<RejectedImage>>,
        delivered: AtomicU64,
    }

    impl FakeOutputs {
        fn has(&self, name: &str) -> bool {
            self.names.lock().unwrap().iter().any(|n| n == name)
                || self.dead.lock().unwrap().iter().any(|d| d.record.as_deref() == Some(name))
        }
    }

    impl Barrier for Arc<FakeOutputs> {
        fn delivered(&self) -> u64 {
            self.delivered.load(Ordering::Acquire)
        }
        async fn acknowledge(&self) -> Result<(), DeliveryError> {
            Ok(())
        }
        fn dead_letter(&self, _name: &str, _at: SourcePosition, rejected: RejectedImage) -> Result<(), DeliveryError> {
            self.dead.lock().unwrap().push(rejected);
            self.delivered.fetch_add(1, Ordering::AcqRel);
            Ok(())
        }
    }

    enum Step {
        Yield(Record),
        Fail(ErrorCode),
        /// Waits for records that never come (the client counts the records it expects).
        Stall,
    }

    struct FakeStream {
        steps: VecDeque<Step>,
        seen: HashMap<u32, i64>,
        log: Arc<Mutex<Log>>,
        outputs: Arc<FakeOutputs>,
    }

    impl futures_util::Stream for FakeStream {
        type Item = Result<Record, ErrorCode>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            match self.steps.pop_front() {
                None => Poll::Ready(None),
                Some(Step::Stall) => {
                    self.steps.push_front(Step::Stall);
                    Poll::Pending // the loop's timer polls again
                }
                Some(Step::Fail(code)) => Poll::Ready(Some(Err(code))),
                Some(Step::Yield(record)) => {
                    self.seen.insert(record.partition(), record.offset());
                    Poll::Ready(Some(Ok(record)))
                }
            }
        }
    }

    impl ConsumerStream for FakeStream {
        fn offset_commit(&mut self) -> ConsumerBoxFuture<'_> {
            let mut log = self.log.lock().unwrap();
            for (&partition, &offset) in &self.seen {
                let first = log.commits.last().and_then(|c| c.get(&partition)).map_or(0, |c| c + 1);
                for missing in (first..=offset).filter(|&o| !self.outputs.has(&format!("t/{partition}@{o}"))) {
                    log.violations.push((partition, offset, missing));
                }
                log.committed.insert(partition, offset);
            }
            let committed = log.committed.clone();
            log.commits.push(committed);
            Box::pin(async { Ok(()) })
        }
        fn offset_flush(&mut self) -> ConsumerBoxFuture<'_> {
            Box::pin(async { Ok(()) })
        }
    }

    fn record(partition: u32, offset: i64, value: Vec<u8>) -> Record {
        let mut batch = Batch::default();
        batch.add_record(DataRecord::new(value));
        batch.set_base_offset(offset);
        batch.into_consumer_records_iter(partition).next().unwrap()
    }

    struct FakeSource {
        log: Arc<Mutex<Log>>,
        outputs: Arc<FakeOutputs>,
    }

    impl FakeSource {
        /// The steps of a stream over `partition` from `from`, as the SPU (with the SmartModule) sends them.
        fn steps(log: &mut Log, partition: u32, from: i64, main: bool) -> Vec<Step> {
            let mut steps = Vec::new();
            let mut skipped = false;
            let entries = log.partitions[partition as usize].clone();
            for (offset, entry) in entries.iter().enumerate().skip(from.max(0) as usize) {
                let offset = offset as i64;
                if main && log.end_once == Some((partition, offset)) {
                    log.end_once = None;
                    return steps;
                }
                if main && log.skip_once.contains(&(partition, offset)) {
                    log.skip_once.retain(|&s| s != (partition, offset));
                    continue;
                }
                match entry {
                    Entry::Fits(value) => steps.push(Step::Yield(record(partition, offset, value.as_bytes().to_vec()))),
                    Entry::Big(_) => skipped = true,
                    Entry::Trap => {
                        steps.push(Step::Fail(ErrorCode::Other("SmartModule trapped".into())));
                        return steps;
                    }
                    Entry::Lost => return steps,
                    Entry::Slow(_) if main => return steps,
                    Entry::Slow(_) if log.slow_rereads > 0 => {
                        log.slow_rereads -= 1;
                        steps.push(Step::Stall);
                        return steps;
                    }
                    Entry::Slow(value) => steps.push(Step::Yield(record(partition, offset, value.as_bytes().to_vec()))),
                }
            }
            if skipped {
                steps.push(Step::Stall);
            }
            steps
        }
    }

    impl Source for FakeSource {
        async fn open(&mut self, start: StreamStart) -> Result<BoxedStream, ConsumeError> {
            let mut log = self.log.lock().unwrap();
            log.opened.push(start);
            let steps = match start {
                StreamStart::Committed => {
                    let mut steps = Vec::new();
                    for partition in 0..log.partitions.len() as u32 {
                        let from = log.committed.get(&partition).map_or(0, |c| c + 1);
                        steps.extend(Self::steps(&mut log, partition, from, true));
                    }
                    steps
                }
                StreamStart::At { partition, offset } => {
                    if let Some(stop) = &log.stop_on_reread {
                        stop.store(true, Ordering::Relaxed);
                    }
                    Self::steps(&mut log, partition, offset, false)
                }
                StreamStart::Probe { partition, offset } => {
                    match &log.partitions[partition as usize][offset as usize] {
                        Entry::Fits(value) | Entry::Slow(value) => {
                            vec![Step::Yield(record(partition, offset, value.as_bytes().to_vec()))]
                        }
                        Entry::Big(size) => vec![Step::Yield(record(partition, offset, vec![b'x'; *size]))],
                        Entry::Trap => vec![Step::Yield(record(partition, offset, b"trap".to_vec()))],
                        Entry::Lost => vec![],
                    }
                }
            };
            let stream = FakeStream {
                steps: steps.into(),
                seen: HashMap::new(),
                log: Arc::clone(&self.log),
                outputs: Arc::clone(&self.outputs),
            };
            Ok(Box::pin(stream))
        }

        async fn positions(&mut self, committed: bool) -> Result<BTreeMap<u32, Position>, ConsumeError> {
            let log = self.log.lock().unwrap();
            Ok((0..log.partitions.len() as u32)
                .map(|p| {
                    let committed = log.committed.get(&p).copied().filter(|_| committed);
                    (p, Position { start: 0, end: log.partitions[p as usize].len() as i64, committed })
                })
                .collect())
        }
    }

    fn fake_settings() -> ConsumeSettings {
        let mut settings =
            ConsumeSettings::from_meta(&meta("  {version: 0.1.0, name: s, type: t, topic: {meta: {name: t}}}"));
        settings.max_bytes = ByteSize::b(MAX_BYTES as u64);
        settings.read_timeout = Duration::from_millis(200);
        settings.commit_interval = Duration::ZERO; // a barrier after every record: commit order is checked each time
        settings.drain = true;
        settings
    }

    /// Runs the loop over `log` with a pipeline that delivers every item; returns the result, the log and the
    /// outputs.
    fn run(
        log: Log,
        settings: &ConsumeSettings,
        stop: Arc<AtomicBool>,
    ) -> (Result<ConsumeReport, ConsumeError>, Log, Arc<FakeOutputs>) {
        run_with(log, settings, stop, true)
    }

    /// [`run`], with a pipeline that delivers nothing unless `deliver`.
    fn run_with(
        log: Log,
        settings: &ConsumeSettings,
        stop: Arc<AtomicBool>,
        deliver: bool,
    ) -> (Result<ConsumeReport, ConsumeError>, Log, Arc<FakeOutputs>) {
        let log = Arc::new(Mutex::new(log));
        let outputs = Arc::new(FakeOutputs::default());
        let (tx, rx) = async_channel::bounded::<Item>(4);
        let pipeline = {
            let outputs = Arc::clone(&outputs);
            std::thread::spawn(move || {
                while let Ok(item) = rx.recv_blocking() {
                    if !deliver {
                        continue;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    outputs.names.lock().unwrap().push(item.name);
                    outputs.delivered.fetch_add(1, Ordering::AcqRel);
                }
            })
        };
        let mut source = FakeSource { log: Arc::clone(&log), outputs: Arc::clone(&outputs) };
        let result = fluvio_future::task::run_block_on(consume(&mut source, tx, &outputs, settings, &stop));
        pipeline.join().unwrap();
        let log = std::mem::take(&mut *log.lock().unwrap());
        (result, log, outputs)
    }

    fn fits(n: usize) -> Vec<Entry> {
        const VALUES: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
        VALUES.iter().take(n).map(|v| Entry::Fits(v)).collect()
    }

    fn delivered(outputs: &FakeOutputs) -> Vec<String> {
        outputs.names.lock().unwrap().clone()
    }

    #[test]
    fn a_gap_is_reread_before_the_record_after_it_and_commits_follow_delivery() {
        let log = Log { partitions: vec![fits(6)], skip_once: vec![(0, 2), (0, 3)], ..Log::default() };
        let (result, log, outputs) = run(log, &fake_settings(), Arc::default());
        let report = result.unwrap();
        assert_eq!(delivered(&outputs), ["t/0@0", "t/0@1", "t/0@2", "t/0@3", "t/0@4", "t/0@5"], "in order, once each");
        assert!(log.opened.contains(&StreamStart::At { partition: 0, offset: 2 }), "{:?}", log.opened);
        assert_eq!(log.violations, vec![], "no commit covered an undelivered record");
        assert_eq!(log.commits.len(), 4, "a barrier after every record the stream yielded: {:?}", log.commits);
        assert_eq!(log.committed.get(&0), Some(&5));
        assert_eq!(report.consumed, 6);
    }

    #[test]
    fn an_error_mid_stream_stops_without_committing_past_it() {
        let mut entries = fits(2);
        entries.extend([Entry::Trap, Entry::Fits("d")]);
        let (result, log, outputs) =
            run(Log { partitions: vec![entries], ..Log::default() }, &fake_settings(), Arc::default());
        let error = result.unwrap_err();
        assert!(
            matches!(&error, ConsumeError::Stream { detail, .. } if detail.contains("SmartModule trapped")),
            "{error}"
        );
        assert_eq!(delivered(&outputs), ["t/0@0", "t/0@1"]);
        assert!(log.committed.get(&0).is_none_or(|&c| c < 2), "committed {:?}", log.committed);
        assert_eq!(log.violations, vec![]);
    }

    #[test]
    fn a_record_larger_than_max_bytes_before_the_first_record_is_a_dead_letter_by_reference() {
        let entries = vec![Entry::Big(4 * MAX_BYTES), Entry::Fits("image")];
        let (result, log, outputs) =
            run(Log { partitions: vec![entries], ..Log::default() }, &fake_settings(), Arc::default());
        let report = result.unwrap();
        let dead = outputs.dead.lock().unwrap().clone();
        assert_eq!(dead.len(), 1, "{dead:?}");
        let (reason, stage) = (dead[0].reason, dead[0].stage);
        assert_eq!((reason, stage), (RejectReason::TooLarge, Stage::Ingest));
        assert_eq!(dead[0].record.as_deref(), Some("t/0@0"));
        assert_eq!(dead[0].payload_size, Some(4 * MAX_BYTES as u64));
        assert!(dead[0].payload_truncated && dead[0].payload.to_bytes().unwrap().is_empty());
        assert!(dead[0].detail.contains("max-bytes"), "{}", dead[0].detail);
        assert_eq!(delivered(&outputs), ["t/0@1"]);
        assert_eq!(log.committed.get(&0), Some(&1));
        assert_eq!(log.violations, vec![]);
        assert_eq!((report.consumed, report.too_large), (2, 1));
    }

    #[test]
    fn a_record_that_fits_is_read_again_when_a_busy_spu_brings_nothing_for_a_while() {
        let entries = vec![Entry::Fits("a"), Entry::Slow("late"), Entry::Fits("b")];
        let log = Log { partitions: vec![entries], slow_rereads: STALL_RETRIES, ..Log::default() };
        let (result, log, outputs) = run(log, &fake_settings(), Arc::default());
        result.unwrap();
        assert_eq!(outputs.dead.lock().unwrap().len(), 0, "a record that fits is never a dead letter for a slow read");
        assert_eq!(delivered(&outputs), ["t/0@0", "t/0@1", "t/0@2"]);
        assert_eq!(log.violations, vec![]);
    }

    #[test]
    fn a_record_that_fits_but_never_comes_is_a_dead_letter_after_the_retries() {
        let entries = vec![Entry::Fits("a"), Entry::Slow("never"), Entry::Fits("b")];
        let log = Log { partitions: vec![entries], slow_rereads: u32::MAX, ..Log::default() };
        let (result, log, outputs) = run(log, &fake_settings(), Arc::default());
        result.unwrap();
        let dead = outputs.dead.lock().unwrap().clone();
        assert_eq!(dead.iter().map(|d| d.record.clone().unwrap()).collect::<Vec<_>>(), ["t/0@1"]);
        assert!(dead[0].detail.contains("its record batch"), "{}", dead[0].detail);
        let rereads = log.opened.iter().filter(|s| **s == StreamStart::At { partition: 0, offset: 1 }).count();
        assert_eq!(rereads as u32, STALL_RETRIES + 1, "{:?}", log.opened);
        assert_eq!(delivered(&outputs), ["t/0@0", "t/0@2"]);
        assert_eq!(log.violations, vec![]);
    }

    #[test]
    fn a_record_larger_than_max_bytes_at_the_end_is_found_when_the_stream_waits() {
        let mut entries = fits(2);
        entries.push(Entry::Big(2 * MAX_BYTES));
        let (result, log, outputs) =
            run(Log { partitions: vec![entries], ..Log::default() }, &fake_settings(), Arc::default());
        result.unwrap();
        let dead = outputs.dead.lock().unwrap().clone();
        assert_eq!(dead.iter().map(|d| d.record.clone().unwrap()).collect::<Vec<_>>(), ["t/0@2"]);
        assert_eq!(delivered(&outputs), ["t/0@0", "t/0@1"]);
        assert_eq!(log.violations, vec![]);
        assert_eq!(log.committed.get(&0), Some(&1), "the commit stays before the record it could not read");
    }

    #[test]
    fn an_ended_stream_behind_the_end_offset_is_reread_before_the_drain_ends() {
        let log = Log { partitions: vec![fits(6), fits(3)], end_once: Some((0, 3)), ..Log::default() };
        let (result, log, outputs) = run(log, &fake_settings(), Arc::default());
        result.unwrap();
        let mut names = delivered(&outputs);
        names.sort();
        assert_eq!(names, ["t/0@0", "t/0@1", "t/0@2", "t/0@3", "t/0@4", "t/0@5", "t/1@0", "t/1@1", "t/1@2"]);
        assert!(log.opened.contains(&StreamStart::At { partition: 0, offset: 3 }), "{:?}", log.opened);
        assert_eq!((log.committed.get(&0), log.committed.get(&1)), (Some(&5), Some(&2)));
        assert_eq!(log.violations, vec![]);
    }

    #[test]
    fn an_offset_nothing_can_read_stops_the_drain_with_an_error_naming_it() {
        let mut entries = fits(2);
        entries.extend([Entry::Lost, Entry::Fits("d")]);
        let (result, log, outputs) =
            run(Log { partitions: vec![entries], ..Log::default() }, &fake_settings(), Arc::default());
        let error = result.unwrap_err();
        assert!(matches!(error, ConsumeError::Unreadable { partition: 0, offset: 2, end: 4, .. }), "{error}");
        assert!(error.to_string().contains("max-bytes is 1.0 KiB"), "{error}");
        assert_eq!(delivered(&outputs), ["t/0@0", "t/0@1"]);
        assert_eq!(log.committed.get(&0), Some(&1));
        assert_eq!(log.violations, vec![]);
    }

    #[test]
    fn a_stop_during_a_reread_finishes_it_and_commits() {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Log {
            partitions: vec![fits(5)],
            skip_once: vec![(0, 1), (0, 2)],
            stop_on_reread: Some(Arc::clone(&stop)),
            ..Log::default()
        };
        let mut settings = fake_settings();
        settings.drain = false;
        let (result, log, outputs) = run(log, &settings, stop);
        result.unwrap();
        let names = delivered(&outputs);
        assert_eq!(&names[..4], ["t/0@0", "t/0@1", "t/0@2", "t/0@3"], "the re-read delivered the gap first");
        assert_eq!(log.violations, vec![]);
        assert!(log.committed.get(&0).is_some_and(|&c| c >= 3), "{:?}", log.committed);
    }

    #[test]
    fn a_stop_with_records_not_delivered_within_the_stop_timeout_is_an_error_without_commit() {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Log {
            partitions: vec![fits(4)],
            skip_once: vec![(0, 1)],
            stop_on_reread: Some(Arc::clone(&stop)),
            ..Log::default()
        };
        let mut settings = fake_settings();
        settings.stop_timeout = Duration::from_millis(300);
        settings.commit_interval = Duration::from_secs(3600); // the first barrier comes with the stop
        let (result, log, _) = run_with(log, &settings, stop, false);
        let error = result.unwrap_err();
        assert!(matches!(error, ConsumeError::StopTimeout { undelivered: 3, .. }), "{error}");
        assert!(error.to_string().contains("inference.stop-timeout (300ms)"), "{error}");
        assert_eq!(log.commits, Vec::<HashMap<u32, i64>>::new(), "nothing delivered, nothing committed");
    }
}
