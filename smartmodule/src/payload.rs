//! Turning a record value into image bytes: envelope, bare base64, data URI or raw bytes.

use std::borrow::Cow;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use fvision_records::{EnvelopeFieldCap, EventMeta, OversizedField, RejectReason, Source};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::header::sniff;

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
/// Standard alphabet, padding optional.
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
/// URL-safe alphabet, padding optional.
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// A record value taken apart.
#[derive(Debug)]
pub struct Payload<'a> {
    /// The JSON envelope, when the value was one.
    pub envelope: Option<Envelope<'a>>,
    /// The image file.
    pub image: Cow<'a, [u8]>,
    /// True when the envelope's `data` is already padded standard base64 without whitespace, so the
    /// record can be passed on without re-encoding.
    pub data_is_canonical: bool,
}

/// An `ImageEvent` envelope read without copying its `data`.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// The fields, borrowing from the record value where JSON allows.
    pub fields: EnvelopeRef<'a>,
    /// The envelope's JSON text, trimmed, starting with `{`.
    pub raw: &'a [u8],
}

/// The same fields (and types) as [`ImageEvent`], borrowed, plus markers for the keys the validator
/// adds: an envelope that already carries one of those cannot be passed on verbatim.
#[derive(Debug, Deserialize)]
pub struct EnvelopeRef<'a> {
    #[serde(borrow, default)]
    id: IdField<'a>,
    #[serde(default)]
    source: SourceField,
    #[serde(borrow, default)]
    uri: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Cow<'a, str>,
    #[serde(default)]
    attributes: Map<String, Value>,
    #[serde(borrow, default)]
    event_time: Option<Cow<'a, str>>,
    #[serde(default)]
    status: Present,
    #[serde(default)]
    format: Present,
    #[serde(default)]
    width: Present,
    #[serde(default)]
    height: Present,
    #[serde(default)]
    size_bytes: Present,
    #[serde(default)]
    original: Present,
}

/// Whether a key is in the envelope, whatever its value (`null` included, which `Option` would hide).
#[derive(Debug, Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer).map(|_| Self(true))
    }
}

/// The envelope's `source` and the length of its text (any string is a [`Source`], unknown ones `other`, so
/// only its length says that it was huge).
#[derive(Debug, Default)]
struct SourceField {
    source: Source,
    len: usize,
}

impl<'de> Deserialize<'de> for SourceField {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SourceField;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a source name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let source = Source::deserialize(serde::de::value::StrDeserializer::<E>::new(v))?;
                Ok(SourceField { source, len: v.len() })
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// The envelope's `id`: absent, `null`, or a string. `null` is told apart from absent because the validator
/// must then replace the key rather than add a second `id` (which the sink's parser refuses).
#[derive(Debug, Default)]
enum IdField<'a> {
    #[default]
    Absent,
    Null,
    Text(Cow<'a, str>),
}

impl IdField<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for IdField<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = IdField<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or null")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(IdField::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(IdField::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(IdField::Text(Cow::Owned(v)))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(IdField::Null)
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(IdField::Null)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl EnvelopeRef<'_> {
    /// The event id as sent (empty when absent).
    pub fn id(&self) -> &str {
        self.id.as_str().unwrap_or_default()
    }

    /// Whether the envelope already has a key that the validated record adds or fills in (an `id`
    /// that is present but empty is filled from the content).
    pub fn has_validator_keys(&self) -> bool {
        matches!(self.id, IdField::Null)
            || self.id.as_str() == Some("")
            || self.status.0
            || self.format.0
            || self.width.0
            || self.height.0
            || self.size_bytes.0
            || self.original.0
    }

    /// Checks every envelope field against `cap` (see [`EnvelopeFieldCap::check`]).
    pub fn check_fields(&self, cap: EnvelopeFieldCap) -> Result<(), OversizedField> {
        let optional = |text: &Option<Cow<'_, str>>| text.as_ref().map_or(0, |t| t.len());
        cap.check(
            [
                ("id", self.id().len()),
                ("source", self.source.len),
                ("uri", optional(&self.uri)),
                ("content_type", optional(&self.content_type)),
                ("event_time", optional(&self.event_time)),
            ],
            &self.attributes,
        )
    }

    /// The envelope fields, owned.
    pub fn to_meta(&self) -> EventMeta {
        EventMeta {
            id: self.id().to_owned(),
            source: self.source.source,
            uri: self.uri.as_ref().map(|u| u.clone().into_owned()),
            content_type: self.content_type.as_ref().map(|c| c.clone().into_owned()),
            attributes: self.attributes.clone(),
            event_time: self.event_time.as_ref().map(|t| t.clone().into_owned()),
        }
    }
}

