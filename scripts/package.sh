#!/usr/bin/env bash
# The release archive: dist/fluvio-vision-<version>-<target>.tar.gz, everything a machine without Rust or
# this source tree needs (the four binaries, the ONNX Runtime library, the model presets and ONNX files, the
# SmartModules, the connector, topic and deployment YAMLs, the Grafana dashboard, the demo data and a README
# with the install steps). The binaries find their files beside themselves (records/src/resources.rs).
#
#   ./scripts/package.sh                 build as the README's commands do, then pack
#   ./scripts/package.sh --no-build      pack what the cargo target directory already holds
#   ./scripts/package.sh --out DIR       write the archive into DIR instead of dist/
source "$(dirname "$0")/lib.sh"
out=$REPO/dist
do_build=true
while [ $# -gt 0 ]; do
  case $1 in
    --no-build) do_build=false ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--no-build] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done

ensure_onnxruntime
if $do_build; then
  ensure_wasm_target
  ensure_build_tools
  build
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/Cargo.toml" | head -1)
target=$(rustc -vV | sed -n 's/^host: //p')
name=fluvio-vision-$version-$target
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/$name
share=$root/share/fluvio-vision
say "packing $name (binaries from $CARGO_TARGET_DIR)"

mkdir -p "$root/bin" "$root/lib" "$share/smartmodule" "$share/models" "$share/fluvio-config"
for bin in fvision inference-sink kafka-source gcs-source; do
  [ -x "$BIN_DIR/$bin" ] || { echo "$BIN_DIR/$bin is not built" >&2; exit 1; }
  install -m 755 --strip "$BIN_DIR/$bin" "$root/bin/$bin"   # without debug info: a tenth of the size
done
ort=$(basename "$ORT_DYLIB_PATH")
install -m 644 "$ORT_DYLIB_PATH" "$root/lib/$ort"
ln -s "$ort" "$root/lib/libonnxruntime.so"
wasm=$CARGO_TARGET_DIR/wasm32-unknown-unknown/release-lto
for module in image_validate identity_smartmodule; do
  [ -f "$wasm/$module.wasm" ] || { echo "$wasm/$module.wasm is not built" >&2; exit 1; }
  install -m 644 "$wasm/$module.wasm" "$share/smartmodule/"
done
install -m 644 "$REPO/smartmodule/SmartModule.toml" "$share/smartmodule/"
cp -r "$REPO/models/presets" "$REPO/models/onnx" "$share/models/"
mkdir -p "$share/models/tools"   # fvision models import: the TensorFlow importer and its pinned requirements
cp "$REPO"/models/tools/import_tf.py "$REPO"/models/tools/importer-requirements*.txt "$share/models/tools/"
cp -r "$REPO/data" "$share/data"
for dir in connectors topics deploy; do
  mkdir -p "$share/fluvio-config/$dir"
  cp "$REPO"/fluvio-config/$dir/*.yaml "$share/fluvio-config/$dir/"
done
mkdir -p "$share/fluvio-config/grafana"
cp "$REPO/fluvio-config/grafana/fluvio-vision.json" "$share/fluvio-config/grafana/"
sed -e "s/@VERSION@/$version/g" -e "s/@TARGET@/$target/g" -e "s/@ORT@/$ort/g" \
  "$REPO/scripts/package/README.md" >"$root/README.md"

mkdir -p "$out"
tar -czf "$out/$name.tar.gz" -C "$stage" "$name"
say "wrote $out/$name.tar.gz ($(du -h "$out/$name.tar.gz" | cut -f1))"
echo "$out/$name.tar.gz"
