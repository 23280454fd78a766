//! End-to-end tests: one binary, a module per capability (ripgrep's layout).

mod validate_wasm;
mod wasm_memory;
