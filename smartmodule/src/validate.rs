//! The validator: one record value in, one validated or rejected record out. Pure and deterministic.

use std::io::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use fvision_records::{ImageEvent, RejectReason, RejectedImage, Stage, ValidatedImage, ValidationRecord};

use crate::decode::full_decode;
use crate::header::{read_header, sniff, HeaderError, HeaderInfo};
use crate::integrity::{check_structure, StructureError};
use crate::params::ValidationParams;
use crate::payload::{parse_value, Payload, PayloadError};

/// An input that passed every check, still borrowing from the record value.
struct Accepted<'a> {
    payload: Payload<'a>,
    header: HeaderInfo,
}

impl Accepted<'_> {
    fn id(&self) -> String {
        match self.payload.envelope.as_ref().map(|e| e.fields.id()) {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => content_id(&self.payload.image),
        }
    }

    fn into_validated(self) -> ValidatedImage {
        let id = self.id();
        let image = &*self.payload.image;
        let mut meta = self.payload.envelope.as_ref().map(|e| e.fields.to_meta()).unwrap_or_default();
        meta.id = id;
        ValidatedImage {
            event: ImageEvent { meta, data: STANDARD.encode(image) },
            format: self.header.format,
            width: self.header.width,
            height: self.header.height,
            size_bytes: image.len() as u64,
        }
    }
}

/// Validates one record value. Checks run cheapest first: payload size, magic bytes, header
/// dimensions against the limits, structure (truncation, checksums), and the optional full decode.
/// Never panics; every failure is a `Rejected` record carrying the original value.
pub fn validate_value(value: &[u8], params: &ValidationParams) -> ValidationRecord {
    match check(value, params) {
        Ok(accepted) => ValidationRecord::Ok(accepted.into_validated()),
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
    let spliceable = accepted.payload.data_is_canonical
        && accepted.payload.envelope.as_ref().is_some_and(|e| !e.fields.has_validator_keys());
    let id = accepted.id();
    match (&accepted.payload.envelope, spliceable) {
        (Some(envelope), true) => {
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
            json.extend_from_slice(&envelope.raw[1..]);
            JsonOutput { id, json, ok: true }
        }
        _ => JsonOutput { id, json: to_json(&ValidationRecord::Ok(accepted.into_validated())), ok: true },
    }
}

fn to_json(record: &ValidationRecord) -> Vec<u8> {
    // These types have only string keys and finite numbers: serialization cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

fn check<'a>(value: &'a [u8], params: &ValidationParams) -> Result<Accepted<'a>, Box<RejectedImage>> {
    let reject = |reason: RejectReason, detail: String| RejectedImage::new(reason, detail, Stage::Validate, value);

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
    Ok(Accepted { payload, header })
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
