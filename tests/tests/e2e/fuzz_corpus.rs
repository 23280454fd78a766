//! The fuzzing corpus (`fuzz/corpus/`, minimised from the campaigns in docs/fuzzing.md) replayed through the
//! native validator and the preprocessing with the fuzz targets' own checks, so every input that once found
//! new code keeps being run by the normal suite.

use base64::Engine as _;
use fvision_models::{ModelSpec, Preprocessor};
use fvision_records::{CappedPayload, EventMeta, PayloadCap, RejectReason, ValidationRecord, EVENT_META_CAP};
use image_validate::{validate_to_json, validate_value, ValidationParams};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fvision_tests::repo_root().join("fuzz/corpus").join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{}: the corpus is there", dir.display());
    files
}

/// What `fuzz/fuzz_targets/validate.rs` checks, for one input.
fn check_validate(name: &str, data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else { return false };
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
        dead_letter_payload_cap: PayloadCap::new(16 * 1024),
        ..ValidationParams::default()
    };
    let out = validate_to_json(&value, &params);
    let record: ValidationRecord = serde_json::from_slice(&out.json).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(record, validate_value(&value, &params), "{name}");
    match &record {
        ValidationRecord::Rejected(r) => {
            let head = r.payload.to_bytes().unwrap();
            assert!(if r.payload_truncated { value.starts_with(&head) } else { head == value }, "{name}");
            assert!(out.json.len() <= params.dead_letter_payload_cap.bytes() + EVENT_META_CAP + 16 * 1024, "{name}");
            false
        }
        ValidationRecord::Ok(ok) => {
            let rebuilt =
                ok.original.as_ref().and_then(|f| f.rebuild(&out.json, &ok.event, params.dead_letter_payload_cap));
            assert_eq!(rebuilt, Some(CappedPayload::new(&value, params.dead_letter_payload_cap)), "{name}");
            true
        }
    }
}

#[test]
fn the_validate_corpus_replays_without_a_fault() {
    let files = corpus("validate");
    let accepted = files.iter().filter(|(name, data)| check_validate(name, data)).count();
    assert!(accepted > 0 && accepted < files.len(), "the corpus holds accepted and rejected inputs: {accepted}");
}

#[test]
fn the_preprocess_corpus_replays_without_a_fault() {
    let manifest = fvision_tests::repo_root().join("models/presets/efficientnet-lite0.toml");
    let pre = Preprocessor::new(&ModelSpec::load(&manifest).unwrap(), 4_000_000);
    let mut out = vec![0f32; pre.tensor_len()];
    let mut prepared = 0;
    for (name, data) in corpus("preprocess") {
        match pre.prepare_into(&data, EventMeta::default(), &mut out) {
            Ok(_) => {
                assert!(out.iter().all(|v| v.is_finite()), "{name}");
                prepared += 1;
            }
            Err(e) => assert!(
                matches!(
                    e.reason,
                    RejectReason::DecodeError
                        | RejectReason::PreprocessError
                        | RejectReason::TooManyPixels
                        | RejectReason::UnknownFormat
                        | RejectReason::UnsupportedFormat
                ),
                "{name}: {:?}",
                e.reason
            ),
        }
    }
    assert!(prepared > 0, "some corpus inputs are images");
}
