#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz / libFuzzer) of every model-file reader and of the
# image path.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
#   SECONDS_PER_TARGET  how long each target runs (default 60)
#   TARGET              one or more of: pickle torch_zip torch_legacy safetensors keras_h5
#                       keras_archive tflite tf_bundle onnx cntk weights_detect image
#                       (default: all)
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). The script builds
# the targets (`cargo +nightly fuzz build`: release, debug assertions, overflow checks,
# AddressSanitizer), seeds each target's corpus, fuzz/corpus/<target>/ (git-ignored), from
# the committed fixtures (files over 1 MB are left out; the corpus keeps what earlier runs
# found), then runs the targets one after the other, one fuzzing process at a time, with
# libFuzzer's memory limits (-rss_limit_mb=2048 -malloc_limit_mb=1024: one allocation over
# 1 GiB is a finding) and a 20 s limit per input. For each target it prints the executions,
# the final coverage (libFuzzer's cov/ft), the corpus size and any crash file.
#
# A crash, OOM, timeout or leak is saved in fuzz/artifacts/<target>/. Reproduce it with
# `cargo +nightly fuzz run <target> <file>`, minimise it with
# `cargo +nightly fuzz tmin <target> <file>`.
#
# Environment: NICE (niceness of builds and fuzzers, default 10), CARGO_TARGET_DIR (as for
# cargo), FUZZ_ARGS (more libFuzzer flags, e.g. "-max_len=65536"), FUZZ_CAUGHT_PANICS=abort
# (the HDF5 targets then also stop at a panic that keras_h5 catches; see
# fuzz/fuzz_targets/keras_h5.rs).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
fx="$root/tests/fixtures"
cd "$root/fuzz"

all=(pickle torch_zip torch_legacy safetensors keras_h5 keras_archive tflite tf_bundle onnx cntk weights_detect image)
secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
    [[ " ${all[*]} " == *" $t "* ]] || { echo "unknown target: $t (one of: ${all[*]})" >&2; exit 2; }
done
nice=(nice -n "${NICE:-10}")

"${nice[@]}" cargo +nightly fuzz build

max_seed=$((1 << 20))

# seed TARGET FILE...: copies each existing file of at most 1 MB into the target's corpus.
seed() {
    local t="$1" f
    shift
    mkdir -p "corpus/$t"
    for f in "$@"; do
        [ -f "$f" ] && [ "$(stat -c %s "$f")" -le "$max_seed" ] || continue
        cp "$f" "corpus/$t/seed-$(echo "${f#"$fx"/}" | tr '/' '_')"
    done
}

# magic FILE: the first four bytes in hex.
magic() { head -c 4 "$1" | od -An -tx1 | tr -d ' \n'; }

torch_zips=() torch_legacies=()
for f in "$fx"/files/* "$fx"/*/weights.pt "$fx"/*/weights.pth; do
    case "$(magic "$f")" in
        504b0304) torch_zips+=("$f") ;;
        80028a0a) torch_legacies+=("$f") ;;
    esac
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The pickles inside the zips (data.pkl), and a Keras 3 `.weights.h5` out of a `.keras`.
pickles=()
for f in "${torch_zips[@]}"; do
    d="$work/$(basename "$(dirname "$f")")-$(basename "$f")"
    mkdir -p "$d"
    if unzip -qq -o -j "$f" '*/data.pkl' -d "$d" 2>/dev/null; then pickles+=("$d/data.pkl"); fi
done
keras3=()
for f in "$fx"/*/model.keras; do
    d="$work/$(basename "$(dirname "$f")")-keras"
    mkdir -p "$d"
    if unzip -qq -o "$f" model.weights.h5 -d "$d" 2>/dev/null; then keras3+=("$d/model.weights.h5"); fi
done

seed pickle "${pickles[@]}" "${torch_legacies[@]}"
seed torch_zip "${torch_zips[@]}"
seed torch_legacy "${torch_legacies[@]}"
seed safetensors "$fx"/*/weights.safetensors
seed keras_h5 "$fx"/*/weights.h5 "$fx"/*/model.h5 "$fx"/keras_graph/*.h5 "${keras3[@]}"
seed keras_archive "$fx"/*/model.keras "$fx"/keras_graph/*.keras
seed tflite "$fx"/*/*.tflite
seed tf_bundle "$fx"/*/*/*.index "$fx"/*/*/variables/*.index
seed onnx "$fx"/onnx/*/model.onnx
seed cntk "$fx"/cntk/*.model "$fx"/cntk/*.dnn
seed weights_detect "$fx"/files/* "$fx"/mobilenet_v2/weights.safetensors "$fx"/keras_vgg/weights.h5 \
    "$fx"/keras_efficientnet/model.keras "$fx"/tf_mobilenet_v2/model_int8.tflite \
    "$fx"/tf_keras2_resnet/checkpoint/weights.index "$fx"/onnx/resnet_op13/model.onnx
seed image "$fx"/images/*

summary=()
for t in "${targets[@]}"; do
    mkdir -p "artifacts/$t"
    log="$work/$t.log"
    stamp="$work/$t.stamp"
    touch "$stamp"
    echo "== $t: ${secs}s, corpus fuzz/corpus/$t ($(find "corpus/$t" -type f | wc -l) inputs)"
    rc=0
    # shellcheck disable=SC2086
    "${nice[@]}" cargo +nightly fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=20 \
        -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1 || rc=$?
    tail -n 3 "$log"
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    [ -n "$runs" ] || runs="$(sed -n 's/^#\([0-9]*\).*/\1/p' "$log" | tail -n 1)"
    cov="$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1 || true)"
    corpus="$(find "corpus/$t" -type f | wc -l) files, $(du -sh "corpus/$t" | cut -f1)"
    crashes="$(find "artifacts/$t" -type f -newer "$stamp" | tr '\n' ' ')"
    if [ -n "$crashes" ]; then
        echo "!! $t found: $crashes"
        grep -m 5 -E 'panicked|ERROR: libFuzzer|ERROR: AddressSanitizer|out-of-memory|malloc\(' "$log" || true
    elif [ "$rc" -ne 0 ]; then
        echo "!! $t exited with status $rc; its log:"
        tail -n 30 "$log"
    fi
    summary+=("$(printf '%-15s execs %-10s %-22s corpus %-22s %s' "$t" "${runs:-?}" "${cov:-cov: ?}" "$corpus" "${crashes:+crash: $crashes}")")
done

echo
echo "== summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
