//! Locations of the data shipped in the repository (demo images, the ImageNet sample).

use std::path::PathBuf;

/// Overrides where the shipped data is looked up (a copy of the repository's `data/` folder).
pub const DATA_DIR_ENV: &str = "FVISION_DATA_DIR";

/// The shipped data folder: `$FVISION_DATA_DIR`, else `data/` in the source tree this binary was built from.
pub fn data_dir() -> PathBuf {
    let dir = std::env::var_os(DATA_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../data")));
    dir.canonicalize().unwrap_or(dir)
}

/// The photos `fvision run` uses when given no inputs.
pub fn demo_images() -> PathBuf {
    data_dir().join("demo-images")
}

/// The 100 ImageNet images with reference predictions, used by the benchmarks.
pub fn imagenet_sample() -> PathBuf {
    data_dir().join("imagenet-sample")
}
