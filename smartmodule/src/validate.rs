//! The validator: one record value in, one validated or rejected record out. Pure and deterministic.

use std::io::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use fvision_records::{
    CappedPayload, ImageEvent, OriginalForm, PayloadCap, RejectReason, RejectedImage, Stage, ValidatedImage,
    ValidationRecord,
};

use crate::decode::full_decode;
use crate::header::{read_header, sniff, HeaderError, HeaderInfo};
use crate::integrity::{check_structure, StructureError};
use crate::params::ValidationParams;
use crate::payload::{parse_value, Payload, PayloadError};

/// Room for the envelope's other fields on top of the base64 of the largest image: a record value above
/// `max_encoded_bytes` as base64 plus this is `too_large` before it is parsed at all.
pub const ENVELOPE_ALLOWANCE: u64 = 1 << 20;

/// An input that passed every check, still borrowing from the record value.
struct Accepted<'a> {
    value: &'a [u8],
    payload: Payload<'a>,
    header: HeaderInfo,
}

impl Accepted<'_> {
    /// Whether the output can be the envelope's own bytes with the validation fields spliced in front.
    fn spliceable(&self) -> bool {
        self.payload.data_is_canonical && self.payload.envelope.as_ref().is_some_and(|e| !e.fields.has_validator_keys())
    }

    /// How the record value is rebuilt from the validated record (see [`OriginalForm`]): cheaply for the
    /// common shapes, as a capped copy for the rest.
    fn original_form(&self, cap: PayloadCap) -> OriginalForm {
        match &self.payload.envelope {
            Some(envelope) if self.spliceable() && envelope.raw.len() == self.value.len() => {
                OriginalForm::Envelope { tail: envelope.raw.len() as u64 - 1 }
            }
            None if matches!(self.payload.image, std::borrow::Cow::Borrowed(_)) => OriginalForm::Image,
            None if self.value.len() == self.payload.image.len().div_ceil(3) * 4
                && STANDARD.encode(&*self.payload.image).as_bytes() == self.value =>
            {
                OriginalForm::Data
            }
            _ => OriginalForm::Payload(CappedPayload::new(self.value, cap)),
        }
    }

    fn id(&self) -> String {
        match self.payload.envelope.as_ref().map(|e| e.fields.id()) {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => content_id(&self.payload.image),
        }
    }

    fn into_validated(self, cap: PayloadCap) -> ValidatedImage {
        let id = self.id();
        let original = Some(self.original_form(cap));
        let image = &*self.payload.image;
        let mut meta = self.payload.envelope.as_ref().map(|e| e.fields.to_meta()).unwrap_or_default();
        meta.id = id;
        ValidatedImage {
            event: ImageEvent { meta, data: STANDARD.encode(image) },
            format: self.header.format,
            width: self.header.width,
            height: self.header.height,
            size_bytes: image.len() as u64,
            original,
        }
    }
}

/// Validates one record value. Checks run cheapest first: payload size, magic bytes, header
/// dimensions against the limits, structure (truncation, checksums), and the optional full decode.
/// Never panics; every failure is a `Rejected` record carrying the original value.
pub fn validate_value(value: &[u8], params: &ValidationParams) -> ValidationRecord {
    match check(value, params) {
        Ok(accepted) => ValidationRecord::Ok(accepted.into_validated(params.dead_letter_payload_cap)),
        Err(rejected) => ValidationRecord::Rejected(*rejected),
    }
}

/// Output of [`validate_to_json`]: what the SmartModule emits for one input.
#[derive(Debug)]
pub struct JsonOutput {
    /// The image id, used as the record key.
    pub id: String,
    /// The serialized `ValidationRecord`.
    pub json: Vec<u8>,
    /// Whether the image was accepted.
    pub ok: bool,
}

