//! Real records through the compiled `image-validate.wasm`, run by `fluvio-smartengine` as an SPU runs it.

use std::io::Cursor;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use fvision_connector_common::EngineError;
use fvision_records::{ImageFormat, RejectReason, ValidationRecord};
use fvision_tests::{data_files, wasm_runner, wasm_validator};

/// What `data/bad-inputs/README.md` asks of each file, in header mode and with `full_decode=true`.
/// `None` is "accept".
const BAD_INPUT_VERDICTS: &[(&str, Option<RejectReason>, Option<RejectReason>)] = {
    use RejectReason::*;
    &[
        ("animated-3frames-64x48.gif", None, None),
        ("bomb-10000x10000-grey-1bit.png", Some(TooManyPixels), Some(TooManyPixels)),
        ("bomb-10000x10000-grey-8bit.png", Some(TooManyPixels), Some(TooManyPixels)),
        ("cmyk.jpg", None, None),
        ("exif-orientation-6-stored-240x320.jpg", None, None),
        ("extreme-aspect-10000x2.png", Some(ExtremeAspectRatio), Some(ExtremeAspectRatio)),
        ("grey-16bit-64x64.png", None, None),
        ("greyscale.jpg", None, None),
        ("header-claims-100000x100000.png", Some(TooManyPixels), Some(TooManyPixels)),
        ("png-content-with-jpg-extension.jpg", None, None),
        ("png-corrupt-idat-bad-crc.png", Some(CorruptData), Some(CorruptData)),
        // Only the zlib stream is broken and every CRC passes: no structural check can see it, the full
        // decode does (and the sink's decode stage does in header mode).
        ("png-corrupt-idat-bad-zlib-good-crc.png", None, Some(DecodeError)),
        ("random-bytes.jpg", Some(UnknownFormat), Some(UnknownFormat)),
        ("rgb-16bit-64x64.png", None, None),
        ("rgba-alpha.png", None, None),
        ("text-file.jpg", Some(UnknownFormat), Some(UnknownFormat)),
        ("truncated-40pct.jpg", Some(Truncated), Some(Truncated)),
        ("valid-1x1.png", None, None),
        ("valid-lossy-320x240.webp", None, None),
        ("zero-bytes.jpg", Some(Empty), Some(Empty)),
    ]
};

fn record(output: &Option<ValidationRecord>) -> &ValidationRecord {
    output.as_ref().expect("one record per input unless on_invalid=drop")
}

fn reason(output: &Option<ValidationRecord>) -> Option<RejectReason> {
    match record(output) {
        ValidationRecord::Ok(_) => None,
        ValidationRecord::Rejected(r) => Some(r.reason),
    }
}

fn validate_all(params: &[(&str, &str)], values: &[&[u8]]) -> Vec<Option<ValidationRecord>> {
    let outputs = wasm_validator(params).validate_batch(values);
    assert_eq!(outputs.len(), values.len());
    outputs
}

#[test]
fn every_bad_input_gets_the_verdict_its_readme_asks_for() {
    let files = data_files("bad-inputs");
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let expected: Vec<&str> = BAD_INPUT_VERDICTS.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(names, expected, "every file in data/bad-inputs needs a verdict in this table");
    let values: Vec<&[u8]> = files.iter().map(|(_, b)| b.as_slice()).collect();

    for (full_decode, column) in [("false", 1), ("true", 2)] {
        let outputs = validate_all(&[("full_decode", full_decode)], &values);
        for ((name, bytes), (output, verdict)) in files.iter().zip(outputs.iter().zip(BAD_INPUT_VERDICTS)) {
            let want = if column == 1 { verdict.1 } else { verdict.2 };
            assert_eq!(reason(output), want, "{name} (full_decode={full_decode}): {:?}", record(output));
            if let ValidationRecord::Rejected(rejected) = record(output) {
                assert_eq!(&rejected.payload.to_bytes().unwrap(), bytes, "{name}: original payload kept");
                assert!(!rejected.detail.is_empty(), "{name}: a human detail");
            }
        }
    }
}

