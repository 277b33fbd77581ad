#!/usr/bin/env bash
# Benchmark (not a test): `retrain embed` against the peer PyTorch pipeline (../shared/peers)
# on the same hymenoptera JPEGs (train + val, 397 images), EfficientNet-Lite0 and
# MobileNetV2, back to back in one run; prints images/s for both and the ratio.
# Both are timed end to end from the JPEG files through the pooled features; the peer's
# model load is excluded, retrain's whole process (load, decode, write the .npy) is not.
#
# Needs: the peer venv (bash ../shared/peers/setup_venv.sh in a copy; PEER_VENV points at
# it, default /tmp/peers/venv), and the weights (scripts/fetch-weights.sh).
# Usage: scripts/bench-embed.sh [rounds]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
rounds=${1:-3}
peers=${PEERS_DIR:-$root/../shared/peers}
venv=${PEER_VENV:-/tmp/peers/venv}
data=${HYMENOPTERA_DIR:-$root/../shared/data/hymenoptera_data}
export HYMENOPTERA_DIR=$data
[ -x "$venv/bin/python" ] || { echo "no peer venv at $venv: cp -r $peers /tmp/peers && bash /tmp/peers/setup_venv.sh (or set PEER_VENV)" >&2; exit 1; }
scripts/fetch-weights.sh >/dev/null
cargo build --release --quiet
bin=$root/target/release/retrain
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat "$data"/*/*/* >/dev/null  # warm the page cache for both

for spec in "lite0 efficientnet_lite0 weights/efficientnet-lite0.pth" "mobilenet_v2 mobilenet_v2 weights/mobilenet_v2.pth"; do
  set -- $spec
  peer_arch=$1 arch=$2 weights=$3
  best_peer=0 best_ours=0
  for r in $(seq "$rounds"); do
    peer=$("$venv/bin/python" scripts/bench_peer_embed.py "$peers" "$peer_arch" "$weights" "$tmp/list.txt")
    peer_ips=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['img_per_s'])" "$peer")
    n=$(wc -l < "$tmp/list.txt")
    t0=$(date +%s.%N)
    xargs -a "$tmp/list.txt" -d '\n' "$bin" embed --model "$arch" --weights "$weights" --out "$tmp/f.npy" 2>/dev/null
    t1=$(date +%s.%N)
    ours_ips=$(python3 -c "print($n / ($t1 - $t0))")
    printf '%-18s round %d: peer %6.1f img/s   retrain %6.1f img/s   ratio %.2fx\n' "$arch" "$r" "$peer_ips" "$ours_ips" "$(python3 -c "print($ours_ips / $peer_ips)")"
    best_peer=$(python3 -c "print(max($best_peer, $peer_ips))")
    best_ours=$(python3 -c "print(max($best_ours, $ours_ips))")
  done
  printf '%-18s best of %d: peer %6.1f img/s   retrain %6.1f img/s   ratio %.2fx  (%d images)\n' "$arch" "$rounds" "$best_peer" "$best_ours" "$(python3 -c "print($best_ours / $best_peer)")" "$n"
done
