//! The connector's outputs: predictions, low-confidence reviews and dead letters to their Fluvio topics,
//! and optionally the console and a JSONL file. Sends are asynchronous; [`Outputs::acknowledge`] waits
//! until everything sent so far is confirmed, which is what the offset commit waits for.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use fluvio::{ProduceOutput, TopicProducerPool};
use fvision_records::RejectedImage;

use crate::config::BelowThreshold;
use crate::pipeline::Outcome;

/// Where one outcome goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The predictions topic.
    Predictions,
    /// The review topic (below the threshold, `below-threshold: review`).
    Review,
    /// The dead-letter topic.
    DeadLetter,
    /// Nowhere (below the threshold, `below-threshold: drop`); counted as delivered.
    Dropped,
}

impl Destination {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Predictions => "predictions",
            Self::Review => "review",
            Self::DeadLetter => "dead_letter",
            Self::Dropped => "dropped",
        }
    }
}

/// One outcome as a record: destination, key and JSON value.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    /// Where it goes.
    pub destination: Destination,
    /// The record key: the image id, or the record's position when the envelope had no id.
    pub key: String,
    /// The JSON value.
    pub value: Vec<u8>,
}

/// Turns an outcome into its record. Pure, so the routing rules are tested without a cluster.
pub fn route(outcome: &Outcome, below: BelowThreshold) -> Result<Routed, serde_json::Error> {
    Ok(match outcome {
        Outcome::Classified { name, prediction } => {
            let destination = match (prediction.above_threshold, below) {
                (true, _) | (false, BelowThreshold::Flag) => Destination::Predictions,
                (false, BelowThreshold::Review) => Destination::Review,
                (false, BelowThreshold::Drop) => Destination::Dropped,
            };
            let key = if prediction.image_id.is_empty() { name.clone() } else { prediction.image_id.clone() };
            Routed { destination, key, value: serde_json::to_vec(prediction)? }
        }
        Outcome::Rejected { name, rejected } => {
            let key = if rejected.event.id.is_empty() { name.clone() } else { rejected.event.id.clone() };
            // The validator's rejected-record shape (`status: "rejected"` + the rejection), without copying the
            // payload it carries.
            let record = DeadLetter { status: "rejected", rejected };
            Routed { destination: Destination::DeadLetter, key, value: serde_json::to_vec(&record)? }
        }
    })
}

/// A dead-letter record as `ValidationRecord::Rejected` serialises, borrowed.
#[derive(serde::Serialize)]
struct DeadLetter<'a> {
    status: &'static str,
    #[serde(flatten)]
    rejected: &'a RejectedImage,
}

