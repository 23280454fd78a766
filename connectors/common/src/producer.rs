//! Producer settings for Fluvio records that carry whole images, shared by the sources (which write
//! `images`) and the inference sink (which writes predictions and dead letters).

use bytesize::ByteSize;
use fluvio::{Compression, TopicProducerConfig, TopicProducerConfigBuilder};

use crate::config::{Compression as CompressionSetting, ProducerConfig};

/// The largest record a consumer of these topics is set up to read (`meta.consumer.max-bytes` default of
/// the inference sink); producers accept requests at least this large.
pub const MAX_IMAGE_RECORD: ByteSize = ByteSize::mib(16);

/// The largest ImageEvent a source may write: below [`MAX_IMAGE_RECORD`] with room for the key and the record
/// framing, so the producer never refuses an event that passed the source's size check (a refused event
/// would stop the source on every restart: a poison record blocking its partition or subscription).
pub const MAX_EVENT_RECORD: ByteSize = ByteSize::mib(15);

/// Producer settings for records that carry whole images: the client's defaults refuse a record over
/// about 1 MiB, and a dead letter carries the original record, so requests fit the largest record a
/// consumer may read ([`MAX_IMAGE_RECORD`]) whatever the batch size.
pub fn image_producer_config(producer: &ProducerConfig) -> anyhow::Result<TopicProducerConfig> {
    let batch = producer.batch_size.unwrap_or(ByteSize::mib(8)).as_u64() as usize;
    let mut builder = TopicProducerConfigBuilder::default();
    builder.batch_size(batch).max_request_size(batch.max(MAX_IMAGE_RECORD.as_u64() as usize));
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
    Ok(builder.build()?)
}
