//! End-to-end tests: one binary, a module per capability (ripgrep's layout).

mod campaign;
mod cdk;
mod deploy;
mod emulators;
mod fuzz_corpus;
mod package;
mod packages;
mod pipeline_embedded;
mod runbook;
mod smdk;
mod sources;
mod topics;
mod validate_wasm;
mod wasm_memory;
