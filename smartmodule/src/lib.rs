//! `image-validate`: a Fluvio SmartModule (`filter_map`) that turns each record on the `images` topic
//! into a validated image or a rejected record with a stable reason code.
//!
//! The SmartModule entry points are thin shells (`init` below, `filter_map` in `abi.rs`, written out to
//! fix a memory leak of the generated one); the logic lives in [`validate_value`], a pure function that
//! native tests, the CLI and the embedded pipeline can call directly. The same crate compiles to
//! `wasm32-unknown-unknown` for the SPU. See `docs/smartmodule.md`.
#![deny(missing_docs)]

#[cfg(target_arch = "wasm32")]
mod abi;
mod decode;
pub mod header;
pub mod integrity;
pub mod params;
pub mod payload;
mod validate;
pub mod wire;

use std::sync::OnceLock;

use fluvio_smartmodule::dataplane::smartmodule::SmartModuleExtraParams;
use fluvio_smartmodule::{smartmodule, RecordData, Result, SmartModuleRecord};

pub use params::{OnInvalid, ParamError, ValidationParams, PARAMS};
pub use validate::{content_id, validate_to_json, validate_value, JsonOutput};

/// The name this SmartModule is published and loaded under.
pub const SMARTMODULE_NAME: &str = "image-validate";

/// This SmartModule's package metadata (`SmartModule.toml`, as `smdk` reads it: group, name, version,
/// params), compiled in so `fvision deploy` loads the module under the same `group/name@version` as
/// `smdk load`, wherever the binary runs.
pub const PACKAGE_METADATA: &str = include_str!("../SmartModule.toml");

static PARAMS_CELL: OnceLock<ValidationParams> = OnceLock::new();

/// Parses the params once per SmartModule instance; a bad value fails the consumer at start-up with
/// a message naming the param, rather than rejecting every record later.
#[smartmodule(init)]
fn init(params: SmartModuleExtraParams) -> Result<()> {
    let parsed = ValidationParams::from_lookup(|name| params.get(name).map(String::as_str))?;
    PARAMS_CELL.set(parsed).map_err(|_| fluvio_smartmodule::eyre!("image-validate was initialised twice"))
}

/// One record in, one record out (a `rejected` record instead of an error, since an `Err` from a
/// filter_map aborts the rest of its batch), keyed by the image id. `None` only with `on_invalid=drop`.
pub fn transform(record: &SmartModuleRecord) -> Option<(Option<RecordData>, RecordData)> {
    let params = PARAMS_CELL.get_or_init(ValidationParams::default);
    let output = validate_to_json(record.value.as_ref(), params);
    if params.on_invalid == OnInvalid::Drop && !output.ok {
        return None;
    }
    let key = (!output.id.is_empty()).then(|| RecordData::from(output.id.into_bytes()));
    Some((key, output.json.into()))
}
