//! Model manifests: one TOML file per model, in the spirit of Triton's `config.pbtxt`. `Manifest` is the
//! file as written; [`ModelSpec`] is the validated, resolved form everything else uses.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ManifestError;

/// Tensor memory layout of the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Layout {
    /// `[batch, channels, height, width]` (PyTorch, ONNX model zoo).
    #[serde(rename = "NCHW")]
    Nchw,
    /// `[batch, height, width, channels]` (Keras/TensorFlow).
    #[serde(rename = "NHWC")]
    Nhwc,
}

/// Channel order the model expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ChannelOrder {
    /// Red, green, blue.
    #[serde(rename = "RGB")]
    Rgb,
    /// Blue, green, red (Caffe-trained models).
    #[serde(rename = "BGR")]
    Bgr,
}

/// How the image is brought to the input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizePolicy {
    /// Resize so the shorter side is `resize_to`, then take the centre `size` x `size` crop.
    ShorterSideCrop,
    /// Resize the whole image to `size` x `size`, ignoring the aspect ratio.
    Squash,
}

/// Resampling filter (Catmull-Rom is Pillow's bicubic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeFilter {
    /// Nearest neighbour.
    Nearest,
    /// Bilinear (Pillow's BILINEAR, antialiased).
    Bilinear,
    /// Catmull-Rom cubic, a = -0.5 (Pillow's BICUBIC, antialiased).
    CatmullRom,
    /// Lanczos with 3 lobes (Pillow's LANCZOS).
    Lanczos3,
}

/// How the centre crop's offset `(resized - size) / 2` is rounded when the margin is odd. The two conventions
/// put the crop one pixel apart, which moves a model's probabilities by up to a few hundredths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CropRounding {
    /// `floor((W - size) / 2)`: the integer division of the TF and EfficientNet-Lite references (the default).
    #[default]
    Floor,
    /// `round((W - size) / 2)` with ties to even, as Python's `round` in torchvision's `CenterCrop`.
    HalfEven,
}

/// Pixel normalisation: `(v / 255 - mean[c]) / std[c]` per channel, with presets for common conventions.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalize {
    /// TF EfficientNet-Lite: `(v - 127) / 128`.
    Tf127,
    /// Keras `tf` preset: `v / 127.5 - 1`.
    Tf,
    /// Keras `caffe` preset: BGR, minus the ImageNet means, no scaling (use with `channel_order = "BGR"`).
    Caffe,
    /// Keras/torchvision `torch` preset: ImageNet mean and std on `v / 255`.
    Torch,
    /// `mean` and `std` given in the manifest, in 0..1 units, in the model's channel order.
    Custom,
}

/// The manifest file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Registry name (`fvision classify --model NAME`).
    pub name: String,
    /// Model version, part of every prediction id.
    pub version: String,
    /// One line for `fvision models list`.
    #[serde(default)]
    pub description: String,
    /// Whether the weights are trained. The `-light` graphs are architecture-faithful but weight-free.
    pub real_weights: bool,
    /// ONNX file, relative to the manifest.
    pub onnx: PathBuf,
    /// Label file, relative to the manifest: one class per line, `synset<TAB>name` or just `name`.
    pub labels: PathBuf,
    /// Largest batch the model is run with.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// The input tensor.
    pub input: InputSection,
    /// How images become input.
    pub preprocess: PreprocessSection,
    /// The output tensor.
    pub output: OutputSection,
}

fn default_max_batch() -> usize {
    16
}

/// `[input]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSection {
    /// Tensor name.
    pub name: String,
    /// NCHW or NHWC.
    pub layout: Layout,
    /// Side of the square input.
    pub size: u32,
    /// RGB or BGR.
    #[serde(default = "default_channel_order")]
    pub channel_order: ChannelOrder,
}

fn default_channel_order() -> ChannelOrder {
    ChannelOrder::Rgb
}

/// `[preprocess]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessSection {
    /// `shorter-side-crop` or `squash`.
    pub resize: ResizePolicy,
    /// Shorter side before the centre crop (`shorter-side-crop` only).
    #[serde(default)]
    pub resize_to: Option<u32>,
    /// Rounding of the centre crop's offset (`shorter-side-crop` only; `floor` when absent).
    #[serde(default)]
    pub crop_rounding: Option<CropRounding>,
    /// Resampling filter.
    pub filter: ResizeFilter,
    /// Normalisation preset.
    pub normalize: Normalize,
    /// Per-channel mean in 0..1 units (`normalize = "custom"`).
    #[serde(default)]
    pub mean: Option<Vec<f32>>,
    /// Per-channel std in 0..1 units (`normalize = "custom"`).
    #[serde(default)]
    pub std: Option<Vec<f32>>,
}

