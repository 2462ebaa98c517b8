#!/usr/bin/env bash
# Installs (once) what the chat-UI test drives: Debian's `chromium` and its `chromedriver`, and
# the Selenium client in the test suite's Python environment.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver >/dev/null
fi
exec ./tests/py/setup.sh
