//! JPEG decoding with libjpeg-turbo, the decoder behind the reference preprocessing (Pillow): the same
//! accurate IDCT and fancy upsampling give bit-identical RGB (checked against Pillow's digests in
//! `models/reference/pillow-rgb.tsv`), at about 0.7x the CPU time of the pure-Rust `jpeg-decoder`.
//!
//! The `turbojpeg` crate's safe wrapper cannot tell a libjpeg *warning* (the image is complete, as with
//! extraneous bytes before a marker, which Pillow accepts) from an error, so this module talks to the
//! TurboJPEG 3 API directly, through the `turbojpeg::raw` bindings, in one small handle type.

use std::ffi::CStr;

use std::os::raw::c_int;

use image::RgbImage;
use turbojpeg::raw;

/// Why a JPEG could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JpegError {
    /// The data ends before the image does (libjpeg's "Premature end of JPEG file"; Pillow: "image file
    /// is truncated"). Decoders that fill the rest with grey would classify half a picture.
    #[error("the JPEG data ends before the image does ({0})")]
    Truncated(String),
    /// More pixels than the limit, from the header alone.
    #[error("{width}x{height} is above the {limit} pixel limit")]
    TooManyPixels {
        /// Width from the header.
        width: u64,
        /// Height from the header.
        height: u64,
        /// The limit.
        limit: u64,
    },
    /// libjpeg-turbo refused the data.
    #[error("cannot decode the JPEG: {0}")]
    Corrupt(String),
}

/// The message libjpeg gives when the data runs out mid-image (JWRN_JPEG_EOF).
const PREMATURE_END: &str = "Premature end of JPEG file";

/// One TurboJPEG decompressor. Not shared between threads; cheap to create per image.
struct Handle(raw::tjhandle);

impl Handle {
    fn new() -> Result<Self, JpegError> {
        // SAFETY: tj3Init has no preconditions; a null handle is checked before any use.
        let handle = unsafe { raw::tj3Init(raw::TJINIT_TJINIT_DECOMPRESS as c_int) };
        if handle.is_null() {
            return Err(JpegError::Corrupt("libjpeg-turbo could not allocate a decompressor".into()));
        }
        Ok(Self(handle))
    }

    fn get(&self, param: raw::TJPARAM) -> c_int {
        // SAFETY: the handle is valid for the lifetime of `self`.
        unsafe { raw::tj3Get(self.0, param as c_int) }
    }

    fn message(&self) -> String {
        // SAFETY: tj3GetErrorStr returns a NUL-terminated string owned by the handle, valid until the next
        // call on it; it is copied at once.
        unsafe { CStr::from_ptr(raw::tj3GetErrorStr(self.0)) }.to_string_lossy().into_owned()
    }

    fn is_warning(&self) -> bool {
        // SAFETY: as above.
        unsafe { raw::tj3GetErrorCode(self.0) == raw::TJERR_TJERR_WARNING as c_int }
    }

    /// Reads the header: width, height and whether the pixels are CMYK (or YCCK).
    fn header(&mut self, data: &[u8]) -> Result<(usize, usize, bool), JpegError> {
        // SAFETY: `data` outlives the call; TurboJPEG reads at most `data.len()` bytes.
        let status = unsafe { raw::tj3DecompressHeader(self.0, data.as_ptr(), data.len() as raw::size_t) };
        if status != 0 && !self.is_warning() {
            return Err(self.failure());
        }
        let width = usize::try_from(self.get(raw::TJPARAM_TJPARAM_JPEGWIDTH)).unwrap_or(0);
        let height = usize::try_from(self.get(raw::TJPARAM_TJPARAM_JPEGHEIGHT)).unwrap_or(0);
        let colorspace = self.get(raw::TJPARAM_TJPARAM_COLORSPACE);
        let cmyk = colorspace == raw::TJCS_TJCS_CMYK as c_int || colorspace == raw::TJCS_TJCS_YCCK as c_int;
        Ok((width, height, cmyk))
    }

    /// Makes the next decompression scale the image by `1 / denom` in the DCT (2, 4 or 8: libjpeg-turbo
    /// then skips most of the inverse transform and the upsampling).
    fn scale_down(&mut self, denom: u32) -> Result<(), JpegError> {
        let factor = raw::tjscalingfactor { num: 1, denom: denom as c_int };
        // SAFETY: the handle is valid; the factor is one of the library's supported ones (1/2, 1/4, 1/8).
        if unsafe { raw::tj3SetScalingFactor(self.0, factor) } != 0 {
            return Err(self.failure());
        }
        Ok(())
    }

    /// Decodes into `out` (`height` rows of `width * channels` bytes, at the scale set) as `format`. A
    /// warning leaves a complete image (kept, as Pillow keeps it) unless it says the data ran out.
    fn decompress(&mut self, data: &[u8], out: &mut [u8], pitch: usize, format: raw::TJPF) -> Result<(), JpegError> {
        let pitch = c_int::try_from(pitch).map_err(|_| JpegError::Corrupt("the image is too wide".into()))?;
        // SAFETY: `out` holds `height * pitch` bytes for the scaled dimensions (computed by the caller with
        // `scaled`, libjpeg-turbo's own rounding), which is what tj3Decompress8 writes.
        let status = unsafe {
            raw::tj3Decompress8(self.0, data.as_ptr(), data.len() as raw::size_t, out.as_mut_ptr(), pitch, format)
        };
        if status == 0 {
            return Ok(());
        }
        let message = self.message();
        if message.contains(PREMATURE_END) {
            return Err(JpegError::Truncated(message));
        }
        if self.is_warning() {
            return Ok(());
        }
        Err(JpegError::Corrupt(message))
    }