/// An output refused a record or its confirmation failed: offsets must not be committed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Fluvio refused or did not confirm a record.
    #[error("producing to `{topic}`: {detail}")]
    Produce {
        /// The topic.
        topic: String,
        /// What the client said.
        detail: String,
    },
    /// The outcome could not be serialised.
    #[error("serialising an outcome: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The console or the JSONL file failed.
    #[error("writing {target}: {source}")]
    Write {
        /// Which output.
        target: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A topic and its producer.
pub struct TopicOutput {
    /// The topic name, for errors and logs.
    pub topic: String,
    /// The producer.
    pub producer: TopicProducerPool,
}

/// Every output of the connector.
pub struct Outputs {
    predictions: TopicOutput,
    dead_letters: TopicOutput,
    review: Option<TopicOutput>,
    below: BelowThreshold,
    console: bool,
    jsonl: Option<Mutex<BufWriter<File>>>,
    pending: Mutex<Vec<(String, ProduceOutput)>>,
    delivered: AtomicU64,
}

impl Outputs {
    /// The outputs; `review` is required when `below` is [`BelowThreshold::Review`].
    pub fn new(
        predictions: TopicOutput,
        dead_letters: TopicOutput,
        review: Option<TopicOutput>,
        below: BelowThreshold,
    ) -> Self {
        Self {
            predictions,
            dead_letters,
            review,
            below,
            console: false,
            jsonl: None,
            pending: Mutex::new(Vec::new()),
            delivered: AtomicU64::new(0),
        }
    }

    /// Also prints every prediction and rejection as a JSON line on stdout.
    pub fn with_console(mut self, console: bool) -> Self {
        self.console = console;
        self
    }

    /// Also appends every prediction and rejection to a JSONL file.
    pub fn with_jsonl(mut self, path: Option<&Path>) -> Result<Self, DeliveryError> {
        if let Some(path) = path {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| DeliveryError::Write { target: path.display().to_string(), source })?;
            self.jsonl = Some(Mutex::new(BufWriter::new(file)));
        }
        Ok(self)
    }

    /// Outcomes handed to an output (or dropped by rule) so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Acquire)
    }

    /// Sends one outcome where it belongs. Blocks only while the producer's queue is full.
    pub fn deliver(&self, outcome: &Outcome) -> Result<Destination, DeliveryError> {
        let routed = route(outcome, self.below)?;
        let output = match routed.destination {
            Destination::Predictions => Some(&self.predictions),
            Destination::DeadLetter => Some(&self.dead_letters),
            Destination::Review => self.review.as_ref().or(Some(&self.predictions)),
            Destination::Dropped => None,
        };
        if let Some(output) = output {
            self.write_local(&routed.value)?;
            let sent = fluvio_future::task::run_block_on(output.producer.send(routed.key, routed.value));
            let sent = sent.map_err(|e| produce_error(&output.topic, e))?;
            if let Ok(mut pending) = self.pending.lock() {
                pending.push((output.topic.clone(), sent));
            }
        }
        // Counted only after the send is in `pending`, so an acknowledgement that sees the count also
        // waits for this record.
        self.delivered.fetch_add(1, Ordering::AcqRel);
        Ok(routed.destination)
    }

    /// Flushes every producer and waits for the confirmation of every record sent so far.
    pub async fn acknowledge(&self) -> Result<(), DeliveryError> {
        for output in [Some(&self.predictions), Some(&self.dead_letters), self.review.as_ref()].into_iter().flatten() {
            output.producer.flush().await.map_err(|e| produce_error(&output.topic, e))?;
        }
        let pending = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => Vec::new(),
        };
        for (topic, sent) in pending {
            sent.wait().await.map_err(|e| produce_error(&topic, e))?;
        }
        if let Some(jsonl) = &self.jsonl {
            if let Ok(mut file) = jsonl.lock() {
                file.flush().map_err(|source| DeliveryError::Write { target: "the JSONL file".into(), source })?;
            }
        }
        Ok(())
    }

    fn write_local(&self, value: &[u8]) -> Result<(), DeliveryError> {
        if self.console {
            let mut out = std::io::stdout().lock();
            out.write_all(value)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|source| DeliveryError::Write { target: "stdout".into(), source })?;
        }
        if let Some(jsonl) = &self.jsonl {
            if let Ok(mut file) = jsonl.lock() {
                file.write_all(value)
                    .and_then(|()| file.write_all(b"\n"))
                    .map_err(|source| DeliveryError::Write { target: "the JSONL file".into(), source })?;
            }
        }
        Ok(())
    }
}

fn produce_error(topic: &str, error: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::Produce { topic: topic.to_string(), detail: format!("{error:#}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fvision_records::{EventMeta, Prediction, RejectReason, Stage, ValidationRecord};

    fn classified(above_threshold: bool) -> Outcome {
        let prediction = Prediction { image_id: "img-1".into(), above_threshold, ..Prediction::default() };
        Outcome::Classified { name: "images/0@3".into(), prediction: Box::new(prediction) }
    }

    #[test]
    fn predictions_route_by_threshold_rule() {
        for (above, rule, expected) in [
            (true, BelowThreshold::Review, Destination::Predictions),
            (false, BelowThreshold::Flag, Destination::Predictions),
            (false, BelowThreshold::Review, Destination::Review),
            (false, BelowThreshold::Drop, Destination::Dropped),
        ] {
            let routed = route(&classified(above), rule).unwrap();
            assert_eq!((routed.destination, routed.key.as_str()), (expected, "img-1"));
            let back: Prediction = serde_json::from_slice(&routed.value).unwrap();
            assert_eq!(back.above_threshold, above);
        }
    }

    #[test]
    fn rejections_go_to_the_dead_letter_topic_with_their_payload() {
        let rejected = RejectedImage::new(RejectReason::Truncated, "cut", Stage::Validate, b"\xff\xd8raw");
        let with_id = rejected.clone().with_event(EventMeta { id: "img-9".into(), ..EventMeta::default() });
        let routed =
            route(&Outcome::Rejected { name: "images/0@7".into(), rejected: Box::new(with_id) }, BelowThreshold::Flag)
                .unwrap();
        assert_eq!((routed.destination, routed.key.as_str()), (Destination::DeadLetter, "img-9"));
        let ValidationRecord::Rejected(back) = serde_json::from_slice(&routed.value).unwrap() else {
            panic!("not a rejection")
        };
        assert_eq!(back.payload.to_bytes().unwrap(), b"\xff\xd8raw");
        // Byte for byte what the validator writes for the same rejection.
        let as_validator_writes = serde_json::to_vec(&ValidationRecord::Rejected(back.clone())).unwrap();
        assert_eq!(routed.value, as_validator_writes);
        // Without an id, the key is the record's position.
        let routed =
            route(&Outcome::Rejected { name: "images/0@7".into(), rejected: Box::new(rejected) }, BelowThreshold::Flag)
                .unwrap();
        assert_eq!(routed.key, "images/0@7");
    }
}
