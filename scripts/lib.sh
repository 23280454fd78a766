# Shared set-up for the README's two commands; sourced, not run. Every step is idempotent and says what
# it does. Downloads and builds are cached outside the repository, in $FLUVIO_VISION_CACHE
# (default ~/.cache/fluvio-vision), and both commands share one cargo target directory there.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export FLUVIO_VISION_CACHE=${FLUVIO_VISION_CACHE:-$HOME/.cache/fluvio-vision}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$FLUVIO_VISION_CACHE/target}
# Every build names the host's target explicitly, as `cdk deploy start` and `cdk publish` do (they run
# `cargo build --profile release --target <host> -p <connector>`): cargo then finds cdk's build already made
# and done in seconds instead of a second full build (docs/decisions.md). Binaries are in $BIN_DIR.
export CARGO_BUILD_TARGET=${CARGO_BUILD_TARGET:-$(rustc -vV | sed -n 's/^host: //p')}
export BIN_DIR=$CARGO_TARGET_DIR/$CARGO_BUILD_TARGET/release
# The binaries find the shipped models, data and SmartModule through these when they run from the cargo
# target directory: on their own they look only beside themselves, where the release archive puts them
# (records/src/resources.rs), never in a source tree or a target directory.
export FVISION_MODELS_DIR=${FVISION_MODELS_DIR:-$REPO/models/presets}
export FVISION_DATA_DIR=${FVISION_DATA_DIR:-$REPO/data}
export FVISION_SMARTMODULE_WASM=${FVISION_SMARTMODULE_WASM:-$CARGO_TARGET_DIR/wasm32-unknown-unknown/release-lto/image_validate.wasm}
ORT_VERSION=1.32.0

say() { printf '==> %s\n' "$*" >&2; }

# The SmartModule compiles to WASM.
ensure_wasm_target() {
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    say "adding the Rust target wasm32-unknown-unknown (for the SmartModule)"
    rustup target add wasm32-unknown-unknown
  fi
}

# Debian packages the native build needs: cmake and nasm build the libjpeg-turbo that decodes JPEGs exactly
# as the reference (Pillow) does.
ensure_build_tools() {
  local missing=()
  for tool in cmake nasm pkg-config; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  # OpenSSL's headers, for librdkafka's TLS (Kafka sink and source).
  [ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} with apt-get (to build libjpeg-turbo and librdkafka with TLS)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# A real browser for the status-page test: Debian's chromium and its WebDriver, driven headless. Where they
# cannot be installed (no apt-get, no root) the test reports itself skipped, except under CI.
ensure_browser() {
  if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    return
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! command -v apt-get >/dev/null || { [ -n "$sudo" ] && ! command -v sudo >/dev/null; }; then
    say "cannot install chromium here (no apt-get or sudo): the browser test will be skipped"
    return
  fi
  say "installing chromium and chromium-driver with apt-get (for the status-page browser test)"
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium \
      chromium-driver >/dev/null; }; then
    say "could not install chromium: the browser test will be skipped (and fail under CI)"
  fi
}

# ONNX Runtime's shared library, taken from the onnxruntime wheel on PyPI (ort loads it at run time).
ensure_onnxruntime() {
  local dir=$FLUVIO_VISION_CACHE/onnxruntime-$ORT_VERSION
  local lib=$dir/libonnxruntime.so.$ORT_VERSION
  if [ ! -f "$lib" ]; then
    say "fetching the ONNX Runtime $ORT_VERSION library from PyPI (wheel onnxruntime==$ORT_VERSION)"
    local tmp
    tmp=$(mktemp -d)
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      "onnxruntime==$ORT_VERSION" -d "$tmp"
    mkdir -p "$dir"
    python3 - "$tmp" "$dir" "$ORT_VERSION" <<'PY'
import glob, sys, zipfile
tmp, dest, version = sys.argv[1:]
wheel = glob.glob(f"{tmp}/onnxruntime-*.whl")[0]
name = f"onnxruntime/capi/libonnxruntime.so.{version}"
with zipfile.ZipFile(wheel) as z, open(f"{dest}/libonnxruntime.so.{version}", "wb") as out:
    out.write(z.read(name))
PY
    rm -rf "$tmp"
  fi
  export ORT_DYLIB_PATH=$lib
}

# The Google Cloud emulators the sink and source tests talk to (BigQuery, GCS, Pub/Sub), each in its
# own virtualenv, pinned to the versions that work together on Python 3.11.
ensure_emulators() {
  local venvs=$FLUVIO_VISION_CACHE/emulators
  mkdir -p "$venvs"
  install_venv "$venvs/bq" bqemulator==1.4.0 duckdb==1.5.5 duckdb-extension-spatial==1.5.5 \
    duckdb-extension-avro==1.5.5 numpy==2.4.6
  install_venv "$venvs/gcs" gcp-storage-emulator==2026.7.19
  install_venv "$venvs/pubsub" --ignore-requires-python cloudbox==0.2.3
  export FVISION_EMULATORS=$venvs
}

install_venv() {
  local venv=$1
  shift
  local want="$*"
  if [ "$(cat "$venv/.fvision-installed" 2>/dev/null)" != "$want" ]; then
    say "installing $(basename "$venv") emulator into $venv ($want)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
    echo "$want" >"$venv/.fvision-installed"
  fi
}

# The TensorFlow -> ONNX converter `fvision models import` runs (tf2onnx under TensorFlow, pinned in
# models/tools/importer-requirements*.txt), in its own virtualenv: the same place and the same stamp as the
# command uses when it installs on first use, so the 355 MiB download happens once per cache. Where it cannot
# be installed (no network) the import tests report themselves skipped, except under CI.
ensure_importer() {
  local venv=$FLUVIO_VISION_CACHE/importer-tf tools=$REPO/models/tools
  local want
  want=$(cat "$tools/importer-requirements.txt" "$tools/importer-requirements-no-deps.txt")
  if [ "$(cat "$venv/.fvision-installed" 2>/dev/null)" != "$want" ]; then
    say "installing the TensorFlow importer into $venv (tensorflow-cpu, tf2onnx: about 355 MiB download, 1.7 GiB on disk)"
    rm -rf "$venv"
    if python3 -m venv "$venv" \
      && "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$tools/importer-requirements.txt" \
      && "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$tools/importer-requirements-no-deps.txt"; then
      printf '%s' "$want" >"$venv/.fvision-installed"
    else
      say "could not install the TensorFlow importer: the import tests will be skipped (and fail under CI)"
    fi
  fi
}

# QEMU's user-mode emulator, for the test that runs the INT8 model on an emulated AVX2-only CPU (no VNNI),
# so the suite checks both of ONNX Runtime's integer kernels whatever CPU it runs on.
ensure_qemu() {
  command -v qemu-x86_64 >/dev/null && return
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing qemu-user with apt-get (to check the INT8 model on an emulated CPU without VNNI)"
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq qemu-user >/dev/null; }; then
    say "could not install qemu-user: the emulated INT8 test will fail and say why"
  fi
}

# One optimised build serves the demo, the tests and the benchmarks.
build() {
  say "building the SmartModules (WASM), fvision and the connectors (release; first build takes several minutes)"
  (cd "$REPO" && cargo build --profile release-lto --target wasm32-unknown-unknown \
     -p image-validate -p identity-smartmodule -p trap-smartmodule)
  (cd "$REPO" && cargo build --release -p fvision -p inference-sink -p kafka-source -p gcs-source)
}
