//! Routing: where one outcome goes (predictions, review, dead letters, nowhere) and the record it becomes
//! there. Pure, computed once per outcome for every output, so the rules are tested without a cluster.

use fvision_pipeline::Outcome;
use fvision_records::RejectedImage;
use serde::Deserialize;

/// What happens to predictions below the confidence threshold (the job this replaces dropped them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BelowThreshold {
    /// Keep them, with `above_threshold: false` (default: nothing is lost).
    #[default]
    Flag,
    /// Drop them (counted in metrics).
    Drop,
    /// Send them to `review-topic` instead of `predictions`.
    Review,
}

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
        Outcome::Classified { name, prediction, .. } => {
            let destination = match (prediction.above_threshold, below) {
                (true, _) | (false, BelowThreshold::Flag) => Destination::Predictions,
                (false, BelowThreshold::Review) => Destination::Review,
                (false, BelowThreshold::Drop) => Destination::Dropped,
            };
            let key = if prediction.image_id.is_empty() { name.clone() } else { prediction.image_id.clone() };
            Routed { destination, key, value: serde_json::to_vec(prediction)? }
        }
        Outcome::Rejected { name, rejected, .. } => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use fvision_records::{EventMeta, Prediction, RejectReason, Stage, ValidationRecord};

    fn classified(above_threshold: bool) -> Outcome {
        let prediction = Prediction { image_id: "img-1".into(), above_threshold, ..Prediction::default() };
        Outcome::Classified { name: "images/0@3".into(), position: None, prediction: Box::new(prediction) }
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
        let routed = route(
            &Outcome::Rejected { name: "images/0@7".into(), position: None, rejected: Box::new(with_id) },
            BelowThreshold::Flag,
        )
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
        let routed = route(
            &Outcome::Rejected { name: "images/0@7".into(), position: None, rejected: Box::new(rejected) },
            BelowThreshold::Flag,
        )
        .unwrap();
        assert_eq!(routed.key, "images/0@7");
    }
}
