//! From encoded bytes to a normalised input tensor, reproducing the reference preprocessing
//! (`models/onnx/README.md`): decode to 8-bit RGB, shorter side to `resize_to` with Pillow's antialiased
//! filters, centre crop, `(v/255 - mean) / std` per channel.
//!
//! The crop box is computed in source coordinates first and only that region is resized, so an extreme
//! aspect ratio never allocates the huge intermediate image that resize-then-crop would.

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use fvision_records::{EventMeta, ImageDigest, RejectReason};
use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};

use crate::error::PreprocessError;
use crate::jpeg::{self, JpegError};
use crate::manifest::{ChannelOrder, CropRounding, Layout, ModelSpec, ResizeFilter, ResizePolicy};

/// Where the model input comes from in the resized image, as torchvision's `Resize(n)` + `CenterCrop(size)`
/// place it (with the offset rounded as the manifest says).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropBox {
    /// Width after resizing the shorter side (never allocated).
    pub resized_width: u32,
    /// Height after resizing the shorter side (never allocated).
    pub resized_height: u32,
    /// Crop offset in the resized image.
    pub left: u32,
    /// Crop offset in the resized image.
    pub top: u32,
    /// Side of the square crop.
    pub size: u32,
}

impl CropBox {
    /// The crop in source pixel coordinates: `(left, top, width, height)`.
    pub fn in_source(&self, width: u32, height: u32) -> (f64, f64, f64, f64) {
        let sx = f64::from(width) / f64::from(self.resized_width);
        let sy = f64::from(height) / f64::from(self.resized_height);
        (f64::from(self.left) * sx, f64::from(self.top) * sy, f64::from(self.size) * sx, f64::from(self.size) * sy)
    }
}

/// Shorter side to `resize_to` (the longer one `floor(resize_to * long / short)`), then the centre
/// `size` crop at `(W - size) / 2`, `(H - size) / 2`, rounded by `rounding` when the margin is odd.
pub fn crop_box(width: u32, height: u32, resize_to: u32, size: u32, rounding: CropRounding) -> CropBox {
    let (w, h) = (u64::from(width.max(1)), u64::from(height.max(1)));
    let r = u64::from(resize_to);
    let (rw, rh) = if w <= h { (r, r * h / w) } else { (r * w / h, r) };
    let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    let (rw, rh) = (clamp(rw), clamp(rh));
    let offset = |resized: u32| {
        let (half, odd) = (resized.saturating_sub(size) / 2, resized.saturating_sub(size) % 2 == 1);
        match rounding {
            CropRounding::Floor => half,
            // An odd margin puts the exact offset at half + 0.5: the tie goes to the even neighbour.
            CropRounding::HalfEven => half + u32::from(odd && half % 2 == 1),
        }
    };
    CropBox { resized_width: rw, resized_height: rh, left: offset(rw), top: offset(rh), size }
}

/// How long each step took for one image.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Decoding to RGB8 (with orientation and colour conversion).
    pub decode: Duration,
    /// Resize and crop.
    pub resize: Duration,
    /// Normalisation into the tensor.
    pub normalize: Duration,
}

/// What a prediction needs to say about one prepared image (its pixels live in a [`PreparedBatch`]).
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// Envelope fields (id, source, attributes) carried to the prediction.
    pub meta: EventMeta,
    /// Encoded size in bytes.
    pub size_bytes: u64,
    /// SHA-256 of the encoded image: part of the prediction id, so two images under one id stay apart.
    pub digest: ImageDigest,
    /// Width as decoded and oriented.
    pub width: u32,
    /// Height as decoded and oriented.
    pub height: u32,
    /// Per-step timings.
    pub times: StageTimes,
    /// When work on this image started, for end-to-end processing time.
    pub started: Instant,
}

/// Receives a small JPEG of every image the preprocessor decodes, when asked for with
/// [`Preprocessor::send_thumbnails`]: the status page shows them beside their labels. Called from the decode
/// workers, so implementations keep only a bounded number.
pub trait ThumbnailSink: Send + Sync {
    /// The thumbnail of the image `meta` describes, made from the pixels just decoded.
    fn thumbnail(&self, meta: &EventMeta, jpeg: Vec<u8>);
}

