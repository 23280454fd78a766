//! Format identification and dimension reading from the first bytes of an image.
//!
//! Nothing here decodes pixels or allocates from a size the input claims: each parser walks the
//! header with bounds-checked reads and stops at the first field it needs.

use fvision_records::ImageFormat;

/// What a header says about an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderInfo {
    /// Container format.
    pub format: ImageFormat,
    /// Stored width in pixels.
    pub width: u32,
    /// Stored height in pixels.
    pub height: u32,
}

/// Why a header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// No known signature at the start of the data.
    #[error("no known image signature in the first bytes")]
    UnknownFormat,
    /// A known format that this module does not read dimensions for.
    #[error("{0} images are not supported")]
    Unsupported(ImageFormat),
    /// The data ends inside the header.
    #[error("{0} header is truncated")]
    Truncated(ImageFormat),
    /// The header is present but inconsistent.
    #[error("{format} header is invalid: {detail}")]
    Invalid {
        /// The format whose header is broken.
        format: ImageFormat,
        /// What is wrong with it.
        detail: &'static str,
    },
}

/// Identifies the format from magic bytes alone; `None` when no known signature matches.
pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else if starts(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some(ImageFormat::Gif)
    } else if starts(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        Some(ImageFormat::Webp)
    } else if starts(b"BM") && bytes.len() >= 26 {
        Some(ImageFormat::Bmp)
    } else if starts(b"II*\0") || starts(b"MM\0*") {
        Some(ImageFormat::Tiff)
    } else if starts(&[0xFF, 0x0A]) || starts(b"\0\0\0\x0cJXL \r\n\x87\n") {
        Some(ImageFormat::Jxl)
    } else if bytes.get(4..8) == Some(b"ftyp") {
        match bytes.get(8..12) {
            Some(b"avif") | Some(b"avis") => Some(ImageFormat::Avif),
            Some(b"heic") | Some(b"heix") | Some(b"hevc") | Some(b"heim") | Some(b"heis") | Some(b"mif1")
            | Some(b"msf1") => Some(ImageFormat::Heic),
            _ => None,
        }
    } else {
        None
    }
}

/// Reads format and stored dimensions from the header.
pub fn read_header(bytes: &[u8]) -> Result<HeaderInfo, HeaderError> {
    let format = sniff(bytes).ok_or(HeaderError::UnknownFormat)?;
    let (width, height) = match format {
        ImageFormat::Png => png_dimensions(bytes)?,
        ImageFormat::Jpeg => jpeg_dimensions(bytes)?,
        ImageFormat::Gif => gif_dimensions(bytes)?,
        ImageFormat::Webp => webp_dimensions(bytes)?,
        ImageFormat::Bmp => bmp_dimensions(bytes)?,
        other => return Err(HeaderError::Unsupported(other)),
    };
    if width == 0 || height == 0 {
        return Err(HeaderError::Invalid { format, detail: "width or height is zero" });
    }
    Ok(HeaderInfo { format, width, height })
}

