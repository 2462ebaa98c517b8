#!/usr/bin/env bash
# Installs (once) the Debian packages Groundwork uses, when any is missing:
#   the service:  tesseract-ocr + tesseract-ocr-eng (OCR of scans and images),
#                 poppler-utils (the second PDF engine `pdftotext`, and `pdftoppm` for OCR)
#   --tests adds: chromium + chromium-driver (chat-UI test), qpdf (encrypts test PDFs),
#                 haproxy (checks deploy/haproxy.cfg)
# More OCR languages: GROUNDWORK_OCR_PACKAGES="tesseract-ocr-deu tesseract-ocr-fra".
# Without root or sudo it says what is missing and carries on: the service then logs that OCR
# is unavailable and why.
set -euo pipefail
want=(tesseract:tesseract-ocr tesseract:tesseract-ocr-eng pdftotext:poppler-utils)
if [ "${1:-}" = "--tests" ]; then
  want+=(chromium:chromium chromedriver:chromium-driver qpdf:qpdf haproxy:haproxy)
fi
missing=()
for pair in "${want[@]}"; do
  cmd=${pair%%:*}
  pkg=${pair#*:}
  if [ "$pkg" = "tesseract-ocr-eng" ]; then
    # Language data has no command of its own: ask tesseract.
    if command -v tesseract >/dev/null 2>&1 && tesseract --list-langs 2>/dev/null | grep -qx eng; then
      continue
    fi
  elif command -v "$cmd" >/dev/null 2>&1; then
    continue
  fi
  missing+=("$pkg")
done
for pkg in ${GROUNDWORK_OCR_PACKAGES:-}; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
  else
    echo "missing Debian packages (run as root to install): ${missing[*]}" >&2
    exit 0
  fi
fi
echo "installing Debian packages: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
