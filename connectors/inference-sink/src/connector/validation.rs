//! Where the consumed records get validated: already by the SPU (the consumer asked it to run
//! `image-validate`), or here with the same `.wasm` in `fluvio-smartengine`. Either way the pipeline sees
//! exactly one verdict per consumed record, which is what lets the connector count records up to a commit.

use fvision_connector_common::WasmValidator;
use fvision_records::{RejectReason, RejectedImage, Stage, ValidationRecord};

use crate::pipeline::Validate;

/// The validation stage of a running connector.
pub enum Validation {
    /// The SPU ran `image-validate`: the records are its JSON output.
    AtSpu,
    /// The connector runs `image-validate` in-process.
    InConnector(Box<WasmValidator>),
}

impl Validation {
    /// How the log and the metrics name this mode.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::AtSpu => "on the SPU (consumer-side SmartModule)",
            Self::InConnector(_) => "in the connector (fluvio-smartengine)",
        }
    }
}

impl Validate for Validation {
    fn validate(&mut self, values: &[&[u8]]) -> Vec<Option<ValidationRecord>> {
        match self {
            Self::AtSpu => values.iter().map(|value| Some(parse_spu_output(value))).collect(),
            Self::InConnector(validator) => validator
                .validate_batch(values)
                .into_iter()
                .zip(values)
                .map(|(verdict, value)| Some(verdict.unwrap_or_else(|| dropped(value))))
                .collect(),
        }
    }
}

/// A record the SPU's SmartModule wrote. Anything unreadable is a validator fault, kept with its bytes.
pub fn parse_spu_output(value: &[u8]) -> ValidationRecord {
    serde_json::from_slice(value).unwrap_or_else(|e| {
        ValidationRecord::Rejected(RejectedImage::new(
            RejectReason::ValidatorError,
            format!("the SPU's image-validate output is not a validation record: {e}"),
            Stage::Validate,
            value,
        ))
    })
}

/// The config refuses `on_invalid: drop`, so a missing verdict is a fault of the module; the record still
/// goes to the dead-letter topic instead of vanishing.
fn dropped(value: &[u8]) -> ValidationRecord {
    ValidationRecord::Rejected(RejectedImage::new(
        RejectReason::ValidatorError,
        "image-validate returned no record for this input",
        Stage::Validate,
        value,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spu_output_is_parsed_and_garbage_is_kept_as_a_rejection() {
        let ok = br#"{"status":"rejected","reason":"truncated","detail":"cut","stage":"validate","payload":{"encoding":"utf8","data":"abc"}}"#;
        match parse_spu_output(ok) {
            ValidationRecord::Rejected(r) => assert_eq!(r.reason, RejectReason::Truncated),
            other => panic!("{other:?}"),
        }
        match parse_spu_output(b"not json") {
            ValidationRecord::Rejected(r) => {
                assert_eq!((r.reason, r.stage), (RejectReason::ValidatorError, Stage::Validate));
                assert_eq!(r.payload.to_bytes().unwrap(), b"not json");
            }
            other => panic!("{other:?}"),
        }
    }
}