    fn failure(&self) -> JpegError {
        let message = self.message();
        if message.contains(PREMATURE_END) {
            JpegError::Truncated(message)
        } else {
            JpegError::Corrupt(message)
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { raw::tj3Destroy(self.0) }
    }
}

/// Decodes a JPEG to 8-bit RGB as Pillow's `Image.open(f).convert("RGB")` does (no EXIF rotation):
/// YCbCr and RGB JPEGs by libjpeg-turbo's accurate path, greyscale replicated to R=G=B, CMYK (Adobe,
/// inverted as stored) by Pillow's own CMYK-to-RGB formula. Refuses more than `max_pixels` before it
/// allocates the image.
pub fn decode_rgb8(data: &[u8], max_pixels: u64) -> Result<RgbImage, JpegError> {
    decode_rgb8_scaled(data, max_pixels, None)
}

/// The largest DCT scaling denominator (1, 2, 4 or 8) that keeps the shorter side at least `min_side`.
pub fn scale_denominator(width: u32, height: u32, min_side: u32) -> u32 {
    let short = width.min(height);
    [8, 4, 2].into_iter().find(|&d| scaled(short, d) >= min_side.max(1)).unwrap_or(1)
}

/// A side after scaling by `1 / denom`, rounded up as libjpeg-turbo's `TJSCALED` does.
fn scaled(side: u32, denom: u32) -> u32 {
    side.div_ceil(denom)
}

/// [`decode_rgb8`], but when `min_side` is given and the shorter side is at least twice it, decoded at
/// 1/2, 1/4 or 1/8 scale in the DCT ([`scale_denominator`]): much less work for large photos, at the cost
/// of no longer matching Pillow bit for bit (the `fast-decode` option). `max_pixels` applies to the
/// image's full size.
pub fn decode_rgb8_scaled(data: &[u8], max_pixels: u64, min_side: Option<u32>) -> Result<RgbImage, JpegError> {
    let mut handle = Handle::new()?;
    let (width, height, cmyk) = handle.header(data)?;
    let pixels = (width as u64).saturating_mul(height as u64);
    if pixels > max_pixels {
        return Err(JpegError::TooManyPixels { width: width as u64, height: height as u64, limit: max_pixels });
    }
    if pixels == 0 {
        return Err(JpegError::Corrupt(format!("the header gives an empty {width}x{height} image")));
    }
    let denom = min_side.map_or(1, |side| scale_denominator(width as u32, height as u32, side));
    if denom > 1 {
        handle.scale_down(denom)?;
    }
    let (w, h) = (scaled(width as u32, denom), scaled(height as u32, denom));
    let (width, height) = (w as usize, h as usize);
    if !cmyk {
        let mut rgb = vec![0u8; width * height * 3];
        handle.decompress(data, &mut rgb, width * 3, raw::TJPF_TJPF_RGB)?;
        return RgbImage::from_raw(w, h, rgb).ok_or_else(|| JpegError::Corrupt("buffer size mismatch".into()));
    }
    let mut cmyk = vec![0u8; width * height * 4];
    handle.decompress(data, &mut cmyk, width * 4, raw::TJPF_TJPF_CMYK)?;
    let rgb = cmyk.chunks_exact(4).flat_map(|px| cmyk_to_rgb(px[0], px[1], px[2], px[3])).collect();
    RgbImage::from_raw(w, h, rgb).ok_or_else(|| JpegError::Corrupt("buffer size mismatch".into()))
}

/// Pillow's CMYK to RGB for a pixel as an Adobe JPEG stores it (inverted): undo the inversion, then
/// `R = (255 - K) - C * (255 - K) / 255`, rounded as Pillow's integer arithmetic rounds.
fn cmyk_to_rgb(c: u8, m: u8, y: u8, k: u8) -> [u8; 3] {
    let (c, m, y, k) = (255 - c, 255 - m, 255 - y, 255 - k);
    let ink = |v: u8| {
        let white = 255 - u32::from(k);
        let product = u32::from(v) * white + 128;
        let scaled = (product + (product >> 8)) >> 8; // v * white / 255, rounded
        (white - scaled.min(white)) as u8
    };
    [ink(c), ink(m), ink(y)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_extremes_are_white_and_black() {
        // Stored inverted: all 255 is no ink (white); K = 0 stored is full black.
        assert_eq!(cmyk_to_rgb(255, 255, 255, 255), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb(255, 255, 255, 0), [0, 0, 0]);
        assert_eq!(cmyk_to_rgb(0, 255, 255, 255), [0, 255, 255]);
    }

    #[test]
    fn the_scale_keeps_the_shorter_side_at_least_the_target() {
        // 4000x3000 for a 256 target: 1/8 gives 375, still above 256.
        assert_eq!(scale_denominator(4000, 3000, 256), 8);
        // 1411x1411: 1/4 gives 353; 1/8 would give 177.
        assert_eq!(scale_denominator(1411, 1411, 256), 4);
        // 600x511: half of 511 rounds up to 256, just enough.
        assert_eq!(scale_denominator(600, 511, 256), 2);
        // Under twice the target: no scaling.
        assert_eq!(scale_denominator(500, 375, 256), 1);
        assert_eq!(scale_denominator(0, 0, 0), 1);
    }

    #[test]
    fn garbage_and_empty_input_are_errors_not_panics() {
        assert!(matches!(decode_rgb8(&[], 1 << 20), Err(JpegError::Corrupt(_))));
        assert!(decode_rgb8(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0], 1 << 20).is_err());
        assert!(matches!(decode_rgb8(b"not a jpeg at all", 1 << 20), Err(JpegError::Corrupt(_))));
    }
}
