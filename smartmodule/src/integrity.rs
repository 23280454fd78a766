//! Structural checks that catch truncated and corrupted files without decoding any pixels.
//!
//! Each format has a cheap end-of-data rule (PNG chunk walk with CRCs up to IEND, the JPEG EOI
//! marker after the first scan, the GIF trailer, the RIFF and BMP size fields). Damage inside
//! compressed pixel data with intact checksums is left to the optional full decode.

use fvision_records::ImageFormat;

use crate::header::{jpeg_layout, HeaderError, Reader};

/// What a structural check found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StructureError {
    /// The data stops before the format's end marker or declared size.
    #[error("{0}")]
    Truncated(String),
    /// A checksum or structural field is wrong.
    #[error("{0}")]
    Corrupt(String),
}

impl From<HeaderError> for StructureError {
    fn from(err: HeaderError) -> Self {
        match err {
            HeaderError::Truncated(_) => Self::Truncated(err.to_string()),
            other => Self::Corrupt(other.to_string()),
        }
    }
}

/// Checks that `bytes`, already identified as `format`, are complete and internally consistent.
pub fn check_structure(bytes: &[u8], format: ImageFormat) -> Result<(), StructureError> {
    match format {
        ImageFormat::Png => check_png(bytes),
        ImageFormat::Jpeg => check_jpeg(bytes),
        ImageFormat::Gif => check_gif(bytes),
        ImageFormat::Webp => check_declared_size(bytes, format, 4, 8),
        ImageFormat::Bmp => check_declared_size(bytes, format, 2, 0),
        _ => Ok(()),
    }
}

/// Walks every chunk, verifying lengths and CRCs, until IEND.
fn check_png(bytes: &[u8]) -> Result<(), StructureError> {
    let r = Reader::new(bytes, ImageFormat::Png);
    let mut at = 8;
    loop {
        if at == bytes.len() {
            return Err(StructureError::Truncated(format!("PNG ends at byte {at} without an IEND chunk")));
        }
        let len = r.u32_be(at)?;
        let kind = r.slice(at + 4, 4)?;
        let name = String::from_utf8_lossy(kind).into_owned();
        if len > i32::MAX as u32 {
            return Err(StructureError::Corrupt(format!("PNG {name} chunk at byte {at} declares {len} bytes")));
        }
        let len = len as usize;
        let Ok(body) = r.slice(at + 4, 4 + len) else {
            return Err(StructureError::Truncated(format!(
                "PNG {name} chunk at byte {at} declares {len} bytes but the data ends first"
            )));
        };
        let stored_crc = r
            .u32_be(at + 8 + len)
            .map_err(|_| StructureError::Truncated(format!("PNG {name} chunk at byte {at} is missing its CRC")))?;
        if crc32fast::hash(body) != stored_crc {
            return Err(StructureError::Corrupt(format!("PNG {name} chunk at byte {at} fails its CRC check")));
        }
        if kind == b"IEND" {
            return Ok(());
        }
        at += 12 + len;
    }
}

/// Requires the EOI marker somewhere after the first scan. Entropy-coded data never contains
/// `FF D9` (a data 0xFF is always stuffed with 0x00), so its presence there means the file is whole.
fn check_jpeg(bytes: &[u8]) -> Result<(), StructureError> {
    let layout = jpeg_layout(bytes)?;
    let scan = bytes.get(layout.scan_start..).unwrap_or_default();
    if scan.windows(2).rev().any(|w| w == [0xFF, 0xD9]) {
        Ok(())
    } else {
        Err(StructureError::Truncated(format!(
            "JPEG has no end-of-image marker after its scan data ({} bytes of scan data)",
            scan.len()
        )))
    }
}

/// Requires the `;` trailer as the last byte (zero padding after it is tolerated).
fn check_gif(bytes: &[u8]) -> Result<(), StructureError> {
    let end = bytes.iter().rposition(|&b| b != 0);
    match end.map(|i| bytes[i]) {
        Some(0x3B) => Ok(()),
        _ => Err(StructureError::Truncated("GIF has no trailer byte (0x3B) at its end".into())),
    }
}

/// Compares a little-endian u32 size field (plus `extra`) with the data length; a zero field,
/// which some BMP writers leave, is not checked.
fn check_declared_size(bytes: &[u8], format: ImageFormat, at: usize, extra: u64) -> Result<(), StructureError> {
    let declared = u64::from(Reader::new(bytes, format).u32_le(at)?);
    let needed = declared + extra;
    if declared != 0 && needed > bytes.len() as u64 {
        return Err(StructureError::Truncated(format!(
            "{format} declares {needed} bytes but only {} are present",
            bytes.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
        let mut v = (data.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(data);
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        v.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        v
    }

    fn tiny_png() -> Vec<u8> {
        let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
        v.extend(chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0]));
        v.extend(chunk(b"IDAT", b"\x78\x9c\x63\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00"));
        v.extend(chunk(b"IEND", b""));
        v
    }

    #[test]
    fn png_chunk_walk_finds_truncation_and_bad_crc() {
        let png = tiny_png();
        assert_eq!(check_structure(&png, ImageFormat::Png), Ok(()));
        for cut in [png.len() - 1, png.len() - 12, 40] {
            assert!(matches!(check_structure(&png[..cut], ImageFormat::Png), Err(StructureError::Truncated(_))));
        }
        let mut bad = png.clone();
        bad[45] ^= 0x55;
        assert!(matches!(check_structure(&bad, ImageFormat::Png), Err(StructureError::Corrupt(_))));
    }

    #[test]
    fn gif_needs_its_trailer() {
        assert_eq!(check_structure(b"GIF89a\x01\0\x01\0;\0\0", ImageFormat::Gif), Ok(()));
        assert!(check_structure(b"GIF89a\x01\0\x01\0", ImageFormat::Gif).is_err());
    }

    #[test]
    fn riff_size_must_fit() {
        let mut webp = b"RIFF\x10\0\0\0WEBPVP8X".to_vec();
        webp.resize(24, 0);
        assert_eq!(check_structure(&webp, ImageFormat::Webp), Ok(()));
        assert!(check_structure(&webp[..20], ImageFormat::Webp).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), f in 0usize..5) {
            let _ = check_structure(&bytes, ImageFormat::DECODABLE[f]);
        }

        #[test]
        fn any_cut_of_a_png_is_rejected(cut in 0usize..60) {
            let png = tiny_png();
            let cut = cut.min(png.len() - 1);
            prop_assert!(check_structure(&png[..cut], ImageFormat::Png).is_err());
        }
    }
}
