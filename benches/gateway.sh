#!/usr/bin/env bash
# The gateway benchmark with its peer: installs LiteLLM's proxy (pinned) into `.venv-gateway`,
# then measures Groundwork and LiteLLM in front of the same upstream in one run; builds
# llama.cpp (llama-cpp-python, pinned) into `.venv-llama` for the local model's comparison.
# Usage: benches/gateway.sh [--quick]     Results: bench-results/gateway.json
set -euo pipefail
cd "$(dirname "$0")/.."
python3 models/fetch.py
if [ ! -x .venv-gateway/bin/python ]; then
  python3 -m venv .venv-gateway
fi
.venv-gateway/bin/pip install --disable-pip-version-check -q -r benches/py/gateway-requirements.txt
# llama.cpp, the local model's peer: llama-cpp-python compiled here for this CPU (minutes).
if [ ! -x .venv-llama/bin/python ]; then
  python3 -m venv .venv-llama
fi
CMAKE_ARGS="-DGGML_NATIVE=ON" .venv-llama/bin/pip install --disable-pip-version-check -q \
  -r benches/py/llama-requirements.txt
cargo bench --bench gateway -- "$@"
