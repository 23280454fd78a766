//! Producer settings for Fluvio records that carry whole images, shared by the sources (which write
//! `images`) and the inference sink (which writes predictions and dead letters).

use std::time::Duration;

use bytesize::ByteSize;
use fluvio::{Compression, Isolation, TopicProducerConfig, TopicProducerConfigBuilder};

use crate::config::{Compression as CompressionSetting, ProducerConfig};

/// The largest record a consumer of these topics is set up to read (`meta.consumer.max-bytes` default of
/// the inference sink); producers accept requests at least this large.
pub const MAX_IMAGE_RECORD: ByteSize = ByteSize::mib(16);

/// The largest ImageEvent a source may write: below [`MAX_IMAGE_RECORD`] with room for the key and the record
/// framing, so the producer never refuses an event that passed the source's size check (a refused event
/// would stop the source on every restart: a poison record blocking its partition or subscription).
pub const MAX_EVENT_RECORD: ByteSize = ByteSize::mib(15);

/// How long the SPU may hold a produce request until every replica of the partition has the records.
/// Fluvio 0.50 commits (raises the high watermark) only once all replicas hold a record, so while one of
/// them is down, acknowledgements wait. Longer than the client's default (1.5 s), which would fail and
/// restart a connector every few seconds through a short outage; shorter than the client's 60 s socket
/// timeout, past which the client sends the request again (a possible duplicate write). Past this wait the send fails,
/// the connector restarts under its supervisor, and its replay guard skips what the leader already holds.
pub const REPLICATION_WAIT: Duration = Duration::from_secs(30);

/// Producer settings for records that carry whole images: the client's defaults refuse a record over
/// about 1 MiB, and a dead letter carries the original record, so requests fit the largest record a
/// consumer may read ([`MAX_IMAGE_RECORD`]) whatever the batch size.
///
/// Acknowledged means replicated ([`Isolation::ReadCommitted`]): a connector commits its input (Kafka
/// offsets, Pub/Sub acks, the sink's Fluvio offsets) only after the acknowledgement, and a record that only
/// the partition leader held would be lost when that leader fails over (docs/decisions.md). On a partition of
/// one replica the leader commits as it writes, so this costs nothing there.
pub fn image_producer_config(producer: &ProducerConfig) -> Result<TopicProducerConfig, ProducerConfigError> {
    let batch = producer.batch_size.unwrap_or(ByteSize::mib(8)).as_u64() as usize;
    let mut builder = TopicProducerConfigBuilder::default();
    builder
        .batch_size(batch)
        .max_request_size(batch.max(MAX_IMAGE_RECORD.as_u64() as usize))
        .isolation(Isolation::ReadCommitted)
        .timeout(REPLICATION_WAIT);
    if let Some(linger) = producer.linger {
        builder.linger(linger);
    }
    if let Some(compression) = producer.compression {
        builder.compression(match compression {
            CompressionSetting::None => Compression::None,
            CompressionSetting::Gzip => Compression::Gzip,
            CompressionSetting::Snappy => Compression::Snappy,
            CompressionSetting::Lz4 => Compression::Lz4,
            CompressionSetting::Zstd => Compression::Zstd,
        });
    }
    builder.build().map_err(|e| ProducerConfigError(Box::new(e)))
}

/// The client refused the producer settings.
#[derive(Debug, thiserror::Error)]
#[error("configuring the producers")]
pub struct ProducerConfigError(#[source] Box<dyn std::error::Error + Send + Sync>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_acknowledged_once_replicated_and_fit_the_largest_record() {
        let config = image_producer_config(&ProducerConfig::default()).unwrap();
        assert_eq!(config.isolation(), Isolation::ReadCommitted);
        assert_eq!(config.timeout(), REPLICATION_WAIT);
        assert!(config.max_request_size() >= MAX_IMAGE_RECORD.as_u64() as usize);
    }
}
