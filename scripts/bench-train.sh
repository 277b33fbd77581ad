#!/usr/bin/env bash
# Benchmark (not a test): training-step throughput, retrain against PyTorch, back to back.
#   EfficientNet-Lite0: the peer's own bench_throughput.py (../shared/peers)
#   MobileNetV2, ResNet-50: scripts/bench_peer_train.py (the same protocol for torchvision)
# against `examples/train_throughput.rs` on the same weights. Synthetic 224x224 input,
# batch 16; train_b16 = full fine-tune step, freeze_b16 = frozen-backbone step.
# Prints images/s of each and the ratio retrain/peer (above 1: retrain is faster).
#
# Needs the peer venv (PEER_VENV, default /tmp/peers/venv; see scripts/bench-embed.sh).
# With AB=1, retrain also runs with RETRAIN_KERNELS=burn (burn's own operations in place of
# retrain's kernels, crates/retrain/src/kernels), a second line per figure: what the kernels
# change, in the same run.
# Usage: scripts/bench-train.sh [iters]   (retrain's timed steps per figure, default 5)
set -euo pipefail
source "$(dirname "$0")/peer-env.sh"
iters=${1:-5}
cargo build --release --quiet --example train_throughput
ours=$root/target/release/examples/train_throughput
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export LITE0_WEIGHTS=$root/weights/efficientnet-lite0.pth
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
row() {  # arch what peer ours
  python3 -c "import sys; a,w,p,o=sys.argv[1:]; print(f'{a:<19} {w:<10} peer {float(p):6.1f} img/s   retrain {float(o):6.1f} img/s   ratio {float(o)/float(p):.2f}')" "$@"
}

# EfficientNet-Lite0 with the peer's own script (one round; it also times inference).
(cd "$copy" && "$venv/bin/python" bench_throughput.py --rounds 1 > "$tmp/lite0.log" 2>&1) || { cat "$tmp/lite0.log" >&2; exit 1; }
peer=$(python3 -c "import json; s=json.load(open('$copy/results/bench_throughput.json'))['summary']; print(json.dumps({k: s[k]['img_per_s'] for k in ('train_b16','freeze_b16')}))")
mine=$("$ours" efficientnet_lite0 "$LITE0_WEIGHTS" "$iters")
for k in train_b16 freeze_b16; do row efficientnet_lite0 $k "$(field "$peer" $k)" "$(field "$mine" $k)"; done
if [ -n "${AB:-}" ]; then
  mine=$(RETRAIN_KERNELS=burn "$ours" efficientnet_lite0 "$LITE0_WEIGHTS" "$iters")
  for k in train_b16 freeze_b16; do row efficientnet_lite0 "$k(burn)" "$(field "$peer" $k)" "$(field "$mine" $k)"; done
fi

for arch in mobilenet_v2 resnet50; do
  args=(--arch $arch --save "$tmp/$arch.safetensors")
  [ $arch = mobilenet_v2 ] && args+=(--weights "$root/weights/mobilenet_v2.pth")
  peer=$("$venv/bin/python" scripts/bench_peer_train.py "${args[@]}")
  mine=$("$ours" $arch "$tmp/$arch.safetensors" "$iters")
  for k in train_b16 freeze_b16; do row $arch $k "$(field "$peer" $k)" "$(field "$mine" $k)"; done
  if [ -n "${AB:-}" ]; then
    mine=$(RETRAIN_KERNELS=burn "$ours" $arch "$tmp/$arch.safetensors" "$iters")
    for k in train_b16 freeze_b16; do row $arch "$k(burn)" "$(field "$peer" $k)" "$(field "$mine" $k)"; done
  fi
done
