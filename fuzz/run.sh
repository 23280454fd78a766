#!/usr/bin/env bash
# Builds a fuzz target with libFuzzer's coverage instrumentation on the stable toolchain (the flags cargo-fuzz
# passes, without its nightly-only sanitizers) and runs it on a work copy of its committed corpus.
#
#   fuzz/run.sh validate 600          # ten minutes
#   fuzz/run.sh preprocess 600 -runs=1000000
#   fuzz/run.sh validate merge        # minimise the work corpus back into fuzz/corpus/validate
set -euo pipefail
target=${1:?usage: fuzz/run.sh validate|preprocess SECONDS|merge [libFuzzer args...]}
what=${2:-60}
shift $(( $# < 2 ? $# : 2 ))
here=$(cd "$(dirname "$0")" && pwd)
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$here/../target}/fuzz}
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --manifest-path "$here/Cargo.toml" --release --target "$host" --bin "$target" >&2
binary=$CARGO_TARGET_DIR/$host/release/$target
work=${FUZZ_WORK_DIR:-$CARGO_TARGET_DIR/work}/$target
mkdir -p "$work" "$here/artifacts/$target"
if [ "$what" = merge ]; then
  # The smallest set of inputs that keeps every feature the campaign found, replacing the committed corpus.
  fresh=$(mktemp -d)
  "$binary" -merge=1 "$fresh" "$here/corpus/$target" "$work" "$@"
  rm -rf "$here/corpus/$target" && mv "$fresh" "$here/corpus/$target"
  ls "$here/corpus/$target" | wc -l
else
  exec "$binary" -max_total_time="$what" -max_len=16384 -artifact_prefix="$here/artifacts/$target/" -print_final_stats=1 \
    "$@" "$work" "$here/corpus/$target"
fi