/// `[output]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Tensor name.
    pub name: String,
    /// Whether the model ends in a softmax.
    pub kind: OutputKind,
}

/// What the output tensor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Raw scores: softmax is applied.
    Logits,
    /// Already probabilities: used as they are.
    Probabilities,
}

/// A validated manifest with absolute paths and resolved normalisation.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// The manifest as written.
    pub manifest: Manifest,
    /// The manifest file.
    pub path: PathBuf,
    /// Absolute ONNX path.
    pub onnx_path: PathBuf,
    /// Absolute labels path.
    pub labels_path: PathBuf,
    /// Shorter side before cropping (equals `size` for `squash`).
    pub resize_to: u32,
    /// Rounding of the centre crop's offset.
    pub crop_rounding: CropRounding,
    /// Per-channel mean (0..1 units), in the model's channel order.
    pub mean: [f32; 3],
    /// Per-channel std (0..1 units), in the model's channel order.
    pub std: [f32; 3],
}

impl ModelSpec {
    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Validates manifest text; `path` locates relative files and names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ManifestError> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|source| ManifestError::Parse { path: path.to_owned(), source })?;
        let invalid = |field: &'static str, expected: &str| ManifestError::Invalid {
            path: path.to_owned(),
            field,
            expected: expected.into(),
        };
        if manifest.name.trim().is_empty() || manifest.name.contains(char::is_whitespace) {
            return Err(invalid("name", "a non-empty name without spaces"));
        }
        if manifest.version.trim().is_empty() {
            return Err(invalid("version", "a non-empty version"));
        }
        if !(1..=1024).contains(&manifest.max_batch) {
            return Err(invalid("max_batch", "an integer from 1 to 1024"));
        }
        let size = manifest.input.size;
        if !(8..=4096).contains(&size) {
            return Err(invalid("input.size", "an integer from 8 to 4096"));
        }
        let pre = &manifest.preprocess;
        let resize_to = match (pre.resize, pre.resize_to) {
            (ResizePolicy::ShorterSideCrop, Some(r)) if r >= size && r <= 8 * size => r,
            (ResizePolicy::ShorterSideCrop, _) => {
                return Err(invalid("preprocess.resize_to", "an integer from input.size to 8 x input.size"))
            }
            (ResizePolicy::Squash, None) => size,
            (ResizePolicy::Squash, Some(_)) => {
                return Err(invalid("preprocess.resize_to", "no value with resize = \"squash\""))
            }
        };
        let crop_rounding = match (pre.resize, pre.crop_rounding) {
            (ResizePolicy::Squash, Some(_)) => {
                return Err(invalid(
                    "preprocess.crop_rounding",
                    "no value with resize = \"squash\" (nothing is cropped)",
                ))
            }
            (_, rounding) => rounding.unwrap_or_default(),
        };
        let (mean, std) = match pre.normalize {
            Normalize::Custom => {
                let three = |v: &Option<Vec<f32>>| -> Option<[f32; 3]> { v.as_deref()?.try_into().ok() };
                let mean = three(&pre.mean).filter(|m| m.iter().all(|x| x.is_finite()));
                let mean = mean.ok_or_else(|| invalid("preprocess.mean", "three finite numbers (0..1 units)"))?;
                let std = three(&pre.std).filter(|s| s.iter().all(|x| x.is_finite() && *x > 0.0));
                let std = std.ok_or_else(|| invalid("preprocess.std", "three positive numbers (0..1 units)"))?;
                (mean, std)
            }
            preset => {
                if pre.mean.is_some() || pre.std.is_some() {
                    return Err(invalid("preprocess.mean", "no mean/std unless normalize = \"custom\""));
                }
                preset_mean_std(preset, manifest.input.channel_order)
            }
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let onnx_path = dir.join(&manifest.onnx);
        if !onnx_path.is_file() {
            return Err(invalid("onnx", &format!("an ONNX file; {} does not exist", onnx_path.display())));
        }
        let labels_path = dir.join(&manifest.labels);
        if !labels_path.is_file() {
            return Err(invalid("labels", &format!("a label file; {} does not exist", labels_path.display())));
        }
        Ok(Self { manifest, path: path.to_owned(), onnx_path, labels_path, resize_to, crop_rounding, mean, std })
    }

    /// The model name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }
}