/// A value that could not be turned into image bytes.
#[derive(Debug)]
pub struct PayloadError {
    /// Stable code.
    pub reason: RejectReason,
    /// Human detail.
    pub detail: String,
    /// The envelope, when it could be parsed.
    pub event: Option<Box<EventMeta>>,
}

impl PayloadError {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into(), event: None }
    }
}

/// Reads a record value: an `ImageEvent` JSON object, a JSON string or bare text holding base64
/// (any accepted variant), or raw image bytes recognised by their signature.
///
/// `max_image_bytes` is enforced on the base64 length, before anything is decoded.
pub fn parse_value(value: &[u8], max_image_bytes: u64) -> Result<Payload<'_>, PayloadError> {
    if sniff(value).is_some() {
        return Ok(Payload { envelope: None, image: Cow::Borrowed(value), data_is_canonical: false });
    }
    let trimmed = value.trim_ascii();
    match trimmed.first() {
        None => Err(PayloadError::new(RejectReason::Empty, "the record value is empty")),
        Some(b'{') => {
            let fields: EnvelopeRef<'_> = serde_json::from_slice(trimmed).map_err(|e| {
                PayloadError::new(RejectReason::MalformedEnvelope, format!("not a valid ImageEvent JSON object: {e}"))
            })?;
            let with_event = |mut err: PayloadError, fields: &EnvelopeRef<'_>| {
                err.event = Some(Box::new(fields.to_meta()));
                err
            };
            if let Err(e) = check_strict_json(trimmed, &fields.data) {
                return Err(with_event(
                    PayloadError::new(RejectReason::MalformedEnvelope, format!("not valid JSON: {e}")),
                    &fields,
                ));
            }
            if fields.data.trim().is_empty() {
                return Err(with_event(PayloadError::new(RejectReason::Empty, "the envelope has no `data`"), &fields));
            }
            match decode_base64(&fields.data, max_image_bytes) {
                Ok((image, data_is_canonical)) => Ok(Payload {
                    envelope: Some(Envelope { fields, raw: trimmed }),
                    image: Cow::Owned(image),
                    data_is_canonical,
                }),
                Err(err) => Err(with_event(err, &fields)),
            }
        }
        Some(b'"') => {
            let text: Cow<'_, str> = serde_json::from_slice(trimmed).map_err(|e| {
                PayloadError::new(RejectReason::MalformedEnvelope, format!("not a valid JSON string: {e}"))
            })?;
            bare_text(&text, max_image_bytes)
        }
        Some(_) => {
            let text = std::str::from_utf8(trimmed).map_err(|_| {
                PayloadError::new(RejectReason::UnknownFormat, "neither a known image signature, JSON, nor base64 text")
            })?;
            bare_text(text, max_image_bytes)
        }
    }
}

/// The envelope parser skips the values of unknown keys without checking them (escapes, UTF-8, control
/// characters), but every later reader parses them whole: an envelope whose text outside `data` holds anything
/// but printable ASCII is parsed strictly once, so the validator never accepts what the sink cannot read.
fn check_strict_json(raw: &[u8], data: &str) -> Result<(), serde_json::Error> {
    let plain = |bytes: &[u8]| bytes.iter().all(|b| (0x20..0x7f).contains(b) && *b != b'\\');
    let start = (data.as_ptr() as usize).wrapping_sub(raw.as_ptr() as usize);
    let outside_data_is_plain = match raw.get(start..start.saturating_add(data.len())) {
        // `data` borrows from `raw` (no escapes in it): only the text around it needs a look.
        Some(slice) if slice.as_ptr() == data.as_ptr() => plain(&raw[..start]) && plain(&raw[start + data.len()..]),
        _ => plain(raw),
    };
    if outside_data_is_plain {
        return Ok(());
    }
    serde_json::from_slice::<Value>(raw).map(drop)
}

/// Bare text must look like base64 to be decoded as such; prose or other text is not an image at all.
fn bare_text<'a>(text: &str, max_image_bytes: u64) -> Result<Payload<'a>, PayloadError> {
    let is_data_uri = text.as_bytes().get(..5).is_some_and(|p| p.eq_ignore_ascii_case(b"data:"));
    // Line breaks are how base64 is wrapped; spaces between words are how prose is written.
    let base64_like = text
        .trim()
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'=' | b'\r' | b'\n'));
    if !is_data_uri && !base64_like {
        return Err(PayloadError::new(
            RejectReason::UnknownFormat,
            "text that is neither an ImageEvent JSON object nor base64, and no known image signature",
        ));
    }
    let (image, _) = decode_base64(text, max_image_bytes)?;
    Ok(Payload { envelope: None, image: Cow::Owned(image), data_is_canonical: false })
}

