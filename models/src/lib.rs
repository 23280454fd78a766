//! The inference core of fluvio-vision: a model registry (a TOML manifest per ONNX model), faithful
//! preprocessing (decode, EXIF orientation, colour conversion, crop-aware resize, normalisation straight
//! into the batch tensor) and batched ONNX Runtime inference through `ort`.
//!
//! No Fluvio and no async here: the CLI, the embedded pipeline and the inference sink call this library.
#![deny(missing_docs)]

mod classifier;
mod error;
pub mod jpeg;
mod manifest;
mod preprocess;
mod registry;
mod runtime;

pub use classifier::{Classification, Classifier, ClassifierOptions, TensorInfo};
pub use error::{ManifestError, ModelError, PreprocessError};
pub use manifest::{
    ChannelOrder, CropRounding, Layout, Manifest, ModelSpec, Normalize, OutputKind, ResizeFilter, ResizePolicy,
};
pub use preprocess::{
    crop_box, jpeg_thumbnail, CropBox, ImageInfo, PreparedBatch, Preprocessor, StageTimes, ThumbnailSink,
};
pub use registry::{Registry, DEFAULT_MODEL};
pub use runtime::{init_runtime, runtime_version};
