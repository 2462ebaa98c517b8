#!/usr/bin/env bash
# Creates the Python environment used by the benchmarks and the reference-vector generator.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv-bench/bin/python ] || python3 -m venv .venv-bench
.venv-bench/bin/pip install --disable-pip-version-check -q -r benches/py/requirements.txt
