#!/usr/bin/env bash
# Install everything the tests need (Python packages, Debian's chromium for the browser tests), lint, run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export GRADIO_ANALYTICS_ENABLED=False
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
ruff check .
ruff format --check .
python -m pytest "$@"
