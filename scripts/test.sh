#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property, WASM, CLI and end-to-end tests against real
# components. Sets up what it needs first.
source "$(dirname "$0")/lib.sh"
ensure_wasm_target
ensure_onnxruntime
ensure_emulators
cd "$REPO"
say "checking formatting"
cargo fmt --all -- --check
build
say "linting (clippy, warnings are errors)"
cargo clippy --release --workspace --all-targets -- -D warnings
cargo clippy --release --target wasm32-unknown-unknown -p image-validate -p identity-smartmodule -- -D warnings
say "running the tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --workspace 2>&1 | tee "$log"
# One closing line over every test binary (cargo prints one per binary).
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "fluvio-vision: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
