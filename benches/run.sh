#!/usr/bin/env bash
# Runs Groundwork's retrieval benchmark and its peers side by side, then prints the ratios.
# Usage: benches/run.sh [--quick] [--only embedding|chunking|ann]      Results: bench-results/summary.md (and *.json)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 models/fetch.py
if [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench
fi
.venv-bench/bin/pip install --disable-pip-version-check -q -r benches/py/requirements.txt
cargo bench --bench retrieval -- "$@"
.venv-bench/bin/python benches/py/peers.py "$@"
