#!/usr/bin/env bash
# Benchmark (not a test): the token-era families, ViT-B/16 and ConvNeXt-T, retrain against
# PyTorch (torchvision) back to back in one run, on the same weights:
#   train_b16  full fine-tune step, batch 16, synthetic 224x224 (scripts/bench_peer_train.py
#              and examples/train_throughput.rs, the protocol of scripts/bench-train.sh)
#   freeze_b16 frozen-backbone step, batch 16
#   infer_b32  model-only inference, batch 32, to the pre-logits features
#   embed      end to end from hymenoptera JPEGs to the features (the first N images): the
#              peer's DataLoader pipeline (scripts/bench_peer_embed.py, the weights enum's
#              transforms) against the whole `retrain embed` process
# with the peak RSS of each process (/usr/bin/time). The weights are torchvision's random
# initialisation saved by the peer script (no ImageNet file is reachable offline; time and
# memory do not depend on the values). Ratios above 1: retrain is faster.
#
# Needs the peer venv (PEER_VENV, default /tmp/peers/venv; see scripts/peer-env.sh) and
# ../shared/data/hymenoptera_data (HYMENOPTERA_DIR).
# Usage: scripts/bench-tokens.sh [images] [iters]   (defaults 64 and 3)
set -euo pipefail
source "$(dirname "$0")/peer-env.sh"
images=${1:-64}
iters=${2:-3}
export HYMENOPTERA_DIR=${HYMENOPTERA_DIR:-$root/../shared/data/hymenoptera_data}
cargo build --release --quiet --example train_throughput
cargo build --release --quiet
ours=$root/target/release/examples/train_throughput
bin=$root/target/release/retrain
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat "$HYMENOPTERA_DIR"/*/*/* >/dev/null  # warm the page cache for both
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
mb() { echo $(( $(cat "$1") / 1024 )); }
row() {  # arch what peer ours peer_rss_file ours_rss_file
  python3 -c "import sys; a,w,p,o,pm,om=sys.argv[1:]; print(f'{a:<14} {w:<10} peer {float(p):6.2f} img/s   retrain {float(o):6.2f} img/s   ratio {float(o)/float(p):.2f}   peak RSS peer {pm} MB, retrain {om} MB')" \
    "$1" "$2" "$3" "$4" "$(mb "$5")" "$(mb "$6")"
}

for arch in vit_b_16 convnext_tiny; do
  w=$tmp/$arch.safetensors
  peer=$(/usr/bin/time -f %M -o "$tmp/peer_train.kb" "$venv/bin/python" scripts/bench_peer_train.py \
    --arch $arch --save "$w" --infer --iters "$iters" --warmup 1)
  mine=$(/usr/bin/time -f %M -o "$tmp/ours_train.kb" "$ours" $arch "$w" "$iters" 1)
  for k in train_b16 freeze_b16 infer_b32; do
    row $arch $k "$(field "$peer" $k)" "$(field "$mine" $k)" "$tmp/peer_train.kb" "$tmp/ours_train.kb"
  done
  peer=$(/usr/bin/time -f %M -o "$tmp/peer_embed.kb" "$venv/bin/python" scripts/bench_peer_embed.py \
    "$peers" $arch "$w" "$tmp/list.txt" --limit "$images")
  n=$(wc -l < "$tmp/list.txt")
  t0=$(date +%s.%N)
  xargs -a "$tmp/list.txt" -d '\n' /usr/bin/time -f %M -o "$tmp/ours_embed.kb" \
    "$bin" embed --model $arch --weights "$w" --out "$tmp/f.npy" 2>/dev/null
  t1=$(date +%s.%N)
  row $arch "embed($n)" "$(field "$peer" img_per_s)" "$(python3 -c "print($n / ($t1 - $t0))")" \
    "$tmp/peer_embed.kb" "$tmp/ours_embed.kb"
done
