//! Where the consumed records get validated: already by the SPU (the consumer asked it to run
//! `image-validate`), or here with the same `.wasm` in `fluvio-smartengine`. Either way the pipeline sees
//! exactly one verdict per consumed record, which is what lets the connector count records up to a commit.

use fvision_connector_common::WasmValidator;
use fvision_records::{PayloadCap, RejectReason, RejectedImage, Stage, ValidationRecord};

use fvision_pipeline::Validate;

/// The validation stage of a running connector.
pub enum Validation {
    /// The SPU ran `image-validate`: the records are its JSON output. Unreadable records become dead letters
    /// capped at this size.
    AtSpu(PayloadCap),
    /// The connector runs `image-validate` in-process.
    InConnector(Box<WasmValidator>),
}

impl Validation {
    /// How the log and the metrics name this mode.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::AtSpu(_) => "on the SPU (consumer-side SmartModule)",
            Self::InConnector(_) => "in the connector (fluvio-smartengine)",
        }
    }
}

impl Validate for Validation {
    fn validate(&mut self, values: &[&[u8]]) -> Vec<Option<ValidationRecord>> {
        match self {
            Self::AtSpu(cap) => values.iter().map(|value| Some(parse_spu_output(value, *cap))).collect(),
            Self::InConnector(validator) => validator
                .validate_batch(values)
                .into_iter()
                .zip(values)
                .map(|(verdict, value)| Some(verdict.unwrap_or_else(|| dropped(value))))
                .collect(),
        }
    }

    fn sees_originals(&self) -> bool {
        matches!(self, Self::InConnector(_))
    }
}