/// Decodes base64 in any accepted variant: standard or URL-safe alphabet, padded or not, wrapped in
/// whitespace or line breaks, optionally behind a `data:<type>;base64,` prefix. Returns the bytes and
/// whether the input was already canonical (padded standard alphabet, nothing to strip).
pub fn decode_base64(text: &str, max_image_bytes: u64) -> Result<(Vec<u8>, bool), PayloadError> {
    // Fast path: producers almost always send padded standard base64, and the decoder checks every
    // byte anyway, so try that first and analyse the text only when it fails.
    if text.len().is_multiple_of(4) && decoded_len(text) <= max_image_bytes {
        if let Ok(bytes) = STANDARD.decode(text) {
            let canonical = !bytes.is_empty();
            return Ok((bytes, canonical));
        }
    }
    decode_base64_lenient(text, max_image_bytes)
}

/// The exact decoded length of valid base64 `text` without whitespace (padded or not).
fn decoded_len(text: &str) -> u64 {
    let len = text.len() as u64;
    let padding = text.bytes().rev().take(2).take_while(|b| *b == b'=').count() as u64;
    ((len / 4) * 3 + (len % 4) * 3 / 4).saturating_sub(padding)
}

/// The slow path of [`decode_base64`]: strips a data URI prefix and whitespace, picks the alphabet.
fn decode_base64_lenient(text: &str, max_image_bytes: u64) -> Result<(Vec<u8>, bool), PayloadError> {
    let mut canonical = true;
    let mut text = text.trim();
    if text.as_bytes().get(..5).is_some_and(|p| p.eq_ignore_ascii_case(b"data:")) {
        let comma =
            text.find(',').ok_or_else(|| PayloadError::new(RejectReason::InvalidBase64, "data URI without a comma"))?;
        let header = &text[5..comma];
        if !header.to_ascii_lowercase().ends_with(";base64") {
            return Err(PayloadError::new(RejectReason::InvalidBase64, "data URI is not base64-encoded"));
        }
        text = text[comma + 1..].trim_start();
        canonical = false;
    }
    let stripped;
    if text.bytes().any(|b| b.is_ascii_whitespace()) {
        stripped = text.chars().filter(|c| !c.is_ascii_whitespace()).collect::<String>();
        text = &stripped;
        canonical = false;
    }
    if text.is_empty() {
        return Err(PayloadError::new(RejectReason::Empty, "the base64 data is empty"));
    }
    let size = decoded_len(text);
    if size > max_image_bytes {
        return Err(PayloadError::new(
            RejectReason::TooLarge,
            format!("base64 data decodes to {size} bytes, above max_encoded_bytes = {max_image_bytes}"),
        ));
    }
    let url_safe = text.bytes().any(|b| b == b'-' || b == b'_');
    if url_safe && text.bytes().any(|b| b == b'+' || b == b'/') {
        return Err(PayloadError::new(RejectReason::InvalidBase64, "mixes the standard and URL-safe alphabets"));
    }
    if url_safe || !text.len().is_multiple_of(4) {
        canonical = false;
    }
    let engine = if url_safe { &URL_SAFE } else { &STANDARD };
    let bytes = engine
        .decode(text)
        .map_err(|e| PayloadError::new(RejectReason::InvalidBase64, format!("invalid base64: {e}")))?;
    Ok((bytes, canonical))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose;
    use proptest::prelude::*;

    const MAX: u64 = 1 << 20;

    fn variants(bytes: &[u8]) -> Vec<String> {
        let std = general_purpose::STANDARD.encode(bytes);
        let wrapped: String =
            std.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("\r\n");
        vec![
            std.clone(),
            general_purpose::STANDARD_NO_PAD.encode(bytes),
            general_purpose::URL_SAFE.encode(bytes),
            general_purpose::URL_SAFE_NO_PAD.encode(bytes),
            wrapped,
            format!("data:image/png;base64,{std}"),
            format!("DATA:image/jpeg;BASE64,\n{std}\n"),
        ]
    }

    #[test]
    fn every_variant_decodes_to_the_same_bytes() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for (i, text) in variants(&bytes).iter().enumerate() {
            let (decoded, canonical) = decode_base64(text, MAX).unwrap();
            assert_eq!(decoded, bytes, "variant {i}");
            assert_eq!(canonical, i == 0, "variant {i}");
        }
    }

    #[test]
    fn rejects_bad_base64_with_stable_reasons() {
        let reason = |t: &str| decode_base64(t, MAX).unwrap_err().reason;
        assert_eq!(reason("abc$"), RejectReason::InvalidBase64);
        assert_eq!(reason("ab+_"), RejectReason::InvalidBase64);
        assert_eq!(reason("data:image/png,abcd"), RejectReason::InvalidBase64);
        assert_eq!(reason("data:image/png;base64"), RejectReason::InvalidBase64);
        assert_eq!(reason("  \n "), RejectReason::Empty);
        assert_eq!(decode_base64("AAAAAAAA", 5).unwrap_err().reason, RejectReason::TooLarge);
    }

    #[test]
    fn size_limit_is_exact_in_every_variant() {
        for len in 1..40usize {
            let bytes = vec![7u8; len];
            for text in variants(&bytes) {
                assert_eq!(decode_base64(&text, len as u64).unwrap().0.len(), len, "{text}");
                let err = decode_base64(&text, len as u64 - 1).unwrap_err();
                assert_eq!(err.reason, RejectReason::TooLarge, "{text}");
            }
        }
    }

    #[test]
    fn parses_envelopes_strings_and_raw_bytes() {
        let png = b"\x89PNG\r\n\x1a\nrest";
        let b64 = general_purpose::STANDARD.encode(png);
        let raw = parse_value(png, MAX).unwrap();
        assert_eq!(&*raw.image, png);
        let env = format!(r#"{{"id":"x","source":"kafka","data":"{b64}","attributes":{{"bucket":"b"}}}}"#);
        let parsed = parse_value(env.as_bytes(), MAX).unwrap();
        assert_eq!(&*parsed.image, png);
        let envelope = parsed.envelope.unwrap();
        assert!(matches!(envelope.fields.data, Cow::Borrowed(_)), "data is borrowed, not copied");
        let event = envelope.fields.to_meta();
        assert_eq!(event.id, "x");
        assert_eq!(event.attribute("bucket"), Some("b"));
        assert!(!envelope.fields.has_validator_keys());
        assert!(parsed.data_is_canonical);
        let with_status = format!(r#"{{"status":"ok","data":"{b64}"}}"#);
        assert!(parse_value(with_status.as_bytes(), MAX).unwrap().envelope.unwrap().fields.has_validator_keys());
        assert_eq!(&*parse_value(format!("\"{b64}\"").as_bytes(), MAX).unwrap().image, png);
        assert_eq!(&*parse_value(b64.as_bytes(), MAX).unwrap().image, png);
    }

    #[test]
    fn envelope_errors_keep_what_was_read() {
        let err = parse_value(br#"{"id": "x", "data": "#, MAX).unwrap_err();
        assert_eq!(err.reason, RejectReason::MalformedEnvelope);
        let err = parse_value(br#"{"id": "x", "data": ""}"#, MAX).unwrap_err();
        assert_eq!(err.reason, RejectReason::Empty);
        assert_eq!(err.event.unwrap().id, "x");
        let err = parse_value(br#"{"id": "y", "data": "!!"}"#, MAX).unwrap_err();
        assert_eq!(err.reason, RejectReason::InvalidBase64);
        assert_eq!(err.event.unwrap().id, "y");
        assert_eq!(parse_value(b"", MAX).unwrap_err().reason, RejectReason::Empty);
        assert_eq!(parse_value(&[0x80, 0xff, 0x00], MAX).unwrap_err().reason, RejectReason::UnknownFormat);
        assert_eq!(parse_value(b"Hello, world.\nNot an image.", MAX).unwrap_err().reason, RejectReason::UnknownFormat);
        assert_eq!(parse_value(b"QUJD$", MAX).unwrap_err().reason, RejectReason::UnknownFormat);
        assert_eq!(parse_value(b"not an image", MAX).unwrap_err().reason, RejectReason::UnknownFormat);
        assert_eq!(parse_value(b"QUJDR", MAX).unwrap_err().reason, RejectReason::InvalidBase64);
    }

    proptest! {
        #[test]
        fn round_trips_arbitrary_bytes_in_every_variant(bytes in proptest::collection::vec(any::<u8>(), 1..300)) {
            for text in variants(&bytes) {
                prop_assert_eq!(decode_base64(&text, MAX).unwrap().0, bytes.clone());
            }
        }

        #[test]
        fn arbitrary_values_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_value(&bytes, MAX);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse_value(text.as_bytes(), MAX);
            let _ = decode_base64(&text, MAX);
        }
    }
}
