//! Re-reads: the records a stream did not yield (a gap in a partition's offsets, or a stream that ended
//! before the partition's end) are read again with fresh streams from the first missing offset; a record no
//! read brings is probed raw and becomes a `too_large` dead letter by reference, or an error naming it.

use bytesize::ByteSize;
use futures_util::StreamExt;
use fvision_pipeline::SourcePosition;
use fvision_records::{RejectReason, RejectedImage, Stage};

use super::{events, Barrier, ConsumeError, Read, Run, Source, StreamStart};

/// How many times a re-read that brought nothing is tried again when the record is there and fits.
pub(super) const STALL_RETRIES: u32 = 3;

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

impl<B: Barrier> Run<'_, B> {
    /// Delivers `range` of `partition` with fresh streams that start exactly at the first missing offset, so
    /// the first batch of each response is whole. An offset that a re-read skips or cannot bring is probed
    /// (read raw with a large fetch): a record larger than `max-bytes` becomes a `too_large` dead letter by
    /// reference; anything else is an error naming the offset.
    pub(super) async fn fill(
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
}