/// [`validate_value`], serialized. When an envelope is accepted with canonical base64 and without
/// keys of its own that clash, the output is the envelope's own bytes with the validation fields
/// spliced in front: the (large) `data` string is copied once, never parsed into a new string or
/// re-escaped. Both paths give records that deserialize to the same `ValidationRecord`.
pub fn validate_to_json(value: &[u8], params: &ValidationParams) -> JsonOutput {
    let accepted = match check(value, params) {
        Ok(accepted) => accepted,
        Err(rejected) => {
            let id = rejected.event.id.clone();
            return JsonOutput { id, json: to_json(&ValidationRecord::Rejected(*rejected)), ok: false };
        }
    };
    let spliceable = accepted.spliceable();
    let id = accepted.id();
    match (&accepted.payload.envelope, spliceable) {
        (Some(envelope), true) => {
            let original = accepted.original_form(params.dead_letter_payload_cap);
            let h = accepted.header;
            let mut json = Vec::with_capacity(envelope.raw.len() + 160);
            // Writing into a Vec cannot fail.
            let _ = write!(
                json,
                r#"{{"status":"ok","format":"{}","width":{},"height":{},"size_bytes":{},"#,
                h.format,
                h.width,
                h.height,
                accepted.payload.image.len()
            );
            if envelope.fields.id().is_empty() {
                let _ = write!(json, r#""id":"{id}","#);
            }
            if let OriginalForm::Envelope { tail } = original {
                let _ = write!(json, r#""original":{{"form":"envelope","tail":{tail}}},"#);
            } else {
                // Surrounding whitespace: the record value is not the envelope's text, so keep a copy.
                let form = serde_json::to_vec(&original).unwrap_or_default();
                json.extend_from_slice(br#""original":"#);
                json.extend_from_slice(&form);
                json.push(b',');
            }
            json.extend_from_slice(&envelope.raw[1..]);
            JsonOutput { id, json, ok: true }
        }
        _ => {
            let validated = accepted.into_validated(params.dead_letter_payload_cap);
            JsonOutput { id, json: to_json(&ValidationRecord::Ok(validated)), ok: true }
        }
    }
}

fn to_json(record: &ValidationRecord) -> Vec<u8> {
    // These types have only string keys and finite numbers: serialization cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

fn check<'a>(value: &'a [u8], params: &ValidationParams) -> Result<Accepted<'a>, Box<RejectedImage>> {
    let cap = params.dead_letter_payload_cap;
    let reject =
        |reason: RejectReason, detail: String| RejectedImage::capped(reason, detail, Stage::Validate, value, cap);

    let max_record = params.max_encoded_bytes.div_ceil(3).saturating_mul(4).saturating_add(ENVELOPE_ALLOWANCE);
    if value.len() as u64 > max_record {
        let detail = format!(
            "the record value is {} bytes, more than an envelope of an image of max_encoded_bytes = {} can be \
             ({max_record} bytes)",
            value.len(),
            params.max_encoded_bytes
        );
        return Err(Box::new(reject(RejectReason::TooLarge, detail)));
    }

    let payload = match parse_value(value, params.max_encoded_bytes) {
        Ok(payload) => payload,
        Err(PayloadError { reason, detail, event }) => {
            let rejected = reject(reason, detail);
            return Err(Box::new(match event {
                Some(event) => rejected.with_event(*event),
                None => rejected,
            }));
        }
    };
    if let Some(envelope) = &payload.envelope {
        if let Err(oversized) = envelope.fields.check_fields(params.max_envelope_field_bytes) {
            let rejected = reject(RejectReason::MalformedEnvelope, oversized.to_string());
            return Err(Box::new(rejected.with_event(envelope.fields.to_meta())));
        }
    }
    let image = &*payload.image;
    let size_bytes = image.len() as u64;
    let fail = |reason: RejectReason, detail: String, header: Option<HeaderInfo>| {
        let mut rejected = reject(reason, detail);
        if let Some(envelope) = &payload.envelope {
            rejected = rejected.with_event(envelope.fields.to_meta());
        }
        rejected.size_bytes = Some(size_bytes);
        rejected.format = sniff(image);
        if let Some(header) = header {
            rejected.width = Some(header.width);
            rejected.height = Some(header.height);
        }
        Box::new(rejected)
    };

    if image.is_empty() {
        return Err(fail(RejectReason::Empty, "the image data is empty".into(), None));
    }
    if size_bytes > params.max_encoded_bytes {
        let detail = format!("image is {size_bytes} bytes, above max_encoded_bytes = {}", params.max_encoded_bytes);
        return Err(fail(RejectReason::TooLarge, detail, None));
    }
    if let Some(format) = sniff(image) {
        if !params.allowed_formats.contains(&format) {
            let allowed: Vec<&str> = params.allowed_formats.iter().map(|f| f.as_str()).collect();
            let detail = format!("{format} is not in allowed_formats ({})", allowed.join(", "));
            return Err(fail(RejectReason::UnsupportedFormat, detail, None));
        }
    }
    let header = read_header(image).map_err(|err| {
        let reason = match err {
            HeaderError::UnknownFormat => RejectReason::UnknownFormat,
            HeaderError::Unsupported(_) => RejectReason::UnsupportedFormat,
            HeaderError::Truncated(_) => RejectReason::Truncated,
            HeaderError::Invalid { .. } => RejectReason::InvalidHeader,
        };
        fail(reason, err.to_string(), None)
    })?;
    if let Some((reason, detail)) = check_limits(header.width, header.height, params) {
        return Err(fail(reason, detail, Some(header)));
    }
    if let Err(err) = check_structure(image, header.format) {
        let reason = match err {
            StructureError::Truncated(_) => RejectReason::Truncated,
            StructureError::Corrupt(_) => RejectReason::CorruptData,
        };
        return Err(fail(reason, err.to_string(), Some(header)));
    }
    if params.full_decode {
        if let Err(err) = full_decode(image, header.format, params.max_side, params.max_pixels) {
            return Err(fail(RejectReason::DecodeError, format!("full decode failed: {err}"), Some(header)));
        }
    }
    Ok(Accepted { value, payload, header })
}

/// The dimension limits, all from the header: pixels first (the bomb guard), then sides, then shape.
fn check_limits(width: u32, height: u32, params: &ValidationParams) -> Option<(RejectReason, String)> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > params.max_pixels {
        return Some((
            RejectReason::TooManyPixels,
            format!("{width}x{height} is {pixels} pixels, above max_pixels = {}", params.max_pixels),
        ));
    }
    if width.max(height) > params.max_side {
        return Some((
            RejectReason::DimensionsTooLarge,
            format!("{width}x{height} has a side above max_side = {}", params.max_side),
        ));
    }
    let ratio = f64::from(width.max(height)) / f64::from(width.min(height));
    if ratio > params.max_aspect_ratio {
        return Some((
            RejectReason::ExtremeAspectRatio,
            format!(
                "{width}x{height} has aspect ratio {ratio:.1}, above max_aspect_ratio = {}",
                params.max_aspect_ratio
            ),
        ));
    }
    None
}

/// An id for images that arrive without one: a hash of the content, so the same image always maps
/// to the same id (and replays to the same prediction id).
pub fn content_id(image: &[u8]) -> String {
    format!("xxh3-{:032x}", xxhash_rust::xxh3::xxh3_128(image))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fvision_records::{ImageFormat, Source};
    use proptest::prelude::*;

    /// A complete 1x1 PNG.
    const PNG_1X1: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0\x90wS\xde\0\0\0\x0cIDATx\x9cc\xf8\xcf\xc0\0\0\x03\x01\x01\0\xc9\xfe\x92\xef\0\0\0\0IEND\xaeB`\x82";

    fn envelope(id: &str, data: &str, extra: &str) -> Vec<u8> {
        format!(r#"{{"id":"{id}","source":"gcs","data":"{data}","attributes":{{"bucket":"b"}}{extra}}}"#).into_bytes()
    }

    fn parse(json: &[u8]) -> ValidationRecord {
        serde_json::from_slice(json).unwrap()
    }

    #[test]
    fn accepts_a_complete_png_and_fills_the_id_from_content() {
        let record = validate_value(PNG_1X1, &ValidationParams::default());
        let ValidationRecord::Ok(ok) = record else { panic!("{record:?}") };
        assert_eq!((ok.format, ok.width, ok.height), (ImageFormat::Png, 1, 1));
        assert_eq!(ok.event.meta.id, content_id(PNG_1X1));
        assert_eq!(STANDARD.decode(&ok.event.data).unwrap(), PNG_1X1);
    }

    #[test]
    fn spliced_and_serialized_outputs_agree() {
        let b64 = STANDARD.encode(PNG_1X1);
        let params = ValidationParams::default();
        for value in [
            envelope("a", &b64, ""),
            envelope("", &b64, ""),
            envelope("c", &b64, r#","format":"tiff""#),
            envelope("d", &b64.replace('=', ""), ""),
            envelope("e", &b64, r#","unknown":{"nested":[1,2]}"#),
            PNG_1X1.to_vec(),
            b64.clone().into_bytes(),
        ] {
            let out = validate_to_json(&value, &params);
            assert!(out.ok);
            let spliced = parse(&out.json);
            assert_eq!(spliced, validate_value(&value, &params), "{}", String::from_utf8_lossy(&value));
            let ValidationRecord::Ok(ok) = spliced else { unreachable!() };
            assert_eq!(out.id, ok.event.meta.id);
        }
    }

    #[test]
    fn rejections_keep_the_envelope_and_the_original_payload() {
        let value = envelope("img-7", "not base64!", "");
        let out = validate_to_json(&value, &ValidationParams::default());
        assert!(!out.ok);
        let ValidationRecord::Rejected(rejected) = parse(&out.json) else { panic!() };
        assert_eq!(rejected.reason, RejectReason::InvalidBase64);
        assert_eq!(rejected.event.id, "img-7");
        assert_eq!(rejected.event.source, Source::Gcs);
        assert_eq!(rejected.event.attributes["bucket"], "b");
        assert_eq!(rejected.payload.to_bytes().unwrap(), value);
    }

    #[test]
    fn limits_are_checked_from_the_header() {
        let tight = ValidationParams { max_pixels: 0, ..ValidationParams::default() };
        let ValidationRecord::Rejected(r) = validate_value(PNG_1X1, &tight) else { panic!() };
        assert_eq!((r.reason, r.width, r.height), (RejectReason::TooManyPixels, Some(1), Some(1)));
        let png_only = ValidationParams { allowed_formats: vec![ImageFormat::Jpeg], ..ValidationParams::default() };
        let ValidationRecord::Rejected(r) = validate_value(PNG_1X1, &png_only) else { panic!() };
        assert_eq!(r.reason, RejectReason::UnsupportedFormat);
        let small = ValidationParams { max_encoded_bytes: 10, ..ValidationParams::default() };
        let ValidationRecord::Rejected(r) = validate_value(PNG_1X1, &small) else { panic!() };
        assert_eq!(r.reason, RejectReason::TooLarge);
    }

    /// Values of `len` hostile bytes: control bytes (six times larger as JSON), pseudo-random bytes, a huge
    /// JSON envelope, and a raw JPEG header followed by garbage.
    fn hostile(len: usize) -> Vec<(&'static str, Vec<u8>)> {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
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
        let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe0];
        jpeg.resize(len, 0x01);
        vec![("0x01", vec![0x01; len]), ("random", random), ("envelope", envelope.into_bytes()), ("jpeg", jpeg)]
    }

    #[test]
    fn hostile_records_become_rejections_under_the_cap() {
        let params = ValidationParams::default();
        let cap = params.dead_letter_payload_cap.bytes();
        for len in [3 << 20, 12 << 20, 20 << 20] {
            for (name, value) in hostile(len) {
                let out = validate_to_json(&value, &params);
                assert!(!out.ok, "{name} {len}");
                assert!(out.json.len() < cap + 8192, "{name} {len}: {} bytes", out.json.len());
                let ValidationRecord::Rejected(r) = parse(&out.json) else { panic!("{name}") };
                assert!(r.payload_truncated, "{name} {len}");
                assert_eq!(r.payload_size, Some(value.len() as u64));
                assert!(value.starts_with(&r.payload.to_bytes().unwrap()), "{name}: the payload keeps the first bytes");
            }
        }
    }

    #[test]
    fn huge_envelope_fields_on_a_valid_image_are_malformed_envelopes() {
        let params = ValidationParams::default();
        let b64 = STANDARD.encode(PNG_1X1);
        let huge = |len: usize| "i".repeat(len);
        for (field, value) in [
            ("id", format!(r#"{{"id":"{}","data":"{b64}"}}"#, huge(9 << 20))),
            ("id", format!(r#"{{"id":"{}","data":"{b64}"}}"#, huge(600_000))),
            ("event_time", format!(r#"{{"id":"t","event_time":"{}","data":"{b64}"}}"#, huge(2 << 20))),
            ("uri", format!(r#"{{"id":"u","uri":"{}","data":"{b64}"}}"#, huge(4097))),
            ("source", format!(r#"{{"id":"s","source":"{}","data":"{b64}"}}"#, huge(5000))),
            ("content_type", format!(r#"{{"id":"c","content_type":"{}","data":"{b64}"}}"#, huge(5000))),
            ("attributes.k", format!(r#"{{"id":"a","attributes":{{"k":"{}"}},"data":"{b64}"}}"#, huge(5000))),
        ] {
            let out = validate_to_json(value.as_bytes(), &params);
            assert!(!out.ok, "{field}");
            let ValidationRecord::Rejected(r) = parse(&out.json) else { unreachable!() };
            assert_eq!(r.reason, RejectReason::MalformedEnvelope, "{field}");
            assert!(r.detail.starts_with(&format!("the envelope field `{field}` is ")), "{}", r.detail);
            assert!(
                out.json.len() < params.dead_letter_payload_cap.bytes() + 8192,
                "{field}: {} bytes",
                out.json.len()
            );
            assert!(out.id.len() <= 4096, "{field}: the record key is cut down too");
            let whole = value.len() <= params.dead_letter_payload_cap.bytes();
            assert_eq!(r.payload_truncated, !whole, "{field}");
            assert_eq!(r.payload_size, (!whole).then_some(value.len() as u64));
        }
        // At the cap, and with a cap raised by the param, the same envelopes are images.
        let at_cap = format!(r#"{{"id":"{}","event_time":"{}","data":"{b64}"}}"#, huge(4096), huge(4096));
        assert!(validate_to_json(at_cap.as_bytes(), &params).ok);
        let raised = ValidationParams::from_pairs([("max_envelope_field_bytes", "65536")]).unwrap();
        let value = format!(r#"{{"id":"{}","data":"{b64}"}}"#, huge(60_000));
        assert!(!validate_to_json(value.as_bytes(), &params).ok);
        assert!(validate_to_json(value.as_bytes(), &raised).ok);
        // A null or non-string source is still refused as before, a known one kept.
        let ValidationRecord::Ok(ok) = validate_value(envelope("k", &b64, "").as_slice(), &params) else { panic!() };
        assert_eq!(ok.event.meta.source, Source::Gcs);
        let null_source = format!(r#"{{"id":"n","source":null,"data":"{b64}"}}"#);
        let ValidationRecord::Rejected(r) = validate_value(null_source.as_bytes(), &params) else { panic!() };
        assert_eq!(r.reason, RejectReason::MalformedEnvelope);
    }

    #[test]
    fn validated_records_say_how_to_rebuild_the_value() {
        let params = ValidationParams::default();
        let cap = params.dead_letter_payload_cap;
        let b64 = STANDARD.encode(PNG_1X1);
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(PNG_1X1);
        for value in [
            envelope("a", &b64, ""),
            envelope("", &b64, ""),
            format!(r#"{{"data":"{b64}"}}"#).into_bytes(),
            format!("  {}\n", String::from_utf8(envelope("w", &b64, "")).unwrap()).into_bytes(),
            envelope("u", &url_safe, ""),
            envelope("s", &b64, r#","status":"ok""#),
            PNG_1X1.to_vec(),
            b64.clone().into_bytes(),
            url_safe.clone().into_bytes(),
            format!("data:image/png;base64,{b64}").into_bytes(),
        ] {
            let out = validate_to_json(&value, &params);
            let ValidationRecord::Ok(ok) = parse(&out.json) else { panic!("{}", String::from_utf8_lossy(&value)) };
            let form = ok.original.clone().unwrap();
            let rebuilt = form.rebuild(&out.json, &ok.event, cap).unwrap();
            assert_eq!(rebuilt, CappedPayload::new(&value, cap), "{form:?}: {}", String::from_utf8_lossy(&value));
        }
    }

    proptest! {
        #[test]
        fn arbitrary_values_give_one_parseable_record(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let params = ValidationParams { full_decode: true, ..ValidationParams::default() };
            let out = validate_to_json(&bytes, &params);
            prop_assert_eq!(parse(&out.json), validate_value(&bytes, &params));
        }

        #[test]
        fn mutated_images_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), b64 in any::<bool>()) {
            let mut bytes = PNG_1X1.to_vec();
            for (at, v) in flips {
                let len = bytes.len();
                bytes[at % len] = v;
            }
            let value = if b64 { envelope("m", &STANDARD.encode(&bytes), "") } else { bytes };
            let params = ValidationParams { full_decode: true, ..ValidationParams::default() };
            let out = validate_to_json(&value, &params);
            let record = parse(&out.json);
            if let ValidationRecord::Rejected(r) = &record {
                prop_assert_eq!(r.payload.to_bytes().unwrap(), value.clone());
            }
        }
    }
}