/// Where thumbnails go, and their size.
#[derive(Clone)]
struct Thumbnails {
    side: u32,
    sink: Arc<dyn ThumbnailSink>,
}

impl std::fmt::Debug for Thumbnails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Thumbnails").field("side", &self.side).finish_non_exhaustive()
    }
}

/// Quality of the thumbnails' JPEG encoding: small files, faces and objects still recognisable.
const THUMBNAIL_QUALITY: u8 = 75;

/// A JPEG of `rgb` scaled to fit in `side` x `side` pixels (aspect ratio kept, never enlarged).
pub fn jpeg_thumbnail(rgb: &RgbImage, side: u32) -> Result<Vec<u8>, PreprocessError> {
    let err = |e: &dyn std::fmt::Display| {
        PreprocessError::new(RejectReason::PreprocessError, format!("thumbnail failed: {e}"))
    };
    let (w, h) = rgb.dimensions();
    let scale = (f64::from(side.max(1)) / f64::from(w.max(h).max(1))).min(1.0);
    let (tw, th) = (((f64::from(w) * scale).round() as u32).max(1), ((f64::from(h) * scale).round() as u32).max(1));
    let src = ImageRef::new(w, h, rgb.as_raw(), PixelType::U8x3).map_err(|e| err(&e))?;
    let mut dst = Image::new(tw, th, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new().resize(&src, &mut dst, &options).map_err(|e| err(&e))?;
    let mut jpeg = Vec::with_capacity(8 * 1024);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, THUMBNAIL_QUALITY)
        .encode(dst.buffer(), tw, th, image::ExtendedColorType::Rgb8)
        .map_err(|e| err(&e))?;
    Ok(jpeg)
}

/// Turns encoded images into model input according to one model's manifest. Cheap to share.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    size: u32,
    resize_to: u32,
    crop_rounding: CropRounding,
    policy: ResizePolicy,
    filter: ResizeFilter,
    layout: Layout,
    order: ChannelOrder,
    /// `lut[c][v]`: the normalised value of byte `v` in model channel `c`.
    lut: Box<[[f32; 256]; 3]>,
    max_pixels: u64,
    fast_decode: bool,
    thumbnails: Option<Thumbnails>,
}