#[test]
fn the_format_comes_from_the_bytes_not_the_name() {
    let files = data_files("bad-inputs");
    let (_, png_as_jpg) = files.iter().find(|(n, _)| n == "png-content-with-jpg-extension.jpg").unwrap();
    let outputs = validate_all(&[], &[png_as_jpg]);
    let ValidationRecord::Ok(ok) = record(&outputs[0]) else { panic!() };
    assert_eq!((ok.format, ok.width, ok.height), (ImageFormat::Png, 320, 240));
}

#[test]
fn all_imagenet_sample_images_are_accepted_with_their_true_dimensions() {
    let files = data_files("imagenet-sample");
    assert_eq!(files.len(), 100);
    let values: Vec<&[u8]> = files.iter().map(|(_, b)| b.as_slice()).collect();
    for full_decode in ["false", "true"] {
        let outputs = validate_all(&[("full_decode", full_decode)], &values);
        for ((name, bytes), output) in files.iter().zip(&outputs) {
            let ValidationRecord::Ok(ok) = record(output) else { panic!("{name}: {output:?}") };
            let decoded = image::load_from_memory(bytes).unwrap();
            assert_eq!((ok.width, ok.height), (decoded.width(), decoded.height()), "{name}");
            assert_eq!(ok.format, ImageFormat::Jpeg);
            assert_eq!(ok.size_bytes, bytes.len() as u64);
            assert_eq!(STANDARD.decode(&ok.event.data).unwrap(), *bytes, "{name}: data carried intact");
        }
    }
}

#[test]
fn every_decodable_format_is_accepted() {
    let (_, jpeg) = &data_files("demo-images")[1];
    let photo = image::load_from_memory(jpeg).unwrap().thumbnail(96, 64).to_rgb8();
    let mut samples = vec![(ImageFormat::Jpeg, jpeg.clone())];
    for (format, encoder) in [
        (ImageFormat::Png, image::ImageFormat::Png),
        (ImageFormat::Gif, image::ImageFormat::Gif),
        (ImageFormat::Webp, image::ImageFormat::WebP),
        (ImageFormat::Bmp, image::ImageFormat::Bmp),
    ] {
        let mut bytes = Cursor::new(Vec::new());
        photo.write_to(&mut bytes, encoder).unwrap();
        samples.push((format, bytes.into_inner()));
    }
    let values: Vec<&[u8]> = samples.iter().map(|(_, b)| b.as_slice()).collect();
    let outputs = validate_all(&[("full_decode", "true")], &values);
    for ((format, _), output) in samples.iter().zip(&outputs) {
        let ValidationRecord::Ok(ok) = record(output) else { panic!("{format}: {output:?}") };
        assert_eq!(ok.format, *format);
        if *format != ImageFormat::Jpeg {
            assert_eq!((ok.width, ok.height), (photo.width(), photo.height()), "{format}");
        }
    }
}

#[test]
fn every_base64_variant_and_wrapping_is_accepted() {
    let (_, image) = &data_files("imagenet-sample")[0];
    let std = STANDARD.encode(image);
    let mime: String =
        std.as_bytes().chunks(76).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("\r\n");
    let pem: String =
        std.as_bytes().chunks(64).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("\n");
    let texts = [
        std.clone(),
        STANDARD_NO_PAD.encode(image),
        URL_SAFE.encode(image),
        URL_SAFE_NO_PAD.encode(image),
        mime,
        pem,
        format!("data:image/jpeg;base64,{std}"),
    ];
    let mut values: Vec<Vec<u8>> = Vec::new();
    for text in &texts {
        values.push(text.clone().into_bytes()); // bare
        values.push(serde_json::to_vec(text).unwrap()); // JSON string
        values.push(serde_json::to_vec(&serde_json::json!({ "id": "tench", "data": text })).unwrap());
        // envelope
    }
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let outputs = validate_all(&[], &refs);
    for (i, output) in outputs.iter().enumerate() {
        let ValidationRecord::Ok(ok) = record(output) else { panic!("variant {i}: {output:?}") };
        assert_eq!(STANDARD.decode(&ok.event.data).unwrap(), *image, "variant {i}: canonical data");
        let want_id = if i % 3 == 2 { "tench".to_string() } else { image_validate::content_id(image) };
        assert_eq!(ok.event.meta.id, want_id, "variant {i}");
    }
}

