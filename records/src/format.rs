//! Image formats, as identified from magic bytes.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};

/// An image container format recognised by its magic bytes.
///
/// The first five are decodable by the pipeline; the rest are recognised only so that they are
/// rejected as `unsupported_format` rather than mistaken for garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// JPEG/JFIF/EXIF (baseline, progressive, CMYK).
    Jpeg,
    /// PNG, any bit depth and colour type.
    Png,
    /// GIF (the first frame of an animation is classified).
    Gif,
    /// WebP, lossy or lossless.
    Webp,
    /// Windows bitmap.
    Bmp,
    /// TIFF (recognised, not decoded).
    Tiff,
    /// AVIF (recognised, not decoded).
    Avif,
    /// HEIC/HEIF (recognised, not decoded).
    Heic,
    /// JPEG XL (recognised, not decoded).
    Jxl,
}

impl ImageFormat {
    /// Formats the pipeline can decode, in the order they are listed to users.
    pub const DECODABLE: [ImageFormat; 5] = [Self::Jpeg, Self::Png, Self::Gif, Self::Webp, Self::Bmp];

    /// The lowercase name used in records, params and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jpeg => "jpeg",
            Self::Png => "png",
            Self::Gif => "gif",
            Self::Webp => "webp",
            Self::Bmp => "bmp",
            Self::Tiff => "tiff",
            Self::Avif => "avif",
            Self::Heic => "heic",
            Self::Jxl => "jxl",
        }
    }

    /// Whether the pipeline has a decoder for this format.
    pub fn is_decodable(self) -> bool {
        Self::DECODABLE.contains(&self)
    }

    /// The MIME type, for sinks that store the image again.
    pub fn mime_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Gif => "image/gif",
            Self::Webp => "image/webp",
            Self::Bmp => "image/bmp",
            Self::Tiff => "image/tiff",
            Self::Avif => "image/avif",
            Self::Heic => "image/heic",
            Self::Jxl => "image/jxl",
        }
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImageFormat {
    type Err = String;

    /// Accepts the names of `as_str` plus the common aliases `jpg` and `tif`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let format = match s.trim().to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" => Self::Jpeg,
            "png" => Self::Png,
            "gif" => Self::Gif,
            "webp" => Self::Webp,
            "bmp" => Self::Bmp,
            "tiff" | "tif" => Self::Tiff,
            "avif" => Self::Avif,
            "heic" | "heif" => Self::Heic,
            "jxl" => Self::Jxl,
            other => return Err(format!("unknown image format `{other}`")),
        };
        Ok(format)
    }
}
