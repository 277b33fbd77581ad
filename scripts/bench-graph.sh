#!/usr/bin/env bash
# Benchmark (not a test): the same network run from retrain's hand-written zoo architecture
# and from its ONNX graph (torch.onnx export of the same weights), in one run, back to back:
# model-only inference (batch 32, BatchNorm folded), a full fine-tune step and a
# frozen-backbone step (batch 16), synthetic 224x224 input (`examples/train_throughput.rs`).
# MobileNetV2 with its real ImageNet weights, ResNet-50 with random ones (speed does not
# depend on the values). Prints images/s of each and the ratio graph/zoo (1.0: as fast).
#
# Needs the peer venv for torch (PEER_VENV, default /tmp/peers/venv; see
# scripts/bench-embed.sh) with the onnx package added (`$PEER_VENV/bin/pip install onnx`).
# Usage: scripts/bench-graph.sh [iters]   (timed steps per figure, default 5)
set -euo pipefail
source "$(dirname "$0")/peer-env.sh"
iters=${1:-5}
cargo build --release --quiet --example train_throughput
bench=$root/target/release/examples/train_throughput
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
for arch in mobilenet_v2 resnet50; do
  args=(--arch $arch --out-dir "$tmp")
  [ $arch = mobilenet_v2 ] && args+=(--weights "$root/weights/mobilenet_v2.pth")
  "$venv/bin/python" scripts/export_torchvision_onnx.py "${args[@]}" 2>/dev/null
  zoo=$("$bench" $arch "$tmp/$arch.safetensors" "$iters")
  graph=$("$bench" - "$tmp/$arch.onnx" "$iters")
  for k in infer_b32 train_b16 freeze_b16; do
    python3 -c "import sys; a,k,z,g=sys.argv[1:]; print(f'{a:<13} {k:<10} zoo {float(z):6.1f} img/s   graph {float(g):6.1f} img/s   ratio {float(g)/float(z):.2f}')" \
      $arch $k "$(field "$zoo" $k)" "$(field "$graph" $k)"
  done
done
