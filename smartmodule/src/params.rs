//! SmartModule params: the validation limits, parsed once in `init`.

use core::str::FromStr;

use fvision_records::{EnvelopeFieldCap, ImageFormat, PayloadCap, MIN_PAYLOAD_CAP};

/// What to emit for an input that fails validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnInvalid {
    /// Emit a `rejected` record (default): nothing is lost, the sink routes it to the dead-letter topic.
    #[default]
    Reject,
    /// Emit nothing. Offsets after a dropped record are renumbered by Fluvio, so only use this where
    /// offsets do not matter.
    Drop,
}

/// Limits and switches of the validator. Every limit is checked from the header, before decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationParams {
    /// Largest accepted image file (after base64 decoding), in bytes.
    pub max_encoded_bytes: u64,
    /// Largest accepted width x height: the decompression-bomb guard.
    pub max_pixels: u64,
    /// Largest accepted width or height.
    pub max_side: u32,
    /// Largest accepted long side / short side.
    pub max_aspect_ratio: f64,
    /// Formats let through; others are `unsupported_format`.
    pub allowed_formats: Vec<ImageFormat>,
    /// Also decode every pixel (inside WASM) to catch damage that checksums miss.
    pub full_decode: bool,
    /// Reject (default) or drop invalid inputs.
    pub on_invalid: OnInvalid,
    /// Largest serialised payload a rejected record carries; above it only the first bytes, the size and a
    /// SHA-256 (so a rejected record always fits under the consumer's `max-bytes`).
    pub dead_letter_payload_cap: PayloadCap,
    /// Largest `id`, `source`, `uri`, `content_type`, `event_time`, attribute key or value (as JSON) of an
    /// envelope; above it the image is a `malformed_envelope` rejection (the fields are copied into every
    /// prediction and its keys, where a huge one is refused by the outputs).
    pub max_envelope_field_bytes: EnvelopeFieldCap,
}

impl Default for ValidationParams {
    fn default() -> Self {
        Self {
            max_encoded_bytes: 8 * 1024 * 1024,
            max_pixels: 50_000_000,
            max_side: 16_384,
            max_aspect_ratio: 10.0,
            allowed_formats: ImageFormat::DECODABLE.to_vec(),
            full_decode: false,
            on_invalid: OnInvalid::Reject,
            dead_letter_payload_cap: PayloadCap::default(),
            max_envelope_field_bytes: EnvelopeFieldCap::default(),
        }
    }
}

/// Every param name the SmartModule understands, with what it expects (for errors and docs).
pub const PARAMS: [(&str, &str); 9] = [
    ("max_encoded_bytes", "a positive integer number of bytes"),
    ("max_pixels", "a positive integer"),
    ("max_side", "a positive integer number of pixels"),
    ("max_aspect_ratio", "a number >= 1"),
    ("allowed_formats", "a comma-separated list of jpeg, png, gif, webp, bmp"),
    ("full_decode", "true or false"),
    ("on_invalid", "reject or drop"),
    ("dead_letter_payload_cap", "an integer number of bytes, at least 16384"),
    ("max_envelope_field_bytes", "an integer number of bytes from 64 to 65536"),
];

/// A param whose value is not what it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SmartModule param `{name}` = `{value}`: expected {expected}")]
pub struct ParamError {
    /// The param name.
    pub name: String,
    /// The value given.
    pub value: String,
    /// What would have been accepted.
    pub expected: String,
}

impl ValidationParams {
    /// Parses the params that `get` returns; absent ones keep their defaults. This is what `init`
    /// calls: Fluvio hands the SmartModule a lookup, not a list, so unknown names cannot be seen here.
    pub fn from_lookup<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, ParamError> {
        let mut params = Self::default();
        for (name, expected) in PARAMS {
            let Some(value) = get(name) else { continue };
            let err = || ParamError { name: name.into(), value: value.into(), expected: expected.into() };
            let value = value.trim();
            match name {
                "max_encoded_bytes" => params.max_encoded_bytes = positive(value).ok_or_else(err)?,
                "max_pixels" => params.max_pixels = positive(value).ok_or_else(err)?,
                "max_side" => params.max_side = positive(value).and_then(|v| u32::try_from(v).ok()).ok_or_else(err)?,
                "max_aspect_ratio" => {
                    params.max_aspect_ratio =
                        f64::from_str(value).ok().filter(|r| r.is_finite() && *r >= 1.0).ok_or_else(err)?
                }
                "allowed_formats" => params.allowed_formats = formats(value).ok_or_else(err)?,
                "full_decode" => params.full_decode = bool::from_str(value).map_err(|_| err())?,
                "on_invalid" => {
                    params.on_invalid = match value {
                        "reject" => OnInvalid::Reject,
                        "drop" => OnInvalid::Drop,
                        _ => return Err(err()),
                    }
                }
                "dead_letter_payload_cap" => {
                    let cap = positive(value).and_then(|v| usize::try_from(v).ok());
                    params.dead_letter_payload_cap =
                        cap.filter(|c| *c >= MIN_PAYLOAD_CAP).map(PayloadCap::new).ok_or_else(err)?
                }
                "max_envelope_field_bytes" => {
                    params.max_envelope_field_bytes = positive(value)
                        .and_then(|v| usize::try_from(v).ok())
                        .and_then(EnvelopeFieldCap::new)
                        .ok_or_else(err)?
                }
                _ => {}
            }
        }
        Ok(params)
    }

