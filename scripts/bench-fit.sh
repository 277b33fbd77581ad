#!/usr/bin/env bash
# Benchmark (not a test): `retrain fit` against the peer PyTorch pipeline (../shared/peers)
# on hymenoptera with EfficientNet-Lite0, strategy by strategy, back to back in one run:
#   probe  vs exp_a_features.py (features once + logistic regression)
#   freeze vs exp_b_freeze.py   (frozen backbone, new head, 5 epochs with augmentation)
#   finetune vs exp_c_finetune.py (every layer trained, 5 epochs at 224; retrain: its
#                                  defaults, 1 head-only epoch, then 3 with every layer
#                                  on crops of 128, 176 and 224 pixels)
# Prints val accuracy, whole-process wall time and peak resident memory (/usr/bin/time's
# maximum RSS of the process; the peer loads its data in the same process, num_workers=0) of each,
# and the time ratio; with several SEEDS (both sides run each: the peer's PEER_SEED, retrain's
# --seed), a row per seed, then the mean accuracy and time of each side over the seeds. With
# 153 validation images one image is 0.65 points, and the peer's fine-tune alone spans
# 93.5-97.4% over seeds 0-3: compare accuracies over seeds, not one run.
#
# Needs the peer venv (PEER_VENV, default /tmp/peers/venv; see scripts/bench-embed.sh) and a
# writable copy of the peer scripts (PEER_COPY, default /tmp/peers).
# Usage: scripts/bench-fit.sh   (STRATEGIES="probe freeze" to run some; SEEDS="0 1 2 3", default 0)
set -euo pipefail
source "$(dirname "$0")/peer-env.sh"
data=${HYMENOPTERA_DIR:-$root/../shared/data/hymenoptera_data}
cargo build --release --quiet
bin=$root/target/release/retrain
w=$root/weights/efficientnet-lite0.pth
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat "$data"/*/*/* >/dev/null
export LITE0_WEIGHTS=$w HYMENOPTERA_DIR=$data
now() { date +%s.%N; }
row() {  # strategy peer_acc peer_s peer_kib ours_acc ours_s ours_kib
  python3 -c "import sys; s,pa,ps,pm,oa,os_,om=sys.argv[1:]; print(f'{s:<15} peer {float(pa)*100:5.1f}% in {float(ps):6.1f}s, {int(pm)>>10} MiB   retrain {float(oa)*100:5.1f}% in {float(os_):6.1f}s, {int(om)>>10} MiB   time ratio {float(os_)/float(ps):.2f}')" "$@"
}
mean() {  # strategy, then the rows' fields "peer_acc peer_s ours_acc ours_s" on stdin
  python3 -c "
import sys
r = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
m = [sum(c) / len(r) for c in zip(*r)]
lo = lambda k: min(x[k] for x in r) * 100
hi = lambda k: max(x[k] for x in r) * 100
print(f'{sys.argv[1]:<15} peer {m[0]*100:5.1f}% ({lo(0):.1f}-{hi(0):.1f}) in {m[1]:6.1f}s   retrain {m[2]*100:5.1f}% ({lo(2):.1f}-{hi(2):.1f}) in {m[3]:6.1f}s   time ratio {m[3]/m[1]:.2f}   over {len(r)} seeds')" "$1"
}
seeds=(${SEEDS:-0})
for s in ${STRATEGIES:-probe freeze finetune}; do
  case $s in
    probe) script=exp_a_features.py; key="r['heads']['sklearn_logregcv_train5fold']['val_acc']" ;;
    freeze) script=exp_b_freeze.py; key="r['final_val_acc']" ;;
    finetune) script=exp_c_finetune.py; key="r['final_val_acc']" ;;
  esac
  : > "$tmp/$s.seeds"
  for seed in "${seeds[@]}"; do
    t0=$(now)
    (cd "$copy" && PEER_SEED=$seed /usr/bin/time -f %M -o "$tmp/$s.peer.rss" "$venv/bin/python" "$script" > "$tmp/$s.log" 2>&1) || { cat "$tmp/$s.log" >&2; exit 1; }
    t1=$(now)
    res=$copy/results/${script%.py}.json
    peer_acc=$(python3 -c "import json; r=json.load(open('$res')); print($key)")
    t2=$(now); /usr/bin/time -f %M -o "$tmp/$s.rss" "$bin" fit --model efficientnet_lite0 --weights "$w" --data "$data/train" --val "$data/val" --strategy $s --seed "$seed" --out "$tmp/b-$s-$seed" --json > "$tmp/$s.json"; t3=$(now)
    ours_acc=$(python3 -c "import json; print(json.load(open('$tmp/$s.json'))['val_accuracy'])")
    label=$s
    if [ ${#seeds[@]} -gt 1 ]; then label="$s seed $seed"; fi
    peer_s=$(python3 -c "print($t1-$t0)"); ours_s=$(python3 -c "print($t3-$t2)")
    row "$label" "$peer_acc" "$peer_s" "$(tail -1 "$tmp/$s.peer.rss")" \
      "$ours_acc" "$ours_s" "$(tail -1 "$tmp/$s.rss")"
    echo "$peer_acc $peer_s $ours_acc $ours_s" >> "$tmp/$s.seeds"
  done
  if [ ${#seeds[@]} -gt 1 ]; then mean "$s mean" < "$tmp/$s.seeds"; fi
done
