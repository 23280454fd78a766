#!/usr/bin/env bash
# The main job on its embedded defaults: the shipped demo images through the whole pipeline, in one
# process, no cluster. Sets up what it needs first. Extra arguments go to `fvision run`.
source "$(dirname "$0")/lib.sh"
ensure_wasm_target
ensure_build_tools
ensure_onnxruntime
build
exec "$BIN_DIR/fvision" run "$@"
