//! End-to-end tests: one binary, a module per capability (ripgrep's layout).

mod emulators;
mod fuzz_corpus;
mod pipeline_embedded;
mod validate_wasm;
mod wasm_memory;