impl Preprocessor {
    /// The preprocessing a model's manifest asks for; images above `max_pixels` are refused before
    /// decoding allocates anything.
    pub fn new(spec: &ModelSpec, max_pixels: u64) -> Self {
        let mut lut = Box::new([[0f32; 256]; 3]);
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                *out = ((v as f32 / 255.0) - spec.mean[c]) / spec.std[c];
            }
        }
        let input = &spec.manifest.input;
        Self {
            size: input.size,
            resize_to: spec.resize_to,
            crop_rounding: spec.crop_rounding,
            policy: spec.manifest.preprocess.resize,
            filter: spec.manifest.preprocess.filter,
            layout: input.layout,
            order: input.channel_order,
            lut,
            max_pixels,
            fast_decode: false,
            thumbnails: None,
        }
    }

    /// Decode large JPEGs at 1/2, 1/4 or 1/8 scale in the DCT when that still leaves the shorter side at
    /// least the resize target (`jpeg::decode_rgb8_scaled`): far less decoding work for photos at least
    /// twice the target, but no longer Pillow's pixels; its accuracy cost is in docs/benchmarks.md.
    pub fn set_fast_decode(&mut self, on: bool) {
        self.fast_decode = on;
    }

    /// From now on, also hand a JPEG of each decoded image, at most `side` pixels wide and high, to `sink`
    /// (made from the decoded pixels, after the tensor is written; off unless asked for).
    pub fn send_thumbnails(&mut self, side: u32, sink: Arc<dyn ThumbnailSink>) {
        self.thumbnails = Some(Thumbnails { side, sink });
    }

    /// Floats per image in the input tensor.
    pub fn tensor_len(&self) -> usize {
        3 * self.size as usize * self.size as usize
    }

    /// The input side length.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Decode, resize, normalise: the whole path for one image, writing its input straight into `out`
    /// (`tensor_len()` floats, typically its slot in a batch tensor).
    pub fn prepare_into(&self, bytes: &[u8], meta: EventMeta, out: &mut [f32]) -> Result<ImageInfo, PreprocessError> {
        let started = Instant::now();
        let (rgb, (width, height)) = self.decode_at(bytes, self.fast_decode.then_some(self.resize_to))?;
        let decoded = Instant::now();
        let crop = self.resize(&rgb)?;
        let resized = Instant::now();
        self.normalize_into(&crop, out);
        let normalized = Instant::now();
        if let Some(thumbnails) = &self.thumbnails {
            // A thumbnail that cannot be made is only missing from the status page; the image goes on.
            if let Ok(jpeg) = jpeg_thumbnail(&rgb, thumbnails.side) {
                thumbnails.sink.thumbnail(&meta, jpeg);
            }
        }
        Ok(ImageInfo {
            meta,
            size_bytes: bytes.len() as u64,
            digest: ImageDigest::of(bytes),
            width,
            height,
            times: StageTimes { decode: decoded - started, resize: resized - decoded, normalize: normalized - resized },
            started,
        })
    }

    /// Decodes to 8-bit RGB: format from the bytes, allocation bounded by `max_pixels`, EXIF orientation
    /// applied, grey replicated, alpha dropped (as Pillow's `convert("RGB")` does), 16-bit reduced by
    /// taking the high byte; JPEGs by libjpeg-turbo, pixel for pixel as Pillow decodes them ([`jpeg`]).
    pub fn decode(&self, bytes: &[u8]) -> Result<RgbImage, PreprocessError> {
        self.decode_at(bytes, None).map(|(rgb, _)| rgb)
    }

    /// [`Self::decode`], JPEGs scaled down in the DCT when `min_side` allows (fast decode); also returns the
    /// image's full size, oriented.
    fn decode_at(&self, bytes: &[u8], min_side: Option<u32>) -> Result<(RgbImage, (u32, u32)), PreprocessError> {
        let decode_err = |e: image::ImageError| {
            let reason = match &e {
                image::ImageError::Limits(_) => RejectReason::TooManyPixels,
                image::ImageError::Unsupported(u) if u.format_hint() == image::error::ImageFormatHint::Unknown => {
                    RejectReason::UnknownFormat
                }
                image::ImageError::Unsupported(_) => RejectReason::UnsupportedFormat,
                _ => RejectReason::DecodeError,
            };
            PreprocessError::new(reason, format!("cannot decode the image: {e}"))
        };
        let mut reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| PreprocessError::new(RejectReason::DecodeError, format!("cannot read the image: {e}")))?;
        let mut limits = Limits::default();
        limits.max_alloc = Some(self.max_pixels.saturating_mul(8));
        let side = u32::try_from(self.max_pixels).unwrap_or(u32::MAX);
        limits.max_image_width = Some(side);
        limits.max_image_height = Some(side);
        reader.limits(limits);
        let mut decoder = reader.into_decoder().map_err(decode_err)?;
        let (w, h) = decoder.dimensions();
        if u64::from(w) * u64::from(h) > self.max_pixels {
            return Err(PreprocessError::new(
                RejectReason::TooManyPixels,
                format!("{w}x{h} is above the {} pixel limit", self.max_pixels),
            ));
        }
        let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
        let mut image = if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            DynamicImage::ImageRgb8(jpeg::decode_rgb8_scaled(bytes, self.max_pixels, min_side).map_err(jpeg_error)?)
        } else {
            DynamicImage::from_decoder(decoder).map_err(decode_err)?
        };
        image.apply_orientation(orientation);
        use image::metadata::Orientation::{Rotate270, Rotate270FlipH, Rotate90, Rotate90FlipH};
        let size = match orientation {
            Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH => (h, w),
            _ => (w, h),
        };
        Ok((to_rgb8(image), size))
    }

    /// Resizes the crop region (or the whole image, for `squash`) to the input size.
    pub fn resize(&self, rgb: &RgbImage) -> Result<Image<'static>, PreprocessError> {
        let (w, h) = rgb.dimensions();
        let err = |e: &dyn std::fmt::Display| {
            PreprocessError::new(RejectReason::PreprocessError, format!("resize failed: {e}"))
        };
        let alg = match self.filter {
            ResizeFilter::Nearest => ResizeAlg::Nearest,
            ResizeFilter::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
            ResizeFilter::CatmullRom => ResizeAlg::Convolution(FilterType::CatmullRom),
            ResizeFilter::Lanczos3 => ResizeAlg::Convolution(FilterType::Lanczos3),
        };
        let mut options = ResizeOptions::new().resize_alg(alg);
        if self.policy == ResizePolicy::ShorterSideCrop {
            let (left, top, cw, ch) = crop_box(w, h, self.resize_to, self.size, self.crop_rounding).in_source(w, h);
            options = options.crop(left, top, cw, ch);
        }
        if self.filter == ResizeFilter::Bilinear {
            return self.resize_bilinear(rgb, &options).map_err(|e| err(&e));
        }
        let src = ImageRef::new(w, h, rgb.as_raw(), PixelType::U8x3).map_err(|e| err(&e))?;
        let mut dst = Image::new(self.size, self.size, PixelType::U8x3);
        Resizer::new().resize(&src, &mut dst, &options).map_err(|e| err(&e))?;
        Ok(dst)
    }

    /// Pillow's antialiased BILINEAR to the pixel, through `fast_image_resize`'s 16-bit path.
    ///
    /// Its 8-bit path holds the filter weights in 16-bit integers (Pillow: 22 bits of precision), which put
    /// 17.7 % of the values of the 100 sample crops 1 off Pillow's. The 16-bit path holds them in up to 31 bits
    /// and rounds its intermediate (after the horizontal pass) to an integer, as Pillow rounds to a byte; the
    /// bilinear weights are never negative, so that intermediate stays within 0..=255 and needs no clipping.
    /// Measured: 0.14 % of the values 1 off (6 of 15 million by 2), 23 crops identical. Filters with negative
    /// lobes overshoot, which Pillow clips between the passes: they keep the 8-bit path. The widened copy
    /// costs two bytes per source value more, within the `max_pixels` bound, and the resize about twice the
    /// 8-bit one's time.
    fn resize_bilinear(&self, rgb: &RgbImage, options: &ResizeOptions) -> Result<Image<'static>, String> {
        let (w, h) = rgb.dimensions();
        let mut wide = Image::new(w, h, PixelType::U16x3);
        for (dst, &v) in wide.buffer_mut().chunks_exact_mut(2).zip(rgb.as_raw()) {
            dst.copy_from_slice(&u16::from(v).to_ne_bytes());
        }
        let mut resized = Image::new(self.size, self.size, PixelType::U16x3);
        Resizer::new().resize(&wide, &mut resized, options).map_err(|e| e.to_string())?;
        let mut dst = Image::new(self.size, self.size, PixelType::U8x3);
        for (out, v) in dst.buffer_mut().iter_mut().zip(resized.buffer().chunks_exact(2)) {
            *out = u16::from_ne_bytes([v[0], v[1]]).min(255) as u8;
        }
        Ok(dst)
    }

    /// Writes `crop` (RGB8, `size` x `size`) into `out` in the model's layout, channel order and scale.
    pub fn normalize_into(&self, crop: &Image<'_>, out: &mut [f32]) {
        let plane = self.size as usize * self.size as usize;
        let pixels = crop.buffer().chunks_exact(3).take(plane);
        let source_channel = |c: usize| match self.order {
            ChannelOrder::Rgb => c,
            ChannelOrder::Bgr => 2 - c,
        };
        let (s0, s1, s2) = (source_channel(0), source_channel(1), source_channel(2));
        match self.layout {
            Layout::Nchw => {
                let (c0, rest) = out.split_at_mut(plane);
                let (c1, c2) = rest.split_at_mut(plane);
                for (i, px) in pixels.enumerate() {
                    c0[i] = self.lut[0][usize::from(px[s0])];
                    c1[i] = self.lut[1][usize::from(px[s1])];
                    c2[i] = self.lut[2][usize::from(px[s2])];
                }
            }
            Layout::Nhwc => {
                for (px, dst) in pixels.zip(out.chunks_exact_mut(3)) {
                    dst[0] = self.lut[0][usize::from(px[s0])];
                    dst[1] = self.lut[1][usize::from(px[s1])];
                    dst[2] = self.lut[2][usize::from(px[s2])];
                }
            }
        }
    }
}

