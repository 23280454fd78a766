//! The shipped presets and custom manifests, looked up by name or path.

use std::path::{Path, PathBuf};

use fvision_records::resources;

use crate::error::ModelError;
use crate::manifest::ModelSpec;

/// The model used when none is named: the one with real ImageNet weights.
pub const DEFAULT_MODEL: &str = "efficientnet-lite0";

/// The preset manifests of one folder.
#[derive(Debug, Clone)]
pub struct Registry {
    specs: Vec<ModelSpec>,
}

impl Registry {
    /// The shipped presets, found by the binaries' one lookup order ([`fvision_records::resources`]):
    /// `$FVISION_MODELS_DIR`, else `share/fluvio-vision/models/presets` of the installation.
    pub fn open_default() -> Result<Self, ModelError> {
        let dir = resources::MODELS.locate(None)?;
        Self::open(&dir)
    }

    /// Every `*.toml` manifest in `dir`, sorted by name; any invalid one is an error.
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let entries = std::fs::read_dir(dir)
            .map_err(|source| crate::error::ManifestError::Read { path: dir.to_owned(), source })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        let mut specs = paths.iter().map(|p| ModelSpec::load(p)).collect::<Result<Vec<_>, _>>()?;
        specs.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(Self { specs })
    }

    /// All presets.
    pub fn list(&self) -> &[ModelSpec] {
        &self.specs
    }

    /// A preset by name, or any manifest by path (a custom model).
    pub fn resolve(&self, name_or_path: &str) -> Result<ModelSpec, ModelError> {
        if let Some(spec) = self.specs.iter().find(|s| s.name() == name_or_path) {
            return Ok(spec.clone());
        }
        let path = Path::new(name_or_path);
        if name_or_path.ends_with(".toml") || path.is_file() {
            return Ok(ModelSpec::load(path)?);
        }
        let known: Vec<&str> = self.specs.iter().map(ModelSpec::name).collect();
        Err(ModelError::UnknownModel { name: name_or_path.into(), known: known.join(", ") })
    }
}
