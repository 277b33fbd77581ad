#!/usr/bin/env bash
# Benchmark (not a test): model-only inference, batch 32, synthetic 224x224 input, to the
# pre-logits features, retrain against PyTorch and ONNX Runtime on the same weights, back to
# back: scripts/bench_peer_infer.py (PyTorch eval + no_grad, and the network's ONNX export
# in onnxruntime's CPU provider, both on 2 threads) and `examples/train_throughput.rs ...
# infer` (BatchNorm folded, the fused kernels). MobileNetV2 with its real ImageNet weights,
# EfficientNet-B0 and ResNet-50 with random ones (speed does not depend on the values).
# Prints images/s of each and the ratios retrain/PyTorch and retrain/ONNX Runtime.
#
# Needs the peer venv (PEER_VENV, default /tmp/peers/venv; see scripts/bench-embed.sh) with
# onnxruntime and onnx added (`$PEER_VENV/bin/pip install onnxruntime onnx`).
# Usage: scripts/bench-infer.sh [iters]   (timed batches per figure, default 6)
set -euo pipefail
source "$(dirname "$0")/peer-env.sh"
iters=${1:-6}
"$venv/bin/python" -c "import onnxruntime, onnx" 2>/dev/null ||
  { echo "the peer venv at $venv lacks onnxruntime or onnx: $venv/bin/pip install onnxruntime onnx" >&2; exit 1; }
cargo build --release --quiet --example train_throughput
ours=$root/target/release/examples/train_throughput
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
for arch in mobilenet_v2 efficientnet_b0 resnet50; do
  args=(--arch $arch --save "$tmp/$arch.safetensors" --iters "$iters")
  [ $arch = mobilenet_v2 ] && args+=(--weights "$root/weights/mobilenet_v2.pth")
  peer=$("$venv/bin/python" scripts/bench_peer_infer.py "${args[@]}" 2>"$tmp/peer.log") ||
    { tail -5 "$tmp/peer.log" >&2; echo "bench_peer_infer.py failed on $arch (above)" >&2; exit 1; }
  mine=$("$ours" $arch "$tmp/$arch.safetensors" "$iters" 1 infer)
  python3 -c "
import sys
a, t, o, r = sys.argv[1], *map(float, sys.argv[2:])
print(f'{a:<15} PyTorch {t:6.1f} img/s   ONNX Runtime {o:6.1f} img/s   retrain {r:6.1f} img/s   '
      f'ratio to PyTorch {r/t:.2f}   to ONNX Runtime {r/o:.2f}')" \
    $arch "$(field "$peer" torch_b32)" "$(field "$peer" ort_b32)" "$(field "$mine" infer_b32)"
done
