//! The data that flows through a run, shared by the pipeline, the outputs, the status page and the
//! connector: an input [`Item`], its [`Outcome`], and where its record sat in the consumed topic. A leaf:
//! it imports nothing else of the workspace but the record types.

use fvision_records::{Prediction, RejectedImage};

/// Where an outcome's record sat in the consumed topic. Outputs that name objects after offsets or
/// de-duplicate a replay use it; outcomes of the embedded pipeline (files, stdin) have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourcePosition {
    /// The partition of the consumed topic.
    pub partition: u32,
    /// The record's offset in that partition.
    pub offset: i64,
}

/// One record value to classify, with a name for reports.
#[derive(Debug, Clone)]
pub struct Item {
    /// A display name (file path, topic/offset).
    pub name: String,
    /// The record value as it arrived.
    pub value: Vec<u8>,
    /// Where it was read from, when it came from a Fluvio topic (outputs name objects or de-duplicate by it).
    pub position: Option<SourcePosition>,
}

impl Item {
    /// A record without a source position (a file, a line of stdin).
    pub fn new(name: impl Into<String>, value: Vec<u8>) -> Self {
        Self { name: name.into(), value, position: None }
    }
}

/// What became of one input.
#[derive(Debug)]
pub enum Outcome {
    /// Classified.
    Classified {
        /// The input's name.
        name: String,
        /// Where the input was read from, when it came from a Fluvio topic.
        position: Option<SourcePosition>,
        /// The prediction.
        prediction: Box<Prediction>,
    },
    /// Rejected at some stage; belongs on the dead-letter topic.
    Rejected {
        /// The input's name.
        name: String,
        /// Where the input was read from, when it came from a Fluvio topic.
        position: Option<SourcePosition>,
        /// The rejection, with the original record value.
        rejected: Box<RejectedImage>,
    },
}

impl Outcome {
    /// The input's name (file path, `topic/partition@offset`).
    pub fn name(&self) -> &str {
        match self {
            Self::Classified { name, .. } | Self::Rejected { name, .. } => name,
        }
    }

    /// Where the input was read from, when it came from a Fluvio topic.
    pub fn position(&self) -> Option<SourcePosition> {
        match self {
            Self::Classified { position, .. } | Self::Rejected { position, .. } => *position,
        }
    }
}
