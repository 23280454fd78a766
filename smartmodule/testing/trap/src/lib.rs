//! A SmartModule that fails on the SPU: records whose value contains `trap` make it trap (a WASM
//! `unreachable`, as a bug in a real SmartModule would); the others pass unchanged.
//!
//! The live tests load it under an `image-validate-…` name so the sink accepts it, and check that a
//! SmartModule failing on the SPU stops the sink with an error instead of looking like the end of the topic.

use fluvio_smartmodule::{smartmodule, RecordData, Result, SmartModuleRecord};

/// Passes the record unchanged, or traps on a value containing `trap`.
#[smartmodule(filter_map)]
pub fn filter_map(record: &SmartModuleRecord) -> Result<Option<(Option<RecordData>, RecordData)>> {
    if record.value.as_ref().windows(4).any(|w| w == b"trap") {
        trap();
    }
    Ok(Some((record.key.clone(), record.value.clone())))
}

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    std::process::abort()
}
