//! librdkafka's mock cluster (`rdkafka::mocking::MockCluster`) as the tests use it.
//!
//! The mock keeps at most 5 MiB per partition (`max_size` in librdkafka's `rdkafka_mock.c`, not
//! configurable): beyond that it deletes the oldest message sets, so records produced before a consumer
//! reads them can vanish. About 30 sample images fit in one partition; tests that preload more use more
//! partitions and check with [`assert_kept_all`] that nothing was deleted.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// Fails the test unless every partition of `topic` still starts at offset 0 and they hold `count` records
/// in all: the mock's retention deleted nothing.
pub fn assert_kept_all(servers: &str, topic: &str, count: usize) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .unwrap_or_else(|e| panic!("a Kafka client for {servers}: {e}"));
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
    let partitions = metadata.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
    let (mut deleted, mut held) = (0, 0);
    for partition in 0..partitions as i32 {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("watermarks of {topic}/{partition}: {e}"));
        deleted += low;
        held += high - low;
    }
    assert_eq!(
        (deleted, held),
        (0, count as i64),
        "the Kafka mock cluster deleted records of {topic} (it keeps 5 MiB per partition): use more partitions"
    );
}
