//! Locations of the shipped data (demo images, the ImageNet sample, hostile inputs).

use std::path::PathBuf;

use fvision_records::resources::{self, NotFound};

/// The shipped data folder, found by the binaries' one lookup order ([`fvision_records::resources`]):
/// `$FVISION_DATA_DIR`, else the installation's `share/fluvio-vision/data`.
pub fn data_dir() -> Result<PathBuf, NotFound> {
    resources::DATA.locate(None)
}

/// The photos `fvision run` uses when given no inputs.
pub fn demo_images() -> Result<PathBuf, NotFound> {
    Ok(data_dir()?.join("demo-images"))
}

/// The 100 ImageNet images with reference predictions, used by the benchmarks.
pub fn imagenet_sample() -> Result<PathBuf, NotFound> {
    Ok(data_dir()?.join("imagenet-sample"))
}