/// Images prepared for one inference batch: their inputs back to back in one tensor, written in place by
/// the preprocessor, so a batch reaches ONNX Runtime without being copied together.
#[derive(Debug, Clone)]
pub struct PreparedBatch {
    tensor: Vec<f32>,
    images: Vec<ImageInfo>,
    image_len: usize,
}

impl PreparedBatch {
    /// An empty batch for `capacity` images of `preprocessor`'s model (the tensor is allocated once).
    pub fn with_capacity(preprocessor: &Preprocessor, capacity: usize) -> Self {
        let image_len = preprocessor.tensor_len();
        Self { tensor: Vec::with_capacity(capacity * image_len), images: Vec::with_capacity(capacity), image_len }
    }

    /// Prepares one image into the next slot. On error the batch is unchanged.
    pub fn push(&mut self, preprocessor: &Preprocessor, bytes: &[u8], meta: EventMeta) -> Result<(), PreprocessError> {
        let start = self.tensor.len();
        self.tensor.resize(start + self.image_len, 0.0);
        match preprocessor.prepare_into(bytes, meta, &mut self.tensor[start..]) {
            Ok(info) => {
                self.images.push(info);
                Ok(())
            }
            Err(err) => {
                self.tensor.truncate(start);
                Err(err)
            }
        }
    }