#[test]
fn malformed_envelopes_are_rejected_with_the_payload_intact() {
    let values: [&[u8]; 5] = [
        br#"{"id": "a", "data": "#,
        br#"{"id": 7, "data": "AAAA"}"#,
        br#"{"id": "b", "data": "AAAA", "data": "BBBB"}"#,
        br#"{"id": "c", "source": "kafka", "data": "@@@@"}"#,
        br#"{"id": "d", "data": ""}"#,
    ];
    let outputs = validate_all(&[], &values);
    let want = [
        RejectReason::MalformedEnvelope,
        RejectReason::MalformedEnvelope,
        RejectReason::MalformedEnvelope,
        RejectReason::InvalidBase64,
        RejectReason::Empty,
    ];
    for ((value, output), want) in values.iter().zip(&outputs).zip(want) {
        let ValidationRecord::Rejected(rejected) = record(output) else { panic!() };
        assert_eq!(rejected.reason, want, "{}", String::from_utf8_lossy(value));
        assert_eq!(&rejected.payload.to_bytes().unwrap(), value);
    }
    let ValidationRecord::Rejected(c) = record(&outputs[3]) else { panic!() };
    assert_eq!((c.event.id.as_str(), c.event.source), ("c", fvision_records::Source::Kafka), "envelope fields kept");
}

#[test]
fn limits_set_by_params_are_enforced() {
    let files = data_files("imagenet-sample");
    let (_, tench) = &files[0]; // 500 x 375 JPEG, 100,582 bytes
                                // (param, value that rejects it, value that lets it through, reason)
    let cases: [(&str, &str, &str, RejectReason); 5] = [
        ("max_pixels", "100000", "187500", RejectReason::TooManyPixels),
        ("max_side", "400", "500", RejectReason::DimensionsTooLarge),
        ("max_aspect_ratio", "1.2", "1.34", RejectReason::ExtremeAspectRatio),
        ("allowed_formats", "png,webp", "jpeg", RejectReason::UnsupportedFormat),
        ("max_encoded_bytes", "100000", "100582", RejectReason::TooLarge),
    ];
    for (name, strict, exact, want) in cases {
        let outputs = validate_all(&[(name, strict)], &[tench]);
        assert_eq!(reason(&outputs[0]), Some(want), "{name}={strict}");
        let at_limit = validate_all(&[(name, exact)], &[tench]);
        assert_eq!(reason(&at_limit[0]), None, "{name}={exact} is exactly enough");
    }
}

#[test]
fn on_invalid_drop_filters_rejects_and_keeps_order() {
    let files = data_files("bad-inputs");
    let values: Vec<&[u8]> = files.iter().map(|(_, b)| b.as_slice()).collect();
    let kept = validate_all(&[], &values);
    let dropped = validate_all(&[("on_invalid", "drop")], &values);
    for (keep, drop) in kept.iter().zip(&dropped) {
        match record(keep) {
            ValidationRecord::Ok(_) => assert_eq!(keep, drop),
            ValidationRecord::Rejected(_) => assert_eq!(drop, &None),
        }
    }
}

