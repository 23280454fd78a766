//! The connector's outputs behind one trait. Every destination of outcomes (the Fluvio topics, the console,
//! JSONL, and the external sinks: BigQuery, Kafka, GCS) implements [`Output`]; the connector hands each
//! outcome to every configured output and commits its consumer offset only after every output
//! acknowledged everything it was sent.
//!
//! The trait is shaped for outputs that batch, retry and acknowledge asynchronously: [`Output::send`]
//! only queues (blocking while the output's bounded buffer is full: that is back-pressure), and
//! [`Output::acknowledge`] resolves once what was queued is durable downstream. An output that cannot
//! store a single row (BigQuery refusing it, say) does not fail the batch: it returns that row as a
//! [`SinkRejection`], which the connector routes to the dead-letter topic before it commits.
//!
//! [`OutputSet`] holds a run's outputs and is what the connector and `fvision run` deliver to; the
//! implementations are one file or folder each: [`fluvio`] (the predictions, review and dead-letter
//! topics), [`console`], [`jsonl`], and the external sinks [`bigquery`], [`kafka`], [`gcs`], over one
//! [`toolkit`] they share (queue, retries, health), which imports no output.
#![deny(missing_docs)]

pub mod bigquery;
pub mod console;
pub mod fluvio;
pub mod gcs;
pub mod jsonl;
pub mod kafka;
pub mod metrics;
mod route;
mod set;
pub mod toolkit;

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::time::Instant;

use fvision_records::RejectedImage;

use fvision_pipeline::{Outcome, SourcePosition};

/// The YAML section the external sinks' own sections sit in (`inference.bigquery`, ...), as their config
/// errors name them.
pub const SECTION: &str = "inference";

pub use console::ConsoleOutput;
pub use fluvio::{FluvioOutput, TopicProducer};
pub use jsonl::{JsonlLine, JsonlOutput};
pub use route::{route, BelowThreshold, Destination, Routed};
pub use set::{DeliveryError, ExternalConfigs, LocalOutputs, OutputSet};

/// One outcome as every output receives it: the outcome itself, its routing (destination, key, JSON
/// value, computed once for all outputs) and its source position.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// What became of the input.
    pub outcome: &'a Outcome,
    /// Where the routing rules send it, with its key and JSON value.
    pub routed: &'a Routed,
    /// Where it was read from, when it came from a Fluvio topic.
    pub position: Option<SourcePosition>,
}

/// The records a previous run may already have delivered: per partition, from the committed offset
/// (the first offset this run reads) up to the partition's end offset when this run started. Outputs
/// that cannot rely on the destination's own de-duplication check this range before they write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Offsets per partition that may be replays.
    pub partitions: BTreeMap<u32, Range<i64>>,
}

impl ReplayWindow {
    /// Whether the record at `position` may have been delivered by a previous run.
    pub fn contains(&self, position: SourcePosition) -> bool {
        self.partitions.get(&position.partition).is_some_and(|range| range.contains(&position.offset))
    }
}

/// One outcome an output could not store (a row the destination refused), to be dead-lettered with
/// reason `sink_error` instead of failing the whole batch.
#[derive(Debug, Clone)]
pub struct SinkRejection {
    /// The record key of the dead letter (the image id, or the source position).
    pub key: String,
    /// Where the outcome was read from.
    pub position: Option<SourcePosition>,
    /// The rejection: reason `sink_error`, stage `sink`, the destination's message as detail, and the
    /// record the output tried to write as payload.
    pub rejected: RejectedImage,
}

/// What an acknowledgement resolves to: the outcomes that were refused one by one (everything else sent
/// before the call is durable).
pub type Acknowledged = Vec<SinkRejection>;

/// The future [`Output::acknowledge`] returns; runtime-agnostic, so an output may drive its I/O on its own
/// runtime (tokio for the Google clients, rdkafka's threads) and complete this from there.
pub type AckFuture<'a> = Pin<Box<dyn Future<Output = Result<Acknowledged, OutputError>> + Send + 'a>>;

/// Why an output failed as a whole: the connector stops without committing past what was acknowledged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The destination refused or did not confirm, after the output's own retries.
    #[error("{output}: {action}")]
    Failed {
        /// The output's name.
        output: String,
        /// What was being done.
        action: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The destination kept failing for longer than the output may retry (`max-retry-time`).
    #[error("{output}: failing for {failing_for:?}, longer than its retry limit; last error: {last_error}")]
    GaveUp {
        /// The output's name.
        output: String,
        /// Since when it has failed.
        failing_for: std::time::Duration,
        /// The last error seen.
        last_error: String,
    },
    /// An outcome could not be serialised for this output.
    #[error("{output}: serialising an outcome: {source}")]
    Serialize {
        /// The output's name.
        output: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

/// How an output is doing, for the summary line, `fvision status` and the status page.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputHealth {
    /// Writing normally.
    Healthy,
    /// Failing and retrying with backoff; sends block once its buffer is full.
    Retrying {
        /// When the current run of failures began.
        since: Instant,
        /// Attempts so far.
        attempts: u32,
        /// The last error.
        last_error: String,
    },
}

/// A destination of outcomes. Implementations live one per file in this folder.
pub trait Output: Send + Sync {
    /// The `sink` label of the output's metrics and its name in logs and errors.
    fn name(&self) -> &str;

    /// Called once before the first [`Output::send`], with the records a previous run may already have
    /// delivered; outputs without their own de-duplication use it to avoid writing them twice.
    fn prepare(&self, window: &ReplayWindow) -> Result<(), OutputError> {
        let _ = window;
        Ok(())
    }

    /// Queues one outcome. The output decides from the routing whether the outcome is for it (BigQuery
    /// takes predictions above the threshold by default, say). Blocks only while the output's bounded
    /// buffer is full; an error stops the connector without a commit.
    fn send(&self, delivery: &Delivery<'_>) -> Result<(), OutputError>;

    /// Resolves once everything queued before the call is durable downstream (or refused one by one, as
    /// returned). The connector commits offsets only after every output's acknowledgement; outputs that
    /// write per commit window (GCS objects) close the window here.
    fn acknowledge(&self) -> AckFuture<'_>;

    /// Whether the output is writing normally or retrying.
    fn health(&self) -> OutputHealth {
        OutputHealth::Healthy
    }

    /// Rows accepted by [`Output::send`] and not yet stored downstream (queued, batched, or awaiting
    /// their delivery report): what a sink that is down holds back. Bounded by the output's `queue`.
    fn backlog(&self) -> u64 {
        0
    }
}

/// One output's state, for the status page, `/metrics` and the summary line.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputReport {
    /// The output's name (the `sink` label).
    pub name: String,
    /// Writing normally or retrying.
    pub health: OutputHealth,
    /// Rows accepted and not yet stored ([`Output::backlog`]).
    pub backlog: u64,
}
