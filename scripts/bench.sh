#!/usr/bin/env bash
# Issue 20's benchmark: `fvision run`, `bench pipeline` and `bench connector` against a plain Python loop and
# a PySpark job in the seed's shape, on the same 1,000 ImageEvent records, interleaved rep by rep; then an
# open-loop latency sweep. Writes docs/benchmarks/<date>.json and the Markdown report with its plots beside it.
#
#   ./scripts/bench.sh            # the full run (3 reps; about 15 minutes on 2 cores)
#   ./scripts/bench.sh --short    # one short rep, for trying; written under the cache, not docs/
#   ./scripts/bench.sh --reps 5 --no-connector     # other options go to bench/run.py (see its --help)
#
# `bench connector` needs a running Fluvio cluster (the current profile); without one its rows say why.
source "$(dirname "$0")/lib.sh"

# The peers' Python: PySpark (with the machine's Java 17), ONNX Runtime (the version our library comes
# from), Pillow (the reference preprocessing's), matplotlib for the plots, psutil for the memory samples.
BENCH_PACKAGES=(pyspark==4.1.4 "onnxruntime==$ORT_VERSION" pillow==13.0.0 numpy==2.3.5 pandas==2.3.3
  pyarrow==22.0.0 matplotlib==3.10.8 psutil==7.2.2)

ensure_java() {
  if java -version 2>&1 | grep -q 'version "17'; then
    return
  fi
  say "installing openjdk-17-jre-headless with apt-get (PySpark's JVM)"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openjdk-17-jre-headless >/dev/null
}

ensure_bench_venv() {
  BENCH_VENV=$FLUVIO_VISION_CACHE/bench-venv
  local want="${BENCH_PACKAGES[*]}"
  if [ "$(cat "$BENCH_VENV/.fvision-installed" 2>/dev/null)" != "$want" ]; then
    say "installing the benchmark peers' Python packages into $BENCH_VENV ($want)"
    rm -rf "$BENCH_VENV"
    python3 -m venv "$BENCH_VENV"
    "$BENCH_VENV/bin/pip" install --quiet --disable-pip-version-check "${BENCH_PACKAGES[@]}"
    echo "$want" >"$BENCH_VENV/.fvision-installed"
  fi
}

args=()
short=false
for arg in "$@"; do
  if [ "$arg" = "--short" ]; then
    short=true
  else
    args+=("$arg")
  fi
done

ensure_wasm_target
ensure_build_tools
ensure_onnxruntime
ensure_java
ensure_bench_venv
build
export PATH=$HOME/.fluvio/bin:$PATH
# FVISION_MODELS_DIR, FVISION_DATA_DIR and FVISION_SMARTMODULE_WASM come from lib.sh

day=$(date -u +%F)
if $short; then
  out=$FLUVIO_VISION_CACHE/bench-reports/$day-short.json
  args=(--reps 1 --passes 2 --pipeline-repeat 2 --seconds 0.5 --shares 0.1,0.5,0.9,1.1 --level-seconds 3
    --idle-records 10 "${args[@]}")
else
  out=$REPO/docs/benchmarks/$day.json
fi
say "benchmarking (the machine's load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
"$BENCH_VENV/bin/python" "$REPO/bench/run.py" --fvision "$BIN_DIR/fvision" --out "$out" "${args[@]}"
"$BENCH_VENV/bin/python" "$REPO/bench/report.py" "$out"
