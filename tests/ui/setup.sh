#!/usr/bin/env bash
# Installs (once) what the tests drive beyond Cargo: the Debian packages (Chromium and its
# driver for the chat-UI test, Tesseract and poppler for OCR and the second PDF engine, qpdf for
# encrypted test PDFs), then the test suite's Python environment.
set -euo pipefail
cd "$(dirname "$0")/../.."
./scripts/system-packages.sh --tests
exec ./tests/py/setup.sh
