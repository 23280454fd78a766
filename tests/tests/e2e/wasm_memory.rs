//! Linear memory of SmartModule instances under sustained load: the leak of stock modules under
//! fluvio-smartengine 0.50, and `image-validate`'s fix (see smartmodule/src/abi.rs).

use std::path::Path;

use fvision_connector_common::{locate_smartmodule, SmartModuleRunner, WasmValidator};
use fvision_records::ValidationRecord;
use fvision_tests::{data_files, identity_wasm};

const LIMIT: usize = 64 << 20;

/// ~140 KB ImageEvent records: 100 of them per pass.
fn envelopes() -> Vec<Vec<u8>> {
    use base64::Engine as _;
    data_files("imagenet-sample")
        .iter()
        .map(|(name, bytes)| {
            let data = base64::engine::general_purpose::STANDARD.encode(bytes);
            serde_json::to_vec(&serde_json::json!({ "id": name, "data": data })).unwrap()
        })
        .collect()
}

/// Output bytes pushed through `runner` before it fails, up to `budget`.
fn output_until_failure(runner: &mut SmartModuleRunner, values: &[&[u8]], budget: u64) -> (u64, Option<String>) {
    let mut total = 0;
    while total < budget {
        for chunk in values.chunks(16) {
            match runner.process(chunk) {
                Ok(out) => total += out.iter().map(|r| r.value.len() as u64).sum::<u64>(),
                Err(err) => return (total, Some(err)),
            }
        }
    }
    (total, None)
}

#[test]
fn a_stock_smartmodule_leaks_its_output_until_the_memory_limit() {
    let values = envelopes();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let mut identity = SmartModuleRunner::builder("identity").memory_limit(LIMIT).load(&identity_wasm()).unwrap();
    let (total, err) = output_until_failure(&mut identity, &refs, 8 * LIMIT as u64);
    let err = err.expect("fluvio-smartengine 0.50 frees no output buffer; if this passes, drop abi.rs");
    assert!(err.contains("exceeded max allowed"), "{err}");
    assert!(total < LIMIT as u64, "failed after {total} output bytes, within the {LIMIT}-byte limit");
}

#[test]
fn image_validate_runs_far_past_its_memory_limit() {
    let values = envelopes();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let path = locate_smartmodule().unwrap();
    let mut validator = WasmValidator::load_with_memory_limit(Path::new(&path), Default::default(), LIMIT).unwrap();
    let (total, err) = output_until_failure(validator.runner(), &refs, 8 * LIMIT as u64);
    assert_eq!(err, None, "after {total} output bytes");
    // And it still answers correctly afterwards.
    let outputs = validator.validate_batch(&refs[..4]);
    assert!(outputs.iter().all(|o| matches!(o, Some(ValidationRecord::Ok(_)))));
}
