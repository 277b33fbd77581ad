#!/usr/bin/env bash
# Where a training step's time goes: perf samples examples/train_throughput (full fine-tune
# steps, then frozen-backbone steps and batch-32 inference) on one architecture, and prints
# the hottest functions (self time) and the hottest call chains into them.
#
# Needs perf (linux-tools; kernel.perf_event_paranoid <= 2 for a user's own process). The
# release profile keeps line tables (debug = 1), so frames resolve to functions.
#
# Usage: [ONLY=train|freeze|infer] scripts/profile.sh <arch> <weights> [iters]     e.g.
#        scripts/profile.sh mobilenet_v2 weights/mobilenet_v2.pth
#        scripts/profile.sh vit_b_16 vit_b_16.safetensors 2
# Writes target/profile/<arch>.perf.data (open it with `perf report -i`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ $# -ge 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
arch=$1 weights=$2 iters=${3:-3}
command -v perf >/dev/null || { echo "perf not found: install linux-tools (or linux-perf)" >&2; exit 1; }
cargo build --release --quiet --example train_throughput
mkdir -p target/profile
data=target/profile/$arch.perf.data
perf record --quiet -F 499 -g -o "$data" \
  target/release/examples/train_throughput "$arch" "$weights" "$iters" 1 ${ONLY:-}
echo "== self time by function (top 30) =="
perf report -i "$data" --no-children --stdio --percent-limit 0.7 --sort symbol -g none 2>/dev/null |
  grep -v '^#' | grep -v '^$' | head -30
echo "== by shared object =="
perf report -i "$data" --no-children --stdio --sort dso -g none 2>/dev/null |
  grep -v '^#' | grep -v '^$' | head -8
echo "== call chains into the top functions (caller view, 3% and up) =="
perf report -i "$data" --children --stdio --percent-limit 3 --sort symbol \
  -g caller,0.5,callee,function,percent --max-stack 12 2>/dev/null |
  grep -v '^#' | grep -v '^$' | head -80
