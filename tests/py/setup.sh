#!/usr/bin/env bash
# Creates (once) the test suite's own Python environments with the pinned clients:
# `.venv-test` (tests/py/requirements.txt) and `.venv-test-llamaindex`
# (tests/py/requirements-llamaindex.txt — LlamaIndex's OpenAI integration requires openai < 3,
# while the main environment tests the current openai package).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv() {
  local dir=$1 reqs=$2
  if [ ! -x "$dir/bin/python" ]; then
    python3 -m venv "$dir"
  fi
  local stamp=$dir/.requirements.sha256 want
  want=$(sha256sum "$reqs" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$dir/bin/pip" install --disable-pip-version-check -q -r "$reqs"
    echo "$want" > "$stamp"
  fi
}
venv .venv-test tests/py/requirements.txt
venv .venv-test-llamaindex tests/py/requirements-llamaindex.txt
