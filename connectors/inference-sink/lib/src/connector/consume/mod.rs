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
//!
//! One file per concern: [`settings`] (what `meta` asks for), this loop and its gap tracking (the next offset
//! expected per partition), `reread` (gaps and probes), `wait` (timeouts and the stop), [`error`], and
//! `cluster` (the Fluvio cluster as the loop's [`Source`]).

mod cluster;
mod error;
mod reread;
mod settings;
mod wait;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use fluvio::consumer::{ConsumerStream, Record};
use fluvio::dataplane::link::ErrorCode;
use fluvio_future::timer::sleep;
use futures_util::future::select;
use futures_util::StreamExt;
use fvision_connector_common::Stop;
use fvision_records::RejectedImage;

use fvision_outputs::DeliveryError;
use fvision_pipeline::{Item, SourcePosition};

use super::metrics as events;

pub use self::cluster::FluvioSource;
pub use self::error::{ClientError, ConsumeError};
pub use self::settings::{
    ConsumeSettings, DEFAULT_COMMIT_INTERVAL, DEFAULT_MAX_BYTES, DEFAULT_READ_TIMEOUT, DEFAULT_STOP_TIMEOUT,
};
pub use self::wait::STOP_GRACE;
use self::wait::{wait_for, Waited};
pub use fvision_connector_common::source_output::CRASH_BEFORE_COMMIT;

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
    /// Resolves once [`Barrier::delivered`] is at least `count` (a signal, not a poll).
    fn delivered_reach(&self, count: u64) -> impl Future<Output = ()>;
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
    stop: &Stop,
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
    while !stop.is_requested() {
        let mut stream = run.cluster(source.open(StreamStart::Committed)).await??;
        run.report.streams += 1;
        // The stream yielded records since the last commit (some may have been delivered by a re-read).
        let mut uncommitted = false;
        let mut yielded = false;
        let mut progressed = false;
        while !stop.is_requested() {
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
        if stop.is_requested() {
            break;
        }
        // A stream also ends (or waits) when something blocks the partition: check where each one stands. An
        // idle connector checks at most every POSITIONS_POLL; a draining one always checks before it exits.
        let idle = !progressed && !yielded;
        if idle && !settings.drain && checked.elapsed() < POSITIONS_POLL {
            idle_wait(stop).await;
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
        if !progressed && !stop.is_requested() {
            idle_wait(stop).await;
        }
    }
    Ok(run.report)
}

/// Waits [`IDLE_POLL`] before asking an idle topic for records again; a stop ends the wait at once.
async fn idle_wait(stop: &Stop) {
    select(std::pin::pin!(sleep(IDLE_POLL)), std::pin::pin!(stop.requested())).await;
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
    stop: &'a Stop,
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

    /// The barrier: every record read has been delivered (within `stop-timeout` once stopping) and confirmed;
    /// then the offset is committed. A stopping connector gives up on the cluster after [`STOP_GRACE`]
    /// without committing (the next start replays).
    async fn commit(&self, stream: &mut BoxedStream) -> Result<(), ConsumeError> {
        let consumed = self.report.consumed;
        // Signalled by the outputs at every delivery, or by the pipeline dropping its end of the channel.
        let delivered = async {
            let reached = std::pin::pin!(self.outputs.delivered_reach(consumed));
            let pipeline_stopped = std::pin::pin!(self.items.closed());
            match select(reached, pipeline_stopped).await {
                futures_util::future::Either::Left(_) => Ok(()),
                // A last delivery may have come with the stop.
                futures_util::future::Either::Right(_) if self.outputs.delivered() >= consumed => Ok(()),
                futures_util::future::Either::Right(_) => Err(ConsumeError::PipelineStopped),
            }
        };
        wait_for(delivered, self.stop, None, self.settings.stop_timeout).await.map_err(|_| self.stop_timeout())??;
        let settings = self.settings;
        let confirmed = async {
            self.outputs.acknowledge().await?;
            fvision_connector_common::source_output::crash_before_commit_if_asked("the outputs");
            let failed = |source: ErrorCode| ConsumeError::Commit { consumer_id: settings.consumer_id.clone(), source };
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
        ConsumeError::Stream { topic: self.settings.topic.clone(), source: code }
    }
}

#[cfg(test)]
mod tests;
