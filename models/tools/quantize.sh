#!/usr/bin/env bash
# Remakes models/onnx/efficientnet-lite0-int8.onnx: a pinned venv under the cache dir, then quantize.py.
# Usage: models/tools/quantize.sh [quantize.py options]
set -euo pipefail
cd "$(dirname "$0")/../.."
cache=${FLUVIO_VISION_CACHE:-$HOME/.cache/fluvio-vision}
venv=$cache/quantize
want="onnxruntime==1.32.0 onnx==1.23.2 numpy==2.4.6 pillow==13.0.0 sympy==1.14.0"
if [ "$(cat "$venv/.fvision-installed" 2>/dev/null)" != "$want" ]; then
  echo "==> installing $want into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet --disable-pip-version-check $want
  echo "$want" >"$venv/.fvision-installed"
fi
"$venv/bin/python" models/tools/quantize.py "$@"
sha256sum models/onnx/efficientnet-lite0-int8.onnx