/// Bounds-checked big/little-endian reads that turn "past the end" into `Truncated`.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    format: ImageFormat,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], format: ImageFormat) -> Self {
        Self { bytes, format }
    }

    pub(crate) fn slice(&self, at: usize, len: usize) -> Result<&'a [u8], HeaderError> {
        at.checked_add(len).and_then(|end| self.bytes.get(at..end)).ok_or(HeaderError::Truncated(self.format))
    }

    pub(crate) fn u8(&self, at: usize) -> Result<u8, HeaderError> {
        Ok(self.slice(at, 1)?[0])
    }

    pub(crate) fn u16_be(&self, at: usize) -> Result<u16, HeaderError> {
        let s = self.slice(at, 2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }

    pub(crate) fn u16_le(&self, at: usize) -> Result<u16, HeaderError> {
        let s = self.slice(at, 2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }

    pub(crate) fn u24_le(&self, at: usize) -> Result<u32, HeaderError> {
        let s = self.slice(at, 3)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], 0]))
    }

    pub(crate) fn u32_be(&self, at: usize) -> Result<u32, HeaderError> {
        let s = self.slice(at, 4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    pub(crate) fn u32_le(&self, at: usize) -> Result<u32, HeaderError> {
        let s = self.slice(at, 4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn invalid(&self, detail: &'static str) -> HeaderError {
        HeaderError::Invalid { format: self.format, detail }
    }
}

fn png_dimensions(bytes: &[u8]) -> Result<(u32, u32), HeaderError> {
    let r = Reader::new(bytes, ImageFormat::Png);
    if r.slice(12, 4)? != b"IHDR" {
        return Err(r.invalid("the first chunk is not IHDR"));
    }
    if r.u32_be(8)? != 13 {
        return Err(r.invalid("IHDR length is not 13"));
    }
    let (width, height) = (r.u32_be(16)?, r.u32_be(20)?);
    if width > i32::MAX as u32 || height > i32::MAX as u32 {
        return Err(r.invalid("dimension exceeds 2^31-1"));
    }
    Ok((width, height))
}

/// JPEG markers that stand alone, without a length field.
fn jpeg_marker_is_standalone(marker: u8) -> bool {
    matches!(marker, 0x01 | 0xD0..=0xD7)
}

/// Start-of-frame markers: SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
fn jpeg_marker_is_sof(marker: u8) -> bool {
    matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
}

/// Where a JPEG's parts are: read by one walk over its marker segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JpegLayout {
    pub(crate) width: u16,
    pub(crate) height: u16,
    /// Offset of the first byte of entropy-coded data (just after the first SOS segment).
    pub(crate) scan_start: usize,
}

fn jpeg_dimensions(bytes: &[u8]) -> Result<(u32, u32), HeaderError> {
    let layout = jpeg_layout(bytes)?;
    Ok((u32::from(layout.width), u32::from(layout.height)))
}

/// Walks the marker segments from SOI to the first scan, reading the frame header on the way.
pub(crate) fn jpeg_layout(bytes: &[u8]) -> Result<JpegLayout, HeaderError> {
    let r = Reader::new(bytes, ImageFormat::Jpeg);
    let mut frame = None;
    let mut at = 2; // after SOI
    loop {
        if r.u8(at)? != 0xFF {
            return Err(r.invalid("expected a marker between segments"));
        }
        // Any number of 0xFF fill bytes may precede a marker.
        at += 1;
        let mut marker = r.u8(at)?;
        while marker == 0xFF {
            at += 1;
            marker = r.u8(at)?;
        }
        at += 1; // now just past the marker byte
        if jpeg_marker_is_standalone(marker) {
            continue;
        }
        match marker {
            0xD8 => return Err(r.invalid("a second start-of-image marker")),
            0xD9 => return Err(r.invalid("end of image before the first scan")),
            _ => {}
        }
        let len = usize::from(r.u16_be(at)?);
        if len < 2 {
            return Err(r.invalid("segment length below 2"));
        }
        if jpeg_marker_is_sof(marker) && frame.is_none() {
            let height = r.u16_be(at + 3)?;
            let width = r.u16_be(at + 5)?;
            if height == 0 {
                return Err(r.invalid("height defined later by a DNL marker is not supported"));
            }
            frame = Some((width, height));
        }
        if marker == 0xDA {
            let (width, height) = frame.ok_or_else(|| r.invalid("scan data before any frame header"))?;
            let scan_start = at + len;
            r.slice(at, len)?;
            return Ok(JpegLayout { width, height, scan_start });
        }
        at += len;
    }
}

fn gif_dimensions(bytes: &[u8]) -> Result<(u32, u32), HeaderError> {
    let r = Reader::new(bytes, ImageFormat::Gif);
    Ok((u32::from(r.u16_le(6)?), u32::from(r.u16_le(8)?)))
}

fn webp_dimensions(bytes: &[u8]) -> Result<(u32, u32), HeaderError> {
    let r = Reader::new(bytes, ImageFormat::Webp);
    match r.slice(12, 4)? {
        b"VP8 " => {
            if r.slice(23, 3)? != [0x9D, 0x01, 0x2A] {
                return Err(r.invalid("VP8 start code missing"));
            }
            Ok((u32::from(r.u16_le(26)? & 0x3FFF), u32::from(r.u16_le(28)? & 0x3FFF)))
        }
        b"VP8L" => {
            if r.u8(20)? != 0x2F {
                return Err(r.invalid("VP8L signature missing"));
            }
            let bits = r.u32_le(21)?;
            Ok(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
        }
        b"VP8X" => Ok((r.u24_le(24)? + 1, r.u24_le(27)? + 1)),
        _ => Err(r.invalid("unknown first chunk (expected VP8, VP8L or VP8X)")),
    }
}

fn bmp_dimensions(bytes: &[u8]) -> Result<(u32, u32), HeaderError> {
    let r = Reader::new(bytes, ImageFormat::Bmp);
    let dib_size = r.u32_le(14)?;
    if dib_size == 12 {
        // BITMAPCOREHEADER: unsigned 16-bit sides.
        return Ok((u32::from(r.u16_le(18)?), u32::from(r.u16_le(20)?)));
    }
    if dib_size < 40 {
        return Err(r.invalid("unknown DIB header size"));
    }
    let width = r.u32_le(18)? as i32;
    let height = r.u32_le(22)? as i32; // negative means top-down rows
    if width <= 0 {
        return Err(r.invalid("width is not positive"));
    }
    Ok((width.unsigned_abs(), height.unsigned_abs()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        v.extend_from_slice(&width.to_be_bytes());
        v.extend_from_slice(&height.to_be_bytes());
        v.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        v
    }

    fn jpeg_header(width: u16, height: u16) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
        v.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
        v.extend_from_slice(&[0xFF, 0xFF, 0xC0, 0x00, 0x11, 0x08]); // fill byte, then SOF0
        v.extend_from_slice(&height.to_be_bytes());
        v.extend_from_slice(&width.to_be_bytes());
        v.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        v.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x04, 0x01, 0x00]); // SOS
        v.extend_from_slice(&[0xAB, 0xFF, 0xD9]); // one byte of scan data, EOI
        v
    }

    #[test]
    fn jpeg_layout_finds_the_first_scan() {
        let jpeg = jpeg_header(8, 4);
        let layout = jpeg_layout(&jpeg).unwrap();
        assert_eq!((layout.width, layout.height), (8, 4));
        assert_eq!(jpeg[layout.scan_start], 0xAB);
    }

    #[test]
    fn reads_png_and_jpeg_dimensions() {
        let info = read_header(&png_header(640, 480)).unwrap();
        assert_eq!((info.format, info.width, info.height), (ImageFormat::Png, 640, 480));
        let info = read_header(&jpeg_header(500, 375)).unwrap();
        assert_eq!((info.format, info.width, info.height), (ImageFormat::Jpeg, 500, 375));
    }

    #[test]
    fn reads_gif_webp_and_bmp_dimensions() {
        let gif = b"GIF89a\x40\x00\x30\x00\0\0\0";
        assert_eq!(read_header(gif).unwrap().width, 64);
        assert_eq!(read_header(gif).unwrap().height, 48);

        let mut vp8x = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0".to_vec();
        vp8x.extend_from_slice(&[0x3F, 0x01, 0x00, 0xEF, 0x00, 0x00]); // 320 x 240, minus one
        assert_eq!(read_header(&vp8x).unwrap(), HeaderInfo { format: ImageFormat::Webp, width: 320, height: 240 });

        let mut bmp = b"BM\0\0\0\0\0\0\0\0\0\0\0\0\x28\0\0\0".to_vec();
        bmp.extend_from_slice(&7i32.to_le_bytes());
        bmp.extend_from_slice(&(-5i32).to_le_bytes());
        assert_eq!(read_header(&bmp).unwrap(), HeaderInfo { format: ImageFormat::Bmp, width: 7, height: 5 });
    }

    #[test]
    fn classifies_unknown_unsupported_truncated_and_invalid() {
        assert_eq!(read_header(b"hello world"), Err(HeaderError::UnknownFormat));
        assert_eq!(read_header(b""), Err(HeaderError::UnknownFormat));
        assert_eq!(read_header(b"II*\0\x08\0\0\0"), Err(HeaderError::Unsupported(ImageFormat::Tiff)));
        assert_eq!(read_header(b"\0\0\0\x1cftypavif\0\0\0\0"), Err(HeaderError::Unsupported(ImageFormat::Avif)));
        assert_eq!(read_header(&png_header(10, 10)[..20]), Err(HeaderError::Truncated(ImageFormat::Png)));
        assert!(matches!(read_header(&png_header(0, 10)), Err(HeaderError::Invalid { .. })));
        assert!(matches!(read_header(&jpeg_header(10, 0)), Err(HeaderError::Invalid { .. })));
        assert_eq!(read_header(&jpeg_header(10, 10)[..22]), Err(HeaderError::Truncated(ImageFormat::Jpeg)));
        // SOS before SOF.
        assert!(matches!(read_header(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 2]), Err(HeaderError::Invalid { .. })));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read_header(&bytes);
        }

        #[test]
        fn arbitrary_bytes_behind_each_signature_never_panic(
            which in 0usize..6,
            tail in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let magic: &[u8] = [
                &b"\x89PNG\r\n\x1a\n"[..], &[0xFF, 0xD8, 0xFF][..], b"GIF89a", b"RIFF\0\0\0\0WEBP", b"BM",
                b"\0\0\0\x1cftypheic",
            ][which];
            let mut bytes = magic.to_vec();
            bytes.extend_from_slice(&tail);
            let _ = read_header(&bytes);
        }

        #[test]
        fn mutated_valid_headers_never_panic(
            width in 1u32..100_000, height in 1u32..100_000,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            jpeg in any::<bool>(),
        ) {
            let mut bytes = if jpeg { jpeg_header(width as u16 | 1, height as u16 | 1) } else { png_header(width, height) };
            for (at, value) in flips {
                let len = bytes.len();
                bytes[at % len] = value;
            }
            let _ = read_header(&bytes);
        }

        #[test]
        fn png_dimensions_round_trip(width in 1u32..=i32::MAX as u32, height in 1u32..=i32::MAX as u32) {
            let info = read_header(&png_header(width, height)).unwrap();
            prop_assert_eq!((info.width, info.height), (width, height));
        }

        #[test]
        fn jpeg_dimensions_round_trip(width in 1u16.., height in 1u16..) {
            let info = read_header(&jpeg_header(width, height)).unwrap();
            prop_assert_eq!((info.width, info.height), (u32::from(width), u32::from(height)));
        }
    }
}
