//! Errors of the inference core, kept apart by phase: manifest, runtime/model loading, per-image work.

use std::path::PathBuf;

use fvision_records::RejectReason;

/// A manifest that cannot be used, naming the file, the field and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{path}: cannot read the manifest: {source}")]
    Read {
        /// The manifest file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown field, or a value of the wrong type (the message names the key and line).
    #[error("{path}")]
    Parse {
        /// The manifest file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: toml::de::Error,
    },
    /// A field whose value is out of range or inconsistent with another.
    #[error("{path}: field `{field}`: expected {expected}")]
    Invalid {
        /// The manifest file.
        path: PathBuf,
        /// The dotted field name.
        field: &'static str,
        /// What would have been accepted.
        expected: String,
    },
}

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The manifest is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// No model of that name, and not a manifest path either.
    #[error("no model named `{name}` (known: {known}); pass a preset name or the path of a manifest .toml")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The presets that exist.
        known: String,
    },
    /// A file the installation should hold (the presets, the ONNX Runtime library) is in none of its places.
    #[error(transparent)]
    NotInstalled(#[from] fvision_records::resources::NotFound),
    /// The ONNX Runtime shared library could not be loaded.
    #[error("cannot load the ONNX Runtime library: {0}")]
    Runtime(String),
    /// ONNX Runtime refused the model file.
    #[error("cannot load model `{model}` from {path}")]
    Load {
        /// The model name.
        model: String,
        /// The ONNX file.
        path: PathBuf,
        /// ONNX Runtime's error.
        #[source]
        source: ort::Error,
    },
    /// The ONNX graph does not match its manifest (names, shapes, class count).
    #[error("model `{model}` does not match its manifest: {detail}")]
    Mismatch {
        /// The model name.
        model: String,
        /// What differs.
        detail: String,
    },
    /// Inference failed for a whole batch.
    #[error("inference failed in model `{model}`: {action}")]
    Inference {
        /// The model name.
        model: String,
        /// What failed.
        action: String,
        /// ONNX Runtime's error, when it was ONNX Runtime that failed.
        #[source]
        source: Option<ort::Error>,
    },
}

/// Why one image could not be turned into model input; becomes a rejected record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct PreprocessError {
    /// The stable reason code (`decode_error`, `too_many_pixels`, `preprocess_error`, ...).
    pub reason: RejectReason,
    /// Human detail.
    pub detail: String,
}

impl PreprocessError {
    pub(crate) fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}
