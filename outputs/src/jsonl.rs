//! The JSONL output: one line per outcome, the same shape for `fvision run --output` and the connector's
//! `inference.jsonl`: the input's name (`file`: a path, or `topic/partition@offset`), its source position
//! when it came from a topic, then the prediction's fields, or `status: "rejected"` with the reason,
//! detail and stage (the image bytes stay on the dead-letter topic, not in the file).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fvision_records::{Prediction, RejectReason, Stage};
use serde::Serialize;

use super::{AckFuture, Delivery, Destination, Output, OutputError};
use fvision_pipeline::Outcome;

/// The output's name in metrics, logs and errors.
pub const NAME: &str = "jsonl";

/// One line of the JSONL output (and of `fvision classify --json`), borrowed from an outcome.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum JsonlLine<'a> {
    /// A prediction.
    Classified {
        /// The input's name.
        file: &'a str,
        /// The partition it was read from, when it came from a topic.
        #[serde(skip_serializing_if = "Option::is_none")]
        partition: Option<u32>,
        /// Its offset there.
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<i64>,
        /// The prediction's own fields.
        #[serde(flatten)]
        prediction: &'a Prediction,
    },
    /// A rejection (its record, with the original bytes, is on the dead-letter topic).
    Rejected {
        /// The input's name.
        file: &'a str,
        /// The partition it was read from, when it came from a topic.
        #[serde(skip_serializing_if = "Option::is_none")]
        partition: Option<u32>,
        /// Its offset there.
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<i64>,
        /// The image id from the envelope, when it had one.
        #[serde(skip_serializing_if = "str::is_empty")]
        id: &'a str,
        /// Always `rejected`.
        status: &'static str,
        /// The stable reason code.
        reason: RejectReason,
        /// What was wrong, for humans.
        detail: &'a str,
        /// Where it was rejected.
        stage: Stage,
    },
}

impl<'a> From<&'a Outcome> for JsonlLine<'a> {
    fn from(outcome: &'a Outcome) -> Self {
        let position = outcome.position();
        let (partition, offset) = (position.map(|p| p.partition), position.map(|p| p.offset));
        match outcome {
            Outcome::Classified { name, prediction, .. } => {
                Self::Classified { file: name, partition, offset, prediction }
            }
            Outcome::Rejected { name, rejected, .. } => Self::Rejected {
                file: name,
                partition,
                offset,
                id: &rejected.event.id,
                status: "rejected",
                reason: rejected.reason,
                detail: &rejected.detail,
                stage: rejected.stage,
            },
        }
    }
}

/// Writes one outcome as a JSON line.
pub fn write_line(out: &mut impl Write, outcome: &Outcome) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, &JsonlLine::from(outcome))?;
    out.write_all(b"\n")
}

/// Outcomes appended to a file, one JSON line each; outcomes dropped by `below-threshold: drop` are not written.
#[derive(Debug)]
pub struct JsonlOutput {
    path: PathBuf,
    file: Mutex<BufWriter<File>>,
}

impl JsonlOutput {
    /// Appends to `path` (the connector: a restart adds to what is there).
    pub fn append(path: &Path) -> Result<Self, OutputError> {
        Self::open(path, std::fs::OpenOptions::new().create(true).append(true))
    }

    /// Creates or truncates `path` (`fvision run --output`: one file per run).
    pub fn create(path: &Path) -> Result<Self, OutputError> {
        Self::open(path, std::fs::OpenOptions::new().create(true).write(true).truncate(true))
    }

    fn open(path: &Path, options: &std::fs::OpenOptions) -> Result<Self, OutputError> {
        let file = options.open(path).map_err(|e| failed(path, "opening", e))?;
        Ok(Self { path: path.to_owned(), file: Mutex::new(BufWriter::new(file)) })
    }
}

fn failed(path: &Path, action: &str, source: std::io::Error) -> OutputError {
    OutputError::Failed {
        output: NAME.into(),
        action: format!("{action} {}", path.display()),
        source: Box::new(source),
    }
}

impl Output for JsonlOutput {
    fn name(&self) -> &str {
        NAME
    }

    fn send(&self, delivery: &Delivery<'_>) -> Result<(), OutputError> {
        if delivery.routed.destination == Destination::Dropped {
            return Ok(());
        }
        let mut file = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        write_line(&mut *file, delivery.outcome).map_err(|e| failed(&self.path, "writing", e))
    }

    fn acknowledge(&self) -> AckFuture<'_> {
        Box::pin(async move {
            let mut file = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            file.flush().map(|()| Vec::new()).map_err(|e| failed(&self.path, "flushing", e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fvision_pipeline::SourcePosition;
    use fvision_records::{EventMeta, RejectedImage};

    fn line(outcome: &Outcome) -> serde_json::Value {
        let mut out = Vec::new();
        write_line(&mut out, outcome).unwrap();
        assert_eq!(out.last(), Some(&b'\n'));
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn one_line_per_outcome_with_its_position_and_without_the_image() {
        let prediction = Prediction { image_id: "img-1".into(), label: "tench".into(), ..Prediction::default() };
        let at = Some(SourcePosition { partition: 2, offset: 40 });
        let classified =
            line(&Outcome::Classified { name: "images/2@40".into(), position: at, prediction: Box::new(prediction) });
        assert_eq!((classified["file"].as_str(), classified["label"].as_str()), (Some("images/2@40"), Some("tench")));
        assert_eq!((classified["partition"].as_u64(), classified["offset"].as_i64()), (Some(2), Some(40)));

        let rejected =
            RejectedImage::new(RejectReason::Truncated, "cut short", Stage::Validate, b"\xff\xd8 image bytes")
                .with_event(EventMeta { id: "img-2".into(), ..EventMeta::default() });
        let rejected =
            line(&Outcome::Rejected { name: "photos/a.jpg".into(), position: None, rejected: Box::new(rejected) });
        let fields: Vec<&str> = rejected.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            ["detail", "file", "id", "reason", "stage", "status"],
            "no position from a file, no payload"
        );
        assert_eq!((rejected["status"].as_str(), rejected["reason"].as_str()), (Some("rejected"), Some("truncated")));
    }
}
