#!/usr/bin/env bash
# Groundwork's whole test suite, as CI runs it: fetch the models (idempotent, checksummed),
# check formatting and lints, then run every unit, property and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 models/fetch.py
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
./tests/ui/setup.sh
cargo test
