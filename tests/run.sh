#!/usr/bin/env bash
# Groundwork's whole test suite, as CI runs it: fetch the models (idempotent, checksummed),
# check formatting and lints, then run every unit, property and integration test — and the
# integration suite once more with every record in PostgreSQL (a throwaway server started here
# by tests/pg.sh, stopped and removed on exit).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 models/fetch.py
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
./tests/ui/setup.sh
cargo test
pg_dir=$(mktemp -u -d /tmp/groundwork-pg.XXXXXX)
trap 'tests/pg.sh stop "$pg_dir"' EXIT
# The second pass runs every test that keeps records through a store; the modules skipped
# here never open one (models, extraction, chunking, indexes, `groundwork eval`, the house
# rules), so a second run could only repeat the first; nor the browser's walk through the
# chat UI (the API it calls is tested on both stores by the other `ui::` tests).
GROUNDWORK_TEST_PG_URL=$(tests/pg.sh start "$pg_dir") GROUNDWORK_TEST_STORE=postgres \
  cargo test --test it -- --skip architecture:: --skip chunking:: --skip embedder:: \
  --skip eval_cli:: --skip extraction:: --skip index:: --skip local_model:: --skip store_pg:: \
  --skip ui::browser_
