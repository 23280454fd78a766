//! Why consuming stopped early.

use std::time::Duration;

use fluvio::dataplane::link::ErrorCode;
use fvision_outputs::DeliveryError;

/// An error of the Fluvio client, with its causes (the client returns `anyhow` errors).
pub type ClientError = Box<dyn std::error::Error + Send + Sync>;

/// Why consuming stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// The stream reported an error (a SmartModule failing on the SPU, an evicted offset, a lost SPU).
    #[error("consuming `{topic}`")]
    Stream {
        /// The topic.
        topic: String,
        /// The client's error.
        #[source]
        source: ErrorCode,
    },
    /// A call to the cluster failed (configuring or opening a consumer, reading the partitions' offsets).
    #[error("consuming `{topic}`: {action}")]
    Client {
        /// The topic.
        topic: String,
        /// What was being done.
        action: &'static str,
        /// The client's error, with its causes.
        #[source]
        source: ClientError,
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
    #[error("committing the offsets of consumer `{consumer_id}`")]
    Commit {
        /// The consumer id.
        consumer_id: String,
        /// The client's error.
        #[source]
        source: ErrorCode,
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