/// The validation record the SPU's `image-validate` sent; an unreadable one becomes a dead letter (reason
/// `validator_error`) capped at `cap`.
pub fn parse_spu_output(value: &[u8], cap: PayloadCap) -> ValidationRecord {
    serde_json::from_slice(value).unwrap_or_else(|e| {
        ValidationRecord::Rejected(RejectedImage::capped(
            RejectReason::ValidatorError,
            format!("the SPU's image-validate output is not a validation record: {e}"),
            Stage::Validate,
            value,
            cap,
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
    use base64::Engine as _;
    use fvision_records::CappedPayload;
    use image_validate::{validate_to_json, validate_value, ValidationParams};
    use proptest::prelude::*;

    /// A complete 1x1 PNG.
    const PNG_1X1: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0\x90wS\xde\0\0\0\x0cIDATx\x9cc\xf8\xcf\xc0\0\0\x03\x01\x01\0\xc9\xfe\x92\xef\0\0\0\0IEND\xaeB`\x82";

    /// What the sink makes of the validator's output for `value` must be what the validator meant: the same
    /// record, and for an accepted one the record as produced rebuilt byte for byte.
    fn round_trip(value: &[u8]) -> Result<bool, TestCaseError> {
        let params = ValidationParams::default();
        let cap = params.dead_letter_payload_cap;
        let out = validate_to_json(value, &params);
        let parsed = parse_spu_output(&out.json, PayloadCap::default());
        if let ValidationRecord::Rejected(r) = &parsed {
            prop_assert_ne!(r.reason, RejectReason::ValidatorError, "{}", String::from_utf8_lossy(&out.json));
        }
        prop_assert_eq!(&parsed, &validate_value(value, &params), "{}", String::from_utf8_lossy(value));
        if let ValidationRecord::Ok(ok) = &parsed {
            let rebuilt = ok.original.as_ref().and_then(|f| f.rebuild(&out.json, &ok.event, cap));
            prop_assert_eq!(rebuilt, Some(CappedPayload::new(value, cap)));
        }
        Ok(out.ok)
    }

    fn b64() -> String {
        base64::engine::general_purpose::STANDARD.encode(PNG_1X1)
    }

    #[test]
    fn envelopes_with_null_ids_duplicate_keys_or_validator_keys_parse_in_the_sink() {
        let data = b64();
        for (value, accepted) in [
            (format!(r#"{{"id":null,"data":"{data}"}}"#), true),
            (format!(r#"{{"id":null,"uri":null,"content_type":null,"event_time":null,"data":"{data}"}}"#), true),
            (format!(r#"{{"x":1,"x":[2],"data":"{data}"}}"#), true),
            (format!(r#"{{"status":null,"original":null,"data":"{data}"}}"#), true),
            (format!(r#"{{"original":{{"form":"image"}},"data":"{data}"}}"#), true),
            (format!(r#"{{"status":"rejected","size_bytes":"big","data":"{data}"}}"#), true),
            (format!(r#"{{"st\u0061tus":1,"data":"{data}"}}"#), true),
            (format!(r#"{{"id":"a","id":"b","data":"{data}"}}"#), false),
            (format!(r#"{{"x":"\ud800","data":"{data}"}}"#), false),
            (format!("{{\"x\":\"\u{1}\",\"data\":\"{data}\"}}"), false),
        ] {
            let ok = round_trip(value.as_bytes()).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(ok, accepted, "{value}");
        }
        let mut invalid_utf8 = format!(r#"{{"x":"?","data":"{data}"}}"#).into_bytes();
        invalid_utf8[6] = 0xff;
        assert!(!round_trip(&invalid_utf8).unwrap());
    }

    /// JSON text for one value of an envelope key: well-formed or not, escaped, null, nested.
    fn json_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"null".to_vec()),
            Just(b"1".to_vec()),
            Just(b"-2.5e3".to_vec()),
            Just(b"true".to_vec()),
            Just(b"{}".to_vec()),
            Just(b"[1,{\"a\":null}]".to_vec()),
            Just(b"{\"bucket\":\"b\",\"n\":[]}".to_vec()),
            Just(b"\"text\"".to_vec()),
            Just(b"\"\"".to_vec()),
            Just("\"é😀\"".as_bytes().to_vec()),
            Just(b"\"a\\u00e9\\/\\n\"".to_vec()),
            Just(b"\"\\ud800\"".to_vec()),
            Just(b"\"\\udc00\\ud800\"".to_vec()),
            Just(b"\"\x01\"".to_vec()),
            Just(b"\"\xff\"".to_vec()),
            "[a-z0-9 ]{0,8}".prop_map(|s| format!("\"{s}\"").into_bytes()),
        ]
    }

    fn key() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "id",
            "source",
            "uri",
            "content_type",
            "attributes",
            "event_time",
            "status",
            "format",
            "width",
            "height",
            "size_bytes",
            "original",
            "payload",
            "reason",
            "x",
            "i\\u0064",
            "",
        ])
    }

    fn envelope() -> impl Strategy<Value = Vec<u8>> {
        let data = prop_oneof![
            Just(b64()),
            Just(b64().trim_end_matches('=').to_string()),
            Just(base64::engine::general_purpose::URL_SAFE.encode(PNG_1X1)),
            Just(format!("data:image/png;base64,{}", b64())),
            Just(b64().replace('/', "\\/")),
        ];
        (proptest::collection::vec((key(), json_value()), 0..6), data, 0usize..6, any::<bool>(), any::<bool>())
            .prop_map(|(fields, data, at, pad, pretty)| {
                let mut parts: Vec<Vec<u8>> =
                    fields.into_iter().map(|(k, v)| [format!("\"{k}\":").into_bytes(), v].concat()).collect();
                parts.insert(at.min(parts.len()), format!(r#""data":"{data}""#).into_bytes());
                let separator: &[u8] = if pretty { b",\n  " } else { b"," };
                let mut value = b"{".to_vec();
                value.extend(parts.join(separator));
                value.push(b'}');
                if pad {
                    value = [b" \t".to_vec(), value, b"\n".to_vec()].concat();
                }
                value
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn every_envelope_the_validator_accepts_round_trips_through_the_sink(value in envelope()) {
            round_trip(&value)?;
        }
    }

    #[test]
    fn spu_output_is_parsed_and_garbage_is_kept_as_a_rejection() {
        let ok = br#"{"status":"rejected","reason":"truncated","detail":"cut","stage":"validate","payload":{"encoding":"utf8","data":"abc"}}"#;
        match parse_spu_output(ok, PayloadCap::default()) {
            ValidationRecord::Rejected(r) => assert_eq!(r.reason, RejectReason::Truncated),
            other => panic!("{other:?}"),
        }
        match parse_spu_output(b"not json", PayloadCap::default()) {
            ValidationRecord::Rejected(r) => {
                assert_eq!((r.reason, r.stage), (RejectReason::ValidatorError, Stage::Validate));
                assert_eq!(r.payload.to_bytes().unwrap(), b"not json");
            }
            other => panic!("{other:?}"),
        }
    }
}