#[test]
fn bad_params_fail_at_start_up_naming_the_param() {
    let path = fvision_connector_common::locate_smartmodule().unwrap();
    for (name, value) in [("max_pixels", "lots"), ("max_pixel", "5"), ("on_invalid", "ignore")] {
        let params = [(name.to_string(), value.to_string())].into_iter().collect();
        let err = fvision_connector_common::WasmValidator::load(&path, params).err().expect("must fail");
        assert!(err.to_string().contains(name), "{err}");
    }
    // Inside the SPU there is no host-side check: the module's own `init` must refuse the value.
    let err = wasm_runner(&[("max_pixels", "lots")]).err().expect("init must fail");
    assert!(matches!(err, EngineError::Init(_)));
    let cause = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
    assert!(cause.contains("max_pixels"), "{err}: {cause}");
}

#[test]
fn outputs_are_keyed_by_image_id_and_map_one_to_one() {
    let mut runner = wasm_runner(&[]).unwrap();
    let values: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            if i % 3 == 0 {
                b"garbage".to_vec()
            } else {
                serde_json::to_vec(
                    &serde_json::json!({"id": format!("img-{i}"), "data": STANDARD.encode(b"\x89PNG\r\n\x1a\n")}),
                )
                .unwrap()
            }
        })
        .collect();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let outputs = runner.process(&refs).unwrap();
    assert_eq!(outputs.len(), 40);
    for (i, output) in outputs.iter().enumerate() {
        assert_eq!(output.preamble.offset_delta(), i as i64);
        if i % 3 != 0 {
            let key = output.key.as_ref().map(|k| String::from_utf8_lossy(k.as_ref()).into_owned());
            assert_eq!(key.as_deref(), Some(format!("img-{i}").as_str()));
            let parsed: ValidationRecord = serde_json::from_slice(output.value.as_ref()).unwrap();
            assert!(matches!(parsed, ValidationRecord::Rejected(r) if r.reason == RejectReason::Truncated));
        }
    }
}

/// Hostile values of `len` bytes: control bytes (six times larger as JSON escapes), pseudo-random bytes, and
/// a JSON envelope with huge attributes and data.
fn hostile(len: usize) -> Vec<Vec<u8>> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ len as u64;
    let random = (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let envelope = format!(
        r#"{{"id":"huge","attributes":{{"k":"{}"}},"data":"{}"}}"#,
        "\\u0001".repeat(len / 12),
        "QUJD".repeat(len / 8)
    );
    vec![vec![0x01; len], random, envelope.into_bytes()]
}

#[test]
fn hostile_records_become_rejections_under_the_cap_in_the_wasm() {
    let mut validator = wasm_validator(&[]);
    let cap = fvision_records::DEFAULT_PAYLOAD_CAP;
    let photo = STANDARD.encode(&data_files("imagenet-sample")[0].1);
    let valid = format!(r#"{{"id":"after","data":"{photo}"}}"#).into_bytes();
    for len in [3 << 20, 12 << 20, 20 << 20] {
        for value in hostile(len) {
            // The valid record after the hostile one, in the same call, is still validated.
            let verdicts = validator.validate_batch(&[&value, &valid]);
            let Some(ValidationRecord::Rejected(r)) = &verdicts[0] else { panic!("{len}: {:?}", verdicts[0]) };
            let size = serde_json::to_vec(&ValidationRecord::Rejected(r.clone())).unwrap().len();
            assert!(size < cap + 8192, "{len}: a rejected record of {size} bytes");
            assert!(r.payload_truncated && r.payload_size == Some(value.len() as u64), "{len}: {}", r.reason);
            assert!(value.starts_with(&r.payload.to_bytes().unwrap()));
            assert!(matches!(&verdicts[1], Some(ValidationRecord::Ok(ok)) if ok.event.meta.id == "after"));
        }
    }
    // A smaller cap from the params applies in the WASM too.
    let mut small = wasm_validator(&[("dead_letter_payload_cap", "16384")]);
    let verdict = small.validate_batch(&[&vec![0x01u8; 8192]]).pop().flatten();
    let Some(ValidationRecord::Rejected(r)) = verdict else { panic!("{verdict:?}") };
    assert!(r.payload_truncated, "8 KiB of control bytes is 48 KiB as JSON, above a 16 KiB cap");
}
