//! The cheapest possible `filter_map` SmartModule: every record out as it came in.
//!
//! `fvision bench validate` runs it beside `image-validate` on the same records to measure the floor
//! that any SmartModule pays to move those bytes through the engine (copying into WASM, the record
//! encoding of the SmartModule ABI, copying out), so validation's own cost is reported against it.

use fluvio_smartmodule::{smartmodule, RecordData, Result, SmartModuleRecord};

/// Returns the record unchanged.
#[smartmodule(filter_map)]
pub fn filter_map(record: &SmartModuleRecord) -> Result<Option<(Option<RecordData>, RecordData)>> {
    Ok(Some((record.key.clone(), record.value.clone())))
}
