//! The `image-validate` validator on arbitrary record values: raw bytes (which include JSON envelopes from the
//! corpus), an envelope around arbitrary base64 data, and bare base64 text; header mode or full decode.
//! Beyond "never panics", every output must be one parseable record that agrees with the pure validator, a
//! rejection must carry the value (or its first bytes) under the cap, and an accepted record must say how to
//! rebuild the value as produced.
#![no_main]

use base64::Engine as _;
use fvision_records::{CappedPayload, ValidationRecord, EVENT_META_CAP};
use image_validate::{validate_to_json, validate_value, ValidationParams};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let value: Vec<u8> = match mode % 3 {
        0 => rest.to_vec(),
        1 => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(rest);
            format!(r#"{{"id":"fuzz","source":"kafka","data":"{b64}"}}"#).into_bytes()
        }
        _ => base64::engine::general_purpose::STANDARD.encode(rest).into_bytes(),
    };
    let params = ValidationParams {
        full_decode: mode & 0x80 != 0,
        max_pixels: 4_000_000,
        dead_letter_payload_cap: fvision_records::PayloadCap::new(16 * 1024),
        ..ValidationParams::default()
    };
    let out = validate_to_json(&value, &params);
    let record: ValidationRecord = serde_json::from_slice(&out.json).expect("the output is one validation record");
    assert_eq!(record, validate_value(&value, &params), "spliced and serialised outputs agree");
    match &record {
        ValidationRecord::Rejected(r) => {
            assert!(!out.ok);
            let head = r.payload.to_bytes().expect("payload decodes");
            if r.payload_truncated {
                assert!(value.starts_with(&head));
            } else {
                assert_eq!(head, value);
            }
            assert!(out.json.len() <= params.dead_letter_payload_cap.bytes() + EVENT_META_CAP + 16 * 1024);
        }
        ValidationRecord::Ok(ok) => {
            assert!(out.ok);
            let form = ok.original.as_ref().expect("an accepted record says how to rebuild the value");
            let rebuilt = form.rebuild(&out.json, &ok.event, params.dead_letter_payload_cap);
            assert_eq!(rebuilt, Some(CappedPayload::new(&value, params.dead_letter_payload_cap)));
        }
    }
});
