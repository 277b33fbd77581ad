#!/usr/bin/env bash
# Benchmark (not a test): training-step and inference throughput on a GPU, retrain built
# with a GPU backend against PyTorch on CUDA, back to back on the same weights:
#   train_b16  full fine-tune step, batch 16, synthetic 224x224 (the protocol of
#              scripts/bench-train.sh: scripts/bench_peer_train.py --device cuda against
#              examples/train_throughput.rs)
#   freeze_b16 frozen-backbone step, batch 16
#   infer_b32  model-only inference, batch 32, to the pre-logits features
# Each timed PyTorch step ends with torch.cuda.synchronize; each retrain step reads its loss
# or features back to the host. The weights are torchvision's random initialisation saved by
# the peer script (time does not depend on the values). Ratios above 1: retrain is faster.
#
# Needs a python3 with torch (CUDA), torchvision and safetensors (PYTHON, default python3).
# retrain's side: built here with `--features wgpu` (Vulkan, Metal, DX12) unless
# TRAIN_THROUGHPUT names a train_throughput binary built elsewhere with a GPU feature.
# Usage: scripts/bench-gpu.sh [iters] [archs...]   (defaults 20; mobilenet_v2 resnet50)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
iters=${1:-20}
shift || true
archs=("${@:-mobilenet_v2 resnet50}")
python=${PYTHON:-python3}
if [ -z "${TRAIN_THROUGHPUT:-}" ]; then
  cargo build --release --quiet --features wgpu --example train_throughput
  TRAIN_THROUGHPUT=$root/target/release/examples/train_throughput
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
field() { "$python" -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
row() {  # arch what peer ours
  "$python" -c "import sys; a,w,p,o=sys.argv[1:]; print(f'{a:<14} {w:<10} torch/cuda {float(p):8.1f} img/s   retrain {float(o):8.1f} img/s   ratio {float(o)/float(p):.2f}')" "$@"
}
for arch in ${archs[*]}; do
  peer=$("$python" scripts/bench_peer_train.py --arch "$arch" --device cuda --infer \
    --save "$tmp/$arch.safetensors" --iters "$iters" --warmup 3)
  mine=$("$TRAIN_THROUGHPUT" "$arch" "$tmp/$arch.safetensors" "$iters" 3)
  echo "peer $peer" >&2
  echo "retrain $mine" >&2
  for k in train_b16 freeze_b16 infer_b32; do row "$arch" $k "$(field "$peer" $k)" "$(field "$mine" $k)"; done
done