/// Mean and std (0..1 units, in the model's channel order) of a normalisation preset.
fn preset_mean_std(preset: Normalize, order: ChannelOrder) -> ([f32; 3], [f32; 3]) {
    let (mean_rgb, std_rgb) = match preset {
        Normalize::Tf127 => ([127.0 / 255.0; 3], [128.0 / 255.0; 3]),
        Normalize::Tf => ([0.5; 3], [0.5; 3]),
        Normalize::Caffe => ([123.68 / 255.0, 116.779 / 255.0, 103.939 / 255.0], [1.0 / 255.0; 3]),
        Normalize::Torch | Normalize::Custom => ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    };
    match order {
        ChannelOrder::Rgb => (mean_rgb, std_rgb),
        ChannelOrder::Bgr => ([mean_rgb[2], mean_rgb[1], mean_rgb[0]], [std_rgb[2], std_rgb[1], std_rgb[0]]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(extra: &str) -> String {
        format!(
            r#"
name = "m"
version = "1"
real_weights = false
onnx = "m.onnx"
labels = "labels.txt"
[input]
name = "input"
layout = "NCHW"
size = 224
[preprocess]
resize = "shorter-side-crop"
resize_to = 256
filter = "catmull-rom"
normalize = "tf127"
[output]
name = "logits"
kind = "logits"
{extra}"#
        )
    }

    fn parse(text: &str) -> Result<ModelSpec, ManifestError> {
        let dir = std::env::temp_dir().join(format!("fvision-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("m.onnx"), b"x").unwrap();
        std::fs::write(dir.join("labels.txt"), b"a\n").unwrap();
        ModelSpec::parse(text, &dir.join("m.toml"))
    }

    #[test]
    fn a_valid_manifest_resolves_paths_and_presets() {
        let spec = parse(&manifest("")).unwrap();
        assert_eq!(spec.resize_to, 256);
        assert_eq!(spec.crop_rounding, CropRounding::Floor, "floor unless the manifest says otherwise");
        let spec =
            parse(&manifest("").replace("resize_to = 256", "resize_to = 256\ncrop_rounding = \"half-even\"")).unwrap();
        assert_eq!(spec.crop_rounding, CropRounding::HalfEven);
        assert!((spec.mean[0] - 127.0 / 255.0).abs() < 1e-7);
        assert!(spec.onnx_path.ends_with("m.onnx"));
    }

    /// The error and its causes, as a binary prints them.
    fn with_causes(err: ManifestError) -> String {
        let mut text = err.to_string();
        let mut cause = std::error::Error::source(&err);
        while let Some(e) = cause {
            text = format!("{text}: {e}");
            cause = e.source();
        }
        text
    }

    #[test]
    fn errors_name_the_file_the_field_and_what_was_expected() {
        let err = parse(&manifest("").replace("size = 224", "size = 2")).map_err(with_causes).unwrap_err();
        assert!(err.contains("m.toml") && err.contains("`input.size`") && err.contains("from 8 to 4096"), "{err}");
        let err = parse(&manifest("").replace("\"NCHW\"", "\"NCWH\"")).map_err(with_causes).unwrap_err();
        assert!(err.contains("m.toml") && err.contains("NCWH"), "{err}");
        let err = parse(&manifest("").replace("resize_to = 256", "resize_to = 100")).map_err(with_causes).unwrap_err();
        assert!(err.contains("`preprocess.resize_to`"), "{err}");
        let squash =
            manifest("").replace("resize_to = 256", "crop_rounding = \"floor\"").replace("shorter-side-crop", "squash");
        let err = parse(&squash).map_err(with_causes).unwrap_err();
        assert!(err.contains("`preprocess.crop_rounding`") && err.contains("nothing is cropped"), "{err}");
        let err = parse(&manifest("").replace("resize_to = 256", "resize_to = 256\ncrop_rounding = \"ceil\""))
            .map_err(with_causes)
            .unwrap_err();
        assert!(err.contains("ceil") && err.contains("half-even"), "the accepted values are listed: {err}");
        let err = parse(&manifest("colour = 1")).map_err(with_causes).unwrap_err();
        assert!(err.contains("colour"), "unknown fields are named: {err}");
        let err = parse(&manifest("").replace("\"tf127\"", "\"custom\"")).map_err(with_causes).unwrap_err();
        assert!(err.contains("`preprocess.mean`"), "{err}");
        let err = parse(&manifest("").replace("m.onnx", "missing.onnx")).map_err(with_causes).unwrap_err();
        assert!(err.contains("`onnx`") && err.contains("missing.onnx"), "{err}");
    }

    #[test]
    fn caffe_preset_is_bgr_minus_imagenet_means() {
        let (mean, std) = preset_mean_std(Normalize::Caffe, ChannelOrder::Bgr);
        // (v/255 - mean) / std == v - mean_255 for the B channel
        let v = 200.0f32;
        assert!(((v / 255.0 - mean[0]) / std[0] - (v - 103.939)).abs() < 1e-3);
    }
}
