//! The sink's decode and preprocessing (EfficientNet-Lite0's manifest) on arbitrary bytes: either a typed
//! error with a stable reason, or a tensor of finite numbers.
#![no_main]

use std::sync::OnceLock;

use fvision_models::{ModelSpec, Preprocessor};
use fvision_records::{EventMeta, RejectReason};
use libfuzzer_sys::fuzz_target;

fn preprocessor() -> &'static Preprocessor {
    static PRE: OnceLock<Preprocessor> = OnceLock::new();
    PRE.get_or_init(|| {
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/presets/efficientnet-lite0.toml");
        let spec = ModelSpec::load(std::path::Path::new(manifest)).expect("the preset manifest loads");
        Preprocessor::new(&spec, 4_000_000)
    })
}

fuzz_target!(|data: &[u8]| {
    let pre = preprocessor();
    let mut out = vec![0f32; pre.tensor_len()];
    match pre.prepare_into(data, EventMeta::default(), &mut out) {
        Ok(info) => {
            assert!(info.width > 0 && info.height > 0);
            assert!(out.iter().all(|v| v.is_finite()));
        }
        Err(e) => assert!(matches!(
            e.reason,
            RejectReason::DecodeError
                | RejectReason::PreprocessError
                | RejectReason::TooManyPixels
                | RejectReason::UnknownFormat
                | RejectReason::UnsupportedFormat
        ), "{:?}", e.reason),
    }
});