    /// Appends every image of `other` (one copy of its inputs): how a micro-batcher gathers images that
    /// parallel workers prepared.
    pub fn append(&mut self, other: &PreparedBatch) {
        self.tensor.extend_from_slice(&other.tensor);
        self.images.extend(other.images.iter().cloned());
    }

    /// How many images are in the batch.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether the batch holds no image.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// The images, in push order.
    pub fn images(&self) -> &[ImageInfo] {
        &self.images
    }

    /// The input of images `range`, back to back.
    pub fn tensor(&self, range: std::ops::Range<usize>) -> &[f32] {
        &self.tensor[range.start * self.image_len..range.end * self.image_len]
    }
}

/// The rejection for a JPEG libjpeg-turbo could not decode.
fn jpeg_error(e: JpegError) -> PreprocessError {
    let reason = match e {
        JpegError::Truncated(_) => RejectReason::Truncated,
        JpegError::TooManyPixels { .. } => RejectReason::TooManyPixels,
        _ => RejectReason::DecodeError,
    };
    PreprocessError::new(reason, e.to_string())
}

/// 8-bit RGB from any decoded colour type, the way the reference (Pillow) and the bad-input README ask.
fn to_rgb8(image: DynamicImage) -> RgbImage {
    let high_byte = |v: u16| (v >> 8) as u8;
    match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma16(grey) => {
            let (w, h) = grey.dimensions();
            let raw = grey.as_raw().iter().flat_map(|&v| [high_byte(v); 3]).collect();
            RgbImage::from_raw(w, h, raw).unwrap_or_default()
        }
        DynamicImage::ImageLumaA16(grey) => {
            let (w, h) = grey.dimensions();
            let raw = grey.as_raw().chunks_exact(2).flat_map(|p| [high_byte(p[0]); 3]).collect();
            RgbImage::from_raw(w, h, raw).unwrap_or_default()
        }
        DynamicImage::ImageRgb16(rgb) => {
            let (w, h) = rgb.dimensions();
            RgbImage::from_raw(w, h, rgb.as_raw().iter().map(|&v| high_byte(v)).collect()).unwrap_or_default()
        }
        DynamicImage::ImageRgba16(rgba) => {
            let (w, h) = rgba.dimensions();
            let raw = rgba.as_raw().chunks_exact(4).flat_map(|p| [high_byte(p[0]), high_byte(p[1]), high_byte(p[2])]);
            RgbImage::from_raw(w, h, raw.collect()).unwrap_or_default()
        }
        // 8-bit grey is replicated, alpha dropped, floats clamped and rounded.
        other => other.to_rgb8(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crop_box_matches_torchvision_resize_and_center_crop() {
        // 500x375 -> 341x256 (floor(256 * 500 / 375) = 341), crop at (58, 16): 117 / 2 = 58.5 has the even
        // neighbour 58, so both roundings agree.
        for rounding in [CropRounding::Floor, CropRounding::HalfEven] {
            assert_eq!(
                crop_box(500, 375, 256, 224, rounding),
                CropBox { resized_width: 341, resized_height: 256, left: 58, top: 16, size: 224 }
            );
        }
        // Portrait and square.
        assert_eq!(crop_box(375, 500, 256, 224, CropRounding::Floor).resized_height, 341);
        assert_eq!(
            crop_box(1, 1, 256, 224, CropRounding::Floor),
            CropBox { resized_width: 256, resized_height: 256, left: 16, top: 16, size: 224 }
        );
    }

    #[test]
    fn half_even_rounding_is_pythons_round_and_floor_is_integer_division() {
        // The shorter side already 224: the resized width is w, the margin w - 224 (119 = 59.5, 121 = 60.5, ...).
        let left = |w: u32, rounding| crop_box(w, 224, 224, 224, rounding).left;
        // Python: round(59.5) = 60, round(60.5) = 60, round(0.5) = 0, round(1.5) = 2; floor: 59, 60, 0, 1.
        let cases = [(343, 60, 59), (345, 60, 60), (225, 0, 0), (227, 2, 1), (226, 1, 1), (224, 0, 0)];
        for (w, half_even, floor) in cases {
            assert_eq!(left(w, CropRounding::HalfEven), half_even, "width {w}");
            assert_eq!(left(w, CropRounding::Floor), floor, "width {w}");
        }
    }

    #[test]
    fn thumbnails_fit_the_box_keep_the_aspect_and_the_colours() {
        // A 640x480 image, left half red, right half blue.
        let rgb =
            RgbImage::from_fn(
                640,
                480,
                |x, _| if x < 320 { image::Rgb([220, 20, 20]) } else { image::Rgb([20, 20, 220]) },
            );
        let jpeg = jpeg_thumbnail(&rgb, 96).unwrap();
        assert!(jpeg.starts_with(&[0xFF, 0xD8, 0xFF]) && jpeg.len() < 8 * 1024, "{} bytes", jpeg.len());
        let back = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        assert_eq!(back.dimensions(), (96, 72));
        let (left, right) = (back.get_pixel(10, 36), back.get_pixel(86, 36));
        assert!(left[0] > 180 && left[2] < 60 && right[2] > 180 && right[0] < 60, "{left:?} {right:?}");
        // Small images are not enlarged; a 1-pixel-high strip still makes a thumbnail.
        let small = image::load_from_memory(&jpeg_thumbnail(&RgbImage::new(40, 30), 96).unwrap()).unwrap();
        assert_eq!((small.width(), small.height()), (40, 30));
        let strip = image::load_from_memory(&jpeg_thumbnail(&RgbImage::new(10_000, 2), 96).unwrap()).unwrap();
        assert_eq!((strip.width(), strip.height()), (96, 1));
    }

    #[test]
    fn extreme_aspect_ratio_never_needs_the_intermediate() {
        let b = crop_box(10_000, 2, 256, 224, CropRounding::Floor);
        assert_eq!((b.resized_width, b.resized_height), (1_280_000, 256));
        let (left, top, w, h) = b.in_source(10_000, 2);
        assert!((w - 1.75).abs() < 1e-9 && (h - 1.75).abs() < 1e-9, "{w} x {h} source pixels");
        assert!(left > 4990.0 && left < 5000.0 && top > 0.0);
    }

    proptest! {
        #[test]
        fn the_crop_always_fits(w in 1u32..100_000, h in 1u32..100_000, half_even: bool) {
            let rounding = if half_even { CropRounding::HalfEven } else { CropRounding::Floor };
            let b = crop_box(w, h, 256, 224, rounding);
            prop_assert!(b.left + b.size <= b.resized_width && b.top + b.size <= b.resized_height);
            let (l, t, cw, ch) = b.in_source(w, h);
            prop_assert!(l >= 0.0 && t >= 0.0);
            prop_assert!(l + cw <= f64::from(w) + 1e-6 && t + ch <= f64::from(h) + 1e-6);
        }
    }
}
