# Sourced by the benchmarks that run the peer PyTorch scripts (bench-fit.sh, bench-train.sh):
# goes to the project root and sets root, peers (../shared/peers), copy (a writable copy of
# them, PEER_COPY, default /tmp/peers, made if missing), venv (PEER_VENV, default
# $copy/venv; must exist); fetches the weights.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
peers=${PEERS_DIR:-$root/../shared/peers}
copy=${PEER_COPY:-/tmp/peers}
venv=${PEER_VENV:-$copy/venv}
[ -x "$venv/bin/python" ] || { echo "no peer venv at $venv: cp -r $peers $copy && bash $copy/setup_venv.sh" >&2; exit 1; }
[ -d "$copy" ] || cp -r "$peers" "$copy"
mkdir -p "$copy/results"
scripts/fetch-weights.sh >/dev/null
