//! Optional full pixel decode inside the SmartModule, with allocation limits set from the params.

use std::io::Cursor;

use fvision_records::ImageFormat;
use image::{ImageReader, Limits};

/// Decodes every pixel of `bytes` (already identified as `format`) and reports the first error.
/// Allocation is bounded by `max_pixels` at 8 bytes per pixel (16-bit RGBA), whatever the file claims.
pub fn full_decode(bytes: &[u8], format: ImageFormat, max_side: u32, max_pixels: u64) -> Result<(), String> {
    let image_format = match format {
        ImageFormat::Jpeg => image::ImageFormat::Jpeg,
        ImageFormat::Png => image::ImageFormat::Png,
        ImageFormat::Gif => image::ImageFormat::Gif,
        ImageFormat::Webp => image::ImageFormat::WebP,
        ImageFormat::Bmp => image::ImageFormat::Bmp,
        other => return Err(format!("no decoder for {other}")),
    };
    let mut limits = Limits::default();
    limits.max_image_width = Some(max_side);
    limits.max_image_height = Some(max_side);
    limits.max_alloc = Some(max_pixels.saturating_mul(8));
    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format);
    reader.limits(limits);
    reader.decode().map(drop).map_err(|e| e.to_string())
}
