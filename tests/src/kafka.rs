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

/// A consumer of `topic` from its first message, in a group of its own.
pub fn reader(servers: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", crate::cluster::unique_name("fvt-readback"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap_or_else(|e| panic!("a Kafka client for {servers}: {e}"));
    consumer.subscribe(&[topic]).unwrap_or_else(|e| panic!("subscribing to {topic}: {e}"));
    consumer
}

/// The keys of every message on `topic`, read from the beginning until at least `at_least` arrived and a
/// quiet half second followed (so a duplicate would show), for at most 30 s.
pub fn message_keys(servers: &str, topic: &str, at_least: usize) -> Vec<String> {
    use rdkafka::message::Message;
    let consumer = reader(servers, topic);
    let mut keys = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(message) => {
                let message = message.unwrap_or_else(|e| panic!("reading {topic}: {e}"));
                keys.push(String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned());
            }
            None if keys.len() >= at_least => break,
            None => {}
        }
    }
    keys
}
