#!/usr/bin/env bash
# Creates (once) the test suite's own Python environment `.venv-test` with the pinned clients.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x .venv-test/bin/python ]; then
  python3 -m venv .venv-test
fi
stamp=.venv-test/.requirements.sha256
want=$(sha256sum tests/py/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv-test/bin/pip install --disable-pip-version-check -q -r tests/py/requirements.txt
  echo "$want" > "$stamp"
fi