    /// Parses a full list of params, rejecting names the SmartModule does not know. Hosts (the CLI,
    /// the connectors) call this before loading the WASM, so a typo fails loudly instead of silently.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)> + Clone) -> Result<Self, ParamError> {
        for (name, value) in pairs.clone() {
            if !PARAMS.iter().any(|(known, _)| *known == name) {
                let known: Vec<&str> = PARAMS.iter().map(|(n, _)| *n).collect();
                return Err(ParamError {
                    name: name.into(),
                    value: value.into(),
                    expected: format!("a known param name ({})", known.join(", ")),
                });
            }
        }
        Self::from_lookup(|name| pairs.clone().into_iter().find(|(n, _)| *n == name).map(|(_, v)| v))
    }
}

fn positive(value: &str) -> Option<u64> {
    u64::from_str(&value.replace('_', "")).ok().filter(|v| *v > 0)
}

fn formats(value: &str) -> Option<Vec<ImageFormat>> {
    let list: Option<Vec<ImageFormat>> = value
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| ImageFormat::from_str(s).ok().filter(|f| f.is_decodable()))
        .collect();
    list.filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_limits() {
        let p = ValidationParams::from_pairs([]).unwrap();
        assert_eq!(p, ValidationParams::default());
        assert_eq!(p.max_pixels, 50_000_000);
        assert_eq!(p.max_side, 16_384);
        assert!(!p.full_decode);
        assert_eq!(p.dead_letter_payload_cap.bytes(), fvision_records::DEFAULT_PAYLOAD_CAP);
        assert_eq!(p.max_envelope_field_bytes.bytes(), fvision_records::DEFAULT_ENVELOPE_FIELD_CAP);
    }

    #[test]
    fn parses_every_param() {
        let p = ValidationParams::from_pairs([
            ("max_encoded_bytes", "1_000"),
            ("max_pixels", "10"),
            ("max_side", "5"),
            ("max_aspect_ratio", "2.5"),
            ("allowed_formats", "jpg, png"),
            ("full_decode", "true"),
            ("on_invalid", "drop"),
            ("dead_letter_payload_cap", "65_536"),
            ("max_envelope_field_bytes", "1024"),
        ])
        .unwrap();
        assert_eq!(p.max_encoded_bytes, 1000);
        assert_eq!(p.allowed_formats, vec![ImageFormat::Jpeg, ImageFormat::Png]);
        assert_eq!(p.max_aspect_ratio, 2.5);
        assert!(p.full_decode);
        assert_eq!(p.on_invalid, OnInvalid::Drop);
        assert_eq!(p.dead_letter_payload_cap.bytes(), 65_536);
        assert_eq!(p.max_envelope_field_bytes.bytes(), 1024);
    }

    #[test]
    fn errors_name_the_param_the_value_and_what_was_expected() {
        let err = ValidationParams::from_pairs([("max_pixels", "lots")]).unwrap_err();
        assert_eq!(err.to_string(), "SmartModule param `max_pixels` = `lots`: expected a positive integer");
        let err = ValidationParams::from_pairs([("max_pixel", "5")]).unwrap_err();
        assert!(err.expected.contains("max_pixels"), "{err}");
        assert!(ValidationParams::from_pairs([("allowed_formats", "tiff")]).is_err());
        assert!(ValidationParams::from_pairs([("allowed_formats", "")]).is_err());
        assert!(ValidationParams::from_pairs([("max_aspect_ratio", "0.5")]).is_err());
        assert!(ValidationParams::from_pairs([("max_side", "0")]).is_err());
        assert!(ValidationParams::from_pairs([("on_invalid", "ignore")]).is_err());
        assert!(ValidationParams::from_pairs([("dead_letter_payload_cap", "1000")]).is_err());
        assert!(ValidationParams::from_pairs([("max_envelope_field_bytes", "10")]).is_err());
        assert!(ValidationParams::from_pairs([("max_envelope_field_bytes", "100000")]).is_err());
    }
}

#[cfg(test)]
mod package_tests {
    use super::PARAMS;

    /// The package metadata users read must list exactly the params the module understands.
    #[test]
    fn smartmodule_toml_lists_every_param() {
        let toml = crate::PACKAGE_METADATA;
        let listed: Vec<&str> = toml
            .lines()
            .filter_map(|line| line.strip_prefix("name = \""))
            .filter_map(|rest| rest.strip_suffix('"'))
            .filter(|name| *name != "image-validate")
            .collect();
        let known: Vec<&str> = PARAMS.iter().map(|(name, _)| *name).collect();
        assert_eq!(listed, known);
    }
}
